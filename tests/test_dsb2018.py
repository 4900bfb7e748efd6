"""Tests of tools/dataset_converters/dsb2018.py on a fixture written in the Kaggle stage1
layout, on the real DSB2018 sample when the shared data is on disk, and of the DSB2018
dataset configs on the converted fixture."""
import importlib.util
import json
import os
import os.path as osp
import re
import warnings

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from projects.common.io import read_image, read_instance_map, read_points, to_uint8

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
_spec = importlib.util.spec_from_file_location(
    'dsb2018_converter', osp.join(REPO, 'tools', 'dataset_converters', 'dsb2018.py'))
dsb = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(dsb)

SHARED = os.environ.get('MMHISTO_SHARED_DATA', osp.join(REPO, '..', 'shared', 'data'))
H, W = 32, 40


def _mask(rows, cols, value=255):
    m = np.zeros((H, W), np.uint8)
    m[rows, cols] = value
    return m


def _disk(r0, c0, radius):
    rr, cc = np.mgrid[:H, :W]
    return (((rr - r0) ** 2 + (cc - c0) ** 2) <= radius ** 2).astype(np.uint8) * 255


def _l_shape():
    m = np.zeros((H, W), np.uint8)
    m[20:23, 5] = 255   # rows 20-22 of column 5
    m[22, 6:8] = 255    # row 22, columns 6-7
    return m


def _write_sample(root, image_id, img, masks=None):
    """Kaggle layout: <root>/<id>/images/<id>.png and <root>/<id>/masks/<name>.png."""
    os.makedirs(osp.join(root, image_id, 'images'))
    Image.fromarray(img).save(osp.join(root, image_id, 'images', image_id + '.png'))
    if masks is not None:
        os.makedirs(osp.join(root, image_id, 'masks'))
        for name, m in masks.items():
            Image.fromarray(m).save(osp.join(root, image_id, 'masks', name + '.png'))


def _rgba(seed):
    rgba = np.random.default_rng(seed).integers(0, 256, (H, W, 4)).astype(np.uint8)
    rgba[..., 3] = 255
    return rgba


def _fixture(root):
    """a1: RGBA, 3 nuclei; b2: RGB, 2 overlapping squares + a disk + an empty mask;
    c3: RGBA without masks folder (unlabeled). Returns the three images."""
    a1, b2, c3 = _rgba(1), _rgba(2)[..., :3].copy(), _rgba(3)
    _write_sample(root, 'a1', a1, {
        'm1': _mask(slice(1, 3), slice(3, 5)),       # 2x2 square rows 1-2, cols 3-4
        'm2': _mask(slice(10, 15), slice(20, 28)),   # 5x8 rectangle rows 10-14, cols 20-27
        'm3': _l_shape()})
    _write_sample(root, 'b2', b2, {
        'x_first': _mask(slice(5, 10), slice(5, 10)),    # rows/cols 5-9 (25 px)
        'y_second': _mask(slice(8, 12), slice(8, 12)),   # rows/cols 8-11, overlaps 2x2
        'y_third': _disk(20, 30, 3),
        'z_empty': np.zeros((H, W), np.uint8)})
    _write_sample(root, 'c3', c3)
    return a1, b2, c3


def _fixture_with_test(root):
    """_fixture plus d4 (RGB, one 3x4 nucleus): 3 labelled images, enough for train, val and
    test with the default fractions."""
    images = _fixture(root)
    _write_sample(root, 'd4', _rgba(4)[..., :3].copy(),
                  {'n1': _mask(slice(2, 5), slice(6, 10))})   # rows 2-4, cols 6-9
    return images


def _convert(root, out, **kw):
    with pytest.warns(UserWarning, match=re.escape('z_empty.png') + '.*empty mask'):
        return dsb.convert(str(root), str(out), progress=False, **kw)


def _coco(out, split):
    return json.loads((out / 'annotations' / f'{split}.json').read_text())


