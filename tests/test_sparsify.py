"""Tests of the sparse-annotation simulator (projects/common/sparsify.py) and its tool."""
import itertools
import json
import os.path as osp

import numpy as np
import pytest

from projects.common.io import (read_image, read_instance_map, read_points, write_image,
                                write_instance_map, write_points)
from projects.common.instances import (assign_points_to_instances,
                                       connected_components_per_class)
from projects.common.sparsify import (apply_keep_to_maps, image_seed, keep_count,
                                      nested_subsets, one_per_patch, one_per_patch_keep,
                                      patch_starts, sparsify_label_maps, subset_coco)


# ----------------------------------------------------------------- nested fractions
def test_keep_count_rounds_half_up():
    assert keep_count(5, 0.5) == 3     # 2.5 -> 3 (Python's round would give 2)
    assert keep_count(10, 0.35) == 4   # 3.4999999999999996 in floats -> 3.5 -> 4
    assert keep_count(4, 0.1) == 0     # 0.4 -> 0: a small image can keep nothing
    assert keep_count(7, 1.0) == 7
    assert keep_count(0, 0.3) == 0
    for bad in (0.0, -0.1, 1.01):
        with pytest.raises(ValueError, match='fraction'):
            keep_count(10, bad)


def test_nested_subsets_counts_nesting_and_determinism():
    fr = [0.1, 0.3, 0.5, 1.0]
    sets = nested_subsets(20, fr, seed=7)
    # counts: 0.1*20 = 2, 0.3*20 = 6, 0.5*20 = 10, 20
    assert [len(sets[f]) for f in fr] == [2, 6, 10, 20]
    for small, big in zip(fr, fr[1:]):
        assert set(sets[small]) <= set(sets[big])
    for f in fr:
        assert np.all(np.diff(sets[f]) > 0)  # sorted, unique
    assert np.array_equal(sets[1.0], np.arange(20))
    # nested across separate calls with the same seed, reproducible
    assert set(nested_subsets(20, [0.1], 7)[0.1]) <= set(nested_subsets(20, [0.5], 7)[0.5])
    assert np.array_equal(nested_subsets(20, [0.3], 7)[0.3], sets[0.3])
    # another seed gives another subset (C(20, 6) = 38760 possible sets)
    assert not np.array_equal(nested_subsets(20, [0.3], 8)[0.3], sets[0.3])
    for bad in ([0.0], [1.5], [-0.2]):
        with pytest.raises(ValueError, match='fraction'):
            nested_subsets(5, bad, 0)


def test_nested_subsets_is_uniform():
    # each of 10 indices should be kept at f = 0.3 in 30% of 4000 seeds;
    # binomial std = sqrt(0.3 * 0.7 / 4000) = 0.0072 -> 0.3 +- 0.03 is > 4 sigma
    hits = np.zeros(10)
    for s in range(4000):
        hits[nested_subsets(10, [0.3], s)[0.3]] += 1
    assert np.allclose(hits / 4000, 0.3, atol=0.03)


def test_image_seed_uses_file_name_and_is_stable():
    assert image_seed(0, '/data/a/img_01.png') == image_seed(0, 'img_01.png')
    assert image_seed(0, 'img_01.png') != image_seed(1, 'img_01.png')
    assert image_seed(0, 'img_01.png') != image_seed(0, 'img_02.png')
    # stable across processes / numpy versions: SeedSequence([0, crc32('img_01.png')])
    import zlib
    ref = int(np.random.SeedSequence([0, zlib.crc32(b'img_01.png')]).generate_state(1)[0])
    assert image_seed(0, 'img_01.png') == ref


# ----------------------------------------------------------------- one per patch
def test_patch_starts():
    # the PU paper's 1600 px images, 500 px patches, 100 px overlap: stride 400,
    # 0, 400, 800 then the last patch shifted to end at 1600: 1100
    assert patch_starts(1600, 500, 100).tolist() == [0, 400, 800, 1100]
    assert patch_starts(500, 500, 100).tolist() == [0]
    assert patch_starts(300, 500, 100).tolist() == [0]
    assert patch_starts(900, 500, 100).tolist() == [0, 400]
    assert patch_starts(1000, 500, 100).tolist() == [0, 400, 500]
    with pytest.raises(ValueError, match='overlap'):
        patch_starts(1000, 500, 500)


def _patches_of(p, starts_x, starts_y, size, w, h):
    """Brute force: set of (row, col) patches whose [s, s+size) contains the point."""
    x, y = min(p[0], w - 1e-9), min(p[1], h - 1e-9)
    return {(i, j) for i, sy in enumerate(starts_y) for j, sx in enumerate(starts_x)
            if sx <= x < sx + size and sy <= y < sy + size}


