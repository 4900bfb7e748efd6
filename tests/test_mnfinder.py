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
    """train: setA/1 (uint16, 3 nuclei + 2 micronuclei); val: setB/7 (uint8, 1 black
    nucleus, no micronucleus); test-data: a corrupt file that must never be read."""
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
    assert mnf.main(['--root', str(tmp_path / 'raw'), '--out', str(out)]) == 0
    printed = capsys.readouterr().out
    assert 'skipping held-out split' in printed and 'test-data' in printed
    assert 'train: 1 images, 3 nuclei, 2 micronuclei' in printed
    assert 'val: 1 images, 1 nuclei, 0 micronuclei' in printed

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

    val = json.loads((out / 'annotations' / 'val.json').read_text())
    # rows 10-12 cols 10-13: [10, 14) x [10, 13), centre (12, 11.5)
    assert [(a['bbox'], a['point']) for a in val['annotations']] == [([10, 10, 4, 3], [12.0, 11.5])]

    # images: grey tif -> to_uint8 -> RGB (the white .png preview is not used)
    rgb = read_image(str(out / 'images' / 'train_setA_1.png'))
    assert np.array_equal(rgb, np.repeat(to_uint8(img1)[..., None], 3, 2))
    assert np.array_equal(read_image(str(out / 'img_dir' / 'val' / 'val_setB_7.png'))[..., 0], img2)

    inst, sem = _expected_train_maps()
    assert np.array_equal(read_instance_map(str(out / 'inst_dir' / 'train' / 'train_setA_1.png')), inst)
    assert np.array_equal(read_image(str(out / 'ann_dir' / 'train' / 'train_setA_1.png'), 1), sem)
    pts, labels = read_points(str(out / 'points' / 'train' / 'train_setA_1.csv'))
    assert labels.tolist() == [0, 0, 0, 1, 1]
    assert np.allclose(pts, [a['point'] for a in anns], atol=0.005)  # CSV keeps 2 decimals
    assert not (out / 'img_dir' / 'test').exists()


def test_convert_options(tmp_path, capsys):
    _fixture(str(tmp_path / 'raw'))
    stats = mnf.convert(str(tmp_path / 'raw'), str(tmp_path / 'o1'), box_size=8,
                        progress=False)
    train = json.loads((tmp_path / 'o1' / 'annotations' / 'train.json').read_text())
    b = train['annotations'][1]  # point (32, 32) -> 8x8 box from 32 - 4 = 28
    assert b['bbox'] == [28, 28, 8, 8] and b['area'] == 64
    # --min-area 5: both 2x2 micronuclei (4 px) dropped, the 6 px blob kept; the nucleus
    # then keeps all 120 px: rows 5-14 cols 8-19, centroid = box centre (14, 10)
    stats = mnf.convert(str(tmp_path / 'raw'), str(tmp_path / 'o2'), min_area=5,
                        progress=False)
    assert stats['train'] == dict(images=1, nucleus=3, micronucleus=0, dropped_small=2,
                                  covered=0)
    a = json.loads((tmp_path / 'o2' / 'annotations' / 'train.json').read_text())['annotations']
    assert a[0]['area'] == 120 and a[0]['point'] == [14.0, 10.0]
    # --instances colour: N2's two blobs are one nucleus, both micronuclei one object
    stats = mnf.convert(str(tmp_path / 'raw'), str(tmp_path / 'o3'), split_components=False,
                        progress=False)
    assert (stats['train']['nucleus'], stats['train']['micronucleus']) == (2, 1)
    # a single set folder can be converted; its split comes from the parent folder
    stats = mnf.convert(str(tmp_path / 'raw' / 'validation-data' / 'setB'),
                        str(tmp_path / 'o4'), progress=False)
    assert list(stats) == ['val']