def _anns_of(out, image_id):
    """(split, annotations) of an image, looked up in train.json, val.json and test.json."""
    for split in ('train', 'val', 'test'):
        if not (out / 'annotations' / f'{split}.json').exists():
            continue
        coco = _coco(out, split)
        for img in coco['images']:
            if img['file_name'] == image_id + '.png':
                return split, [a for a in coco['annotations'] if a['image_id'] == img['id']]
    raise KeyError(image_id)


def test_convert_fixture(tmp_path):
    a1, b2, c3 = _fixture(str(tmp_path / 'raw'))
    out = tmp_path / 'out'
    res = _convert(tmp_path / 'raw', out)
    # 2 labelled images, val fraction 0.1: round(0.2) = 0, raised to 1 -> one image each;
    # which one is the first index of default_rng(0).permutation(2) over ['a1', 'b2'].
    # test fraction 0.1 would be raised to 1 too, but train keeps one: no test split
    val_id = ['a1', 'b2'][np.random.default_rng(0).permutation(2)[0]]
    train_id = 'b2' if val_id == 'a1' else 'a1'
    assert res['splits'] == dict(train=[train_id], val=[val_id], unlabeled=['c3'])
    assert not (out / 'annotations' / 'test.json').exists()
    st = res['stats']
    # b2: x_first and y_second share rows 8-9, cols 8-9 = 4 px; one empty mask
    b2_split = 'val' if val_id == 'b2' else 'train'
    assert st[b2_split] == dict(images=1, nuclei=3, overlap_px=4, images_with_overlap=1,
                                empty_masks=1, covered_masks=0)
    assert st['unlabeled']['images'] == 1 and st['unlabeled']['nuclei'] == 0

    coco = _coco(out, 'train')
    assert coco['categories'] == [dict(id=1, name='nucleus')]
    # continuous pixel coordinates: pixel (r, c) is centred at (c + 0.5, r + 0.5)
    split, anns = _anns_of(out, 'a1')
    assert [a['category_id'] for a in anns] == [1, 1, 1]
    # m1: 2x2 at rows 1-2, cols 3-4 -> box x 3..5, y 1..3 = [3, 1, 2, 2], centroid (4, 2)
    assert anns[0]['bbox'] == [3, 1, 2, 2] and anns[0]['point'] == [4.0, 2.0]
    assert anns[0]['area'] == 4
    # m2: rows 10-14, cols 20-27: [20, 10, 8, 5]; centre x (20 + 28) / 2 = 24, y 12.5
    assert anns[1]['bbox'] == [20, 10, 8, 5] and anns[1]['point'] == [24.0, 12.5]
    assert anns[1]['area'] == 40
    # m3 (L): columns 5, 5, 5, 6, 7 -> mean 5.6 + 0.5 = 6.1; rows 20, 21, 22, 22, 22 ->
    # mean 21.4 + 0.5 = 21.9; box cols 5-7, rows 20-22 -> [5, 20, 3, 3]
    assert anns[2]['bbox'] == [5, 20, 3, 3] and anns[2]['area'] == 5
    assert anns[2]['point'] == pytest.approx([6.1, 21.9], abs=1e-3)

    _, anns = _anns_of(out, 'b2')
    # x_first lost rows 8-9 x cols 8-9 to y_second (later mask wins): 25 - 4 = 21 px; its
    # column sum 5 * (5+6+7+8+9) - 2 * (8+9) = 175 - 34 = 141 -> x = 141/21 + 0.5, y alike;
    # the box keeps rows/cols 5-9 (row 9 still has cols 5-7)
    assert anns[0]['bbox'] == [5, 5, 5, 5] and anns[0]['area'] == 21
    assert anns[0]['point'] == pytest.approx([141 / 21 + 0.5] * 2, abs=1e-3)
    # y_second whole: rows/cols 8-11 -> [8, 8, 4, 4], centre (10, 10)
    assert anns[1]['bbox'] == [8, 8, 4, 4] and anns[1]['point'] == [10.0, 10.0]
    # disk of radius 3 centred on pixel (20, 30): 29 pixels (Gauss circle N(3) = 29),
    # symmetric -> centroid (30.5, 20.5); box cols 27-33, rows 17-23
    assert anns[2]['bbox'] == [27, 17, 7, 7] and anns[2]['area'] == 29
    assert anns[2]['point'] == [30.5, 20.5]

    # images: RGBA -> RGB (alpha dropped), RGB kept; unlabeled image in its own split
    assert np.array_equal(read_image(str(out / 'images' / 'a1.png')), a1[..., :3])
    assert np.array_equal(read_image(str(out / 'img_dir' / b2_split / 'b2.png')), b2)
    assert np.array_equal(read_image(str(out / 'img_dir' / 'unlabeled' / 'c3.png')),
                          c3[..., :3])
    unl = _coco(out, 'unlabeled')
    assert unl['images'] == [dict(id=1, file_name='c3.png', height=H, width=W)]
    assert unl['annotations'] == []
    for folder, ext in (('ann_dir', 'png'), ('inst_dir', 'png'), ('points', 'csv')):
        assert not (out / folder / 'unlabeled').exists()
        assert not (out / folder / 'train' / f'c3.{ext}').exists()

    # instance map: id k = k-th mask file in name order; the empty mask (k = 4) is absent
    inst = np.zeros((H, W), np.int32)
    inst[5:10, 5:10] = 1
    inst[8:12, 8:12] = 2
    inst[_disk(20, 30, 3) > 0] = 3
    assert np.array_equal(read_instance_map(str(out / 'inst_dir' / b2_split / 'b2.png')), inst)
    sem = read_image(str(out / 'ann_dir' / b2_split / 'b2.png'), channels=1)
    assert np.array_equal(sem, (inst > 0).astype(np.uint8))
    assert sem.sum() == 21 + 16 + 29  # 66 nucleus pixels, labelled 1
    a1_split = 'train' if b2_split == 'val' else 'val'
    pts, labels = read_points(str(out / 'points' / a1_split / 'a1.csv'))
    assert labels.tolist() == [0, 0, 0]
    assert np.allclose(pts, [[4.0, 2.0], [24.0, 12.5], [6.1, 21.9]], atol=0.005)


