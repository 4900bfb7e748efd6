"""Tests of projects/common/instances.py: the coordinate convention of MMHisto (continuous
pixel coordinates, docs/data_layout.md) and the instance geometry built on it."""
import os.path as osp

import numpy as np
import pytest
from scipy import ndimage

from projects.common.instances import (assign_points_to_instances,
                                       connected_components_per_class, instance_geometry,
                                       point_to_pixel)


def _brute_force(inst, ids):
    """Centroid (mean of pixel centres c + 0.5, r + 0.5) and box of each id, pixel by pixel."""
    pts, boxes = [], []
    for i in ids:
        rows, cols = np.nonzero(inst == i)
        pts.append([np.mean(cols + 0.5), np.mean(rows + 0.5)])
        boxes.append([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1])
    return np.array(pts, float).reshape(-1, 2), np.array(boxes, float).reshape(-1, 4)


def test_square_by_hand():
    # a 2x2 square at rows 1-2, cols 3-4 covers [3, 5) x [1, 3): centroid (4.0, 2.0),
    # box (3, 1, 5, 3)
    inst = np.zeros((5, 7), np.int32)
    inst[1:3, 3:5] = 1
    ids, pts, boxes = instance_geometry(inst)
    assert ids.tolist() == [1] and ids.dtype == np.int64
    assert pts.tolist() == [[4.0, 2.0]] and pts.dtype == np.float64
    assert boxes.tolist() == [[3.0, 1.0, 5.0, 3.0]] and boxes.dtype == np.float64
    # the centroid lies on the corner shared by the 4 pixels; floor -> pixel (2, 4)
    r, c = point_to_pixel(pts, inst.shape)
    assert (r.tolist(), c.tolist()) == ([2], [4]) and inst[2, 4] == 1


def test_l_shape_and_single_pixel_by_hand():
    inst = np.zeros((6, 6), np.int32)
    inst[0:3, 0] = 4      # L: (0,0), (1,0), (2,0), (2,1), (2,2)
    inst[2, 1:3] = 4
    inst[5, 5] = 9        # one pixel: covers [5, 6) x [5, 6)
    ids, pts, boxes = instance_geometry(inst)
    # L centres x: 0.5, 0.5, 0.5, 1.5, 2.5 -> 5.5 / 5 = 1.1; y: 0.5, 1.5, 2.5, 2.5, 2.5 -> 1.9
    assert ids.tolist() == [4, 9]
    np.testing.assert_allclose(pts, [[1.1, 1.9], [5.5, 5.5]], atol=1e-12)
    assert boxes.tolist() == [[0, 0, 3, 3], [5, 5, 6, 6]]


def test_random_maps_against_scipy_and_brute_force():
    rng = np.random.default_rng(3)
    for trial in range(4):
        # non-contiguous ids, several blobs per id, ids present in random order
        inst = np.zeros((23, 31), np.int64)
        for i in rng.choice(np.arange(1, 500), 9, replace=False):
            r, c = rng.integers(0, 20), rng.integers(0, 28)
            inst[r:r + rng.integers(1, 4), c:c + rng.integers(1, 4)] = i
        ids, pts, boxes = instance_geometry(inst)
        ref_ids = np.unique(inst)[1:]
        assert ids.tolist() == ref_ids.tolist()
        com = np.asarray(ndimage.center_of_mass(np.ones(inst.shape), inst, ref_ids))
        np.testing.assert_allclose(pts, com[:, ::-1] + 0.5, atol=1e-9)  # scipy + 0.5
        ref_pts, ref_boxes = _brute_force(inst, ref_ids)
        np.testing.assert_allclose(pts, ref_pts, atol=1e-9)
        np.testing.assert_array_equal(boxes, ref_boxes)