def test_convert_errors(tmp_path):
    raw = tmp_path / 'raw'
    _fixture(str(raw))
    with pytest.raises(ValueError, match=r'test-data split is held out'):
        mnf.convert(str(raw / 'test-data'), str(tmp_path / 'o'), progress=False)
    with pytest.raises(ValueError, match=r'held out'):
        mnf.convert(str(raw / 'test-data' / 'setC'), str(tmp_path / 'o'), progress=False)
    with pytest.raises(FileNotFoundError, match=r'no training-data or validation-data'):
        mnf.convert(str(tmp_path), str(tmp_path / 'o'), progress=False)
    set_a = raw / 'training-data' / 'setA'
    # mask of a different size
    Image.fromarray(np.zeros((32, 64, 4), np.uint8)).save(set_a / 'mn_masks' / '1.png')
    with pytest.raises(ValueError,
                       match=r'mn_masks/1\.png: mask is 64x32 but image .*1\.tif is 64x64'):
        mnf.convert(str(raw), str(tmp_path / 'o'), progress=False)
    # an RGB mask (no alpha)
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(set_a / 'mn_masks' / '1.png')
    with pytest.raises(ValueError, match=r'mn_masks/1\.png: expected an RGBA instance mask'):
        mnf.convert(str(raw), str(tmp_path / 'o'), progress=False)
    # image without masks
    os.remove(set_a / 'mn_masks' / '1.png')
    with pytest.raises(FileNotFoundError,
                       match=r'mn_masks/1\.png: mask of image .*1\.tif not found'):
        mnf.convert(str(raw), str(tmp_path / 'o'), progress=False)
    # unreadable image
    _fixture(str(tmp_path / 'raw2'))
    (tmp_path / 'raw2' / 'training-data' / 'setA' / 'images' / '1.tif').write_bytes(b'junk')
    with pytest.raises(ValueError, match=r'setA/images/1\.tif: corrupt or unreadable'):
        mnf.convert(str(tmp_path / 'raw2'), str(tmp_path / 'o'), progress=False)
    # mask without image
    os.remove(tmp_path / 'raw2' / 'training-data' / 'setA' / 'images' / '1.tif')
    tifffile.imwrite(tmp_path / 'raw2' / 'training-data' / 'setA' / 'images' / '2.tif',
                     np.zeros((64, 64), np.uint8))
    for m in ('nucleus_masks', 'mn_masks'):
        Image.fromarray(np.zeros((64, 64, 4), np.uint8)).save(
            tmp_path / 'raw2' / 'training-data' / 'setA' / m / '2.png')
    with pytest.raises(FileNotFoundError, match=r'nucleus_masks/1\.png: mask without image'):
        mnf.convert(str(tmp_path / 'raw2'), str(tmp_path / 'o'), progress=False)


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
    val = stats['val']
    assert val['images'] == 1 and val['covered'] == 0
    assert (val['nucleus'], val['micronucleus']) == (expected['nucleus'], expected['micronucleus'])
    # one colour can hold several objects (micronuclei share their parent cell's colour)
    assert val['micronucleus'] > colours['micronucleus'] and val['nucleus'] >= colours['nucleus']
    coco = json.loads((tmp_path / 'out' / 'annotations' / 'val.json').read_text())
    assert len(coco['annotations']) == expected['nucleus'] + expected['micronucleus']


def test_same_set_and_image_name_in_both_splits_are_two_images(tmp_path):
    """mnfinder's training-data and validation-data both hold e.g. 2022-10-14_U2OS/1.tif,
    different images: each keeps its own file, named after its split."""
    img1, _ = _fixture(str(tmp_path / 'raw'))
    other = np.full((64, 64), 40, np.uint8)
    other[10:20, 10:20] = 200
    _write_set(osp.join(str(tmp_path / 'raw'), 'validation-data', 'setA'), '1', other,
               _rgba(64, 64, [((255, 0, 0), slice(10, 20), slice(10, 20))]),
               _rgba(64, 64, []))
    out = tmp_path / 'out'
    assert mnf.main(['--root', str(tmp_path / 'raw'), '--out', str(out)]) == 0
    val = json.loads((out / 'annotations' / 'val.json').read_text())
    assert sorted(im['file_name'] for im in val['images']) == ['val_setA_1.png',
                                                                'val_setB_7.png']
    assert np.array_equal(read_image(str(out / 'images' / 'val_setA_1.png'))[..., 0], other)
    assert not np.array_equal(read_image(str(out / 'images' / 'train_setA_1.png'))[..., 0],
                              other)
