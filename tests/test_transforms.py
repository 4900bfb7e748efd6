"""Tests of LoadPointAnnotations, LoadInstanceAnnotations and SparsifyAnnotations inside
real mmdet / mmseg pipelines (the stock transforms come from the registries)."""
import copy
import json
import os.path as osp

import numpy as np
import pytest
from mmengine.dataset import Compose
from mmengine.registry import init_default_scope

import projects.common.datasets  # noqa: F401  (registers the datasets)
import projects.common.transforms  # noqa: F401  (registers the transforms)
from projects.common.io import write_image, write_instance_map, write_points
from projects.common.sparsify import (image_seed, nested_subsets, one_per_patch,
                                      sparsify_label_maps, subset_coco)

W, H = 40, 30  # detection fixture image a.png

# three annotations of a.png: (bbox xywh, point or None, category)
DET_ANNS = [([4, 6, 10, 8], None, 7),        # point = box centre (9, 10)
            ([18, 12, 6, 6], [21.5, 15.0], 3),
            ([30, 2, 8, 8], [33.0, 5.0], 3)]


def _coords_image(h, w):
    """RGB image whose R = column and G = row (to recover crops / flips)."""
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = np.arange(w)[None, :]
    img[..., 1] = np.arange(h)[:, None]
    img[..., 2] = 7
    return img


def _det_fixture(root, anns=DET_ANNS, img_size=(H, W)):
    write_image(osp.join(root, 'images', 'a.png'), _coords_image(*img_size))
    coco = dict(images=[dict(id=1, file_name='a.png', height=H, width=W)],
                categories=[dict(id=3, name='tumour'), dict(id=7, name='mitosis')],
                annotations=[])
    for k, (box, pt, cat) in enumerate(anns):
        a = dict(id=k + 1, image_id=1, category_id=cat, bbox=box, area=box[2] * box[3],
                 iscrowd=0)
        if pt is not None:
            a['point'] = pt
        coco['annotations'].append(a)
    path = osp.join(root, 'annotations', 'train.json')
    import os
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        json.dump(coco, f)
    return coco


def _det_dataset(root, pipeline):
    from mmdet.registry import DATASETS
    init_default_scope('mmdet')
    return DATASETS.build(dict(type='CellDetDataset', data_root=str(root),
                               ann_file='annotations/train.json',
                               data_prefix=dict(img='images/'), pipeline=pipeline))


META = ('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor', 'flip',
        'flip_direction', 'gt_points', 'gt_point_labels')


def test_det_pipeline_flip_moves_points_with_boxes(tmp_path):
    _det_fixture(str(tmp_path))
    ds = _det_dataset(tmp_path, [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations', with_bbox=True),
        dict(type='RandomFlip', prob=1.0, direction='horizontal'),
        dict(type='LoadPointAnnotations'),
        dict(type='PackDetInputs', meta_keys=META)])
    sample = ds[0]['data_samples']
    # horizontal flip of a 40 px wide image: x -> 40 - x, boxes x1' = 40 - x2
    # [4, 6, 14, 14] -> [26, 6, 36, 14]; [18, 12, 24, 18] -> [16, 12, 22, 18];
    # [30, 2, 38, 10] -> [2, 2, 10, 10]
    assert sample.gt_instances.bboxes.tensor.tolist() == [
        [26, 6, 36, 14], [16, 12, 22, 18], [2, 2, 10, 10]]
    assert sample.gt_instances.labels.tolist() == [1, 0, 0]  # tumour (id 3) = 0
    # points: (9, 10) -> (31, 10); (21.5, 15) -> (18.5, 15); (33, 5) -> (7, 5)
    assert sample.metainfo['gt_points'].tolist() == [[31, 10], [18.5, 15], [7, 5]]
    assert sample.metainfo['gt_points'].dtype == np.float32
    assert sample.metainfo['gt_point_labels'].tolist() == [1, 0, 0]
    # the image really was flipped: R channel = original column, first column is 39
    assert ds[0]['inputs'][2, 0, 0].item() == 39  # inputs are BGR


