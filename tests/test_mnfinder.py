"""Tests of tools/dataset_converters/mnfinder.py on a fixture written in mnfinder's format
(and, when the real data is on disk, on one real set)."""
import importlib.util
import json
import os
import os.path as osp
import shutil

import numpy as np
import pytest
import tifffile
from PIL import Image

from projects.common.io import read_image, read_instance_map, read_points, to_uint8

_spec = importlib.util.spec_from_file_location(
    'mnfinder_converter',
    osp.join(osp.dirname(__file__), '..', 'tools', 'dataset_converters', 'mnfinder.py'))
mnf = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mnf)

REAL_ROOT = os.environ.get(
    'MMHISTO_MNFINDER_ROOT',
    osp.join(osp.dirname(__file__), '..', '..', 'shared', 'data', 'mnfinder'))

N1 = (10, 20, 30)   # key 10<<16 | 20<<8 | 30 = 660510
N2 = (200, 0, 0)    # key 13107200


def _rgba(h, w, blobs):
    """RGBA mask: alpha 0 background; blobs = [(colour, rows slice, cols slice)]."""
    m = np.zeros((h, w, 4), np.uint8)
    for colour, rs, cs in blobs:
        m[rs, cs, :3] = colour
        m[rs, cs, 3] = 255
    return m


def _write_set(set_dir, name, img, nuc, mn, preview=True):
    for sub in ('images', 'nucleus_masks', 'mn_masks'):
        os.makedirs(osp.join(set_dir, sub), exist_ok=True)
    tifffile.imwrite(osp.join(set_dir, 'images', name + '.tif'), img)
    if preview:  # mnfinder ships a stretched .png next to each .tif: must be ignored
        Image.fromarray(np.full(img.shape, 255, np.uint8)).save(
            osp.join(set_dir, 'images', name + '.png'))
    Image.fromarray(nuc).save(osp.join(set_dir, 'nucleus_masks', name + '.png'))
    Image.fromarray(mn).save(osp.join(set_dir, 'mn_masks', name + '.png'))


def _fixture(root):
    """training-data: setA/1 (uint16, 3 nuclei + 2 micronuclei) and setA/0 (uint8, one
    nucleus); validation-data: setB/7 (uint8, 1 black nucleus, no micronucleus); test-data:
    a corrupt file that must never be read. With ``--val-from-train 1 --seed 0``, setA/0
    goes to val (default_rng(0): permutation(1) = [0] orders the one set, then
    permutation(2) = [0, 1] over setA's sorted names ['0', '1'] takes '0' first), setA/1
    stays in train and setB/7 is the test split."""
    rng = np.random.default_rng(0)
    img1 = rng.integers(500, 9000, (64, 64)).astype(np.uint16)
    nuc1 = _rgba(64, 64, [
        (N1, slice(5, 15), slice(8, 20)),     # nucleus A: rows 5-14, cols 8-19 (120 px)
        (N2, slice(30, 34), slice(30, 34)),   # colour N2, blob 1: 4x4 = 16 px
        (N2, slice(40, 42), slice(50, 53))])  # colour N2, blob 2: 2x3 = 6 px
    mn1 = _rgba(64, 64, [
        (N1, slice(5, 7), slice(25, 27)),     # micronucleus of cell N1: 2x2, rows 5-6
        (N1, slice(14, 16), slice(19, 21))])  # rows 14-15, cols 19-20: overlaps A at (14, 19)
    _write_set(osp.join(root, 'training-data', 'setA'), '1', img1, nuc1, mn1)
    img0 = np.full((32, 32), 30, np.uint8)
    img0[4:8, 4:8] = 220
    _write_set(osp.join(root, 'training-data', 'setA'), '0', img0,
               _rgba(32, 32, [((1, 2, 3), slice(4, 8), slice(4, 8))]), _rgba(32, 32, []))
    img2 = rng.integers(0, 200, (64, 64)).astype(np.uint8)
    nuc2 = _rgba(64, 64, [((0, 0, 0), slice(10, 13), slice(10, 14))])  # black = a colour
    mn2 = np.zeros((64, 64, 4), np.uint8)
    _write_set(osp.join(root, 'validation-data', 'setB'), '7', img2, nuc2, mn2)
    os.makedirs(osp.join(root, 'test-data', 'setC', 'images'))
    with open(osp.join(root, 'test-data', 'setC', 'images', '1.tif'), 'wb') as f:
        f.write(b'not a tif')
    return img1, img2