def test_convert_options(tmp_path, capsys):
    _fixture(str(tmp_path / 'raw'))
    # --box-size 8: 8x8 boxes centred on the centroid, not clipped: m1 (4, 2) -> [0, -2, 8, 8]
    _convert(tmp_path / 'raw', tmp_path / 'o1', box_size=8)
    _, anns = _anns_of(tmp_path / 'o1', 'a1')
    assert anns[0]['bbox'] == [0, -2, 8, 8] and anns[0]['area'] == 64
    assert anns[0]['point'] == [4.0, 2.0]
    # --val-fraction 0 --test-fraction 0: everything labelled is train, no val / test.json
    res = _convert(tmp_path / 'raw', tmp_path / 'o2', val_fraction=0.0, test_fraction=0.0)
    assert res['splits'] == dict(train=['a1', 'b2'], unlabeled=['c3'])
    assert sorted(os.listdir(tmp_path / 'o2' / 'annotations')) == ['train.json',
                                                                    'unlabeled.json']
    # --unlabeled: every image unlabeled, the 3 + 4 mask files ignored (and counted)
    res = dsb.convert(str(tmp_path / 'raw'), str(tmp_path / 'o3'), unlabeled=True,
                      progress=False)
    assert res['splits'] == dict(unlabeled=['a1', 'b2', 'c3'])
    assert res['ignored']['masks_unlabeled'] == 7
    assert sorted(os.listdir(tmp_path / 'o3' / 'annotations')) == ['unlabeled.json']
    # the CLI prints a summary per split; --val-fraction 0 --test-fraction 0.5 over 2
    # images: round(1.0) = 1 test image, the first of default_rng(3).permutation(2) =
    # [1, 0] -> b2 (3 nuclei), a1 trains
    with pytest.warns(UserWarning, match='z_empty'):
        assert dsb.main(['--root', str(tmp_path / 'raw'), '--out', str(tmp_path / 'o4'),
                         '--val-fraction', '0', '--test-fraction', '0.5',
                         '--seed', '3']) == 0
    printed = capsys.readouterr().out
    assert '[dsb2018] test: 1 images, 3 nuclei;' in printed
    assert '[dsb2018] train: 1 images, 3 nuclei;' in printed
    assert '[dsb2018] val:' not in printed
    assert sorted(os.listdir(tmp_path / 'o4' / 'img_dir' / 'test')) == ['b2.png']
    assert 'unlabeled: 1 images (no annotation files)' in printed
    assert '4 pixels covered by >= 2 masks in 1 images' in printed
    assert '1 empty masks' in printed