def test_det_pipeline_resize_and_crop_keep_points_aligned(tmp_path):
    _det_fixture(str(tmp_path))
    base = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True)]
    init_default_scope('mmdet')
    ds = _det_dataset(tmp_path, [])
    # Resize x2 then flip: x -> 80 - 2x, y -> 2y
    pipe = Compose(base + [dict(type='Resize', scale=(80, 60), keep_ratio=False),
                           dict(type='RandomFlip', prob=1.0),
                           dict(type='LoadPointAnnotations')])
    res = pipe(ds.get_data_info(0))
    assert res['gt_points'].tolist() == [[62, 20], [37, 30], [14, 10]]
    # RandomCrop to 20 px wide: boxes outside the crop are dropped, points must follow
    pipe = Compose(base + [dict(type='RandomCrop', crop_size=(20, 30), allow_negative_crop=True),
                           dict(type='LoadPointAnnotations')])
    offsets = set()
    for seed in range(12):
        np.random.seed(seed)
        res = pipe(ds.get_data_info(0))
        off = -res['homography_matrix'][0, 2]
        offsets.add(float(off))
        assert res['img'][0, 0, 2] == off  # R channel (BGR index 2) of the first column
        # a box [x1, x2) survives if x1 - off < 20 and x2 - off > 0
        boxes = [(4, 14), (18, 24), (30, 38)]
        pts = [(9, 10), (21.5, 15), (33, 5)]
        keep = [i for i, (x1, x2) in enumerate(boxes) if x1 - off < 20 and x2 - off > 0]
        exp = [[min(max(pts[i][0] - off, 0), 20), pts[i][1]] for i in keep]
        assert len(res['gt_bboxes']) == len(keep)
        assert res['gt_points'].tolist() == exp
        assert res['gt_point_labels'].tolist() == [[1, 0, 0][i] for i in keep]
    assert len(offsets) > 3  # several different crops were checked


def test_det_points_checked_against_loaded_image(tmp_path):
    # the JSON says 40x30 (points valid there) but the file is only 20 px wide:
    # the first point beyond x = 20 is point 1 at (21.5, 15)
    _det_fixture(str(tmp_path), img_size=(H, 20))
    ds = _det_dataset(tmp_path, [dict(type='LoadImageFromFile'),
                                 dict(type='LoadAnnotations', with_bbox=True),
                                 dict(type='LoadPointAnnotations')])
    with pytest.raises(ValueError, match=r'images/a\.png: point 1 at \(x=21\.5, y=15\.0\) lies '
                       r'outside the 20x30 image'):
        ds[0]


def test_det_sparsify_matches_tool_and_is_nested(tmp_path):
    anns = [([2 + 6 * k, 3, 4, 4], None, 3 if k % 2 else 7) for k in range(6)]
    coco = _det_fixture(str(tmp_path), anns=anns)
    kept = {}
    for frac in (0.3, 0.5):
        ds = _det_dataset(tmp_path, [
            dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True),
            dict(type='SparsifyAnnotations', fraction=frac, seed=3),
            dict(type='LoadPointAnnotations'),
            dict(type='PackDetInputs', meta_keys=META)])
        s1, s2 = ds[0]['data_samples'], ds[0]['data_samples']  # two "epochs"
        boxes = s1.gt_instances.bboxes.tensor.tolist()
        assert boxes == s2.gt_instances.bboxes.tensor.tolist()
        idx = nested_subsets(6, [frac], image_seed(3, 'a.png'))[frac]
        # round(0.3 * 6) = 2, round(0.5 * 6) = 3 boxes; box k is [2 + 6k, 3, 6 + 6k, 7]
        assert boxes == [[2 + 6 * k, 3, 6 + 6 * k, 7] for k in idx]
        assert s1.metainfo['gt_points'].tolist() == [[4 + 6 * k, 5] for k in idx]
        assert s1.gt_instances.labels.tolist() == [0 if k % 2 else 1 for k in idx]
        # the offline tool keeps the same annotations
        tool = subset_coco(coco, fraction=frac, seed=3)
        assert [a['id'] - 1 for a in tool['annotations']] == idx.tolist()
        kept[frac] = set(idx.tolist())
    assert len(kept[0.3]) == 2 and len(kept[0.5]) == 3 and kept[0.3] <= kept[0.5]