def _expected_train_maps():
    inst = np.zeros((64, 64), np.int32)
    inst[5:15, 8:20] = 1     # nuclei first: colour keys ascending: N1 (660510) < N2
    inst[30:34, 30:34] = 2   # N2 components in raster order
    inst[40:42, 50:53] = 3
    inst[5:7, 25:27] = 4     # micronuclei: ids after the 3 nuclei, raster order
    inst[14:16, 19:21] = 5   # overwrites nucleus pixel (14, 19)
    sem = np.zeros((64, 64), np.uint8)
    sem[inst > 0] = 1
    sem[inst >= 4] = 2
    return inst, sem


def test_convert_fixture(tmp_path, capsys):
    img1, img2 = _fixture(str(tmp_path / 'raw'))
    out = tmp_path / 'out'
    assert mnf.main(['--root', str(tmp_path / 'raw'), '--out', str(out),
                     '--val-from-train', '1']) == 0
    printed = capsys.readouterr().out
    assert 'skipping held-out split' in printed and 'test-data' in printed
    assert 'train: 1 images, 3 nuclei, 2 micronuclei' in printed
    assert ('val: 1 of the 2 training-data images (--val-from-train 1, --seed 0): '
            'training-data/setA/0\n') in printed
    assert 'val: 1 images, 1 nuclei, 0 micronuclei' in printed
    assert 'test: 1 images, 1 nuclei, 0 micronuclei' in printed

    train = json.loads((out / 'annotations' / 'train.json').read_text())
    assert train['categories'] == [dict(id=1, name='nucleus'), dict(id=2, name='micronucleus')]
    assert train['images'] == [dict(id=1, file_name='train_setA_1.png', height=64, width=64)]
    anns = train['annotations']
    assert [a['category_id'] for a in anns] == [1, 1, 1, 2, 2]
    # continuous pixel coordinates: pixel (r, c) has its centre at (c + 0.5, r + 0.5), so a
    # full rectangle's centroid is its box centre.
    # nucleus A lost pixel (14, 19) to the micronucleus: 119 px, box still cols 8-19 rows 5-14
    # (x 8..20, y 5..15); full box centre (14, 10); removing the pixel centred at (19.5, 14.5):
    # x = (14 * 120 - 19.5) / 119 = 1660.5 / 119, y = (10 * 120 - 14.5) / 119 = 1185.5 / 119
    a = anns[0]
    assert a['bbox'] == [8, 5, 12, 10] and a['area'] == 119
    assert a['point'] == pytest.approx([1660.5 / 119, 1185.5 / 119], abs=1e-3)
    # N2 blob 1 rows 30-33 cols 30-33: box [30, 34) x [30, 34), centre (32, 32);
    # blob 2 rows 40-41 cols 50-52: [50, 53) x [40, 42), centre (51.5, 41)
    assert anns[1]['bbox'] == [30, 30, 4, 4] and anns[1]['point'] == [32.0, 32.0]
    assert anns[2]['bbox'] == [50, 40, 3, 2] and anns[2]['point'] == [51.5, 41.0]
    # micronuclei: rows 5-6 cols 25-26 -> (26, 6); rows 14-15 cols 19-20 -> (20, 15)
    assert anns[3]['bbox'] == [25, 5, 2, 2] and anns[3]['point'] == [26.0, 6.0]
    assert anns[4]['bbox'] == [19, 14, 2, 2] and anns[4]['point'] == [20.0, 15.0]
    assert all(a['iscrowd'] == 0 and a['image_id'] == 1 for a in anns)

    test = json.loads((out / 'annotations' / 'test.json').read_text())
    # rows 10-12 cols 10-13: [10, 14) x [10, 13), centre (12, 11.5)
    assert [(a['bbox'], a['point']) for a in test['annotations']] == [
        ([10, 10, 4, 3], [12.0, 11.5])]
    val = json.loads((out / 'annotations' / 'val.json').read_text())
    # setA/0, rows 4-7 cols 4-7: centre (6, 6)
    assert val['images'] == [dict(id=1, file_name='val_setA_0.png', height=32, width=32)]
    assert [(a['bbox'], a['point']) for a in val['annotations']] == [([4, 4, 4, 4], [6.0, 6.0])]

    # images: grey tif -> to_uint8 -> RGB (the white .png preview is not used)
    rgb = read_image(str(out / 'images' / 'train_setA_1.png'))
    assert np.array_equal(rgb, np.repeat(to_uint8(img1)[..., None], 3, 2))
    assert np.array_equal(
        read_image(str(out / 'img_dir' / 'test' / 'test_setB_7.png'))[..., 0], img2)

    inst, sem = _expected_train_maps()
    assert np.array_equal(read_instance_map(str(out / 'inst_dir' / 'train' / 'train_setA_1.png')), inst)
    assert np.array_equal(read_image(str(out / 'ann_dir' / 'train' / 'train_setA_1.png'), 1), sem)
    pts, labels = read_points(str(out / 'points' / 'train' / 'train_setA_1.csv'))
    assert labels.tolist() == [0, 0, 0, 1, 1]
    assert np.allclose(pts, [a['point'] for a in anns], atol=0.005)  # CSV keeps 2 decimals
    for folder, ext in (('img_dir', 'png'), ('ann_dir', 'png'), ('inst_dir', 'png'),
                        ('points', 'csv')):
        assert {s: sorted(os.listdir(out / folder / s)) for s in ('train', 'val', 'test')} == {
            'train': [f'train_setA_1.{ext}'], 'val': [f'val_setA_0.{ext}'],
            'test': [f'test_setB_7.{ext}']}, folder


