"""Tests for projects/common/metrics.py: hand-computed cases and independent references
(brute-force loops, scipy's maximum bipartite matching, scikit-image, pycocotools)."""
import json

import numpy as np
import pytest
import torch
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import maximum_bipartite_matching

import projects.common.metrics  # noqa: F401  (registers the metrics)
from projects.common.metrics import (aji, dice_obj, instances_from_semantic, match_boxes,
                                     match_points, pixel_scores, pq)

# ------------------------------------------------------------------------ match_points


def test_match_points_optimal_beats_greedy():
    # g0=(0,0), g1=(5,0); p0=(4,0), p1=(9,0); radius 5.
    # d(g0,p0)=4, d(g1,p0)=1, d(g1,p1)=4, d(g0,p1)=9 (> 5, forbidden).
    # Greedy closest-pair-first takes (g1,p0) (d=1); g0's only candidate p0 is gone and p1
    # is left alone -> tp=1, fp=1, fn=1. The optimal matching (g0,p0), (g1,p1) keeps 2.
    gt = [[0, 0], [5, 0]]
    pred = [[4, 0], [9, 0]]
    assert match_points(gt, pred, 5) == (2, 0, 0)
    # reversed prediction order must not change the result
    assert match_points(gt, pred[::-1], 5) == (2, 0, 0)


def test_match_points_radius_boundary_is_inclusive():
    # (0,0) to (3,4): distance sqrt(9 + 16) = 5 exactly
    assert match_points([[0, 0]], [[3, 4]], 5.0) == (1, 0, 0)
    assert match_points([[0, 0]], [[3, 4]], 4.999) == (0, 1, 1)
    # radius 0: only identical points match
    assert match_points([[2, 2], [7, 7]], [[2, 2], [7, 7.5]], 0) == (1, 1, 1)


def test_match_points_one_to_one():
    # two predictions on one GT point: only one is a tp, the other is an fp
    assert match_points([[10, 10]], [[10, 11], [11, 10]], 3) == (1, 1, 0)
    # two GT points around one prediction: one tp, one fn
    assert match_points([[10, 10], [12, 10]], [[11, 10]], 3) == (1, 0, 1)


def test_match_points_empty_inputs():
    assert match_points([], [], 5) == (0, 0, 0)
    assert match_points(np.zeros((0, 2)), [[1, 1], [2, 2]], 5) == (0, 2, 0)
    assert match_points([[1, 1], [2, 2], [3, 3]], np.zeros((0, 2)), 5) == (0, 0, 3)


def test_match_points_bad_input_raises():
    with pytest.raises(ValueError, match='gt_xy'):
        match_points(np.zeros((3, 3)), [[0, 0]], 5)
    with pytest.raises(ValueError, match='pred_xy'):
        match_points([[0, 0]], [[np.nan, 0]], 5)
    with pytest.raises(ValueError, match='radius'):
        match_points([[0, 0]], [[0, 0]], -1)


def test_match_points_cardinality_equals_scipy_maximum_matching():
    # Independent reference: the size of a maximum bipartite matching on the pairs with
    # distance <= radius (dense distance table here, scipy's Hopcroft-Karp).
    rng = np.random.default_rng(0)
    for n_gt, n_pred in ((400, 450), (300, 200)):
        gt = rng.uniform(0, 300, (n_gt, 2))
        m = min(n_gt, n_pred) // 2
        pred = np.concatenate([gt[:m] + rng.normal(0, 5, (m, 2)),
                               rng.uniform(0, 300, (n_pred - m, 2))])
        d = np.sqrt(((gt[:, None] - pred[None]) ** 2).sum(-1))
        graph = csr_matrix((d <= 12.0).astype(np.int8))
        match = maximum_bipartite_matching(graph, perm_type='column')
        k = int((match >= 0).sum())
        assert match_points(gt, pred, 12.0) == (k, n_pred - k, n_gt - k)


# ------------------------------------------------------------------------- match_boxes


def test_match_boxes_iou_threshold_inclusive():
    # [0,0,10,5] inside [0,0,10,10]: IoU = 50 / 100 = 0.5 -> matches at thr 0.5
    assert match_boxes([[0, 0, 10, 10]], [[0, 0, 10, 5]], 0.5) == (1, 0, 0)
    # [5,0,15,10]: intersection 5*10 = 50, union 100 + 100 - 50 = 150 -> IoU 1/3 < 0.5
    assert match_boxes([[0, 0, 10, 10]], [[5, 0, 15, 10]], 0.5) == (0, 1, 1)
    assert match_boxes([[0, 0, 10, 10]], [[5, 0, 15, 10]], 0.3) == (1, 0, 0)
    assert match_boxes([], [], 0.5) == (0, 0, 0)
    assert match_boxes([[0, 0, 1, 1]], [], 0.5) == (0, 0, 1)


def test_match_boxes_optimal_beats_greedy():
    # g0=[0,0,10,10], g1=[1.5,0,11.5,10], p0=[1,0,11,10], p1=[4,0,14,10]; all heights 10.
    # IoU(g0,p0) = 90 / 110 = 0.818; IoU(g1,p0) = 95 / 105 = 0.905;
    # IoU(g0,p1) = 60 / 140 = 0.429 (< 0.5); IoU(g1,p1) = 75 / 125 = 0.6.
    # Greedy highest-IoU-first takes (g1,p0) and g0 is left with p1 (0.429): 1 match.
    # Optimal: (g0,p0), (g1,p1) -> 2 matches.
    gt = [[0, 0, 10, 10], [1.5, 0, 11.5, 10]]
    pred = [[1, 0, 11, 10], [4, 0, 14, 10]]
    assert match_boxes(gt, pred, 0.5) == (2, 0, 0)