def test_det_sparsify_one_per_patch(tmp_path):
    anns = [([2 + 6 * k, 3 + 4 * (k % 3), 4, 4], None, 7) for k in range(6)]
    _det_fixture(str(tmp_path), anns=anns)
    ds = _det_dataset(tmp_path, [])
    pipe = Compose([dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True),
                    dict(type='LoadPointAnnotations'),
                    dict(type='SparsifyAnnotations', mode='one_per_patch', patch_size=20,
                         overlap=5, seed=1)])
    res = pipe(ds.get_data_info(0))
    pts = np.array([[4 + 6 * k, 5 + 4 * (k % 3)] for k in range(6)], float)
    exp = one_per_patch(pts, (H, W), 20, 5, image_seed(1, 'a.png'))
    assert res['sparsify_kept'].tolist() == exp.tolist()
    assert res['gt_points'].tolist() == pts[exp].tolist()
    assert res['gt_bboxes'].tensor[:, 0].tolist() == [2 + 6 * k for k in exp]
    assert res['gt_ignore_flags'].tolist() == [False] * len(exp)
    assert len(res['instances']) == len(exp)


# ----------------------------------------------------------------- segmentation
SH, SW = 24, 32


def _seg_maps():
    inst = np.zeros((SH, SW), np.int32)
    inst[2:8, 3:10] = 300
    inst[10:16, 12:21] = 1000
    inst[16:23, 24:31] = 65000
    seg = (inst > 0).astype(np.uint8)
    seg[0:2, 28:32] = 255
    return inst, seg


def _seg_fixture(root, name='s1', inst=None, npy=False, points=None):
    i0, seg = _seg_maps()
    inst = i0 if inst is None else inst
    write_image(osp.join(root, 'img_dir', 'train', name + '.png'), _coords_image(SH, SW))
    write_image(osp.join(root, 'ann_dir', 'train', name + '.png'), seg)
    write_instance_map(osp.join(root, 'inst_dir', 'train', name + ('.npy' if npy else '.png')),
                       inst)
    if points is None:
        # centroids (continuous pixel coordinates: a rectangle's centroid is its box
        # centre): rows 2-7 / cols 3-9 -> (3 + 10) / 2 = 6.5, (2 + 8) / 2 = 5.0;
        # rows 10-15 / cols 12-20 -> (16.5, 13.0); rows 16-22 / cols 24-30 -> (27.5, 19.5)
        points = np.array([[6.5, 5.0], [16.5, 13.0], [27.5, 19.5]])
    write_points(osp.join(root, 'points', 'train', name + '.csv'), points,
                 np.arange(len(points)))
    return inst, seg


def _seg_info(root):
    from mmseg.registry import DATASETS
    init_default_scope('mmseg')
    ds = DATASETS.build(dict(
        type='NucleiSegDataset', data_root=str(root), pipeline=[],
        data_prefix=dict(img_path='img_dir/train', seg_map_path='ann_dir/train',
                         inst_path='inst_dir/train', points_path='points/train')))
    return ds.get_data_info(0)


LOAD_SEG = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
            dict(type='LoadInstanceAnnotations')]