def test_split_ids_is_seeded_and_nested_in_the_permutation():
    ids = [f'id{i:02d}' for i in range(20)]
    s0 = dsb.split_ids(ids[::-1], val_fraction=0.25, seed=0, test_fraction=0.0)
    assert s0 == dsb.split_ids(ids, val_fraction=0.25, seed=0, test_fraction=0.0)
    # 0.25 * 20 = 5 val ids: the first 5 of default_rng(0).permutation(20) over sorted ids
    perm = np.random.default_rng(0).permutation(20)
    assert s0['val'] == sorted(ids[i] for i in perm[:5]) and s0['test'] == []
    assert sorted(s0['train'] + s0['val']) == ids and len(s0['train']) == 15
    assert dsb.split_ids(ids, 0.25, seed=1, test_fraction=0.0)['val'] != s0['val']
    # val and test fractions of 0.1 with 67 + 67 of 670 images, like DSB2018 stage1_train
    s670 = dsb.split_ids([str(i) for i in range(670)], 0.1, 0)
    assert [len(s670[k]) for k in ('train', 'val', 'test')] == [536, 67, 67]
    assert dsb.split_ids(['a'], 0.5, 0) == dict(train=['a'], val=[], test=[])
    with pytest.raises(ValueError, match='--val-fraction'):
        dsb.split_ids(ids, 1.0, 0)


def test_split_ids_three_way_sizes_and_ids():
    ids = [f'id{i:02d}' for i in range(10)]
    # n = 10, val 0.2 -> round(2.0) = 2; test 0.25 -> 2.5 rounds half up to 3 (Python's
    # round(2.5) would give 2); train 10 - 2 - 3 = 5.
    # default_rng(0).permutation(10) = [4, 6, 2, 7, 3, 5, 9, 0, 8, 1]: val = ids 4, 6,
    # test = the next three, ids 2, 7, 3; train = 0, 1, 5, 8, 9
    s0 = dsb.split_ids(ids, val_fraction=0.2, seed=0, test_fraction=0.25)
    assert s0 == dict(val=['id04', 'id06'], test=['id02', 'id03', 'id07'],
                      train=['id00', 'id01', 'id05', 'id08', 'id09'])
    # disjoint and covering: every id in exactly one split
    assert sorted(s0['train'] + s0['val'] + s0['test']) == ids
    # reproducible: same seed (any input order) -> same split; seed 1 permutes
    # [8, 4, 7, 0, 1, 2, 5, 9, 6, 3]: val = ids 8, 4; test = 7, 0, 1
    assert dsb.split_ids(ids[::-1], 0.2, 0, 0.25) == s0
    assert dsb.split_ids(ids, 0.2, 1, 0.25) == dict(
        val=['id04', 'id08'], test=['id00', 'id01', 'id07'],
        train=['id02', 'id03', 'id05', 'id06', 'id09'])
    # val does not depend on the test fraction (test takes the ids after val's)
    assert dsb.split_ids(ids, 0.2, 0, 0.0) == dict(
        val=['id04', 'id06'], test=[], train=sorted(set(ids) - {'id04', 'id06'}))
    # n = 3 with 0.1 / 0.1: round(0.3) = 0 each, raised to 1; permutation(3) = [2, 0, 1]
    # over ['a', 'b', 'c'] -> val c, test a, train b
    assert dsb.split_ids(['c', 'a', 'b'], 0.1, 0, 0.1) == dict(train=['b'], val=['c'],
                                                               test=['a'])
    # n = 2: train keeps one, val gets the other, nothing is left for test
    assert dsb.split_ids(['a', 'b'], 0.1, 0, 0.1) == dict(train=['b'], val=['a'], test=[])
    # train keeps one: n = 10 with 0.45 / 0.45 -> val round(4.5) = 5, test 5 capped to 4
    s = dsb.split_ids(ids, 0.45, 0, 0.45)
    assert [len(s[k]) for k in ('train', 'val', 'test')] == [1, 5, 4]
    with pytest.raises(ValueError, match='--test-fraction must be in'):
        dsb.split_ids(ids, 0.1, 0, 1.0)
    with pytest.raises(ValueError, match=r'--val-fraction 0.5 \+ --test-fraction 0.5'):
        dsb.split_ids(ids, 0.5, 0, 0.5)