def _greedy(points, order, sx, sy, size, w, h):
    occupied, kept = set(), []
    for i in order:
        ps = _patches_of(points[i], sx, sy, size, w, h)
        if not ps & occupied:
            occupied |= ps
            kept.append(i)
    return tuple(sorted(kept))


def test_one_per_patch_hand_case_against_brute_force():
    # 900x900 image, 500 px patches, 100 overlap: starts [0, 400] on both axes.
    # A (100,100), B (200,200) only in patch (0,0); C (450,100) in the column overlap
    # -> patches (0,0) and (0,1); D (800,800) only in (1,1); E (900, 900) on the border
    # -> (1,1). Possible outcomes: one of {A,B,C} covering (0,0) ... and one of {D,E}.
    pts = np.array([[100, 100], [200, 200], [450, 100], [800, 800], [900, 900]], float)
    possible = {_greedy(pts, order, [0, 400], [0, 400], 500, 900, 900)
                for order in itertools.permutations(range(5))}
    # A or B or C, then D or E: 3 * 2 = 6 outcomes
    assert possible == {(a, d) for a in (0, 1, 2) for d in (3, 4)}
    seen = set()
    for seed in range(40):
        kept = tuple(one_per_patch(pts, (900, 900), 500, 100, seed).tolist())
        assert kept in possible
        seen.add(kept)
    assert len(seen) == 6  # every outcome is reachable: the deletion is random


def test_one_per_patch_invariants_random():
    rng = np.random.default_rng(0)
    h, w, size, ov = 1100, 1300, 500, 100
    sx, sy = patch_starts(w, size, ov).tolist(), patch_starts(h, size, ov).tolist()
    for seed in range(5):
        pts = rng.uniform(0, [w, h], size=(60, 2))
        kept = set(one_per_patch(pts, (h, w), size, ov, seed).tolist())
        count = {}
        for i in kept:
            for p in _patches_of(pts[i], sx, sy, size, w, h):
                count[p] = count.get(p, 0) + 1
        assert max(count.values()) == 1  # at most one kept annotation per patch
        occupied = set(count)
        for i in set(range(60)) - kept:  # every deletion was necessary
            assert _patches_of(pts[i], sx, sy, size, w, h) & occupied


def test_one_per_patch_edge_cases():
    assert one_per_patch(np.zeros((0, 2)), (100, 100)).tolist() == []
    # two points in a 300x300 image = a single patch -> exactly one kept
    assert len(one_per_patch(np.array([[10., 10.], [200., 200.]]), (300, 300))) == 1
    with pytest.raises(ValueError, match=r'point 1 at \(x=350.0'):
        one_per_patch(np.array([[10., 10.], [350., 20.]]), (300, 300))


# ----------------------------------------------------------------- COCO subsets
def _coco():
    images = [dict(id=1, file_name='a.png', height=1000, width=1000),
              dict(id=2, file_name='b.png', height=100, width=100),
              dict(id=3, file_name='c.png', height=100, width=100)]
    anns = []
    for k in range(10):  # 10 annotations on a.png, interleaved with 3 on c.png
        anns.append(dict(id=100 + k, image_id=1, category_id=1, bbox=[k * 90, 10, 32, 32],
                         area=1024, iscrowd=0, point=[k * 90 + 16, 26]))
        if k < 3:
            anns.append(dict(id=200 + k, image_id=3, category_id=1, bbox=[k * 30, 5, 8, 8],
                             area=64, iscrowd=0))
    return dict(images=images, annotations=anns, categories=[dict(id=1, name='cell')],
                info=dict(description='x'))


def test_subset_coco_nested_per_image():
    coco = _coco()
    out = {f: subset_coco(coco, fraction=f, seed=4) for f in (0.3, 0.5)}
    for f, sub in out.items():
        assert [i['id'] for i in sub['images']] == [1, 2, 3]  # b.png (no annotation) kept
        assert sub['categories'] == coco['categories'] and sub['info'] == coco['info']
    ids = {f: [a['id'] for a in out[f]['annotations']] for f in out}
    # a.png keeps round(0.3 * 10) = 3 and round(0.5 * 10) = 5; c.png round(0.9) = 1 and
    # round(1.5) = 2 -> 4 and 7 annotations
    assert len(ids[0.3]) == 4 and len(ids[0.5]) == 7
    assert set(ids[0.3]) <= set(ids[0.5])
    # the kept annotations of a.png are its file-order annotations at the nested indices
    idx = nested_subsets(10, [0.3], image_seed(4, 'a.png'))[0.3]
    assert sorted(a for a in ids[0.3] if a < 200) == [100 + int(i) for i in idx]
    assert len(coco['annotations']) == 13  # input untouched