def test_seg_pipeline_crop_flip_move_instance_map(tmp_path):
    inst, seg = _seg_fixture(str(tmp_path))
    info = _seg_info(tmp_path)
    pipe = Compose(LOAD_SEG + [dict(type='RandomCrop', crop_size=(16, 16)),
                               dict(type='RandomFlip', prob=1.0, direction='horizontal')])
    pack = Compose([dict(type='PackSegInputs')])
    offsets = set()
    for seed in range(10):
        np.random.seed(seed)
        res = pipe(copy.deepcopy(info))
        # after the flip, the last column holds the crop's first column: R = c0, G = r0
        c0, r0 = int(res['img'][0, -1, 2]), int(res['img'][0, -1, 1])
        offsets.add((r0, c0))
        assert res['gt_instance_map'].dtype == np.int32
        assert np.array_equal(res['gt_instance_map'], np.fliplr(inst[r0:r0 + 16, c0:c0 + 16]))
        assert np.array_equal(res['gt_seg_map'], np.fliplr(seg[r0:r0 + 16, c0:c0 + 16]))
        packed = pack(res)
        assert np.array_equal(packed['data_samples'].gt_sem_seg.data[0].numpy(),
                              res['gt_seg_map'])
    assert len(offsets) > 3


def test_seg_resize_keeps_int32_ids_exact(tmp_path):
    big = np.zeros((SH, SW), np.int32)
    big[4:9, 5:12] = 70000   # does not fit uint16: stored as .npy
    big[12:20, 14:30] = 123456
    _seg_fixture(str(tmp_path), inst=big, npy=True)
    info = _seg_info(tmp_path)  # sets the mmseg scope before the transforms are built
    # mmseg's Resize (mmdet's resizes only gt_seg_map, not every seg field)
    res = Compose(LOAD_SEG + [dict(type='mmseg.Resize', scale=(64, 48), keep_ratio=False)])(
        info)
    # nearest-neighbour x2: every pixel becomes a 2x2 block
    assert res['gt_instance_map'].dtype == np.int32
    assert np.array_equal(res['gt_instance_map'], np.kron(big, np.ones((2, 2), np.int32)))
    assert res['gt_seg_map'].shape == (48, 64)


def test_seg_load_instance_errors(tmp_path):
    _seg_fixture(str(tmp_path), inst=np.zeros((10, 10), np.int32))
    info = _seg_info(tmp_path)  # sets the mmseg scope: before any Compose is built
    with pytest.raises(ValueError, match=r'inst_dir/train/s1\.png: instance map is 10x10 but '
                       r'image .*img_dir/train/s1\.png is 32x24'):
        Compose(LOAD_SEG)(copy.deepcopy(info))
    with pytest.raises(ValueError, match=r'semantic map .*ann_dir/train/s1\.png is 32x24'):
        Compose([dict(type='LoadAnnotations'), dict(type='LoadInstanceAnnotations')])(
            copy.deepcopy(info))
    with pytest.raises(ValueError, match=r'x\.png: no "inst_map_path"'):
        Compose([dict(type='LoadInstanceAnnotations')])(dict(img_path='x.png'))
    # unlabeled images (dataset flag) pass through
    out = Compose([dict(type='LoadInstanceAnnotations')])(
        dict(img_path='x.png', inst_map_path=None, labeled=False))
    assert 'gt_instance_map' not in out


def test_seg_load_points(tmp_path):
    _seg_fixture(str(tmp_path))
    info = _seg_info(tmp_path)
    res = Compose(LOAD_SEG + [dict(type='LoadPointAnnotations')])(copy.deepcopy(info))
    assert res['gt_points'].tolist() == [[6.5, 5.0], [16.5, 13.0], [27.5, 19.5]]
    assert res['gt_points'].dtype == np.float32 and res['gt_point_labels'].dtype == np.int64
    assert res['gt_point_labels'].tolist() == [0, 1, 2]
    # after a flip that recorded no homography the points would be wrong: refuse
    with pytest.raises(ValueError, match=r's1\.png: the image was flipped'):
        Compose(LOAD_SEG + [dict(type='RandomFlip', prob=1.0),
                            dict(type='LoadPointAnnotations')])(copy.deepcopy(info))
    # zero points is valid
    _seg_fixture(str(tmp_path), points=np.zeros((0, 2)))
    res = Compose(LOAD_SEG + [dict(type='LoadPointAnnotations')])(_seg_info(tmp_path))
    assert res['gt_points'].shape == (0, 2)
    # a point outside the 32x24 image names the point file
    _seg_fixture(str(tmp_path), points=np.array([[3.0, 4.0], [40.0, 5.0]]))
    with pytest.raises(ValueError, match=r'points/train/s1\.csv \(image .*s1\.png\): point 1 '
                       r'at \(x=40\.0, y=5\.0\)'):
        Compose(LOAD_SEG + [dict(type='LoadPointAnnotations')])(_seg_info(tmp_path))