def test_convert_options(tmp_path, capsys):
    _fixture(str(tmp_path / 'raw'))
    stats = mnf.convert(str(tmp_path / 'raw'), str(tmp_path / 'o1'), box_size=8,
                        progress=False, val_from_train=1)
    train = json.loads((tmp_path / 'o1' / 'annotations' / 'train.json').read_text())
    b = train['annotations'][1]  # point (32, 32) -> 8x8 box from 32 - 4 = 28
    assert b['bbox'] == [28, 28, 8, 8] and b['area'] == 64
    # --min-area 5: both 2x2 micronuclei (4 px) dropped, the 6 px blob kept; the nucleus
    # then keeps all 120 px: rows 5-14 cols 8-19, centroid = box centre (14, 10)
    stats = mnf.convert(str(tmp_path / 'raw'), str(tmp_path / 'o2'), min_area=5,
                        progress=False, val_from_train=1)
    assert stats['train'] == dict(images=1, nucleus=3, micronucleus=0, dropped_small=2,
                                  covered=0, sources=['training-data/setA/1'])
    a = json.loads((tmp_path / 'o2' / 'annotations' / 'train.json').read_text())['annotations']
    assert a[0]['area'] == 120 and a[0]['point'] == [14.0, 10.0]
    # --instances colour: N2's two blobs are one nucleus, both micronuclei one object
    stats = mnf.convert(str(tmp_path / 'raw'), str(tmp_path / 'o3'), split_components=False,
                        progress=False, val_from_train=1)
    assert (stats['train']['nucleus'], stats['train']['micronucleus']) == (2, 1)
    # a single set folder can be converted; its split comes from the parent folder
    # (validation-data -> test; no training image, so no val split and K is not used)
    stats = mnf.convert(str(tmp_path / 'raw' / 'validation-data' / 'setB'),
                        str(tmp_path / 'o4'), progress=False)
    assert list(stats) == ['test'] and stats['test']['sources'] == ['validation-data/setB/7']
    assert 'only the test split is written' in capsys.readouterr().out