def test_subset_coco_one_per_patch_and_errors():
    coco = _coco()
    sub = subset_coco(coco, keep_fn=one_per_patch_keep(500, 100), seed=0)
    # a.png (1000 px): patch starts [0, 400, 500] on both axes; all points at y = 26 lie in
    # patch row 0; x = 16 + 90k: k = 0..4 only in column [0, 500); k = 5 (466) in [0, 500)
    # and [400, 900); k = 6..9 (556..826) in [400, 900) and [500, 1000). So the outcome
    # is {5} alone, or one of 0..4 plus one of 6..9.
    kept_a = tuple(a['id'] - 100 for a in sub['annotations'] if a['image_id'] == 1)
    possible = {(5, )} | {(a, b) for a in range(5) for b in range(6, 10)}
    assert kept_a in possible
    seen = {tuple(k.tolist()) for k in (
        one_per_patch(np.array([[16 + 90 * k, 26] for k in range(10)], float), (1000, 1000),
                      500, 100, s) for s in range(60))}
    assert seen <= possible and (5, ) in seen and len(seen) > 5
    # c.png is 100x100: a single patch -> exactly one annotation kept
    assert len([a for a in sub['annotations'] if a['image_id'] == 3]) == 1
    bad = _coco()
    bad['annotations'].append(dict(id=999, image_id=42, category_id=1, bbox=[0, 0, 1, 1]))
    with pytest.raises(ValueError, match='annotation id 999 refers to image_id 42'):
        subset_coco(bad, fraction=0.5)
    with pytest.raises(ValueError, match='exactly one'):
        subset_coco(coco)


# ----------------------------------------------------------------- label maps
def test_components_per_class_and_point_assignment():
    seg = np.array([[1, 1, 0, 0, 2],
                    [0, 0, 0, 0, 2],
                    [255, 0, 1, 1, 0],
                    [0, 0, 0, 1, 0]], np.uint8)
    inst = connected_components_per_class(seg)
    # class 1: components {(0,0),(0,1)} and {(2,2),(2,3),(3,3)}; class 2: {(0,4),(1,4)};
    # 255 is ignore, not an instance -> 3 instances, ids by class then raster order
    assert inst.tolist() == [[1, 1, 0, 0, 3],
                             [0, 0, 0, 0, 3],
                             [0, 0, 2, 2, 0],
                             [0, 0, 0, 2, 0]]
    # point (x=0.5, y=0.2) -> pixel (floor 0.2, floor 0.5) = (0, 0): instance 1;
    # (x=2.0, y=1.0) -> pixel (1, 2), background: nearest instance pixel (2, 2) at
    # distance 1 (next: (0, 1) at sqrt(2), (1, 4) at 2) -> instance 2;
    # (x=5.0, y=0.7) on the right border x == W -> last column, pixel (0, 4): instance 3
    ids = assign_points_to_instances(np.array([[0.5, 0.2], [2.0, 1.0], [5.0, 0.7]]), inst)
    assert ids.tolist() == [1, 2, 3]


def test_apply_keep_and_sparsify_label_maps():
    inst = np.array([[1, 1, 0, 2],
                     [0, 3, 3, 2],
                     [4, 0, 0, 0]], np.int32)
    seg = np.array([[1, 1, 255, 1],
                    [0, 1, 1, 1],
                    [1, 0, 255, 0]], np.uint8)
    new_inst, new_seg = apply_keep_to_maps(np.array([2, 4]), inst, seg)
    assert new_inst.tolist() == [[0, 0, 0, 2], [0, 0, 0, 2], [4, 0, 0, 0]]
    # removed instances 1 and 3 -> background 0; ignore pixels untouched
    assert new_seg.tolist() == [[0, 0, 255, 1], [0, 0, 0, 1], [1, 0, 255, 0]]

    # centroids (pixel (r, c) centre = (c + 0.5, r + 0.5)): id 1 pixels (0,0),(0,1) ->
    # (1.0, 0.5); id 2 (0,3),(1,3) -> (3.5, 1.0); id 3 (1,1),(1,2) -> (2.0, 1.5);
    # id 4 (2,0) -> (0.5, 2.5)
    pts = np.array([[1.0, 0.5], [3.5, 1.0], [2.0, 1.5], [0.5, 2.5]])
    s = image_seed(5, 'x.png')
    out = sparsify_label_maps(s, 'nested', 0.5, inst_map=inst, seg_map=seg, points=pts)
    keep_idx = nested_subsets(4, [0.5], s)[0.5]  # round(0.5 * 4) = 2 of ids [1, 2, 3, 4]
    kept_ids = np.array([1, 2, 3, 4])[keep_idx]
    assert out['kept_ids'].tolist() == kept_ids.tolist() and out['n'] == 4
    assert set(np.unique(out['inst_map'])) - {0} == set(kept_ids.tolist())
    assert out['point_keep'].tolist() == [i in kept_ids for i in (1, 2, 3, 4)]
    assert np.array_equal(out['seg_map'] == 0, (seg == 0) | ~np.isin(inst, kept_ids) & (inst > 0))