def test_seg_sparsify_in_pipeline_matches_tool(tmp_path):
    inst, seg = _seg_fixture(str(tmp_path))
    info = _seg_info(tmp_path)
    pipe = Compose(LOAD_SEG + [dict(type='LoadPointAnnotations'),
                               dict(type='SparsifyAnnotations', fraction=0.5, seed=1)])
    res = pipe(copy.deepcopy(info))
    s = image_seed(1, 's1.png')
    ids = np.array([300, 1000, 65000])
    kept_ids = ids[nested_subsets(3, [0.5], s)[0.5]]  # round(1.5) = 2 of 3 instances
    assert res['sparsify_kept_ids'].tolist() == kept_ids.tolist()
    assert sorted(set(np.unique(res['gt_instance_map'])) - {0}) == kept_ids.tolist()
    removed = np.isin(inst, ids) & ~np.isin(inst, kept_ids)
    exp_seg = seg.copy()
    exp_seg[removed] = 0  # an unannotated cell looks like background; 255 stays
    assert np.array_equal(res['gt_seg_map'], exp_seg)
    pts = np.array([[6.5, 5.0], [16.5, 13.0], [27.5, 19.5]])  # on 300, 1000, 65000
    assert res['gt_points'].tolist() == pts[np.isin(ids, kept_ids)].tolist()
    assert res['gt_point_labels'].tolist() == np.flatnonzero(np.isin(ids, kept_ids)).tolist()
    # same result as the tool's function, and on every call
    tool = sparsify_label_maps(s, 'nested', 0.5, inst_map=inst, seg_map=seg, points=pts)
    assert np.array_equal(tool['inst_map'], res['gt_instance_map'])
    assert np.array_equal(pipe(copy.deepcopy(info))['gt_seg_map'], res['gt_seg_map'])


def test_transforms_registered_in_both_scopes():
    from mmdet.registry import TRANSFORMS as DET
    from mmseg.registry import TRANSFORMS as SEG
    for name in ('LoadPointAnnotations', 'LoadInstanceAnnotations', 'SparsifyAnnotations',
                 'StrictLoadImageFromFile'):
        assert DET.get(name) is SEG.get(name) is not None
    with pytest.raises(ValueError, match='fraction'):
        DET.build(dict(type='SparsifyAnnotations', fraction=0.0))
    with pytest.raises(ValueError, match='mode'):
        SEG.build(dict(type='SparsifyAnnotations', fraction=0.5, mode='random'))


def test_sparsify_plain_arrays_and_tensors():
    import torch
    from mmdet.registry import TRANSFORMS
    t = TRANSFORMS.build(dict(type='SparsifyAnnotations', fraction=0.4, seed=9))
    boxes = np.array([[k, 0, k + 2, 2] for k in range(5)], np.float32)
    idx = nested_subsets(5, [0.4], image_seed(9, 'p.png'))[0.4]  # round(0.4 * 5) = 2
    for make in (np.asarray, torch.as_tensor):
        res = t(dict(img_path='/any/where/p.png', height=10, width=10,
                     gt_bboxes=make(boxes), gt_bboxes_labels=np.arange(5),
                     gt_ignore_flags=np.zeros(5, bool)))
        assert np.asarray(res['gt_bboxes'])[:, 0].tolist() == idx.tolist()
        assert res['gt_bboxes_labels'].tolist() == idx.tolist()
        assert len(res['gt_ignore_flags']) == 2
    with pytest.raises(ValueError, match=r'p\.png: results\["gt_bboxes_labels"\] has 4'):
        t(dict(img_path='p.png', height=10, width=10, gt_bboxes=boxes,
               gt_bboxes_labels=np.arange(4)))