def test_convert_errors(tmp_path):
    raw = tmp_path / 'raw'
    _fixture(str(raw))
    with pytest.raises(ValueError, match=r'test-data split is held out'):
        mnf.convert(str(raw / 'test-data'), str(tmp_path / 'o'), progress=False, val_from_train=1)
    with pytest.raises(ValueError, match=r'held out'):
        mnf.convert(str(raw / 'test-data' / 'setC'), str(tmp_path / 'o'), progress=False,
                    val_from_train=1)
    with pytest.raises(FileNotFoundError, match=r'no training-data or validation-data'):
        mnf.convert(str(tmp_path), str(tmp_path / 'o'), progress=False, val_from_train=1)
    set_a = raw / 'training-data' / 'setA'
    # mask of a different size
    Image.fromarray(np.zeros((32, 64, 4), np.uint8)).save(set_a / 'mn_masks' / '1.png')
    with pytest.raises(ValueError,
                       match=r'mn_masks/1\.png: mask is 64x32 but image .*1\.tif is 64x64'):
        mnf.convert(str(raw), str(tmp_path / 'o'), progress=False, val_from_train=1)
    # an RGB mask (no alpha)
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(set_a / 'mn_masks' / '1.png')
    with pytest.raises(ValueError, match=r'mn_masks/1\.png: expected an RGBA instance mask'):
        mnf.convert(str(raw), str(tmp_path / 'o'), progress=False, val_from_train=1)
    # image without masks
    os.remove(set_a / 'mn_masks' / '1.png')
    with pytest.raises(FileNotFoundError,
                       match=r'mn_masks/1\.png: mask of image .*1\.tif not found'):
        mnf.convert(str(raw), str(tmp_path / 'o'), progress=False, val_from_train=1)
    # unreadable image
    _fixture(str(tmp_path / 'raw2'))
    (tmp_path / 'raw2' / 'training-data' / 'setA' / 'images' / '1.tif').write_bytes(b'junk')
    with pytest.raises(ValueError, match=r'setA/images/1\.tif: corrupt or unreadable'):
        mnf.convert(str(tmp_path / 'raw2'), str(tmp_path / 'o'), progress=False, val_from_train=1)
    # mask without image
    os.remove(tmp_path / 'raw2' / 'training-data' / 'setA' / 'images' / '1.tif')
    tifffile.imwrite(tmp_path / 'raw2' / 'training-data' / 'setA' / 'images' / '2.tif',
                     np.zeros((64, 64), np.uint8))
    for m in ('nucleus_masks', 'mn_masks'):
        Image.fromarray(np.zeros((64, 64, 4), np.uint8)).save(
            tmp_path / 'raw2' / 'training-data' / 'setA' / m / '2.png')
    with pytest.raises(FileNotFoundError, match=r'nucleus_masks/1\.png: mask without image'):
        mnf.convert(str(tmp_path / 'raw2'), str(tmp_path / 'o'), progress=False, val_from_train=1)


REAL_SET = osp.join('validation-data', '2022-05-26_RPE1')


@pytest.mark.skipif(not osp.isdir(osp.join(REAL_ROOT, REAL_SET)),
                    reason='real mnfinder data not available (set MMHISTO_MNFINDER_ROOT)')
def test_convert_real_set_counts(tmp_path):
    from skimage.measure import label
    src = osp.join(tmp_path, REAL_SET)
    shutil.copytree(osp.join(REAL_ROOT, REAL_SET), src)
    stats = mnf.convert(src, str(tmp_path / 'out'), progress=False)
    # independent count: skimage labels 8-connected regions of equal colour key
    expected, colours = {}, {}
    for cls, sub in (('nucleus', 'nucleus_masks'), ('micronucleus', 'mn_masks')):
        expected[cls] = colours[cls] = 0
        for f in sorted(os.listdir(osp.join(src, sub))):
            m = np.asarray(Image.open(osp.join(src, sub, f))).astype(np.int64)
            key = (m[..., 0] << 16) | (m[..., 1] << 8) | m[..., 2]
            key[m[..., 3] == 0] = -1
            expected[cls] += int(label(key, background=-1, connectivity=2).max())
            colours[cls] += len(np.unique(key[key >= 0]))
    val = stats['test']  # validation-data is our test split
    assert list(stats) == ['test']
    assert val['images'] == 1 and val['covered'] == 0
    assert (val['nucleus'], val['micronucleus']) == (expected['nucleus'], expected['micronucleus'])
    # one colour can hold several objects (micronuclei share their parent cell's colour)
    assert val['micronucleus'] > colours['micronucleus'] and val['nucleus'] >= colours['nucleus']
    coco = json.loads((tmp_path / 'out' / 'annotations' / 'test.json').read_text())
    assert len(coco['annotations']) == expected['nucleus'] + expected['micronucleus']