@pytest.mark.parametrize('max_candidates', [1 << 22, 0])
def test_match_boxes_cardinality_equals_scipy_maximum_matching(monkeypatch, max_candidates):
    # Independent reference: maximum bipartite matching on a dense IoU >= 0.5 table written
    # here. max_candidates=0 forces the chunked dense path instead of the kd-tree one.
    import projects.common.metrics as m
    monkeypatch.setattr(m, '_MAX_BOX_CANDIDATES', max_candidates)
    rng = np.random.default_rng(2)
    gt_xy, gt_wh = rng.uniform(0, 200, (150, 2)), rng.uniform(8, 30, (150, 2))
    pred_xy = np.concatenate([gt_xy[:100] + rng.normal(0, 3, (100, 2)),
                              rng.uniform(0, 200, (60, 2))])
    pred_wh = np.concatenate([gt_wh[:100] * rng.uniform(0.8, 1.2, (100, 2)),
                              rng.uniform(8, 30, (60, 2))])
    gt = np.concatenate([gt_xy, gt_xy + gt_wh], 1)
    pred = np.concatenate([pred_xy, pred_xy + pred_wh], 1)
    iw = np.clip(np.minimum(gt[:, None, 2], pred[None, :, 2])
                 - np.maximum(gt[:, None, 0], pred[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(gt[:, None, 3], pred[None, :, 3])
                 - np.maximum(gt[:, None, 1], pred[None, :, 1]), 0, None)
    area = lambda b: (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])  # noqa: E731
    iou = iw * ih / (area(gt)[:, None] + area(pred)[None] - iw * ih)
    match = maximum_bipartite_matching(csr_matrix((iou >= 0.5).astype(np.int8)),
                                       perm_type='column')
    k = int((match >= 0).sum())
    assert 40 < k < 150  # a non-trivial case
    assert match_boxes(gt, pred, 0.5) == (k, 160 - k, 150 - k)


def test_match_boxes_bad_input_raises():
    with pytest.raises(ValueError, match='x2 < x1'):
        match_boxes([[10, 0, 0, 10]], [[0, 0, 1, 1]])
    with pytest.raises(ValueError, match='iou_thr'):
        match_boxes([[0, 0, 1, 1]], [[0, 0, 1, 1]], 0)


# ------------------------------------------------------------------ AJI and object Dice

# GT: G1 = rows 0-1 x cols 0-2 (6 px), G2 = rows 3-5 x cols 3-5 (9 px).
GT6 = np.array([[1, 1, 1, 0, 0, 0],
                [1, 1, 1, 0, 0, 0],
                [0, 0, 0, 0, 0, 0],
                [0, 0, 0, 2, 2, 2],
                [0, 0, 0, 2, 2, 2],
                [0, 0, 0, 2, 2, 2]])
# Prediction: A = rows 0-1 x cols 0-1 (4 px, inside G1), B = rows 3-4 x cols 3-5 (6 px,
# inside G2), C = row 5 x cols 0-1 (2 px, overlaps nothing).
PRED6 = np.array([[1, 1, 0, 0, 0, 0],
                  [1, 1, 0, 0, 0, 0],
                  [0, 0, 0, 0, 0, 0],
                  [0, 0, 0, 2, 2, 2],
                  [0, 0, 0, 2, 2, 2],
                  [3, 3, 0, 0, 0, 0]])


def test_aji_hand_case_with_unmatched_prediction():
    # G1 -> A: |G1 n A| = 4, |G1 u A| = 6 ; G2 -> B: 6 and 9 ; C never used adds 2 to U.
    # AJI = (4 + 6) / (6 + 9 + 2) = 10 / 17
    assert aji(GT6, PRED6) == pytest.approx(10 / 17)
    # without C: 10 / 15
    assert aji(GT6, np.where(PRED6 == 3, 0, PRED6)) == pytest.approx(10 / 15)


def test_aji_prediction_used_by_two_gt_objects():
    # GT [1 1 0 2 2 0], prediction S = [1 1 1 1 1 0] (5 px) covers both GT objects.
    # G1 -> S: C += 2, U += 5 ; G2 -> S: C += 2, U += 5 -> AJI = 4 / 10 (S counted twice)
    gt = np.array([[1, 1, 0, 2, 2, 0]])
    pred = np.array([[1, 1, 1, 1, 1, 0]])
    assert aji(gt, pred) == pytest.approx(0.4)


def test_aji_gt_without_overlap_adds_its_area():
    # G1 (6 px) overlaps nothing: U += 6 ; G2 -> B (6 of 9): C = 6, U = 9 -> 6 / 15
    pred = np.where(PRED6 == 2, 2, 0)
    assert aji(GT6, pred) == pytest.approx(6 / 15)


def test_dice_obj_hand_case():
    # GT side: Dice(G1, A) = 2*4/(6+4) = 0.8, Dice(G2, B) = 2*6/(9+6) = 0.8, weights 6/15,
    # 9/15 -> 0.8. Prediction side: Dice(A) = 0.8 (w 4/12), Dice(B) = 0.8 (w 6/12),
    # C overlaps no GT: Dice 0 (w 2/12) -> (3.2 + 4.8) / 12 = 2/3.
    # Dice_obj = 0.5 * (0.8 + 2/3) = 11/15
    assert dice_obj(GT6, PRED6) == pytest.approx(11 / 15)


def test_dice_obj_picks_largest_overlap():
    # GT G = [1 1 1 1 0 0]; predictions S1 = col 0 (1 px), S2 = cols 1-3 (3 px).
    # GT side: S*(G) = S2 (3 shared px): Dice = 6 / 7, weight 1.
    # Prediction side: Dice(G, S1) = 2/5 (w 1/4), Dice(G, S2) = 6/7 (w 3/4).
    # Dice_obj = 0.5 * (6/7 + 0.25*0.4 + 0.75*6/7) = 0.5 * (1.75*6/7 + 0.1) = 0.8
    gt = np.array([[1, 1, 1, 1, 0, 0]])
    pred = np.array([[1, 2, 2, 2, 0, 0]])
    assert dice_obj(gt, pred) == pytest.approx(0.8)


def test_empty_cases():
    empty = np.zeros((4, 4), int)
    some = np.zeros((4, 4), int)
    some[1:3, 1:3] = 5
    assert aji(empty, empty) == 1.0 and dice_obj(empty, empty) == 1.0
    assert aji(some, empty) == 0.0 and dice_obj(some, empty) == 0.0
    assert aji(empty, some) == 0.0 and dice_obj(empty, some) == 0.0
    assert aji(some, some) == 1.0 and dice_obj(some, some) == 1.0


def test_non_contiguous_ids_same_result():
    # order-preserving renumbering (small gaps -> lookup-table path; ids > 2**40 -> the
    # np.unique path) and, on the hand case (no ties), an arbitrary permutation of ids.
    rng = np.random.default_rng(3)
    gt, pred = _random_maps(rng, 48, 12), _random_maps(rng, 48, 14)
    for f in (lambda a: np.where(a > 0, a * 37 + 5, 0), lambda a: np.where(a > 0, a + 2**40, 0)):
        assert aji(f(gt), f(pred)) == aji(gt, pred)
        assert dice_obj(f(gt), f(pred)) == dice_obj(gt, pred)
    perm = np.array([0, 900, 17, 4])  # 1 -> 900, 2 -> 17, 3 -> 4
    assert aji(perm[GT6], perm[PRED6]) == pytest.approx(10 / 17)
    assert dice_obj(perm[GT6], perm[PRED6]) == pytest.approx(11 / 15)


def _random_maps(rng, size, n):
    """Label map of n random overlapping rectangles (later ones on top)."""
    lab = np.zeros((size, size), np.int64)
    for k in range(1, n + 1):
        y, x = rng.integers(0, size - 3, 2)
        h, w = rng.integers(2, 12, 2)
        lab[y:y + h, x:x + w] = k
    return lab


def _aji_brute(gt, pred):
    """Kumar et al. 2017, Algorithm 1, with full masks per object (slow, obviously right)."""
    c = u = 0
    used = set()
    p_ids = [p for p in np.unique(pred) if p != 0]
    for g in np.unique(gt):
        if g == 0:
            continue
        gm = gt == g
        best, best_iou, best_i, best_u = None, 0.0, 0, 0
        for p in p_ids:
            pm = pred == p
            inter = int((gm & pm).sum())
            union = int((gm | pm).sum())
            if inter and inter / union > best_iou:
                best, best_iou, best_i, best_u = p, inter / union, inter, union
        if best is None:
            u += int(gm.sum())
        else:
            c, u = c + best_i, u + best_u
            used.add(best)
    u += sum(int((pred == p).sum()) for p in p_ids if p not in used)
    return c / u


def _dice_obj_brute(gt, pred):
    """Sirinukunwattana et al. 2017 object Dice with full masks per object."""

    def side(a, b):
        ids = [i for i in np.unique(a) if i != 0]
        total = sum(int((a == i).sum()) for i in ids)
        acc = 0.0
        for i in ids:
            am = a == i
            best, best_inter = None, 0
            for j in np.unique(b[am]):
                inter = int((am & (b == j)).sum()) if j != 0 else 0
                if inter > best_inter:
                    best, best_inter = j, inter
            if best is not None:
                acc += am.sum() / total * 2 * best_inter / (am.sum() + (b == best).sum())
        return acc

    return 0.5 * (side(gt, pred) + side(pred, gt))


def test_aji_dice_obj_match_brute_force_on_random_maps():
    rng = np.random.default_rng(7)
    for _ in range(12):
        size = int(rng.integers(20, 40))
        gt = _random_maps(rng, size, int(rng.integers(1, 10)))
        pred = _random_maps(rng, size, int(rng.integers(1, 10)))
        assert aji(gt, pred) == pytest.approx(_aji_brute(gt, pred), abs=1e-12)
        assert dice_obj(gt, pred) == pytest.approx(_dice_obj_brute(gt, pred), abs=1e-12)


# --------------------------------------------------------------------------------- PQ


def test_pq_hand_case_match_miss_and_false_positive():
    # one row: G1 = cols 0-3 (4 px), G2 = cols 7-9 (3 px); S1 = cols 1-4 (4 px), S2 = cols
    # 12-13 (2 px). G1 n S1 = cols 1-3 (3 px), G1 u S1 = cols 0-4 (5 px): IoU 0.6 > 0.5,
    # a match. G2 overlaps nothing (FN), S2 overlaps nothing (FP).
    # SQ = 0.6, DQ = 1 / (1 + 1/2 + 1/2) = 0.5, PQ = 0.3
    gt = np.array([[1, 1, 1, 1, 0, 0, 0, 2, 2, 2, 0, 0, 0, 0]])
    pred = np.array([[0, 5, 5, 5, 5, 0, 0, 0, 0, 0, 0, 0, 9, 9]])
    assert pq(gt, pred) == pytest.approx(dict(pq=0.3, sq=0.6, dq=0.5))
    # the same with the maps swapped: FP and FN exchange, the values stay
    assert pq(pred, gt) == pytest.approx(dict(pq=0.3, sq=0.6, dq=0.5))


def test_pq_iou_exactly_half_is_not_a_match():
    # G = cols 0-2 (3 px), S = cols 1-3 (3 px): 2 shared px, union 4 px -> IoU 0.5 exactly,
    # not > 0.5: TP 0, FP 1, FN 1 -> SQ 0, DQ 0, PQ 0. One more shared pixel (S = cols 0-3:
    # 3 / 4 = 0.75) matches: SQ 0.75, DQ 1, PQ 0.75.
    gt = np.array([[1, 1, 1, 0, 0]])
    assert pq(gt, np.array([[0, 1, 1, 1, 0]])) == dict(pq=0.0, sq=0.0, dq=0.0)
    assert pq(gt, np.array([[1, 1, 1, 1, 0]])) == pytest.approx(dict(pq=0.75, sq=0.75, dq=1))


def test_pq_merged_prediction_matches_at_most_one_object():
    # GT [1 1 1 0 2], prediction S = cols 0-4 (5 px) covers both: IoU(G1, S) = 3/5 (match),
    # IoU(G2, S) = 1/5. TP 1 (IoU 0.6), FN 1 (G2), FP 0 -> SQ 0.6, DQ 1 / 1.5, PQ 0.4.
    # The 6x6 case (GT6 / PRED6): A in G1 IoU 4/6, B in G2 IoU 6/9, C unmatched:
    # TP 2, FP 1, FN 0 -> SQ 2/3, DQ 2 / 2.5 = 0.8, PQ 8/15.
    assert pq(np.array([[1, 1, 1, 0, 2]]), np.array([[3, 3, 3, 3, 3]])) == pytest.approx(
        dict(pq=0.4, sq=0.6, dq=2 / 3))
    assert pq(GT6, PRED6) == pytest.approx(dict(pq=8 / 15, sq=2 / 3, dq=0.8))


def test_pq_empty_cases():
    # the module's convention (as aji / dice_obj): both empty 1.0, one side empty 0.0
    empty = np.zeros((4, 4), int)
    some = np.zeros((4, 4), int)
    some[1:3, 1:3] = 5
    assert pq(empty, empty) == dict(pq=1.0, sq=1.0, dq=1.0)
    assert pq(some, empty) == dict(pq=0.0, sq=0.0, dq=0.0)
    assert pq(empty, some) == dict(pq=0.0, sq=0.0, dq=0.0)
    assert pq(some, some) == dict(pq=1.0, sq=1.0, dq=1.0)
    with pytest.raises(ValueError, match='differ in shape'):
        pq(empty, some[:3])
    with pytest.raises(ValueError, match='pred_inst: expected an integer label map'):
        pq(empty, np.zeros((4, 4)))


def _pq_brute(gt, pred):
    """Kirillov et al. 2019 PQ with full masks per object and exact fractions."""
    from fractions import Fraction
    g_ids = [g for g in np.unique(gt) if g != 0]
    p_ids = [p for p in np.unique(pred) if p != 0]
    if not g_ids and not p_ids:
        return dict(pq=1.0, sq=1.0, dq=1.0)
    ious, used_g, used_p = [], set(), set()
    for g in g_ids:
        for p in p_ids:
            inter = int(((gt == g) & (pred == p)).sum())
            union = int(((gt == g) | (pred == p)).sum())
            if Fraction(inter, union) > Fraction(1, 2):
                assert g not in used_g and p not in used_p  # uniqueness (Theorem 1)
                used_g.add(g)
                used_p.add(p)
                ious.append(inter / union)
    tp, fp, fn = len(ious), len(p_ids) - len(ious), len(g_ids) - len(ious)
    sq = sum(ious) / tp if tp else 0.0
    dq = tp / (tp + fp / 2 + fn / 2)
    return dict(pq=sq * dq, sq=sq, dq=dq)


def test_pq_matches_brute_force_on_random_maps():
    rng = np.random.default_rng(11)
    n_matched = 0
    for _ in range(30):
        size = int(rng.integers(16, 32))
        gt = _random_maps(rng, size, int(rng.integers(0, 10)))
        # predictions: the GT shifted by one pixel (many matches) or independent rectangles
        pred = np.roll(gt, 1, axis=int(rng.integers(0, 2))) if rng.random() < 0.5 \
            else _random_maps(rng, size, int(rng.integers(0, 10)))
        ref = _pq_brute(gt, pred)
        n_matched += ref['sq'] > 0
        assert pq(gt, pred) == pytest.approx(ref, abs=1e-12)
        # non-contiguous, large ids (the np.unique path of the relabelling) give the same
        assert pq(np.where(gt > 0, gt + 2**40, 0), pred * 37) == pytest.approx(ref, abs=1e-12)
    assert n_matched >= 10  # the check covered images with matches, not only zeros


def test_instance_map_bad_input_raises():
    with pytest.raises(ValueError, match='gt_inst'):
        aji(np.zeros((3, 3)), np.zeros((3, 3), int))  # float map
    with pytest.raises(ValueError, match='negative'):
        aji(-np.ones((3, 3), int), np.zeros((3, 3), int))
    with pytest.raises(ValueError, match='differ in shape'):
        dice_obj(np.zeros((3, 3), int), np.zeros((3, 4), int))


# ------------------------------------------------------------------------ pixel_scores


def test_pixel_scores_with_ignore():
    # valid pixels: 5 (one 255). gt fg at (0,1), (0,2), (1,2); pred fg at (0,0), (0,1),
    # (1,0) [ignored], (1,2). tp = 2 [(0,1),(1,2)], fp = 1 [(0,0)], fn = 1 [(0,2)],
    # tn = 1 [(1,1)] -> acc = 3/5, F1 = 2*2 / (2*2 + 1 + 1) = 2/3
    gt = np.array([[0, 1, 1], [255, 0, 1]])
    pred = np.array([[1, 1, 0], [1, 0, 1]])
    s = pixel_scores(gt, pred)
    assert s['pixel_acc'] == pytest.approx(0.6)
    assert s['pixel_f1'] == pytest.approx(2 / 3)
    assert (s['tp'], s['fp'], s['fn'], s['tn']) == (2, 1, 1, 1)


def test_pixel_scores_several_fg_classes_and_empty():
    # with fg_classes (1, 2) the gt class 2 at (0,0) is foreground and pred class 1 there
    # is a tp: tp = 2, fp = 0, fn = 0, tn = 2 -> acc 1, F1 1
    s = pixel_scores(np.array([[2, 1], [0, 0]]), np.array([[1, 2], [0, 0]]), fg_classes=(1, 2))
    assert (s['pixel_acc'], s['pixel_f1']) == (1.0, 1.0)
    # no foreground anywhere: F1 1.0 by convention, acc 1
    s = pixel_scores(np.zeros((2, 2), int), np.zeros((2, 2), int))
    assert (s['pixel_acc'], s['pixel_f1']) == (1.0, 1.0)
    # every pixel ignored: NaN
    assert np.isnan(pixel_scores(np.full((2, 2), 255), np.ones((2, 2)))['pixel_acc'])


# ------------------------------------------------------------- instances_from_semantic


def test_instances_from_semantic_removes_small_and_fills_holes():
    sem = np.zeros((20, 20), np.uint8)
    sem[1:6, 1:6] = 1
    sem[3, 3] = 0            # ring of 24 px with a 1 px hole -> filled, 25 px
    sem[1:5, 10:15] = 1      # 4 x 5 = 20 px -> kept (not < 20)
    sem[10:14, 1:6] = 1
    sem[13, 5] = 0           # 19 px -> removed
    sem[15:18, 15:18] = 1
    sem[18:20, 18:20] = 1    # 9 + 4 px touching diagonally: one 8-connected object of 13 px
    sem[15:18, 10] = 255     # ignore label is not foreground
    inst = instances_from_semantic(sem, fg=1, min_size=20)
    assert inst.dtype == np.int32
    areas = sorted(np.bincount(inst.ravel())[1:].tolist())
    assert areas == [20, 25]          # the 19 px and the 13 px objects are gone
    assert inst[3, 3] > 0             # the hole is filled
    # with min_size 10 the 13 px diagonal pair stays, as one object
    inst = instances_from_semantic(sem, fg=1, min_size=10)
    assert sorted(np.bincount(inst.ravel())[1:].tolist()) == [13, 19, 20, 25]
    # without hole filling the ring keeps its hole
    assert instances_from_semantic(sem, min_size=20, fill_holes=False)[3, 3] == 0


def test_instances_from_semantic_matches_skimage():
    from scipy.ndimage import binary_fill_holes
    from skimage.measure import label
    from skimage.morphology import remove_small_objects

    rng = np.random.default_rng(5)
    sem = (rng.random((60, 60)) < 0.45).astype(np.uint8)
    # skimage >= 0.26: max_size=19 removes objects of <= 19 px, i.e. < 20 px
    ref = label(remove_small_objects(label(sem), max_size=19) > 0)
    ref = label(binary_fill_holes(ref > 0))
    ours = instances_from_semantic(sem, min_size=20)
    # same partition (label numbering may differ): one-to-one map between labels
    pairs = np.unique(np.stack([ours.ravel(), ref.ravel()]), axis=1)
    assert ours.max() == ref.max() == pairs.shape[1] - 1
    assert ((pairs[0] == 0) == (pairs[1] == 0)).all()


# ----------------------------------------------------------------- CellDetectionMetric


def _det_sample(gt_boxes, gt_labels, boxes, scores, labels, img_id, **extra):
    """A DetDataSample as mmengine's Evaluator hands it to process(): via to_dict()."""
    return dict(
        img_id=img_id, ori_shape=(256, 256),
        gt_instances=dict(bboxes=torch.tensor(gt_boxes, dtype=torch.float32).reshape(-1, 4),
                          labels=torch.tensor(gt_labels, dtype=torch.int64)),
        pred_instances=dict(bboxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                            scores=torch.tensor(scores, dtype=torch.float32),
                            labels=torch.tensor(labels, dtype=torch.int64)),
        **extra)


def _build_det(**kwargs):
    from mmdet.registry import METRICS
    metric = METRICS.build(dict(type='CellDetectionMetric', **kwargs))
    metric.dataset_meta = dict(classes=('mitosis', 'other'))
    return metric


def test_cell_detection_metric_hand_case():
    metric = _build_det(radius=5, classwise=True, coco_ap=False)
    # Image 1: GT boxes (20x20) with labels [0, 0, 1]; annotated points: GT0 (10,10),
    # GT1 (50,56) (not its box centre (50,50)), GT2 (90,90).
    #   a [2,0,22,20] s.9 l0: centre (12,10), 2 px from GT0 -> point tp;
    #     IoU with GT0 = 18*20 / (400+400-360) = 0.818 -> box tp
    #   b [40,47,60,67] s.8 l1: centre (50,57), 1 px from GT1's point -> point tp;
    #     IoU with GT1 = 20*13 / (800-260) = 0.48 -> box fp, GT1 box fn
    #   c [200,200,220,220] s.4: below score_thr 0.5 -> dropped
    #   d [80,80,100,100] s.6 l1: exactly GT2 -> point tp, box tp
    #   points (tp, fp, fn) = (3, 0, 0); boxes (2, 1, 1)
    s1 = _det_sample([[0, 0, 20, 20], [40, 40, 60, 60], [80, 80, 100, 100]], [0, 0, 1],
                     [[2, 0, 22, 20], [40, 47, 60, 67], [200, 200, 220, 220], [80, 80, 100, 100]],
                     [0.9, 0.8, 0.4, 0.6], [0, 1, 0, 1], img_id=1,
                     gt_points=np.array([[10, 10], [50, 56], [90, 90]], np.float32))
    # Image 2: no GT, one prediction s.7 l0 -> points (0, 1, 0), boxes (0, 1, 0)
    s2 = _det_sample([], [], [[5, 5, 25, 25]], [0.7], [0], img_id=2)
    # Image 3: nothing at all -> excluded from the per-image means
    s3 = _det_sample([], [], [], [], [], img_id=3)
    metric.process({}, [s1, s2])
    metric.process({}, [s3])
    res = metric.evaluate(3)
    # pooled points: tp 3, fp 1, fn 0 -> recall 1, precision 3/4, F1 6/7
    assert res['cell/recall'] == pytest.approx(1.0)
    assert res['cell/precision'] == pytest.approx(0.75)
    assert res['cell/f1'] == pytest.approx(6 / 7)
    # per image: image 1 (1, 1, 1), image 2 (0, 0, 0), image 3 excluded -> 0.5 each
    for k in ('recall_img', 'precision_img', 'f1_img'):
        assert res[f'cell/{k}'] == pytest.approx(0.5)
    # paper's averages: recall over images with GT (image 1 only: 3/3 = 1); precision over
    # images with a prediction (image 1: 3/3, image 2: 0/1) -> 0.5
    assert res['cell/avg_recall'] == pytest.approx(1.0)
    assert res['cell/avg_precision'] == pytest.approx(0.5)
    # pooled boxes: tp 2, fp 2, fn 1 -> recall 2/3, precision 1/2, F1 4/7
    assert res['cell/box_recall'] == pytest.approx(2 / 3)
    assert res['cell/box_precision'] == pytest.approx(0.5)
    assert res['cell/box_f1'] == pytest.approx(4 / 7)
    # class 'mitosis': GT0, GT1; preds a (tp with GT0), image-2 pred (fp); GT1 missed
    # (b is class 1) -> tp 1, fp 1, fn 1 -> 0.5, 0.5, 0.5
    assert (res['cell/mitosis_recall'], res['cell/mitosis_precision'],
            res['cell/mitosis_f1']) == pytest.approx((0.5, 0.5, 0.5))
    # class 'other': GT2; preds b (fp: GT1 is class 0) and d (tp) -> 1, 0.5, 2/3
    assert (res['cell/other_recall'], res['cell/other_precision'],
            res['cell/other_f1']) == pytest.approx((1.0, 0.5, 2 / 3))


def test_cell_detection_metric_max_per_img_and_ignore():
    from mmdet.structures.bbox import HorizontalBoxes
    metric = _build_det(radius=5, max_per_img=2, coco_ap=False)
    # three GT, three exact predictions with scores .9, .8, .7 (boxes as HorizontalBoxes,
    # as LoadAnnotations produces): max_per_img=2 keeps the two best -> tp 2, fn 1
    boxes = [[0, 0, 10, 10], [30, 30, 40, 40], [60, 60, 70, 70]]
    s = _det_sample(boxes, [0, 0, 0], boxes, [0.9, 0.8, 0.7], [0, 0, 0], img_id=0)
    s['gt_instances']['bboxes'] = HorizontalBoxes(torch.tensor(boxes, dtype=torch.float32))
    metric.process({}, [s])
    res = metric.compute_metrics(metric.results)
    assert (res['recall'], res['precision']) == pytest.approx((2 / 3, 1.0))

    metric = _build_det(radius=5, coco_ap=False)
    # GT1 is ignored (ignore_flags); the prediction on it is neither tp nor fp, the one on
    # GT0 is a tp, the one far away an fp -> tp 1, fp 1, fn 0: recall 1, precision 1/2
    s = _det_sample(boxes[:2], [0, 0], [boxes[0], boxes[1], [100, 100, 110, 110]],
                    [0.9, 0.9, 0.9], [0, 0, 0], img_id=0)
    s['gt_instances']['ignore_flags'] = torch.tensor([False, True])
    metric.process({}, [s])
    res = metric.compute_metrics(metric.results)
    assert (res['recall'], res['precision']) == pytest.approx((1.0, 0.5))
    assert (res['box_recall'], res['box_precision']) == pytest.approx((1.0, 0.5))


def test_cell_detection_metric_average_recall_and_precision():
    box = [[0, 0, 10, 10], [50, 50, 60, 60]]
    far = [[100, 100, 110, 110], [150, 150, 160, 160]]
    samples = dict(
        # A: 2 GT, 1 found -> recall 1/2, precision 1/1
        a=_det_sample(box, [0, 0], box[:1], [0.9], [0], img_id='a'),
        # B: 1 GT, no prediction -> recall 0; not in the precision mean
        b=_det_sample(box[:1], [0], [], [], [], img_id='b'),
        # C: no GT, 2 predictions -> precision 0; not in the recall mean
        c=_det_sample([], [], far, [0.9, 0.8], [0, 0], img_id='c'),
        # D: its only GT is ignored and absorbs the only prediction -> nothing counts
        d=_det_sample(box[:1], [0], box[:1], [0.9], [0], img_id='d'),
        # E: no GT, one prediction below score_thr 0.5 -> nothing counts
        e=_det_sample([], [], far[:1], [0.3], [0], img_id='e'))
    samples['d']['gt_instances']['ignore_flags'] = torch.tensor([True])

    def run(keys):
        metric = _build_det(radius=5, coco_ap=False)
        metric.process({}, [samples[k] for k in keys])
        return metric.compute_metrics(metric.results)

    res = run('abcde')
    # avg_recall = mean(1/2 [A], 0 [B]) = 0.25; avg_precision = mean(1 [A], 0 [C]) = 0.5
    assert (res['avg_recall'], res['avg_precision']) == pytest.approx((0.25, 0.5))
    # pooled: tp 1, fp 2, fn 2 -> 1/3 each; per-image means (A, B, C): recall 1/6
    assert (res['recall'], res['precision']) == pytest.approx((1 / 3, 1 / 3))
    assert res['recall_img'] == pytest.approx(1 / 6)
    # no qualifying image: the pooled value (module convention)
    res = run('c')  # no GT, false positives: recall 0; precision 0/2 = 0
    assert (res['avg_recall'], res['avg_precision']) == (0.0, 0.0)
    res = run('b')  # GT, no prediction: recall 0; precision 0.0 (GT missed)
    assert (res['avg_recall'], res['avg_precision']) == (0.0, 0.0)
    res = run('de')  # neither counted GT nor counted prediction: 1.0 and 1.0
    assert (res['avg_recall'], res['avg_precision']) == (1.0, 1.0)


def test_cell_detection_metric_bad_sample_raises():
    metric = _build_det(coco_ap=False)
    s = _det_sample([[0, 0, 10, 10]], [0], [], [], [], img_id=7,
                    gt_points=np.zeros((2, 2)))  # 2 points for 1 box
    with pytest.raises(ValueError, match='img_id=7.*gt_points'):
        metric.process({}, [s])
    s = _det_sample([[0, 0, 10, 10]], [0], [], [], [], img_id=8)
    del s['gt_instances']
    with pytest.raises(ValueError, match='img_id=8.*gt_instances'):
        metric.process({}, [s])


def test_coco_ap_leaves_the_process_stdout_alone(monkeypatch):
    """The benchmark scores runs in worker threads: swapping ``sys.stdout`` for the whole
    process (contextlib.redirect_stdout) there lost the benchmark's own lines once two
    swaps interleaved. The stream seen inside pycocotools must be the caller's."""
    import sys

    from pycocotools.cocoeval import COCOeval
    seen = []
    evaluate = COCOeval.evaluate

    def spy(self):
        seen.append(sys.stdout)
        return evaluate(self)

    monkeypatch.setattr(COCOeval, 'evaluate', spy)
    before = sys.stdout
    metric = _build_det()
    boxes = [[0, 0, 20, 20], [40, 40, 60, 60]]
    metric.process({}, [_det_sample(boxes, [0, 0], boxes, [0.9, 0.8], [0, 0], 0)])
    assert metric.compute_metrics(metric.results)['coco_AP'] == pytest.approx(1.0)
    assert seen == [before] and sys.stdout is before


def test_cell_detection_coco_ap_perfect_and_no_gt():
    metric = _build_det()
    boxes = [[0, 0, 20, 20], [40, 40, 60, 60], [80, 80, 100, 100]]
    metric.process({}, [_det_sample(boxes, [0, 1, 0], boxes, [1.0, 0.9, 0.8], [0, 1, 0], 0),
                        _det_sample(boxes[:1], [1], boxes[:1], [0.7], [1], 1)])
    res = metric.compute_metrics(metric.results)
    # every GT found exactly, right class, no false positive: AP = AP50 = 1
    assert res['coco_AP'] == pytest.approx(1.0)
    assert res['coco_AP50'] == pytest.approx(1.0)

    metric = _build_det()
    metric.process({}, [_det_sample([], [], boxes, [0.9, 0.8, 0.7], [0, 0, 0], 0)])
    res = metric.compute_metrics(metric.results)
    assert res['coco_AP'] == -1.0 and res['coco_AP50'] == -1.0  # no GT: undefined


def test_cell_detection_coco_ap_matches_pycocotools(tmp_path):
    # Independent construction: a COCO json on disk, COCO(file) + loadRes(list) +
    # COCOeval.summarize(), as every COCO user does.
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(11)
    samples, images, anns, dets = [], [], [], []
    for i in range(4):
        n = int(rng.integers(3, 9))
        xy = rng.uniform(0, 200, (n, 2))
        wh = rng.uniform(10, 30, (n, 2))
        gt = np.round(np.concatenate([xy, xy + wh], 1) * 4) / 4  # exact in float32
        gl = rng.integers(0, 2, n)
        keep = rng.random(n) < 0.8
        pred = gt[keep] + rng.normal(0, 3, (int(keep.sum()), 4))
        pred[:, 2:] = np.maximum(pred[:, 2:], pred[:, :2] + 1)
        extra = np.round(rng.uniform(0, 200, (3, 2)))
        pred = np.concatenate([np.round(pred * 4) / 4, np.concatenate([extra, extra + 20], 1)])
        pl = np.concatenate([np.where(rng.random(int(keep.sum())) < 0.85, gl[keep], 1 - gl[keep]),
                             rng.integers(0, 2, 3)])
        ps = rng.uniform(0.05, 1.0, len(pred))
        samples.append(_det_sample(gt.tolist(), gl.tolist(), pred.tolist(), ps.tolist(),
                                   pl.tolist(), img_id=i))
        images.append(dict(id=i, width=256, height=256, file_name=f'{i}.png'))
        for b, c in zip(gt, gl):
            w, h = float(b[2] - b[0]), float(b[3] - b[1])
            anns.append(dict(id=len(anns) + 1, image_id=i, category_id=int(c), iscrowd=0,
                             bbox=[float(b[0]), float(b[1]), w, h], area=w * h))
        for b, c, s in zip(pred, pl, ps):
            dets.append(dict(image_id=i, category_id=int(c), score=float(s),
                             bbox=[float(b[0]), float(b[1]), float(b[2] - b[0]),
                                   float(b[3] - b[1])]))
    path = tmp_path / 'gt.json'
    path.write_text(json.dumps(dict(images=images, annotations=anns, categories=[
        dict(id=0, name='mitosis'), dict(id=1, name='other')])))
    coco = COCO(str(path))
    ev = COCOeval(coco, coco.loadRes(dets), 'bbox')
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert 0.1 < ev.stats[0] < 0.99  # a non-trivial case

    metric = _build_det()
    metric.process({}, samples)
    res = metric.compute_metrics(metric.results)
    # coordinates are multiples of 1/4, exact in the float32 tensors: same numbers
    assert res['coco_AP'] == pytest.approx(ev.stats[0], rel=1e-9)
    assert res['coco_AP50'] == pytest.approx(ev.stats[1], rel=1e-9)


# ------------------------------------------- CellDetectionMetric: exclusive recall
# Exclusive cross-entropy paper, Sect. 4.1: Rec_exc(y) = Rec(y) * (1 - Rec(!= y)).
# Classes 0 'nucleus', 1 'micronucleus'; 10x10 boxes whose centres are the points below.
NUC, MIC = 0, 1


def _box(x, y):
    return [x - 5, y - 5, x + 5, y + 5]


def _points_sample(gt, pred, img_id, ignored=()):
    """gt / pred: lists of ((x, y), label); ``ignored``: indices into gt."""
    s = _det_sample([_box(*p) for p, _ in gt], [c for _, c in gt],
                    [_box(*p) for p, _ in pred], [0.9] * len(pred), [c for _, c in pred],
                    img_id=img_id)
    if ignored:
        s['gt_instances']['ignore_flags'] = torch.tensor(
            [i in ignored for i in range(len(gt))])
    return s


def _build_excl(classes=('nucleus', 'micronucleus'), **kwargs):
    from mmdet.registry import METRICS
    kwargs.setdefault('exclusive_recall', True)
    metric = METRICS.build(dict(type='CellDetectionMetric', radius=5, coco_ap=False,
                                **kwargs))
    metric.dataset_meta = dict(classes=classes)
    return metric


# Image A: nuclei N1 (20,20), N2 (60,20), N3 (100,20), N4 (140,20); micronuclei
# M1 (20,100), M2 (60,100).
#   labelled nucleus: (21,20) -> N1, (60,22) -> N2, (100,20) -> N3, (20,102) -> M1 (2 px:
#     an other-class hit), (60,108): 8 px from M2 > radius 5 -> matches nothing
#   labelled micronucleus: (60,101) -> M2, (140,18) -> N4 (other-class hit)
IMG_A = dict(
    gt=[((20, 20), NUC), ((60, 20), NUC), ((100, 20), NUC), ((140, 20), NUC),
        ((20, 100), MIC), ((60, 100), MIC)],
    pred=[((21, 20), NUC), ((60, 22), NUC), ((100, 20), NUC), ((20, 102), NUC),
          ((60, 108), NUC), ((60, 101), MIC), ((140, 18), MIC)])
# Image B: nuclei N5 (30,30), N6 (36,30); micronuclei M3 (100,100), M4 (150,150).
#   labelled nucleus: (30,31) -> N5 (6.08 px from N6: too far)
#   labelled micronucleus: (33,30) is 3 px from both N5 and N6 but matches only one of
#     them (one-to-one); (100,100) -> M3; M4 is missed
IMG_B = dict(
    gt=[((30, 30), NUC), ((36, 30), NUC), ((100, 100), MIC), ((150, 150), MIC)],
    pred=[((30, 31), NUC), ((33, 30), MIC), ((100, 100), MIC)])


def test_exclusive_recall_single_image_hand_case():
    metric = _build_excl()
    metric.process({}, [_points_sample(img_id='A', **IMG_A)])
    res = metric.evaluate(1)
    # nucleus: Rec = 3/4 (N1-N3 of 4); Rec(!=) = 1/2 (M1 of M1, M2; the prediction 8 px
    # from M2 does not count) -> 3/4 * (1 - 1/2) = 0.375
    assert res['cell/nucleus_recall'] == pytest.approx(0.75)
    assert res['cell/nucleus_recall_other'] == pytest.approx(0.5)
    assert res['cell/nucleus_exclusive_recall'] == pytest.approx(0.375)
    # micronucleus: Rec = 1/2 (M2; M1 is found only by a nucleus-labelled prediction);
    # Rec(!=) = 1/4 (N4 of N1-N4) -> 1/2 * 3/4 = 0.375
    assert res['cell/micronucleus_recall'] == pytest.approx(0.5)
    assert res['cell/micronucleus_recall_other'] == pytest.approx(0.25)
    assert res['cell/micronucleus_exclusive_recall'] == pytest.approx(0.375)


def test_exclusive_recall_pooled_over_images_and_one_to_one():
    metric = _build_excl()
    metric.process({}, [_points_sample(img_id='A', **IMG_A)])
    metric.process({}, [_points_sample(img_id='B', **IMG_B)])
    res = metric.compute_metrics(metric.results)
    # nucleus: Rec = (3 + 1) / (4 + 2) = 2/3; Rec(!=) = (1 + 0) / (2 + 2) = 1/4
    # -> 2/3 * 3/4 = 1/2 (the mean of the per-image values, (0.375 + 1/2 * 1) / 2 =
    # 0.4375, would differ)
    assert res['nucleus_recall'] == pytest.approx(2 / 3)
    assert res['nucleus_recall_other'] == pytest.approx(0.25)
    assert res['nucleus_exclusive_recall'] == pytest.approx(0.5)
    # micronucleus: Rec = (1 + 1) / (2 + 2) = 1/2; Rec(!=) = (1 + 1) / (4 + 2) = 1/3 (the
    # prediction between N5 and N6 counts once) -> 1/2 * 2/3 = 1/3
    assert res['micronucleus_recall'] == pytest.approx(0.5)
    assert res['micronucleus_recall_other'] == pytest.approx(1 / 3)
    assert res['micronucleus_exclusive_recall'] == pytest.approx(1 / 3)
    # the flag only adds the per-class keys: every other key equals a run without it
    plain = _build_det(radius=5, coco_ap=False)
    plain.dataset_meta = dict(classes=('nucleus', 'micronucleus'))
    plain.process({}, [_points_sample(img_id='A', **IMG_A), _points_sample(img_id='B', **IMG_B)])
    res_plain = plain.compute_metrics(plain.results)
    assert set(res) - set(res_plain) == {f'{c}_{k}' for c in ('nucleus', 'micronucleus')
                                         for k in ('recall', 'recall_other',
                                                   'exclusive_recall')}
    assert all(res[k] == res_plain[k] for k in res_plain)


def test_exclusive_recall_with_classwise_shares_class_recall():
    metric = _build_excl(classwise=True)
    metric.process({}, [_points_sample(img_id='A', **IMG_A)])
    res = metric.compute_metrics(metric.results)
    # classwise nucleus: tp 3, fp 2 ((20,102) and (60,108) are not nuclei), fn 1
    assert res['nucleus_recall'] == pytest.approx(0.75)
    assert res['nucleus_precision'] == pytest.approx(0.6)
    assert res['nucleus_exclusive_recall'] == pytest.approx(0.375)


def test_exclusive_recall_no_other_class_gt_and_ignored_gt():
    # Only nuclei in the set: N1 (20,20), N2 (60,20); one prediction labelled nucleus on N1.
    # nucleus: Rec = 1/2; Rec(!=) has denominator 0 and a counted nucleus prediction ->
    # 0.0 (module convention) -> exclusive 1/2.
    # micronucleus: no GT and no prediction -> Rec = 1.0; Rec(!=) = 0/2 -> exclusive 1.0
    gt = [((20, 20), NUC), ((60, 20), NUC)]
    metric = _build_excl()
    metric.process({}, [_points_sample(gt, [((20, 20), NUC)], img_id='n')])
    res = metric.compute_metrics(metric.results)
    assert (res['nucleus_recall'], res['nucleus_recall_other'],
            res['nucleus_exclusive_recall']) == pytest.approx((0.5, 0.0, 0.5))
    assert (res['micronucleus_recall'], res['micronucleus_recall_other'],
            res['micronucleus_exclusive_recall']) == pytest.approx((1.0, 0.0, 1.0))
    # no prediction at all: Rec(!= nucleus) has neither GT nor prediction -> 1.0, so the
    # exclusive recall of nucleus is 0 * (1 - 1) = 0
    metric = _build_excl()
    metric.process({}, [_points_sample(gt, [], img_id='n')])
    res = metric.compute_metrics(metric.results)
    assert (res['nucleus_recall'], res['nucleus_recall_other'],
            res['nucleus_exclusive_recall']) == (0.0, 1.0, 0.0)
    # ignored GT count nowhere: N1 valid, M1 (20,100) valid, M2 (60,100) ignored; nucleus
    # predictions on N1, M1 and M2 -> Rec(!= nucleus) = 1/1 (not 2/2, not 1/2) -> 0;
    # Rec(micronucleus) = 0/1 (M2 is not missed either)
    gt = [((20, 20), NUC), ((20, 100), MIC), ((60, 100), MIC)]
    pred = [((20, 20), NUC), ((20, 100), NUC), ((60, 100), NUC)]
    metric = _build_excl()
    metric.process({}, [_points_sample(gt, pred, img_id='i', ignored=(2, ))])
    res = metric.compute_metrics(metric.results)
    assert (res['nucleus_recall'], res['nucleus_recall_other'],
            res['nucleus_exclusive_recall']) == (1.0, 1.0, 0.0)
    assert res['micronucleus_recall'] == 0.0
    # the only other-class GT is ignored and absorbs the only nucleus prediction: nothing
    # counts for Rec(!= nucleus) -> 1.0 (neither GT nor counted prediction)
    metric = _build_excl()
    metric.process({}, [_points_sample([((20, 20), NUC), ((60, 100), MIC)],
                                       [((60, 100), NUC)], img_id='j', ignored=(1, ))])
    res = metric.compute_metrics(metric.results)
    assert (res['nucleus_recall'], res['nucleus_recall_other']) == (0.0, 1.0)


def test_exclusive_recall_errors_and_flag_off():
    from mmdet.registry import METRICS
    sample = _points_sample(img_id='A', **IMG_A)
    metric = METRICS.build(dict(type='CellDetectionMetric', coco_ap=False,
                                exclusive_recall=True))
    with pytest.raises(ValueError, match=r'exclusive_recall=True\) needs dataset_meta'):
        metric.process({}, [sample])
    metric = _build_excl(classes=('nucleus', ))
    with pytest.raises(ValueError, match=r'CellDetectionMetric\(exclusive_recall=True\) '
                       r'needs at least 2 classes.*got 1'):
        metric.process({}, [sample])
    metric = _build_excl(classes=('nucleus', 'micronucleus'))
    bad = _points_sample([((20, 20), 2)], [], img_id='bad')
    with pytest.raises(ValueError, match='img_id=bad: gt label 2 outside the 2 classes'):
        metric.process({}, [bad])
    # flag off (default): only the class-agnostic keys
    metric = _build_excl(exclusive_recall=False)
    metric.process({}, [sample])
    res = metric.compute_metrics(metric.results)
    assert set(res) == {'recall', 'precision', 'f1', 'recall_img', 'precision_img',
                        'f1_img', 'avg_recall', 'avg_precision', 'box_recall',
                        'box_precision', 'box_f1'}


def test_exclusive_recall_through_whole_image_metric(tmp_path):
    # WholeImageDetectionMetric scores its merged images with _image_result and
    # compute_metrics of CellDetectionMetric. One 200x200 frame = image A, one patch
    # covering it.
    from mmdet.registry import METRICS
    names = {NUC: 'nucleus', MIC: 'micronucleus'}
    anns = [dict(id=i + 1, image_id=1, category_id=c + 1, bbox=[x - 5, y - 5, 10, 10],
                 area=100, iscrowd=0) for i, ((x, y), c) in enumerate(IMG_A['gt'])]
    ann_file = str(tmp_path / 'frames.json')
    with open(ann_file, 'w') as f:
        json.dump(dict(images=[dict(id=1, file_name='a.png', width=200, height=200)],
                       annotations=anns,
                       categories=[dict(id=c + 1, name=n) for c, n in names.items()]), f)
    metric = METRICS.build(dict(type='WholeImageDetectionMetric', ann_file=ann_file,
                                radius=5, coco_ap=False, exclusive_recall=True))
    metric.dataset_meta = dict(classes=('nucleus', 'micronucleus'))
    patch = _points_sample([], IMG_A['pred'], img_id='p0')
    del patch['gt_instances']
    patch.update(parent='a.png', offset=[0, 0], ori_shape=(200, 200))
    metric.process({}, [patch])
    res = metric.compute_metrics(metric.results)
    # same numbers as test_exclusive_recall_single_image_hand_case (no box overlaps
    # another by IoU > 0.5, so NMS keeps all seven predictions)
    assert (res['nucleus_recall'], res['nucleus_recall_other'],
            res['nucleus_exclusive_recall']) == pytest.approx((0.75, 0.5, 0.375))
    assert (res['micronucleus_recall'], res['micronucleus_recall_other'],
            res['micronucleus_exclusive_recall']) == pytest.approx((0.5, 0.25, 0.375))


# ------------------------------------------------------------------------ NucleiMetric


def _seg_sample(gt_sem, pred_sem, name, gt_inst=None):
    """A SegDataSample as mmengine's Evaluator hands it to process(): via to_dict()."""
    s = dict(img_path=name,
             gt_sem_seg=dict(data=torch.as_tensor(np.asarray(gt_sem, np.int64))[None]),
             pred_sem_seg=dict(data=torch.as_tensor(np.asarray(pred_sem, np.int64))[None]))
    if gt_inst is not None:
        s['gt_instance_map'] = np.asarray(gt_inst)
    return s


def test_nuclei_metric_hand_case():
    from mmseg.registry import METRICS
    metric = METRICS.build(dict(type='NucleiMetric', min_size=0))
    # Image 1: the 6x6 case: AJI 10/17, Dice_obj 11/15 (see the tests above).
    #   pixels: gt fg 15, pred fg 12, tp 10, fp 2, fn 5, tn 36 - 17 = 19
    s1 = _seg_sample(GT6 > 0, PRED6 > 0, 'a.png', gt_inst=GT6)
    # Image 2: 4x4, GT object rows 0-1 x cols 0-1, bottom row ignored (255), no instance
    # map (-> connected components). The prediction has the object plus foreground on the
    # ignored row, which must count nowhere: tp 4, tn 8 of 12 valid pixels, AJI = Dice = 1
    # (C = U = 4).
    gt2 = np.zeros((4, 4), int)
    gt2[:2, :2] = 1
    gt2[3] = 255
    pred2 = np.zeros((4, 4), int)
    pred2[:2, :2] = 1
    pred2[3] = 1
    s2 = _seg_sample(gt2, pred2, 'b.png')
    # Image 3: empty everywhere -> 16 tn, excluded from the object means
    s3 = _seg_sample(np.zeros((4, 4)), np.zeros((4, 4)), 'c.png')
    metric.process({}, [s1, s2, s3])
    res = metric.evaluate(3)
    # pooled pixels: tp 14, fp 2, fn 5, tn 19 + 8 + 16 = 43 -> acc 57/64, F1 28/35 = 0.8
    assert res['nuclei/pixel_acc'] == pytest.approx(57 / 64)
    assert res['nuclei/pixel_f1'] == pytest.approx(0.8)
    # means over images 1 and 2: Dice (11/15 + 1) / 2 = 13/15, AJI (10/17 + 1) / 2 = 27/34
    assert res['nuclei/dice_obj'] == pytest.approx(13 / 15)
    assert res['nuclei/aji'] == pytest.approx(27 / 34)
    # pooled AJI: (10 + 4) / (17 + 4) = 2/3
    assert res['nuclei/aji_pooled'] == pytest.approx(2 / 3)
    # PQ per image: 8/15, SQ 2/3, DQ 0.8 (see test_pq_merged_prediction...) and 1, 1, 1;
    # means over images 1 and 2: PQ 23/30, SQ 5/6, DQ 0.9
    assert res['nuclei/pq'] == pytest.approx(23 / 30)
    assert res['nuclei/sq'] == pytest.approx(5 / 6)
    assert res['nuclei/dq'] == pytest.approx(0.9)


def test_nuclei_metric_post_processing_and_errors():
    from mmseg.registry import METRICS
    metric = METRICS.build(dict(type='NucleiMetric'))  # min_size 20
    # GT: one 5x5 nucleus (25 px). Prediction: the same nucleus with a 1 px hole (filled by
    # post-processing) plus a 2x2 speck (4 px < 20, removed) -> AJI = Dice_obj = 1, while
    # the pixel scores see the raw map: tp 24, fp 4, fn 1 -> F1 = 48 / 53
    gt = np.zeros((12, 12), int)
    gt[1:6, 1:6] = 1
    pred = gt.copy()
    pred[3, 3] = 0
    pred[9:11, 9:11] = 1
    metric.process({}, [_seg_sample(gt, pred, 'a.png')])
    res = metric.compute_metrics(metric.results)
    assert res['aji'] == pytest.approx(1.0) and res['dice_obj'] == pytest.approx(1.0)
    assert res['pixel_f1'] == pytest.approx(48 / 53)
    with pytest.raises(ValueError, match='bad.png.*differ in shape'):
        metric.process({}, [_seg_sample(gt, pred[:10], 'bad.png')])
    s = _seg_sample(gt, pred, 'nogt.png')
    del s['gt_sem_seg']
    with pytest.raises(ValueError, match='nogt.png.*gt_sem_seg'):
        metric.process({}, [s])


def test_int_scalar_accepts_one_integer_and_names_what_is_wrong():
    import torch

    from projects.common.metrics import int_scalar
    assert int_scalar(3, 'a') == 3
    assert int_scalar(torch.tensor([7]), 'a') == 7
    assert int_scalar(np.float32(2.0), 'a') == 2
    for bad, msg in ((torch.tensor([1, 2]), r'pred must be a single integer, got shape \(2,\)'),
                     (2.5, 'pred must be an integer, got 2.5'),
                     (True, 'pred must be an integer'), (float('nan'), 'pred must be an integer')):
        with pytest.raises(ValueError, match=msg):
            int_scalar(bad, 'pred')
