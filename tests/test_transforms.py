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
    res = Compose(LOAD_SEG + [dict(type='Resize', scale=(64, 48), keep_ratio=False)])(
        _seg_info(tmp_path))
    # nearest-neighbour x2: every pixel becomes a 2x2 block
    assert res['gt_instance_map'].dtype == np.int32
    assert np.array_equal(res['gt_instance_map'], np.kron(big, np.ones((2, 2), np.int32)))
    assert res['gt_seg_map'].shape == (48, 64)


def test_seg_load_instance_errors(tmp_path):
    _seg_fixture(str(tmp_path), inst=np.zeros((10, 10), np.int32))
    with pytest.raises(ValueError, match=r'inst_dir/train/s1\.png: instance map is 10x10 but '
                       r'image .*img_dir/train/s1\.png is 32x24'):
        Compose(LOAD_SEG)(_seg_info(tmp_path))
    with pytest.raises(ValueError, match=r'semantic map .*ann_dir/train/s1\.png is 32x24'):
        Compose([dict(type='LoadAnnotations'), dict(type='LoadInstanceAnnotations')])(
            _seg_info(tmp_path))
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
    for name in ('LoadPointAnnotations', 'LoadInstanceAnnotations', 'SparsifyAnnotations'):
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