def test_huge_ids_and_requested_order():
    # ids near the int32 limit take the relabelling path; the answer must not change
    inst = np.zeros((8, 9), np.int32)
    inst[0:2, 0:3] = 2_000_000_000   # [0, 3) x [0, 2): centre (1.5, 1.0)
    inst[5:8, 6:9] = 7               # [6, 9) x [5, 8): centre (7.5, 6.5)
    inst[4, 2] = 65_000              # [2, 3) x [4, 5): centre (2.5, 4.5)
    ids, pts, boxes = instance_geometry(inst)
    assert ids.tolist() == [7, 65_000, 2_000_000_000]
    assert pts.tolist() == [[7.5, 6.5], [2.5, 4.5], [1.5, 1.0]]
    assert boxes.tolist() == [[6, 5, 9, 8], [2, 4, 3, 5], [0, 0, 3, 2]]
    ids, pts, boxes = instance_geometry(inst, [2_000_000_000, 7])  # order as asked
    assert ids.tolist() == [2_000_000_000, 7]
    assert pts.tolist() == [[1.5, 1.0], [7.5, 6.5]]
    small = inst.copy()
    small[small == 2_000_000_000] = 3
    ids, pts, _ = instance_geometry(small, np.array([3, 7], np.uint16))
    assert ids.tolist() == [3, 7] and pts.tolist() == [[1.5, 1.0], [7.5, 6.5]]


def test_empty_map_and_errors():
    ids, pts, boxes = instance_geometry(np.zeros((4, 4), np.uint16))
    assert ids.shape == (0, ) and pts.shape == (0, 2) and boxes.shape == (0, 4)
    ids, pts, boxes = instance_geometry(np.zeros((4, 4), np.uint16), [])
    assert ids.shape == (0, ) and pts.shape == (0, 2)
    inst = np.zeros((4, 4), np.int32)
    inst[1, 1] = 5
    with pytest.raises(ValueError, match=r'tile\.png: instance id\(s\) \[3, 0\] not present'):
        instance_geometry(inst, [5, 3, 0], source='tile.png')
    big = inst.copy()
    big[0, 0] = 2**31 - 1  # relabelling path
    with pytest.raises(ValueError, match=r'instance id\(s\) \[6\] not present'):
        instance_geometry(big, [5, 6])
    with pytest.raises(ValueError, match='negative ids'):
        instance_geometry(-inst)
    with pytest.raises(ValueError, match='must hold integers'):
        instance_geometry(inst.astype(np.float32))
    with pytest.raises(ValueError, match='2-D'):
        instance_geometry(inst[None])


def test_point_to_pixel_floor_and_border():
    # (x, y) -> (floor y, floor x); x == W / y == H fall in the last column / row;
    # slightly outside (rounding) is clipped
    pts = np.array([[0.0, 0.0], [3.999, 1.0], [4.0, 2.5], [10.0, 6.0], [-1e-9, 6.2]])
    r, c = point_to_pixel(pts, (6, 10))
    assert r.tolist() == [0, 1, 2, 5, 5] and c.tolist() == [0, 3, 4, 9, 0]
    assert r.dtype == np.int64
    with pytest.raises(ValueError, match=r'point 1 \[nan, 1.0\] is not finite'):
        point_to_pixel(np.array([[1.0, 1.0], [np.nan, 1.0]]), (6, 10))


def test_centroid_of_every_convex_instance_lies_in_it():
    # a disc's centroid is inside the disc: point_to_pixel must find the disc's own pixel
    yy, xx = np.mgrid[:40, :50]
    inst = np.zeros((40, 50), np.int32)
    centres = [(10.3, 12.7, 5.0), (30.0, 25.5, 3.2), (20.5, 41.0, 6.5), (5.0, 40.0, 2.0)]
    for i, (cy, cx, rad) in enumerate(centres, 1):
        inst[(yy + 0.5 - cy) ** 2 + (xx + 0.5 - cx) ** 2 <= rad ** 2] = i
    ids, pts, _ = instance_geometry(inst)
    # discs sampled at pixel centres are symmetric about (cx, cy) up to the grid: the
    # centroid is within half a pixel of the true centre
    np.testing.assert_allclose(pts, [[cx, cy] for cy, cx, _ in centres], atol=0.5)
    r, c = point_to_pixel(pts, inst.shape)
    assert inst[r, c].tolist() == ids.tolist()
    assert assign_points_to_instances(pts, inst).tolist() == ids.tolist()