def test_convert_writes_the_test_split_in_both_layouts(tmp_path):
    _fixture_with_test(str(tmp_path / 'raw'))
    out = tmp_path / 'out'
    res = _convert(tmp_path / 'raw', out)
    # 3 labelled images ['a1', 'b2', 'd4'], permutation(3) = [2, 0, 1]: val d4, test a1
    assert res['splits'] == dict(train=['b2'], val=['d4'], test=['a1'], unlabeled=['c3'])
    # a1 (3 nuclei, no overlap) is written to the test split of both layouts, nowhere else
    assert res['stats']['test'] == dict(images=1, nuclei=3, overlap_px=0,
                                        images_with_overlap=0, empty_masks=0,
                                        covered_masks=0)
    coco = _coco(out, 'test')
    assert [i['file_name'] for i in coco['images']] == ['a1.png']
    assert [a['bbox'] for a in coco['annotations']] == [[3, 1, 2, 2], [20, 10, 8, 5],
                                                       [5, 20, 3, 3]]
    for folder, ext in (('img_dir', 'png'), ('ann_dir', 'png'), ('inst_dir', 'png'),
                        ('points', 'csv')):
        assert sorted(os.listdir(out / folder / 'test')) == [f'a1.{ext}']
        assert sorted(os.listdir(out / folder / 'train')) == [f'b2.{ext}']
        assert sorted(os.listdir(out / folder / 'val')) == [f'd4.{ext}']
    # d4: 3x4 nucleus rows 2-4, cols 6-9 -> 12 pixels labelled 1 in val
    assert read_image(str(out / 'ann_dir' / 'val' / 'd4.png'), channels=1).sum() == 12
    assert np.unique(read_instance_map(str(out / 'inst_dir' / 'test' / 'a1.png'))).tolist() \
        == [0, 1, 2, 3]


def test_merge_masks_later_mask_wins_and_reports_covered(tmp_path):
    first, second = str(tmp_path / 'first.png'), str(tmp_path / 'second.png')
    Image.fromarray(_mask(slice(0, 2), slice(0, 2))).save(first)        # 2x2
    Image.fromarray(_mask(slice(0, 3), slice(0, 3), value=1)).save(second)  # 3x3, 0/1 mask
    with pytest.warns(UserWarning, match=re.escape(first) + '.*covered by later masks'):
        res = dsb.merge_masks([first, second], (H, W), 'img.png')
    assert res['covered'] == [first] and res['empty'] == []
    assert res['overlap_px'] == 4  # the 2x2 square lies under the 3x3 one
    assert np.array_equal(np.unique(res['inst']), [0, 2]) and (res['inst'] == 2).sum() == 9