def test_one_per_patch_on_maps_uses_continuous_centroids():
    # 10x30 map, patches of 10 px without overlap: columns [0, 10), [10, 20), [20, 30).
    # id 1 = cols 9-10 -> centroid x = (9.5 + 10.5) / 2 = 10.0 -> patch 1 (under an
    # integer-centre convention it would be 9.5 -> patch 0); id 2 = cols 10-12 -> x = 11.5
    # -> patch 1; id 3 = cols 2-3 -> x = 3.0 -> patch 0, alone: always kept; exactly one
    # of ids 1 and 2 is kept.
    inst = np.zeros((10, 30), np.int32)
    inst[4, 9:11] = 1
    inst[6, 10:13] = 2
    inst[5, 2:4] = 3
    seen = set()
    for seed in range(12):
        out = sparsify_label_maps(seed, 'one_per_patch', inst_map=inst, patch_size=10,
                                  overlap=0)
        kept = tuple(out['kept_ids'].tolist())
        assert kept in {(1, 3), (2, 3)}
        seen.add(kept)
    assert seen == {(1, 3), (2, 3)}


# ----------------------------------------------------------------- the tool
def _run_tool(argv):
    import importlib.util
    path = osp.join(osp.dirname(__file__), '..', 'tools', 'sparsify_annotations.py')
    spec = importlib.util.spec_from_file_location('sparsify_tool', path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main(argv)


def test_tool_coco(tmp_path, capsys):
    ann = tmp_path / 'train.json'
    ann.write_text(json.dumps(_coco()))
    out = tmp_path / 'out'
    _run_tool(['--ann-file', str(ann), '--fractions', '0.5', '0.3', '--seed', '4',
               '--one-per-patch', '--out-dir', str(out)])
    printed = capsys.readouterr().out
    sub30 = json.loads((out / 'train_30pct.json').read_text())
    sub50 = json.loads((out / 'train_50pct.json').read_text())
    opp = json.loads((out / 'train_one_per_patch.json').read_text())
    assert sub30 == subset_coco(_coco(), fraction=0.3, seed=4)
    assert {a['id'] for a in sub30['annotations']} <= {a['id'] for a in sub50['annotations']}
    assert opp == subset_coco(_coco(), keep_fn=one_per_patch_keep(500, 100), seed=4)
    assert 'kept 4 of 13 annotations' in printed and 'kept 7 of 13' in printed


def test_tool_seg(tmp_path):
    root = tmp_path / 'seg'
    inst = np.zeros((20, 30), np.int32)
    for k in range(6):  # six 3x3 nuclei, ids 10, 20, ..., 60
        inst[2 + 3 * (k % 2) * 2: 5 + 3 * (k % 2) * 2, 2 + 5 * k: 5 + 5 * k] = 10 * (k + 1)
    seg = (inst > 0).astype(np.uint8)
    seg[19, 29] = 255
    from scipy import ndimage
    cents = np.asarray(ndimage.center_of_mass(np.ones(inst.shape), inst, range(10, 70, 10)))
    pts = cents[:, ::-1] + 0.5  # (x, y) centroids in continuous pixel coordinates
    for name in ('t0', 't1'):
        write_image(str(root / 'img_dir' / 'train' / f'{name}.png'),
                    np.zeros((20, 30, 3), np.uint8))
        write_image(str(root / 'ann_dir' / 'train' / f'{name}.png'), seg)
        write_instance_map(str(root / 'inst_dir' / 'train' / f'{name}.png'), inst)
        write_points(str(root / 'points' / 'train' / f'{name}.csv'), pts, np.zeros(6, int))
    _run_tool(['--seg-root', str(root), '--split', 'train', '--fractions', '0.5',
               '--seed', '2', '--out-dir', str(root)])
    for name in ('t0', 't1'):
        s = image_seed(2, f'{name}.png')
        kept_ids = np.arange(10, 70, 10)[nested_subsets(6, [0.5], s)[0.5]]  # 3 of 6
        new_inst = read_instance_map(str(root / 'inst_dir_50pct' / 'train' / f'{name}.png'))
        new_seg = read_image(str(root / 'ann_dir_50pct' / 'train' / f'{name}.png'), channels=1)
        new_pts, _ = read_points(str(root / 'points_50pct' / 'train' / f'{name}.csv'))
        assert sorted(set(np.unique(new_inst)) - {0}) == sorted(kept_ids.tolist())
        assert np.array_equal(new_seg == 1, np.isin(inst, kept_ids))
        assert new_seg[19, 29] == 255
        # points written with 2 decimals
        assert np.allclose(new_pts, pts[np.isin(np.arange(10, 70, 10), kept_ids)], atol=0.01)