def test_components_per_class_differs_from_metrics_postprocessing():
    # connected_components_per_class keeps small objects and holes and splits classes;
    # metrics.instances_from_semantic (binary, min_size, fill holes) is another job
    seg = np.zeros((7, 7), np.uint8)
    seg[1:6, 1:6] = 1
    seg[3, 3] = 0        # a hole
    seg[0, 6] = 2        # a 1-px object of class 2 touching nothing
    seg[6, 0] = 255      # ignore
    inst = connected_components_per_class(seg)
    assert inst[3, 3] == 0 and inst[0, 6] == 2 and inst[6, 0] == 0
    assert (inst == 1).sum() == 24   # 5 * 5 - 1 hole
    from projects.common.metrics import instances_from_semantic
    post = instances_from_semantic(seg, fg=1, min_size=20)
    assert post[3, 3] == 1 and post[0, 6] == 0   # hole filled, class 2 not foreground


# --------------------------------------------- flips in a real mmdet pipeline (exact)
def _write_det_fixture(root, inst):
    from projects.common.io import write_image
    h, w = inst.shape
    write_image(osp.join(root, 'a.png'), np.full((h, w, 3), 100, np.uint8))
    ids, pts, boxes = instance_geometry(inst)
    instances = [dict(bbox=boxes[k].tolist(), bbox_label=0, ignore_flag=0,
                      point=pts[k].tolist()) for k in range(len(ids))]
    return dict(img_path=osp.join(root, 'a.png'), img_id=0, height=h, width=w,
                instances=instances)


@pytest.mark.parametrize('direction, flip', [('horizontal', np.fliplr),
                                             ('vertical', np.flipud),
                                             ('diagonal', lambda a: a[::-1, ::-1])])
def test_flipped_point_is_the_centroid_of_the_flipped_instance(tmp_path, direction, flip):
    from mmengine.dataset import Compose
    from mmengine.registry import init_default_scope

    import projects.common.transforms  # noqa: F401  (registers LoadPointAnnotations)
    init_default_scope('mmdet')
    # 11 x 13 map (odd sizes: a half-pixel error cannot cancel), asymmetric shapes
    inst = np.zeros((11, 13), np.int32)
    inst[1:3, 3:5] = 1                       # the 2x2 square, centroid (4, 2)
    inst[4:7, 0] = 2                         # an L touching the left border
    inst[6, 1:4] = 2
    inst[8:11, 9:13] = 3                     # a block in the bottom-right corner
    inst[9, 12] = 0
    info = _write_det_fixture(str(tmp_path), inst)
    pipe = Compose([dict(type='LoadImageFromFile'),
                    dict(type='LoadAnnotations', with_bbox=True),
                    dict(type='RandomFlip', prob=1.0, direction=direction),
                    dict(type='LoadPointAnnotations')])
    res = pipe(info)
    assert res['flip'] and res['flip_direction'] == direction
    # the reference: geometry measured on the flipped map itself (ids keep their order)
    _, ref_pts, ref_boxes = instance_geometry(flip(inst))
    np.testing.assert_allclose(res['gt_points'], ref_pts, atol=1e-5)  # float32 points
    np.testing.assert_allclose(res['gt_bboxes'].numpy(), ref_boxes, atol=1e-5)
    if direction == 'horizontal':
        # by hand: the square's centroid (4, 2) -> (13 - 4, 2) = (9, 2), inside the
        # flipped square at rows 1-2, cols 8-9
        assert res['gt_points'][0].tolist() == [9.0, 2.0]
        assert flip(inst)[1:3, 8:10].tolist() == [[1, 1], [1, 1]]