def test_convert_errors(tmp_path):
    def fresh(name):
        root = tmp_path / name
        _fixture(str(root))
        return root

    def fails(root, exc, pattern):
        with pytest.raises(exc, match=pattern), warnings.catch_warnings():
            warnings.simplefilter('ignore')  # z_empty.png may be reached before the error
            dsb.convert(str(root), str(tmp_path / 'o'), progress=False)

    root = fresh('size')
    Image.fromarray(np.zeros((H, W + 1), np.uint8)).save(root / 'a1' / 'masks' / 'm2.png')
    fails(root, ValueError, r'a1/masks/m2\.png: mask is 41x32 .*image .*a1\.png is 40x32')
    root = fresh('nonbinary')
    m = _mask(slice(1, 3), slice(3, 5))
    m[1, 3] = 128  # an anti-aliased edge: values 0, 128, 255
    Image.fromarray(m).save(root / 'a1' / 'masks' / 'm1.png')
    fails(root, ValueError, r'a1/masks/m1\.png: mask is not binary: 3 distinct values')
    root = fresh('rgbmask')
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(root / 'a1' / 'masks' / 'm1.png')
    fails(root, ValueError, r'a1/masks/m1\.png: expected a single-channel mask')
    root = fresh('corrupt')
    (root / 'b2' / 'masks' / 'y_second.png').write_bytes(b'not a png')
    fails(root, ValueError, r'b2/masks/y_second\.png: corrupt or unreadable')
    root = fresh('alpha')
    rgba = _rgba(1)
    rgba[0, :5, 3] = 0  # 5 transparent pixels
    Image.fromarray(rgba).save(root / 'a1' / 'images' / 'a1.png')
    fails(root, ValueError, r'a1/images/a1\.png: alpha channel is not opaque \(5 of 1280')
    root = fresh('noimage')
    os.rename(root / 'b2' / 'images' / 'b2.png', root / 'b2' / 'images' / 'other.png')
    fails(root, FileNotFoundError, r'b2/images/b2\.png: image of DSB2018 sample')
    root = fresh('emptymasks')
    for f in os.listdir(root / 'a1' / 'masks'):
        os.remove(root / 'a1' / 'masks' / f)
    fails(root, FileNotFoundError, r'a1/masks: masks folder holds no PNG mask')
    with pytest.raises(FileNotFoundError, match=r'nowhere: DSB2018 root folder not found'):
        dsb.convert(str(tmp_path / 'nowhere'), str(tmp_path / 'o'), progress=False)
    with pytest.raises(ValueError, match='--box-size'):
        dsb.convert(str(fresh('box')), str(tmp_path / 'o'), box_size=0, progress=False)


@pytest.fixture(scope='module')
def real_sample(tmp_path_factory):
    """The stardist DSB2018 sample (512x512 uint16 + instance mask, 125 nuclei) written in
    the Kaggle layout: 8-bit RGB image, one 0/255 PNG per nucleus."""
    img_path = osp.join(SHARED, 'samples', 'dsb2018_nuclei_img.tif')
    mask_path = osp.join(SHARED, 'samples', 'dsb2018_nuclei_mask.tif')
    if not (osp.isfile(img_path) and osp.isfile(mask_path)):
        pytest.skip(f'real DSB2018 sample not found under {SHARED} (set MMHISTO_SHARED_DATA)')
    import tifffile
    img, gt = tifffile.imread(img_path), tifffile.imread(mask_path).astype(np.int32)
    root = tmp_path_factory.mktemp('dsb_real') / 'raw'
    rgb = np.repeat(to_uint8(img)[..., None], 3, axis=2)
    ids = np.unique(gt[gt > 0])
    _write_sample(str(root), 'real512', rgb,
                  {f'{i:04d}': (gt == i).astype(np.uint8) * 255 for i in ids})
    return root, rgb, gt