# ----------------------------------------------------------------- StrictLoadImageFromFile
def _strict(**kwargs):
    from mmdet.registry import TRANSFORMS
    init_default_scope('mmdet')
    return TRANSFORMS.build(dict(type='StrictLoadImageFromFile', **kwargs))


def _mmcv_load(path, **kwargs):
    from mmcv.transforms import LoadImageFromFile
    return LoadImageFromFile(**kwargs)(dict(img_path=path))['img']


def _rgb(h=20, w=30, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), np.uint8)


def test_strict_loader_identical_to_mmcv_on_ordinary_files(tmp_path):
    from PIL import Image
    rgb = _rgb()
    png, jpg, grey = (str(tmp_path / n) for n in ('a.png', 'a.jpg', 'g.png'))
    write_image(png, rgb)
    Image.fromarray(rgb).save(jpg, quality=90)
    write_image(grey, rgb[..., 1])
    for path in (png, jpg, grey):
        for kwargs in (dict(), dict(to_float32=True), dict(color_type='grayscale'),
                       dict(imdecode_backend='pillow')):
            res = _strict(**kwargs)(dict(img_path=path))
            ref = _mmcv_load(path, **kwargs)
            assert res['img'].dtype == ref.dtype and np.array_equal(res['img'], ref), \
                (path, kwargs)
            assert res['img_shape'] == res['ori_shape'] == ref.shape[:2]
    # the PNG really is read as BGR: channel 0 = blue = rgb[..., 2]
    assert np.array_equal(_strict()(dict(img_path=png))['img'], rgb[..., ::-1])
    # grey PNG: 3 identical channels equal to the stored grey values
    g = _strict()(dict(img_path=grey))['img']
    assert g.shape == (20, 30, 3)
    assert all(np.array_equal(g[..., c], rgb[..., 1]) for c in range(3))
    # color_type='grayscale' keeps a grey image single-channel, values unchanged
    assert np.array_equal(_strict(color_type='grayscale')(dict(img_path=grey))['img'],
                          rgb[..., 1])


def test_strict_loader_exif_orientation_like_mmcv(tmp_path):
    from PIL import Image
    rgb = _rgb(4, 6)
    for o in range(1, 9):  # all eight EXIF orientations, OpenCV and Pillow decoders
        im = Image.fromarray(rgb)
        exif = im.getexif()
        exif[274] = o
        path = str(tmp_path / f'o{o}.png')
        im.save(path, exif=exif.tobytes())
        for backend in ('cv2', 'pillow'):
            ref = _mmcv_load(path, imdecode_backend=backend)
            res = _strict(imdecode_backend=backend)(dict(img_path=path))['img']
            assert np.array_equal(res, ref), (o, backend)
        # orientation 6 = rotate 90 degrees clockwise: a 4x6 image becomes 6x4 with the
        # first column (top to bottom) = the original bottom row (left to right)
        if o == 6:
            assert res.shape == (6, 4, 3)
            assert np.array_equal(res[:, 0], rgb[-1, :, ::-1])