def test_same_set_and_image_name_in_both_splits_are_two_images(tmp_path):
    """mnfinder's training-data and validation-data both hold e.g. 2022-10-14_U2OS/1.tif,
    different images: each keeps its own file, named after its (output) split."""
    img1, _ = _fixture(str(tmp_path / 'raw'))
    other = np.full((64, 64), 40, np.uint8)
    other[10:20, 10:20] = 200
    _write_set(osp.join(str(tmp_path / 'raw'), 'validation-data', 'setA'), '1', other,
               _rgba(64, 64, [((255, 0, 0), slice(10, 20), slice(10, 20))]),
               _rgba(64, 64, []))
    out = tmp_path / 'out'
    assert mnf.main(['--root', str(tmp_path / 'raw'), '--out', str(out),
                     '--val-from-train', '1']) == 0
    test = json.loads((out / 'annotations' / 'test.json').read_text())
    assert sorted(im['file_name'] for im in test['images']) == ['test_setA_1.png',
                                                                 'test_setB_7.png']
    assert np.array_equal(read_image(str(out / 'images' / 'test_setA_1.png'))[..., 0], other)
    assert not np.array_equal(read_image(str(out / 'images' / 'train_setA_1.png'))[..., 0],
                              other)


# ------------------------------------------------------------- the val / test splits

# training-data sets of the split tests: sizes 3, 2, 2, 1 (8 images)
TRAIN_SETS = {'setP': ['1', '2', '3'], 'setQ': ['1', '2'], 'setR': ['1', '2'], 'setS': ['1']}


def _split_tree(root):
    """TRAIN_SETS in training-data and setP/1, setQ/9 in validation-data: 8x8 uint8 images,
    each a constant grey level of its own (training 10, 20, ..., validation 200, 210) with
    one 2x2 nucleus, so that an output image tells where it came from."""
    level = {}
    for split, sets in (('training-data', TRAIN_SETS),
                        ('validation-data', {'setP': ['1'], 'setQ': ['9']})):
        for set_name, names in sets.items():
            for name in names:
                v = 10 * (len(level) + 1) if split == 'training-data' else 200 + 10 * len(
                    [k for k in level if k[0] == split])
                level[(split, set_name, name)] = v
                _write_set(osp.join(root, split, set_name), name, np.full((8, 8), v, np.uint8),
                           _rgba(8, 8, [((9, 9, 9), slice(2, 4), slice(2, 4))]),
                           _rgba(8, 8, []), preview=False)
    return level


def test_choose_val_round_robin_over_sets():
    # default_rng(0) draws, in this order: permutation(4) = [2, 0, 1, 3] over the sorted
    # sets P, Q, R, S (the tie-break ranks), then each set's order over its sorted names:
    # P permutation(3) = [2, 1, 0] -> 3, 2, 1; Q permutation(2) = [0, 1] -> 1, 2;
    # R permutation(2) = [1, 0] -> 2, 1; S permutation(1) -> 1.
    # Visit order, largest first, ties by rank: P (3), Q (2, rank 0), R (2, rank 1), S (1).
    # Round 1: P/3, Q/1, R/2, S/1; round 2: P/2, Q/2, R/1; round 3: P/1.
    assert mnf.choose_val(TRAIN_SETS, 4, seed=0) == [('setP', '3'), ('setQ', '1'),
                                                     ('setR', '2'), ('setS', '1')]
    # K = 2 stops inside round 1: no set gives two images before all have given one
    assert mnf.choose_val(TRAIN_SETS, 2, seed=0) == [('setP', '3'), ('setQ', '1')]
    assert mnf.choose_val(TRAIN_SETS, 7, seed=0) == [
        ('setP', '3'), ('setQ', '1'), ('setR', '2'), ('setS', '1'),
        ('setP', '2'), ('setQ', '2'), ('setR', '1')]
    # default_rng(1): permutation(4) = [0, 1, 2, 3]; P [2, 0, 1] -> 3, 1, 2; Q [1, 0] -> 2, 1;
    # R [1, 0] -> 2, 1; S -> 1
    assert mnf.choose_val(TRAIN_SETS, 5, seed=1) == [('setP', '3'), ('setQ', '2'),
                                                     ('setR', '2'), ('setS', '1'),
                                                     ('setP', '1')]
    # deterministic for a seed, and the listing order of sets / names does not matter
    shuffled = {s: list(reversed(TRAIN_SETS[s])) for s in reversed(list(TRAIN_SETS))}
    assert mnf.choose_val(shuffled, 4, seed=0) == mnf.choose_val(TRAIN_SETS, 4, seed=0)