def test_real_sample_round_trip(real_sample, tmp_path):
    root, rgb, gt = real_sample
    out = tmp_path / 'out'
    res = dsb.convert(str(root), str(out), val_fraction=0.1, progress=False)
    assert res['splits'] == dict(train=['real512'])  # one labelled image: no val
    assert res['stats']['train'] == dict(images=1, nuclei=125, overlap_px=0,
                                         images_with_overlap=0, empty_masks=0,
                                         covered_masks=0)
    inst = read_instance_map(str(out / 'inst_dir' / 'train' / 'real512.png'))
    # same pixels up to relabelling: the (gt, converted) id pairs form a bijection that
    # maps background to background
    pairs = np.unique(np.stack([gt.ravel(), inst.ravel()], 1), axis=0)
    assert len(pairs) == 126  # 125 nuclei + background
    assert len(np.unique(pairs[:, 0])) == 126 and len(np.unique(pairs[:, 1])) == 126
    assert [0, 0] in pairs.tolist()
    assert np.array_equal(read_image(str(out / 'images' / 'real512.png')), rgb)
    # centroids and tight boxes against scipy (centre of mass + 0.5, find_objects)
    anns = _coco(out, 'train')['annotations']
    assert len(anns) == 125
    conv_ids = np.unique(inst[inst > 0])  # annotation order = ascending converted id
    gt_of = dict((int(b), int(a)) for a, b in pairs)
    slices = ndimage.find_objects(gt)
    for ann, cid in zip(anns, conv_ids):
        g = gt_of[int(cid)]
        cy, cx = ndimage.center_of_mass(gt == g)
        assert ann['point'] == pytest.approx([cx + 0.5, cy + 0.5], abs=1e-3)
        rs, cs = slices[g - 1]
        assert ann['bbox'] == [cs.start, rs.start, cs.stop - cs.start, rs.stop - rs.start]
        assert ann['area'] == int((gt == g).sum())


def test_dsb2018_configs_read_the_converted_splits(tmp_path):
    """The dataset configs point train, val and test at the converter's train, val and test
    splits (model selection on val never sees the test images)."""
    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    import projects  # noqa: F401
    _fixture_with_test(str(tmp_path / 'raw'))
    out = tmp_path / 'out'
    res = _convert(tmp_path / 'raw', out)
    # permutation(3) = [2, 0, 1] over ['a1', 'b2', 'd4'] (see the test above)
    assert res['splits'] == dict(train=['b2'], val=['d4'], test=['a1'], unlabeled=['c3'])
    want_of = dict(train_dataloader=['b2'], val_dataloader=['d4'], test_dataloader=['a1'])
    for name, scope in (('unet-s5-d16_fcn_2k_dsb2018-256x256.py', 'mmseg'),
                        ('faster-rcnn_r50_fpn_2k_dsb2018.py', 'mmdet')):
        cfg = Config.fromfile(osp.join(REPO, 'configs', 'baselines', name))
        with DefaultScope.overwrite_default_scope(scope):
            if scope == 'mmseg':
                from mmseg.registry import DATASETS
                assert cfg.model.decode_head.num_classes == 2
                assert cfg.model.data_preprocessor.test_cfg == dict(size_divisor=16)
            else:
                from mmdet.registry import DATASETS
                assert cfg.model.roi_head.bbox_head.num_classes == 1
            for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
                ds_cfg = cfg[loader].dataset
                ds_cfg.data_root = str(out) + '/'
                ds = DATASETS.build(ds_cfg)
                ds.full_init()
                got = [osp.splitext(osp.basename(ds.get_data_info(i)['img_path']))[0]
                       for i in range(len(ds))]
                assert got == want_of[loader], (name, loader)
                if scope == 'mmdet':
                    assert tuple(ds.metainfo['classes']) == ('nucleus', )