def test_strict_loader_corrupt_files(tmp_path):
    bad = tmp_path / 'garbage.png'
    bad.write_bytes(b'this is not an image')
    with pytest.raises(ValueError, match=r'garbage\.png: corrupt or unreadable image \(20 bytes; '
                       r'not a recognised image format\)'):
        _strict()(dict(img_path=str(bad)))
    full = str(tmp_path / 'full.png')
    write_image(full, _rgb(40, 40))
    data = open(full, 'rb').read()
    (tmp_path / 'trunc.png').write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match=r'trunc\.png: corrupt or unreadable image'):
        _strict()(dict(img_path=str(tmp_path / 'trunc.png')))
    (tmp_path / 'empty.png').write_bytes(b'')
    with pytest.raises(ValueError, match=r'empty\.png: corrupt or unreadable image \(the file '
                       r'is empty'):
        _strict()(dict(img_path=str(tmp_path / 'empty.png')))
    with pytest.raises(FileNotFoundError, match=r'missing\.png: image file not found'):
        _strict()(dict(img_path=str(tmp_path / 'missing.png')))
    # ignore_empty: a missing or empty file gives None (mmcv's meaning), a corrupt one raises
    assert _strict(ignore_empty=True)(dict(img_path=str(tmp_path / 'missing.png'))) is None
    assert _strict(ignore_empty=True)(dict(img_path=str(tmp_path / 'empty.png'))) is None
    with pytest.raises(ValueError, match=r'trunc\.png: corrupt'):
        _strict(ignore_empty=True)(dict(img_path=str(tmp_path / 'trunc.png')))


def test_strict_loader_channels(tmp_path):
    import tifffile
    rgb = _rgb()
    rgba = np.dstack([rgb, np.full((20, 30), 255, np.uint8)])
    path = str(tmp_path / 'rgba.png')
    write_image(path, rgba)
    with pytest.raises(ValueError, match=r'rgba\.png: image has 4 channels \(shape \(20, 30, 4\)\)'
                       r'.*drop_alpha=True'):
        _strict()(dict(img_path=path))
    # fully opaque alpha + drop_alpha: exactly the RGB image (as BGR)
    assert np.array_equal(_strict(drop_alpha=True)(dict(img_path=path))['img'], rgb[..., ::-1])
    rgba[3, 4, 3] = 128  # one half-transparent pixel
    write_image(path, rgba)
    with pytest.raises(ValueError, match=r'rgba\.png: RGBA image .* not fully opaque \(1 of 600 '
                       r'pixels'):
        _strict(drop_alpha=True)(dict(img_path=path))
    # 2-channel TIFF (OpenCV would silently return only the first channel)
    two = str(tmp_path / 'two.tif')
    tifffile.imwrite(two, np.zeros((5, 6, 2), np.uint8), photometric='minisblack',
                     planarconfig='contig')
    with pytest.raises(ValueError, match=r'two\.tif: image has 2 channels \(shape \(5, 6, 2\)\)'):
        _strict()(dict(img_path=two))
    # a multi-page stack is refused too (OpenCV reads the first page only)
    stack = str(tmp_path / 'stack.tif')
    tifffile.imwrite(stack, np.zeros((4, 5, 6), np.uint16), photometric='minisblack')
    with pytest.raises(ValueError, match=r'stack\.tif: TIFF holds an image stack of shape '
                       r'\(4, 5, 6\)'):
        _strict()(dict(img_path=stack))


def test_strict_loader_rescales_16bit(tmp_path):
    import tifffile
    img = np.arange(10000, dtype=np.uint16).reshape(100, 100)
    path = str(tmp_path / 'u16.tif')
    tifffile.imwrite(path, img)
    out = _strict()(dict(img_path=path))['img']
    assert out.dtype == np.uint8 and out.shape == (100, 100, 3)
    # percentiles of 0..9999 with linear interpolation: 0.5% at 0.005 * 9999 = 49.995,
    # 99.5% at 0.995 * 9999 = 9949.005 -> v maps to floor((v - 49.995) / 9899.01 * 255 + 0.5)
    lo, hi = 49.995, 9949.005
    assert out[0, 0, 0] == 0 and out[0, 49, 0] == 0          # below the low percentile
    assert out[50, 0, 0] == 128                               # 4950.005 / 9899.01 * 255 = 127.51
    assert out[99, 49, 0] == 255 and out[99, 99, 0] == 255    # 9949: 254.9999 -> 255
    exp = np.floor(np.clip((img - lo) / (hi - lo), 0, 1) * 255 + 0.5).astype(np.uint8)
    assert np.array_equal(out[..., 0], exp)
    assert np.array_equal(out[..., 1], exp) and np.array_equal(out[..., 2], exp)
    # mmcv's loader would divide by 256 instead: 5000 -> 19, a much darker image
    assert _mmcv_load(path)[50, 0, 0] == 5000 // 256
    with pytest.raises(ValueError, match=r'u16\.tif: uint16 image \(values 0\.\.9999\); expected '
                       r'8-bit pixels\. Set rescale_16bit=True'):
        _strict(rescale_16bit=False)(dict(img_path=path))
    fpath = str(tmp_path / 'f.tif')
    tifffile.imwrite(fpath, np.full((4, 4), 0.5, np.float32))
    with pytest.raises(ValueError, match=r'f\.tif: floating-point image'):
        _strict()(dict(img_path=fpath))