def test_convert_val_from_train_splits(tmp_path, capsys):
    level = _split_tree(str(tmp_path / 'raw'))
    out = tmp_path / 'out'
    assert mnf.main(['--root', str(tmp_path / 'raw'), '--out', str(out)]) == 0  # K 4, seed 0
    printed = capsys.readouterr().out
    # the choice of test_choose_val_round_robin_over_sets, listed in sorted order
    val = ['training-data/setP/3', 'training-data/setQ/1', 'training-data/setR/2',
           'training-data/setS/1']
    assert ('[mnfinder] val: 4 of the 8 training-data images (--val-from-train 4, --seed 0): '
            + ', '.join(val) + '\n') in printed
    assert '[mnfinder] train: 4 images, 4 nuclei' in printed
    assert '[mnfinder] val: 4 images, 4 nuclei' in printed
    assert '[mnfinder] test: 2 images, 2 nuclei' in printed
    sources = {'train': ['training-data/setP/1', 'training-data/setP/2', 'training-data/setQ/2',
                         'training-data/setR/1'],
               'val': val,
               'test': ['validation-data/setP/1', 'validation-data/setQ/9']}
    for split, srcs in sources.items():
        stems = [f'{split}_{s.split("/")[1]}_{s.split("/")[2]}' for s in srcs]
        coco = json.loads((out / 'annotations' / f'{split}.json').read_text())
        assert [im['file_name'] for im in coco['images']] == [f'{s}.png' for s in stems]
        for folder, ext in (('img_dir', 'png'), ('ann_dir', 'png'), ('inst_dir', 'png'),
                            ('points', 'csv')):
            assert sorted(os.listdir(out / folder / split)) == [f'{s}.{ext}' for s in stems]
        # every output image holds the grey level of the source image it names
        for stem, src in zip(stems, srcs):
            assert read_image(str(out / 'img_dir' / split / f'{stem}.png'))[0, 0, 0] == \
                level[tuple(src.split('/'))], stem
    # val and train are disjoint and together are training-data; test is validation-data
    assert not set(sources['val']) & set(sources['train'])
    assert sorted(sources['val'] + sources['train']) == sorted(
        f'training-data/{s}/{n}' for s, names in TRAIN_SETS.items() for n in names)
    # the same call writes the same split; another seed another one (test_choose_val)
    stats = mnf.convert(str(tmp_path / 'raw'), str(tmp_path / 'again'), progress=False)
    assert {s: st['sources'] for s, st in stats.items()} == sources
    stats = mnf.convert(str(tmp_path / 'raw'), str(tmp_path / 'seed1'), progress=False,
                        val_from_train=5, seed=1)
    assert stats['val']['sources'] == ['training-data/setP/1', 'training-data/setP/3',
                                       'training-data/setQ/2', 'training-data/setR/2',
                                       'training-data/setS/1']
    assert stats['train']['sources'] == ['training-data/setP/2', 'training-data/setQ/1',
                                         'training-data/setR/1']
    assert stats['test']['sources'] == sources['test']


def test_val_from_train_errors(tmp_path):
    _split_tree(str(tmp_path / 'raw'))
    # K >= 1: val must not fall back on the test split
    for k in (0, -1):
        with pytest.raises(ValueError, match=rf'--val-from-train must be >= 1, got {k}: the '
                           r'validation split .* must not be the test split'):
            mnf.convert(str(tmp_path / 'raw'), str(tmp_path / 'o'), progress=False,
                        val_from_train=k)
    # 8 training images: train keeps one, so K <= 7
    with pytest.raises(ValueError, match=r'--val-from-train 8: only 8 training-data images, '
                       r'so at most 7 can go to val'):
        mnf.convert(str(tmp_path / 'raw'), str(tmp_path / 'o'), progress=False,
                    val_from_train=8)
    with pytest.raises(ValueError, match=r'--val-from-train must be >= 1, got 0'):
        mnf.main(['--root', str(tmp_path / 'raw'), '--out', str(tmp_path / 'o'),
                  '--val-from-train', '0'])
    # one training set folder of one image: nothing can go to val
    with pytest.raises(ValueError, match=r'only 1 training-data images, so at most 0'):
        mnf.convert(str(tmp_path / 'raw' / 'training-data' / 'setS'), str(tmp_path / 'o'),
                    progress=False, val_from_train=1)
    # a validation-data folder alone still refuses K < 1
    with pytest.raises(ValueError, match=r'must be >= 1'):
        mnf.convert(str(tmp_path / 'raw' / 'validation-data'), str(tmp_path / 'o'),
                    progress=False, val_from_train=0)
    assert not (tmp_path / 'o').exists()  # refused before anything is written