def test_strict_loader_checks_dataset_size(tmp_path):
    path = str(tmp_path / 'a.png')
    write_image(path, _rgb(20, 30))
    res = _strict()(dict(img_path=path, height=20, width=30))
    assert res['img_shape'] == (20, 30)
    with pytest.raises(ValueError, match=r'a\.png: the image is 30x20 \(width x height\) but the '
                       r'dataset says 40x20'):
        _strict()(dict(img_path=path, height=20, width=40))
    assert _strict(check_size=False)(dict(img_path=path, height=20, width=40))['img'].shape == \
        (20, 30, 3)


def test_strict_loader_in_config_datasets_names_corrupt_file(tmp_path):
    """End to end: the synthetic configs' train pipelines, a corrupt image, dataset[i]."""
    from mmdet.registry import DATASETS as DET_DATASETS
    from mmengine.config import Config
    from mmseg.registry import DATASETS as SEG_DATASETS

    from projects.common.synthetic import generate_dataset
    root = str(tmp_path)
    generate_dataset(root, 2, 1, 1, size=(64, 64))
    here = osp.dirname(osp.dirname(osp.abspath(__file__)))

    cfg = Config.fromfile(osp.join(here, 'configs/_base_/datasets/synthetic_det.py'))
    assert cfg.train_pipeline[0]['type'] == 'StrictLoadImageFromFile'
    init_default_scope('mmdet')
    ds_cfg = copy.deepcopy(cfg.train_dataloader.dataset.to_dict())
    ds_cfg['data_root'] = root
    ds = DET_DATASETS.build(ds_cfg)
    assert not ds.test_mode  # training mode: a None would be replaced by another sample
    names = [osp.basename(ds.get_data_info(i)['img_path']) for i in range(len(ds))]
    bad = names.index('train_0001.png')
    assert ds[1 - bad]['inputs'].shape == (3, 64, 64)
    with open(osp.join(root, 'images', 'train_0001.png'), 'wb') as f:
        f.write(b'\x89PNG garbage')
    # the exception propagates out of BaseDataset.__getitem__ (no silent re-draw)
    with pytest.raises(ValueError, match=r'images/train_0001\.png: corrupt or unreadable'):
        ds[bad]

    cfg = Config.fromfile(osp.join(here, 'configs/_base_/datasets/synthetic_seg.py'))
    init_default_scope('mmseg')
    ds_cfg = copy.deepcopy(cfg.train_dataloader.dataset.to_dict())
    ds_cfg['data_root'] = root
    ds = SEG_DATASETS.build(ds_cfg)
    names = [osp.basename(ds.get_data_info(i)['img_path']) for i in range(len(ds))]
    bad = names.index('train_0000.png')
    with open(osp.join(root, 'img_dir', 'train', 'train_0000.png'), 'wb') as f:
        f.write(b'')
    with pytest.raises(ValueError, match=r'img_dir/train/train_0000\.png: corrupt or unreadable '
                       r'image \(the file is empty'):
        ds[bad]
