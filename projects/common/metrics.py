"""Evaluation shared by every method: point / box matching, AJI, object Dice, PQ, pixel
scores.

Plain functions (numpy in, Python numbers out) hold the maths; the registered metrics
(:class:`CellDetectionMetric`, its whole-image variant :class:`WholeImageDetectionMetric`
for patch-wise inference, :class:`NucleiMetric`) only adapt them to MMEngine's
``process`` / ``compute_metrics`` contract.

Conventions used everywhere in this module:

* Instance maps are integer arrays, 0 = background; ids need not be contiguous.
* Empty cases: when both the ground truth and the prediction are empty a score is 1.0
  (nothing to find, nothing found); when exactly one of them is empty it is 0.0.
* Matching is one-to-one and of maximum cardinality (Hungarian algorithm on the pairs
  allowed by the radius / IoU threshold); among maximum matchings the one with the
  smallest total distance (points) or largest total IoU (boxes) is taken.
* Connectivity of connected components is 8 (2-D full connectivity), as in
  ``skimage.measure.label``'s default used by the point-supervision authors' code.
"""
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log
from scipy import ndimage as ndi
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from projects.common.instances import box_centres
from projects.common.io import read_coco
from projects.common.registry import METRICS, register

__all__ = [
    'match_points', 'match_boxes', 'aji', 'dice_obj', 'pq', 'pixel_scores',
    'instances_from_semantic', 'CellDetectionMetric', 'WholeImageDetectionMetric',
    'NucleiMetric'
]

_EIGHT = np.ones((3, 3), dtype=bool)  # 8-connectivity structuring element
_MAX_BOX_CANDIDATES = 1 << 22  # above this many kd-tree box pairs: chunked dense IoU

# --------------------------------------------------------------------------- matching


def _as_points(xy: Any, name: str) -> np.ndarray:
    """(N, 2) float64 array of finite (x, y) points; raises ValueError naming ``name``."""
    arr = np.asarray(xy, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 2), dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f'{name}: expected points of shape (N, 2), got {arr.shape}')
    if not np.isfinite(arr).all():
        raise ValueError(f'{name}: points contain NaN or infinite coordinates')
    return arr


def _as_boxes(xyxy: Any, name: str) -> np.ndarray:
    """(N, 4) float64 array of finite xyxy boxes with x2 >= x1, y2 >= y1."""
    arr = np.asarray(xyxy, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 4), dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f'{name}: expected boxes of shape (N, 4) xyxy, got {arr.shape}')
    if not np.isfinite(arr).all():
        raise ValueError(f'{name}: boxes contain NaN or infinite coordinates')
    bad = np.flatnonzero((arr[:, 2] < arr[:, 0]) | (arr[:, 3] < arr[:, 1]))
    if bad.size:
        raise ValueError(f'{name}: box {bad[0]} {arr[bad[0]].tolist()} has x2 < x1 or '
                         f'y2 < y1 (expected xyxy)')
    return arr


def _centres(boxes: np.ndarray) -> np.ndarray:
    """Centres (N, 2) of xyxy boxes (N, 4)."""
    return box_centres(boxes)


def _point_pairs(gt: np.ndarray, pred: np.ndarray,
                 radius: float) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (i, j) with ||gt_i - pred_j|| <= radius and their cost distance / radius."""
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
    if len(gt) == 0 or len(pred) == 0:
        return empty
    # kd-tree pairs within a slightly enlarged radius, then the exact test: the tree's own
    # boundary test may differ from ``d <= radius`` by a rounding error.
    pairs = cKDTree(gt).sparse_distance_matrix(
        cKDTree(pred), radius * (1 + 1e-9) + 1e-12, output_type='ndarray')
    gi, pj = pairs['i'].astype(np.int64), pairs['j'].astype(np.int64)
    dist = np.sqrt(((gt[gi] - pred[pj])**2).sum(axis=1))
    keep = dist <= radius
    gi, pj, dist = gi[keep], pj[keep], dist[keep]
    cost = dist / radius if radius > 0 else np.zeros_like(dist)
    return gi, pj, cost


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise IoU of broadcastable xyxy box arrays (..., 4); 0 where the union is 0."""
    iw = np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0])
    ih = np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    union = ((a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
             + (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1]) - inter)
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _box_iou_pairs(gt: np.ndarray, pred: np.ndarray,
                   iou_thr: float) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (i, j) with IoU(gt_i, pred_j) >= iou_thr and their cost 1 - IoU.

    Overlapping boxes have centres closer than the sum of their half diagonals, so the
    candidates come from a kd-tree on the centres (radius: largest GT half diagonal +
    largest predicted half diagonal). If that gives more than ~4M candidates (e.g. one
    huge box), the IoU table is computed in row chunks of ~1M entries instead: memory
    stays small either way.
    """
    if len(gt) == 0 or len(pred) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    half_diag = [0.5 * np.hypot(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]).max() for b in (gt, pred)]
    r = (half_diag[0] + half_diag[1]) * (1 + 1e-9) + 1e-9
    tree_g, tree_p = cKDTree(_centres(gt)), cKDTree(_centres(pred))
    if tree_g.count_neighbors(tree_p, r) <= _MAX_BOX_CANDIDATES:
        pairs = tree_g.sparse_distance_matrix(tree_p, r, output_type='ndarray')
        i, j = pairs['i'].astype(np.int64), pairs['j'].astype(np.int64)
        iou = _iou(gt[i], pred[j])
        keep = iou >= iou_thr
        return i[keep], j[keep], 1.0 - iou[keep]
    step = max(1, (1 << 20) // len(pred))
    out_g, out_p, out_c = [], [], []
    for s in range(0, len(gt), step):
        iou = _iou(gt[s:s + step, None, :], pred[None, :, :])
        i, j = np.nonzero(iou >= iou_thr)
        out_g.append(i + s)
        out_p.append(j)
        out_c.append(1.0 - iou[i, j])
    return np.concatenate(out_g), np.concatenate(out_p), np.concatenate(out_c)


def _max_matching(gi: np.ndarray, pj: np.ndarray, cost: np.ndarray, n_gt: int,
                  n_pred: int) -> Tuple[np.ndarray, np.ndarray]:
    """Maximum-cardinality one-to-one matching on the allowed pairs (gi, pj).

    Costs must lie in [0, 1]. Each connected component of the bipartite candidate graph
    is solved with ``linear_sum_assignment`` on a small dense matrix in which forbidden
    pairs cost ``min(rows, cols) + 1``: one more allowed match always lowers the total
    more than any sum of allowed costs raises it, so the solution has maximum cardinality
    and, among those, minimum total cost. Returns matched (gt indices, pred indices).
    """
    if gi.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    n = n_gt + n_pred
    graph = coo_matrix((np.ones(gi.size), (gi, n_gt + pj)), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    edge_comp = comp[gi]
    order = np.argsort(edge_comp, kind='stable')
    gi, pj, cost, edge_comp = gi[order], pj[order], cost[order], edge_comp[order]
    starts = np.flatnonzero(np.r_[True, edge_comp[1:] != edge_comp[:-1]])
    ends = np.r_[starts[1:], gi.size]
    single = (ends - starts) == 1  # a component with one edge: the edge is the matching
    mg, mp = [gi[starts[single]]], [pj[starts[single]]]
    for s, e in zip(starts[~single], ends[~single]):
        g_ids, g_loc = np.unique(gi[s:e], return_inverse=True)
        p_ids, p_loc = np.unique(pj[s:e], return_inverse=True)
        big = min(g_ids.size, p_ids.size) + 1.0
        mat = np.full((g_ids.size, p_ids.size), big)
        mat[g_loc, p_loc] = cost[s:e]
        rows, cols = linear_sum_assignment(mat)
        ok = mat[rows, cols] < big
        mg.append(g_ids[rows[ok]])
        mp.append(p_ids[cols[ok]])
    return np.concatenate(mg), np.concatenate(mp)


PairFn = Callable[[np.ndarray, np.ndarray], Tuple[np.ndarray, np.ndarray, np.ndarray]]


def _match_counts(gt: np.ndarray, pred: np.ndarray, pair_fn: PairFn,
                  ignored: Optional[np.ndarray] = None) -> Tuple[int, int, int]:
    """tp, fp, fn of a maximum one-to-one matching; see :func:`match_points`.

    ``ignored``: ground truth that must be neither found nor missed. The matching to the
    valid ground truth is computed first (so tp is maximal); afterwards every unmatched
    prediction that pairs with any ignored object (several may share one) is dropped:
    it counts neither as tp nor as fp.
    """
    gi, pj, cost = pair_fn(gt, pred)
    _, mp = _max_matching(gi, pj, cost, len(gt), len(pred))
    tp = int(mp.size)
    fn = len(gt) - tp
    unmatched = np.ones(len(pred), dtype=bool)
    unmatched[mp] = False
    if ignored is not None and len(ignored) and unmatched.any():
        rest = np.flatnonzero(unmatched)
        _, pj_ign, _ = pair_fn(ignored, pred[rest])
        unmatched[rest[np.unique(pj_ign)]] = False
    return tp, int(unmatched.sum()), fn


def match_points(gt_xy: Any, pred_xy: Any, radius: float) -> Tuple[int, int, int]:
    """(tp, fp, fn) of a one-to-one matching of points within ``radius`` pixels.

    A ground-truth point and a predicted point may match if their Euclidean distance is
    <= radius. The number of matches is maximised (Hungarian algorithm per connected
    component of the candidate graph, so memory stays small for thousands of points), the
    total distance is minimised among maximum matchings. Empty inputs are allowed.
    """
    if not np.isfinite(radius) or radius < 0:
        raise ValueError(f'radius must be a finite number >= 0, got {radius}')
    gt = _as_points(gt_xy, 'gt_xy')
    pred = _as_points(pred_xy, 'pred_xy')
    return _match_counts(gt, pred, lambda a, b: _point_pairs(a, b, float(radius)))


def match_boxes(gt_xyxy: Any, pred_xyxy: Any, iou_thr: float = 0.5) -> Tuple[int, int, int]:
    """(tp, fp, fn) of a one-to-one matching of xyxy boxes with IoU >= ``iou_thr``.

    Maximum-cardinality matching as in :func:`match_points` (total IoU maximised among
    maximum matchings). Empty inputs are allowed.
    """
    if not 0 < iou_thr <= 1:
        raise ValueError(f'iou_thr must lie in (0, 1], got {iou_thr}')
    gt = _as_boxes(gt_xyxy, 'gt_xyxy')
    pred = _as_boxes(pred_xyxy, 'pred_xyxy')
    return _match_counts(gt, pred, lambda a, b: _box_iou_pairs(a, b, float(iou_thr)))


def _average_rp(counts: np.ndarray) -> Tuple[float, float]:
    """The PU paper's "average recall" and "average precision" (Zhao et al. 2021,
    Tables 1-2): per-image recall tp / (tp + fn) averaged over the images with at least
    one valid GT, per-image precision tp / (tp + fp) averaged over the images with at
    least one counted prediction (tp + fp >= 1). ``counts``: (n_images, 3) tp, fp, fn.

    With no qualifying image the pooled value is returned, i.e. the module convention:
    1.0 when the set has neither GT nor counted prediction, else 0.0.
    """
    tp, fp, fn = (counts[:, i].astype(np.float64) for i in range(3))
    pooled_r, pooled_p, _ = _prf(*(int(v) for v in counts.sum(0)))
    has_gt, has_pred = tp + fn > 0, tp + fp > 0
    recall = float(np.mean(tp[has_gt] / (tp + fn)[has_gt])) if has_gt.any() else pooled_r
    precision = float(np.mean(tp[has_pred] / (tp + fp)[has_pred])) if has_pred.any() \
        else pooled_p
    return recall, precision


def _prf(tp: int, fp: int, fn: int) -> Tuple[float, float, float]:
    """Recall, precision, F1 with the module's empty-case convention.

    A ratio whose denominator is zero is 1.0 when the other side is empty too (no ground
    truth and no prediction) and 0.0 otherwise (e.g. precision of an image with ground
    truth but no prediction).
    """
    empty = 1.0 if tp + fp + fn == 0 else 0.0
    recall = tp / (tp + fn) if tp + fn else empty
    precision = tp / (tp + fp) if tp + fp else empty
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
    return float(recall), float(precision), float(f1)


# ----------------------------------------------------------------- instance-map scores


def _check_map(arr: Any, name: str) -> np.ndarray:
    """A 2-D integer (or bool) label map with no negative id."""
    arr = np.asarray(arr)
    if arr.ndim != 2:
        raise ValueError(f'{name}: expected a 2-D label map, got shape {arr.shape}')
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f'{name}: expected an integer label map, got dtype {arr.dtype}')
    if arr.size and np.issubdtype(arr.dtype, np.signedinteger) and arr.min() < 0:
        raise ValueError(f'{name}: label map has negative ids (min {arr.min()})')
    return arr


def _relabel(arr: np.ndarray) -> Tuple[np.ndarray, int]:
    """Flat int64 labels renumbered 1..K in increasing order of id (0 stays 0), and K."""
    flat = arr.ravel()
    if flat.size == 0:
        return flat.astype(np.int64), 0
    top = int(flat.max())
    if top <= 4 * flat.size + 65536:  # lookup table: O(pixels + max id), no sort
        present = np.bincount(flat.astype(np.int64), minlength=top + 1) > 0
        present[0] = False
        lut = np.cumsum(present)
        return lut[flat], int(lut[-1])
    uniq, inv = np.unique(flat, return_inverse=True)
    if uniq[0] == 0:
        return inv.astype(np.int64), uniq.size - 1
    return inv.astype(np.int64) + 1, uniq.size


def _overlaps(gt_inst: Any, pred_inst: Any) -> Tuple[np.ndarray, ...]:
    """Sparse GT x prediction overlap table of two instance maps.

    Returns (area_g (Ng,), area_p (Np,), gi, pj, inter): object areas and, for every
    pair of overlapping objects (0-based indices in increasing id order), the number of
    shared pixels. One pass over the pixels (bincount / unique on paired ids).
    """
    gt = _check_map(gt_inst, 'gt_inst')
    pred = _check_map(pred_inst, 'pred_inst')
    if gt.shape != pred.shape:
        raise ValueError(f'gt_inst {gt.shape} and pred_inst {pred.shape} differ in shape')
    g, ng = _relabel(gt)
    p, npr = _relabel(pred)
    area_g = np.bincount(g, minlength=ng + 1)[1:]
    area_p = np.bincount(p, minlength=npr + 1)[1:]
    both = (g > 0) & (p > 0)
    key = (g[both] - 1) * npr + (p[both] - 1)
    if ng * npr <= (1 << 22):
        counts = np.bincount(key, minlength=ng * npr)
        nz = np.flatnonzero(counts)
        inter = counts[nz]
    else:
        nz, inter = np.unique(key, return_counts=True)
    return area_g, area_p, nz // max(npr, 1), nz % max(npr, 1), inter


def _best_per_row(rows: np.ndarray, cols: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Index (into the pair arrays) of the highest-score pair of every row; ties go to the
    smallest column (i.e. the smallest object id)."""
    if rows.size == 0:
        return np.zeros(0, np.int64)
    order = np.lexsort((cols, -score, rows))
    r = rows[order]
    return order[np.r_[True, r[1:] != r[:-1]]]


def _aji_sums(gt_inst: Any, pred_inst: Any) -> Tuple[int, int]:
    """Numerator C and denominator U of the AJI (see :func:`aji`)."""
    area_g, area_p, gi, pj, inter = _overlaps(gt_inst, pred_inst)
    union = area_g[gi] + area_p[pj] - inter
    sel = _best_per_row(gi, pj, inter / union)
    c = int(inter[sel].sum())
    u = int(union[sel].sum())
    matched_g = np.zeros(area_g.size, dtype=bool)
    matched_g[gi[sel]] = True
    used_p = np.zeros(area_p.size, dtype=bool)
    used_p[pj[sel]] = True
    u += int(area_g[~matched_g].sum()) + int(area_p[~used_p].sum())
    return c, u


def aji(gt_inst: Any, pred_inst: Any) -> float:
    """Aggregated Jaccard Index, Kumar et al., IEEE TMI 2017 (Algorithm 1).

    For each ground-truth object G_i take the predicted object S_j with the largest IoU
    (ties: smallest id); C += |G_i n S_j|, U += |G_i u S_j|, mark S_j used (a prediction
    may be used by several G_i and then enters U each time). A G_i that overlaps no
    prediction adds |G_i| to U. Finally every predicted object never used adds its area
    to U. AJI = C / U. Both maps without objects: 1.0; exactly one without objects: 0.0.
    """
    c, u = _aji_sums(gt_inst, pred_inst)
    return 1.0 if u == 0 else c / u


def dice_obj(gt_inst: Any, pred_inst: Any) -> float:
    """Object-level Dice, Sirinukunwattana et al., MedIA 2017 (GlaS), eq. (3).

    0.5 * [sum_i w_i Dice(G_i, S*(G_i)) + sum_j w~_j Dice(G~*(S_j), S_j)] with
    w_i = |G_i| / sum_k |G_k|, w~_j = |S_j| / sum_k |S_k|; S*(G_i) is the predicted object
    sharing the most pixels with G_i (ties: smallest id; Dice 0 if none overlaps) and
    G~*(S_j) the ground-truth object sharing the most pixels with S_j. Both maps without
    objects: 1.0; exactly one without objects: 0.0.
    """
    area_g, area_p, gi, pj, inter = _overlaps(gt_inst, pred_inst)
    if area_g.size == 0 or area_p.size == 0:
        return 1.0 if area_g.size == area_p.size else 0.0
    dice = 2.0 * inter / (area_g[gi] + area_p[pj])
    sel_g = _best_per_row(gi, pj, inter.astype(np.float64))
    sel_p = _best_per_row(pj, gi, inter.astype(np.float64))
    term_g = float((area_g[gi[sel_g]] * dice[sel_g]).sum()) / float(area_g.sum())
    term_p = float((area_p[pj[sel_p]] * dice[sel_p]).sum()) / float(area_p.sum())
    return 0.5 * (term_g + term_p)


def pq(gt_inst: Any, pred_inst: Any) -> Dict[str, float]:
    """Panoptic quality of one instance map, Kirillov et al., CVPR 2019 (one class).

    A predicted object S and a GT object G match when IoU(G, S) > 0.5, tested on integers
    as 2 |G n S| > |G u S| (IoU exactly 0.5 does not match). Matches are unique without
    any assignment (Kirillov et al., Theorem 1: IoU > 0.5 needs |G n S| > |G| / 2 and
    > |S| / 2, and the objects of one map are disjoint). SQ = mean IoU of the matches
    (0.0 when nothing matches), DQ = TP / (TP + FP/2 + FN/2) with FP the unmatched
    predictions and FN the unmatched GT objects, PQ = SQ x DQ. Both maps without objects:
    all three 1.0; exactly one without objects: 0.0. Returns ``dict(pq=, sq=, dq=)``.
    """
    area_g, area_p, gi, pj, inter = _overlaps(gt_inst, pred_inst)
    if area_g.size == 0 and area_p.size == 0:
        return dict(pq=1.0, sq=1.0, dq=1.0)
    union = area_g[gi] + area_p[pj] - inter
    match = 2 * inter > union
    tp = int(np.count_nonzero(match))
    fp, fn = area_p.size - tp, area_g.size - tp
    sq = float((inter[match] / union[match]).sum()) / tp if tp else 0.0
    dq = tp / (tp + 0.5 * fp + 0.5 * fn)
    return dict(pq=sq * dq, sq=sq, dq=float(dq))


def pixel_scores(gt_sem: Any, pred_sem: Any, ignore_index: int = 255,
                 fg_classes: Sequence[int] = (1, )) -> Dict[str, float]:
    """Pixel accuracy and pixel F1 of foreground (any of ``fg_classes``) vs background.

    Pixels where ``gt_sem == ignore_index`` are excluded. Returns 'pixel_acc',
    'pixel_f1' and the counts 'tp', 'fp', 'fn', 'tn' (for pooling over images). F1 is 1.0
    when neither map has foreground; both scores are NaN when every pixel is ignored.
    """
    gt = np.asarray(gt_sem)
    pred = np.asarray(pred_sem)
    if gt.shape != pred.shape:
        raise ValueError(f'gt_sem {gt.shape} and pred_sem {pred.shape} differ in shape')
    fg = np.asarray(list(fg_classes))
    valid = gt != ignore_index
    g = np.isin(gt, fg) & valid
    p = np.isin(pred, fg) & valid
    tp = int(np.count_nonzero(g & p))
    fp = int(np.count_nonzero(p & ~g))
    fn = int(np.count_nonzero(g & ~p))
    tn = int(np.count_nonzero(valid)) - tp - fp - fn
    return dict(_pixel_ratios(tp, fp, fn, tn), tp=tp, fp=fp, fn=fn, tn=tn)


def _pixel_ratios(tp: int, fp: int, fn: int, tn: int) -> Dict[str, float]:
    n = tp + fp + fn + tn
    if n == 0:
        return dict(pixel_acc=float('nan'), pixel_f1=float('nan'))
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
    return dict(pixel_acc=(tp + tn) / n, pixel_f1=float(f1))


def instances_from_semantic(sem: Any, fg: int = 1, min_size: int = 20,
                            fill_holes: bool = True) -> np.ndarray:
    """Instance map (int32) from a semantic map: the post-processing of Lin et al.'s
    point-supervised nuclei segmentation (and Qu et al.'s code it follows).

    Pixels equal to ``fg`` form the mask; 8-connected objects smaller than ``min_size``
    pixels are removed, holes are filled (``scipy.ndimage.binary_fill_holes``), and the
    result is labelled into 8-connected components numbered 1..K in raster order.
    """
    sem = np.asarray(sem)
    if sem.ndim != 2:
        raise ValueError(f'sem: expected a 2-D semantic map, got shape {sem.shape}')
    if min_size < 0:
        raise ValueError(f'min_size must be >= 0, got {min_size}')
    mask = sem == fg
    if min_size > 1 and mask.any():
        lab, _ = ndi.label(mask, structure=_EIGHT)
        sizes = np.bincount(lab.ravel())
        keep = sizes >= min_size
        keep[0] = False
        mask = keep[lab]
    if fill_holes:
        mask = ndi.binary_fill_holes(mask)
    lab, _ = ndi.label(mask, structure=_EIGHT)
    return lab.astype(np.int32)


# ------------------------------------------------------------------ registered metrics


def _numpy(x: Any, dtype: Any = None) -> np.ndarray:
    """Tensor / mmdet BaseBoxes / array-like -> numpy array on the CPU."""
    if not isinstance(x, torch.Tensor) and isinstance(getattr(x, 'tensor', None), torch.Tensor):
        x = x.tensor  # mmdet BaseBoxes (e.g. HorizontalBoxes)
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    return arr.astype(dtype) if dtype is not None else arr


def int_scalar(value, what: str) -> int:
    """One integer from an int, a 0-d / one-element tensor or array (an integer-valued float
    too); ValueError naming ``what`` otherwise (bools, several elements, NaN, 2.5)."""
    arr = _numpy(value)
    if arr.size != 1:
        raise ValueError(f'{what} must be a single integer, got shape {arr.shape}')
    v = arr.reshape(-1)[0]
    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.integer)
                                     or np.issubdtype(arr.dtype, np.floating)) \
            or not np.isfinite(v) or int(v) != v:
        raise ValueError(f'{what} must be an integer, got {v.item()!r}')
    return int(v)


def _field(obj: Any, key: str, default: Any = None) -> Any:
    """``obj[key]`` for dicts, ``obj.key`` for data elements; ``default`` if absent."""
    if isinstance(obj, dict):
        return obj.get(key, default)
    return getattr(obj, key, default)


def _sample_name(sample: Any, index: int) -> str:
    for key in ('img_path', 'img_id'):
        value = _field(sample, key)
        if value is not None:
            return f'{key}={value}'
    return f'data sample {index}'


def _format_table(rows: List[Tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [' | '.join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, '-+-'.join('-' * w for w in widths))
    return '\n'.join(lines)


def _other_class_counts(points: np.ndarray, labels: np.ndarray, ign_points: np.ndarray,
                        ign_labels: np.ndarray, p_points: np.ndarray, p_labels: np.ndarray,
                        n_classes: int, pair_fn: PairFn) -> np.ndarray:
    """(n_classes, 3) tp, fp, fn for Rec(!= y) of one image: for each class y, the valid
    GT of the classes != y matched one-to-one (:func:`_match_counts`) by the predictions
    labelled y; ignored GT of the classes != y act as in :func:`_match_counts`."""
    out = np.zeros((n_classes, 3), dtype=np.int64)
    for c in range(n_classes):
        out[c] = _match_counts(points[labels != c], p_points[p_labels == c], pair_fn,
                               ign_points[ign_labels != c])
    return out


def _exclusive_recall(own: Sequence[int], other: Sequence[int]) -> Tuple[float, float, float]:
    """(Rec(y), Rec(!= y), Rec_exc(y)) from pooled (tp, fp, fn) counts.

    Exclusive recall, Sect. 4.1 of the exclusive cross-entropy paper:
    Rec_exc(y) = Rec(y) * (1 - Rec(!= y)). ``own``: counts of GT of class y against the
    predictions labelled y, so Rec(y) = tp / (tp + fn) is the class recall. ``other``:
    counts of GT of the classes != y against the same predictions labelled y, so
    Rec(!= y) = (# other-class GT detected as y) / (# valid other-class GT). Zero
    denominators follow :func:`_prf` (1.0 if there are neither GT nor counted predictions,
    else 0.0).
    """
    rec = _prf(*(int(v) for v in own))[0]
    rec_other = _prf(*(int(v) for v in other))[0]
    return rec, rec_other, rec * (1.0 - rec_other)


@register(METRICS)
class CellDetectionMetric(BaseMetric):
    """Cell detection scores: point matching (recall / precision / F1), box matching and
    COCO AP.

    Predictions: ``pred_instances`` boxes (xyxy, original image coordinates) with
    score >= ``score_thr``, at most ``max_per_img`` by score (the PU paper's protocol);
    their box centres are the predicted points. Ground truth: ``gt_instances`` boxes and
    labels in original coordinates; the GT points are ``gt_points`` (N, 2) from the
    metainfo when present (same order and length as ``gt_instances``), else box centres.
    Ignored ground truth (``gt_instances['ignore_flags']`` or mmdet's
    ``ignored_instances``) is matched after the valid GT: a prediction it absorbs is
    neither tp nor fp (several predictions may be absorbed by one ignored object).

    Output keys (prefixed ``cell/``):

    * ``recall``, ``precision``, ``f1``: tp / fp / fn pooled over all images, one-to-one
      point matching within ``radius`` px, class-agnostic.
    * ``recall_img``, ``precision_img``, ``f1_img``: mean of per-image values. Images
      with neither GT nor prediction are excluded from the mean (1.0 if no image is left);
      an image with only GT or only predictions scores 0.
    * ``avg_recall``, ``avg_precision``: the PU paper's "average recall / average
      precision" (Zhao et al. 2021, Tables 1-2): per-image point recall averaged over the
      images with at least one valid GT; per-image point precision averaged over the
      images with at least one counted prediction (score >= ``score_thr``, within
      ``max_per_img``; a prediction absorbed by ignored GT does not count). If no image
      qualifies, the pooled value (module convention: 1.0 when the set has neither GT nor
      counted prediction, else 0.0).
    * ``box_recall``, ``box_precision``, ``box_f1``: pooled, one-to-one matching with
      IoU >= ``iou_thr``, class-agnostic.
    * ``coco_AP``, ``coco_AP50`` (``coco_ap=True``): pycocotools bbox AP@[.5:.95] and
      AP@.5 over all predictions (not only score >= thr; up to ``coco_max_dets`` per
      image), category-aware; ignored GT enter as ``iscrowd=1``. -1.0 when the set has no
      valid GT (COCO's "undefined"), 0.0 when it has GT but no prediction.
    * ``{class}_recall``, ``{class}_precision``, ``{class}_f1`` (``classwise=True``):
      point matching restricted to GT and predictions of that class, pooled.
    * ``{class}_exclusive_recall``, ``{class}_recall_other``, ``{class}_recall``
      (``exclusive_recall=True``, independent of ``classwise``): the exclusive recall of
      the exclusive cross-entropy paper (Sect. 4.1 "Evaluation"),
      Rec_exc(y) = Rec(y) * (1 - Rec(!= y)), with

      - Rec(y) (``{class}_recall``, the same value ``classwise=True`` reports) = # valid
        GT of class y matched by predictions labelled y / # valid GT of class y;
      - Rec(!= y) (``{class}_recall_other``) = # valid GT of the classes != y matched by
        predictions labelled y / # valid GT of the classes != y.

      Both use the one-to-one point matching within ``radius`` px of ``recall`` on the
      predictions labelled y (score >= ``score_thr``, within ``max_per_img``); the two
      matchings are separate, so one prediction labelled y may match a GT of class y in
      the first and a GT of another class in the second. Ignored GT are neither found
      nor missed (they enter no numerator or denominator); as everywhere, a prediction
      they absorb is not counted, which only matters for the empty case. Counts are
      summed over all images, then divided; a zero denominator follows the module
      convention (e.g. no GT of another class: Rec(!= y) = 0.0 if some prediction is
      labelled y, 1.0 if none).

    A ratio with zero denominator follows the module convention (1.0 if there is neither
    GT nor prediction, else 0.0).

    ``classwise`` and ``exclusive_recall`` need ``dataset_meta['classes']`` (set by the
    evaluator from the dataset); ``exclusive_recall`` needs at least 2 classes. Labels
    outside the classes raise a ValueError naming the image.
    """

    default_prefix: Optional[str] = 'cell'

    def __init__(self, radius: float = 12.0, iou_thr: float = 0.5, score_thr: float = 0.5,
                 max_per_img: int = 100, classwise: bool = False, coco_ap: bool = True,
                 prefix: Optional[str] = 'cell', collect_device: str = 'cpu',
                 coco_max_dets: int = 1000, exclusive_recall: bool = False) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        if not np.isfinite(radius) or radius < 0:
            raise ValueError(f'CellDetectionMetric: radius must be >= 0, got {radius}')
        if not 0 < iou_thr <= 1:
            raise ValueError(f'CellDetectionMetric: iou_thr must lie in (0, 1], got {iou_thr}')
        if max_per_img < 1 or coco_max_dets < 1:
            raise ValueError('CellDetectionMetric: max_per_img and coco_max_dets must be >= 1, '
                             f'got {max_per_img} and {coco_max_dets}')
        self.radius = float(radius)
        self.iou_thr = float(iou_thr)
        self.score_thr = float(score_thr)
        self.max_per_img = int(max_per_img)
        self.classwise = classwise
        self.coco_ap = coco_ap
        self.coco_max_dets = int(coco_max_dets)
        self.exclusive_recall = bool(exclusive_recall)

    def _classes(self) -> Sequence[str]:
        """``dataset_meta['classes']``; ValueError if missing (or, with
        ``exclusive_recall``, fewer than 2)."""
        flag = 'classwise' if self.classwise else 'exclusive_recall'
        classes = (self.dataset_meta or {}).get('classes')
        if not classes:
            raise ValueError(f'CellDetectionMetric({flag}=True) needs dataset_meta["classes"]'
                             ' (set by the evaluator from the dataset); it is missing')
        if self.exclusive_recall and len(classes) < 2:
            raise ValueError(
                f'{type(self).__name__}(exclusive_recall=True) needs at least 2 classes in '
                f'dataset_meta["classes"] (Rec(!= y) counts the GT of the other classes), '
                f'got {len(classes)}: {tuple(classes)}')
        return list(classes)

    def _read_gt(self, sample: Any, name: str) -> Dict[str, np.ndarray]:
        gt = _field(sample, 'gt_instances')
        if gt is None or _field(gt, 'bboxes') is None:
            raise ValueError(f'{name}: no gt_instances.bboxes; the test pipeline must load '
                             'annotations (LoadAnnotations) and pack them (PackDetInputs)')
        boxes = _as_boxes(_numpy(_field(gt, 'bboxes'), np.float64).reshape(-1, 4),
                          f'{name}: gt_instances.bboxes')
        labels = _numpy(_field(gt, 'labels', np.zeros(len(boxes))), np.int64).reshape(-1)
        if labels.size != len(boxes):
            raise ValueError(f'{name}: gt_instances has {len(boxes)} bboxes but '
                             f'{labels.size} labels')
        points = _field(sample, 'gt_points')
        if points is not None:
            points = _as_points(_numpy(points, np.float64), f'{name}: gt_points')
            if len(points) != len(boxes):
                raise ValueError(f'{name}: gt_points has {len(points)} points but '
                                 f'gt_instances has {len(boxes)} boxes; they must be aligned')
        else:
            points = _centres(boxes)
        flags = _field(gt, 'ignore_flags')
        ign = (np.zeros(len(boxes), bool) if flags is None else
               _numpy(flags).astype(bool).reshape(-1))
        if ign.size != len(boxes):
            raise ValueError(f'{name}: gt_instances.ignore_flags has {ign.size} entries for '
                             f'{len(boxes)} boxes')
        ign_boxes, ign_labels, ign_points = boxes[ign], labels[ign], points[ign]
        extra = _field(sample, 'ignored_instances')
        if extra is not None and _field(extra, 'bboxes') is not None:
            eb = _as_boxes(_numpy(_field(extra, 'bboxes'), np.float64).reshape(-1, 4),
                           f'{name}: ignored_instances.bboxes')
            el = _numpy(_field(extra, 'labels', np.zeros(len(eb))), np.int64).reshape(-1)
            ign_boxes = np.concatenate([ign_boxes, eb])
            ign_labels = np.concatenate([ign_labels, el])
            ign_points = np.concatenate([ign_points, _centres(eb)])
        return dict(boxes=boxes[~ign], labels=labels[~ign], points=points[~ign],
                    ign_boxes=ign_boxes, ign_labels=ign_labels, ign_points=ign_points)

    def _read_pred(self, sample: Any, name: str) -> Dict[str, np.ndarray]:
        pred = _field(sample, 'pred_instances')
        if pred is None or _field(pred, 'bboxes') is None:
            raise ValueError(f'{name}: no pred_instances.bboxes in the data sample')
        boxes = _as_boxes(_numpy(_field(pred, 'bboxes'), np.float64).reshape(-1, 4),
                          f'{name}: pred_instances.bboxes')
        scores = _numpy(_field(pred, 'scores', np.ones(len(boxes))), np.float64).reshape(-1)
        labels = _numpy(_field(pred, 'labels', np.zeros(len(boxes))), np.int64).reshape(-1)
        if scores.size != len(boxes) or labels.size != len(boxes):
            raise ValueError(f'{name}: pred_instances has {len(boxes)} bboxes, {scores.size} '
                             f'scores and {labels.size} labels')
        return dict(boxes=boxes, scores=scores, labels=labels)

    def _image_result(self, gt: Dict[str, np.ndarray], pred: Dict[str, np.ndarray],
                      name: str) -> Dict[str, np.ndarray]:
        """Counts of one image (and, for COCO AP, its boxes) as small numpy arrays.

        ``gt``: ``boxes`` (N, 4), ``labels`` (N,), ``points`` (N, 2) of the valid ground
        truth and ``ign_boxes`` / ``ign_labels`` / ``ign_points`` of the ignored one;
        ``pred``: ``boxes`` (M, 4), ``scores`` (M,), ``labels`` (M,). Predictions with
        score >= ``score_thr`` are kept, at most ``max_per_img`` by decreasing score.
        Shared by :meth:`process` and :class:`WholeImageDetectionMetric`.
        """
        order = np.argsort(-pred['scores'], kind='stable')
        order = order[pred['scores'][order] >= self.score_thr][:self.max_per_img]
        p_boxes, p_labels = pred['boxes'][order], pred['labels'][order]
        p_points = _centres(p_boxes)

        def pt(a, b):
            return _point_pairs(a, b, self.radius)

        def bx(a, b):
            return _box_iou_pairs(a, b, self.iou_thr)

        result = dict(
            points=np.array(_match_counts(gt['points'], p_points, pt, gt['ign_points'])),
            boxes=np.array(_match_counts(gt['boxes'], p_boxes, bx, gt['ign_boxes'])))
        if self.classwise or self.exclusive_recall:
            classes = self._classes()
            for what, labels in (('gt', gt['labels']), ('pred', p_labels),
                                 ('ignored gt', gt['ign_labels'])):
                if labels.size and (labels.min() < 0 or labels.max() >= len(classes)):
                    raise ValueError(f'{name}: {what} label {labels.max()} outside the '
                                     f'{len(classes)} classes of dataset_meta')
            per_class = np.zeros((len(classes), 3), dtype=np.int64)
            for c in range(len(classes)):
                per_class[c] = _match_counts(gt['points'][gt['labels'] == c],
                                             p_points[p_labels == c], pt,
                                             gt['ign_points'][gt['ign_labels'] == c])
            result['per_class'] = per_class
            if self.exclusive_recall:
                result['per_class_other'] = _other_class_counts(
                    gt['points'], gt['labels'], gt['ign_points'], gt['ign_labels'], p_points,
                    p_labels, len(classes), pt)
        if self.coco_ap:
            result.update(
                gt_boxes=gt['boxes'].astype(np.float32), gt_labels=gt['labels'],
                ign_boxes=gt['ign_boxes'].astype(np.float32), ign_labels=gt['ign_labels'],
                dt_boxes=pred['boxes'].astype(np.float32), dt_scores=pred['scores'],
                dt_labels=pred['labels'])
        return result

    def process(self, data_batch: Any, data_samples: Sequence[Any]) -> None:
        """Match each image's predictions to its GT; keep counts (and, for COCO AP, the
        boxes) as small numpy arrays."""
        for k, sample in enumerate(data_samples):
            name = _sample_name(sample, k)
            gt = self._read_gt(sample, name)
            pred = self._read_pred(sample, name)
            self.results.append(self._image_result(gt, pred, name))

    def _coco_ap(self, results: List[dict]) -> Tuple[float, float]:
        """pycocotools bbox AP@[.5:.95] and AP@.5 over all stored predictions."""
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        labels = set()
        for r in results:
            labels.update(r['gt_labels'].tolist(), r['ign_labels'].tolist(),
                          r['dt_labels'].tolist())
        if sum(len(r['gt_boxes']) for r in results) == 0:
            return -1.0, -1.0
        if sum(len(r['dt_boxes']) for r in results) == 0:
            return 0.0, 0.0
        cats = [dict(id=int(c) + 1, name=str(c)) for c in sorted(labels)]
        images = [dict(id=i + 1) for i in range(len(results))]
        gts, dts = [], []
        for i, r in enumerate(results):
            for boxes, lab, crowd in ((r['gt_boxes'], r['gt_labels'], 0),
                                      (r['ign_boxes'], r['ign_labels'], 1)):
                for b, c in zip(boxes.astype(np.float64), lab):
                    w, h = b[2] - b[0], b[3] - b[1]
                    gts.append(dict(id=len(gts) + 1, image_id=i + 1, category_id=int(c) + 1,
                                    bbox=[b[0], b[1], w, h], area=w * h, iscrowd=crowd))
            for b, c, s in zip(r['dt_boxes'].astype(np.float64), r['dt_labels'], r['dt_scores']):
                w, h = b[2] - b[0], b[3] - b[1]
                dts.append(dict(id=len(dts) + 1, image_id=i + 1, category_id=int(c) + 1,
                                bbox=[b[0], b[1], w, h], area=w * h, iscrowd=0,
                                score=float(s)))
        coco_gt, coco_dt = COCO(), COCO()
        coco_gt.dataset = dict(images=images, categories=cats, annotations=gts)
        coco_dt.dataset = dict(images=images, categories=cats, annotations=dts)
        # pycocotools prints its progress; it is not silenced with redirect_stdout, which
        # swaps sys.stdout for the whole process and, from the benchmark's worker threads,
        # could leave it swapped (the benchmark's own lines were lost that way)
        coco_gt.createIndex()
        coco_dt.createIndex()
        ev = COCOeval(coco_gt, coco_dt, iouType='bbox')
        ev.params.maxDets = [1, 10, self.coco_max_dets]
        ev.evaluate()
        ev.accumulate()
        # what COCOeval.summarize() computes for AP / AP50, at maxDets[-1] (summarize's
        # AP line is hard-wired to maxDets=100): mean precision over recall thresholds,
        # categories (and IoU thresholds for AP), area range 'all', entries > -1 only.
        prec = ev.eval['precision'][:, :, :, ev.params.areaRngLbl.index('all'), -1]
        iou50 = int(np.argmin(np.abs(ev.params.iouThrs - 0.5)))

        def mean_valid(p: np.ndarray) -> float:
            return float(p[p > -1].mean()) if (p > -1).any() else -1.0

        return mean_valid(prec), mean_valid(prec[iou50])

    def compute_metrics(self, results: list) -> Dict[str, float]:
        """Pool the per-image counts; see the class docstring for the keys."""
        metrics: Dict[str, float] = {}
        pts = np.array([r['points'] for r in results], dtype=np.int64).reshape(-1, 3)
        box = np.array([r['boxes'] for r in results], dtype=np.int64).reshape(-1, 3)
        metrics['recall'], metrics['precision'], metrics['f1'] = _prf(*pts.sum(0))
        per_img = np.array([_prf(*c) for c in pts if c.sum() > 0]).reshape(-1, 3)
        means = per_img.mean(0) if len(per_img) else np.ones(3)
        metrics['recall_img'], metrics['precision_img'], metrics['f1_img'] = map(float, means)
        metrics['avg_recall'], metrics['avg_precision'] = _average_rp(pts)
        metrics['box_recall'], metrics['box_precision'], metrics['box_f1'] = _prf(*box.sum(0))
        if self.coco_ap:
            metrics['coco_AP'], metrics['coco_AP50'] = self._coco_ap(results)
        rows = [('class', 'gt', 'tp', 'fp', 'fn', 'recall', 'precision', 'f1')]
        tp, fp, fn = (int(v) for v in pts.sum(0))
        rows.append(('all', str(tp + fn), str(tp), str(fp), str(fn),
                     *(f'{metrics[k]:.4f}' for k in ('recall', 'precision', 'f1'))))
        n_gt = int((pts[:, 0] + pts[:, 2] > 0).sum())
        n_pred = int((pts[:, 0] + pts[:, 1] > 0).sum())
        if self.classwise:
            classes = self._classes()
            counts = np.zeros((len(classes), 3), dtype=np.int64)
            for r in results:
                counts += r['per_class']
            for name, (tp, fp, fn) in zip(classes, counts):
                rec, prec, f1 = _prf(int(tp), int(fp), int(fn))
                metrics[f'{name}_recall'] = rec
                metrics[f'{name}_precision'] = prec
                metrics[f'{name}_f1'] = f1
                rows.append((str(name), str(tp + fn), str(tp), str(fp), str(fn),
                             f'{rec:.4f}', f'{prec:.4f}', f'{f1:.4f}'))
        excl_rows = [('class', 'gt', 'found', 'recall', 'gt other', 'other found',
                      'recall_other', 'exclusive_recall')]
        if self.exclusive_recall:
            classes = self._classes()
            own = np.zeros((len(classes), 3), dtype=np.int64)
            other = np.zeros((len(classes), 3), dtype=np.int64)
            for r in results:
                own += r['per_class']
                other += r['per_class_other']
            for name, c_own, c_other in zip(classes, own, other):
                rec, rec_other, exc = _exclusive_recall(c_own, c_other)
                metrics[f'{name}_recall'] = rec
                metrics[f'{name}_recall_other'] = rec_other
                metrics[f'{name}_exclusive_recall'] = exc
                excl_rows.append((str(name), str(c_own[0] + c_own[2]), str(c_own[0]),
                                  f'{rec:.4f}', str(c_other[0] + c_other[2]),
                                  str(c_other[0]), f'{rec_other:.4f}', f'{exc:.4f}'))
        print_log(
            f'Cell detection over {len(results)} images (point matching, radius '
            f'{self.radius:g} px, score >= {self.score_thr:g}):\n' + _format_table(rows)
            + f'\naverage recall {metrics["avg_recall"]:.4f} over {n_gt} images with GT, '
            f'average precision {metrics["avg_precision"]:.4f} over {n_pred} images with '
            'predictions', logger='current')
        if self.exclusive_recall:
            print_log(
                'Exclusive recall Rec(y) * (1 - Rec(!= y)) (point matching, radius '
                f'{self.radius:g} px; "other found": GT of the other classes matched by '
                'predictions labelled y):\n' + _format_table(excl_rows), logger='current')
        return metrics


def _uncovered_area(windows: np.ndarray, width: float, height: float) -> float:
    """Area of the image ``[0, width] x [0, height]`` outside the union of the xyxy
    ``windows`` (K, 4); exact, by coordinate compression (no pixel mask)."""
    win = np.clip(np.asarray(windows, np.float64).reshape(-1, 4), 0,
                  [width, height, width, height])
    xs = np.unique(np.concatenate([[0.0, width], win[:, 0], win[:, 2]]))
    ys = np.unique(np.concatenate([[0.0, height], win[:, 1], win[:, 3]]))
    covered = np.zeros((len(ys) - 1, len(xs) - 1), dtype=bool)
    for x0, y0, x1, y1 in win:
        covered[np.searchsorted(ys, y0):np.searchsorted(ys, y1),
                np.searchsorted(xs, x0):np.searchsorted(xs, x1)] = True
    return float(np.outer(np.diff(ys), np.diff(xs))[~covered].sum())


def _finite_numbers(value: Any, n: int) -> Optional[np.ndarray]:
    """``value`` as n finite float64 numbers, or None if it is not that."""
    if isinstance(value, (str, bytes, bool)):
        return None
    try:
        arr = _numpy(value, np.float64).reshape(-1)
    except (TypeError, ValueError):
        return None
    return arr if arr.size == n and np.isfinite(arr).all() else None


def _read_whole_images(ann_file: str) -> Tuple[Dict[str, dict], Dict[Any, str]]:
    """Whole-image GT of a COCO file: ``file_name`` -> dict(width, height, anns) and
    category id -> name. Each ann: ``id``, ``box`` xyxy, ``cat``, ``point``, ``ignore``
    (``iscrowd`` or ``ignore``). ValueError naming ``ann_file`` and the offending entry."""
    coco = read_coco(ann_file)
    cats: Dict[Any, str] = {}
    for c in coco.get('categories', []):
        if not isinstance(c, dict) or 'id' not in c or 'name' not in c:
            raise ValueError(f'{ann_file}: category {c} needs "id" and "name"')
        cats[c['id']] = c['name']
    frames: Dict[str, dict] = {}
    name_of: Dict[Any, str] = {}
    for im in coco['images']:
        iid = im.get('id') if isinstance(im, dict) else None
        if iid is None:
            raise ValueError(f'{ann_file}: an image entry has no "id": {im}')
        for key in ('file_name', 'height', 'width'):
            if key not in im:
                raise ValueError(f'{ann_file}: image id {iid} has no "{key}"')
        fname, size = im['file_name'], _finite_numbers([im['width'], im['height']], 2)
        if size is None or (size <= 0).any():
            raise ValueError(f'{ann_file}: image id {iid} ({fname}) has size '
                             f'{im["width"]}x{im["height"]}')
        if iid in name_of:
            raise ValueError(f'{ann_file}: image id {iid} is listed twice')
        if fname in frames:
            raise ValueError(f'{ann_file}: file_name {fname} is listed twice (image ids '
                             f'{frames[fname]["id"]} and {iid}); patches name their whole '
                             f'image by file_name')
        name_of[iid] = fname
        frames[fname] = dict(id=iid, width=float(size[0]), height=float(size[1]), anns=[])
    for ann in coco.get('annotations', []):
        aid = ann.get('id')
        where = f'{ann_file}: annotation id {aid}'
        if ann.get('image_id') not in name_of:
            raise ValueError(f'{where} refers to image_id {ann.get("image_id")}, which is '
                             f'not listed in "images"')
        if ann.get('category_id') not in cats:
            raise ValueError(f'{where}: category_id {ann.get("category_id")} is not among '
                             f'the categories {list(cats)}')
        box = _finite_numbers(ann.get('bbox'), 4)
        if box is None or box[2] <= 0 or box[3] <= 0:
            raise ValueError(f'{where}: "bbox" must be [x, y, w, h] with w, h > 0, got '
                             f'{ann.get("bbox")}')
        x, y, w, h = box.tolist()
        point = (x + w / 2, y + h / 2)
        if 'point' in ann:
            pt = _finite_numbers(ann['point'], 2)
            if pt is None:
                raise ValueError(f'{where}: "point" must be [x, y], got {ann["point"]}')
            point = tuple(pt.tolist())
        frames[name_of[ann['image_id']]]['anns'].append(dict(
            id=aid, box=(x, y, x + w, y + h), cat=ann['category_id'], point=point,
            ignore=bool(ann.get('iscrowd', 0)) or bool(ann.get('ignore', 0))))
    return frames, cats


@register(METRICS)
class WholeImageDetectionMetric(CellDetectionMetric):
    """Whole-image cell detection scores from patch predictions: the PU-detection
    protocol (Zhao et al., MICCAI 2021, sect. 3.1-3.2: "at most 100 prediction boxes ...
    confidence score (greater than 0.5) ... mapped the coordinates back into the image
    and NMS to merge duplicate boxes").

    The model runs on the overlapping patches of a patch dataset whose image entries
    carry ``parent`` (the whole image's ``file_name``) and ``offset`` [x0, y0] (e.g. the
    MITOS-ATYPIA-14 converter's ``test_fold{k}.json``; :class:`CellDetDataset` passes
    both to the pipeline). :meth:`process`, per patch: predictions with score
    **strictly greater** than ``patch_score_thr`` (the paper's "greater than 0.5"), at
    most ``max_per_patch`` by decreasing score (ties: model order), shifted by
    ``offset`` into whole-image pixels (mmdet predicts in the patch's original pixels).
    :meth:`compute_metrics`, per whole image: the boxes of all its patches merged by
    class-aware NMS (IoU > ``nms_iou`` suppresses; :func:`projects.common.tiling.
    merge_detections`), then scored exactly as :class:`CellDetectionMetric` scores one
    image (same code, :meth:`CellDetectionMetric._image_result`; ``score_thr`` and
    ``max_per_img`` act on the merged boxes, COCO AP uses every merged box). The keys
    are those of :class:`CellDetectionMetric` computed over the whole images;
    ``avg_recall`` / ``avg_precision`` are the paper's table entries.

    Ground truth comes from ``ann_file``, a whole-image COCO file (e.g. the converter's
    ``frames_test_fold{k}.json``); a patch belongs to the image whose ``file_name``
    equals its ``parent``. Boxes from ``bbox``; points from ``point`` when present, else
    box centres; ``iscrowd`` / ``ignore`` annotations are ignored GT (as in
    CellDetDataset). Labels: category names indexed in ``dataset_meta['classes']`` (the
    patch dataset's classes = the model's label space); without dataset_meta, the
    categories ordered by id.

    ValueError (naming ``ann_file`` and the image, or the patch) for: a data sample
    without ``parent`` / ``offset`` / ``ori_shape`` metainfo (add them to
    ``PackDetInputs(meta_keys=...)``), an offset that is not 2 finite numbers >= 0, a
    ``parent`` that is not an image of ``ann_file``, a patch reaching outside its image,
    an image of ``ann_file`` that received no patch or whose patches do not cover it
    (e.g. a dataset subset). When no patch at all was processed, the metric returns
    :class:`CellDetectionMetric`'s values over zero images (mmengine warns about the
    empty results).

    Config::

        test_pipeline = [
            dict(type='LoadImageFromFile'),
            dict(type='Resize', scale_factor=1.0, keep_ratio=True),
            dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape',
                 'img_shape', 'scale_factor', 'parent', 'offset'))]
        test_evaluator = dict(type='WholeImageDetectionMetric',
                              ann_file=data_root + 'annotations/frames_test_fold0.json')

    Args:
        ann_file: whole-image COCO file with the ground truth.
        nms_iou: IoU above which NMS suppresses the lower-scored of two same-class boxes.
        patch_score_thr: per-patch filter, score > patch_score_thr is kept.
        max_per_patch: per-patch filter, at most this many boxes (highest scores).
        max_per_img, coco_max_dets: as in :class:`CellDetectionMetric`, on merged whole
            images; the defaults (10000) do not bind for 1600x1600 frames in 500 px
            patches (16 patches x 100 boxes).
        Other arguments as :class:`CellDetectionMetric`.
    """

    def __init__(self, ann_file: str, nms_iou: float = 0.5, patch_score_thr: float = 0.5,
                 max_per_patch: int = 100, radius: float = 12.0, iou_thr: float = 0.5,
                 score_thr: float = 0.5, max_per_img: int = 10000, classwise: bool = False,
                 coco_ap: bool = True, prefix: Optional[str] = 'cell',
                 collect_device: str = 'cpu', coco_max_dets: int = 10000,
                 exclusive_recall: bool = False) -> None:
        super().__init__(radius=radius, iou_thr=iou_thr, score_thr=score_thr,
                         max_per_img=max_per_img, classwise=classwise, coco_ap=coco_ap,
                         prefix=prefix, collect_device=collect_device,
                         coco_max_dets=coco_max_dets, exclusive_recall=exclusive_recall)
        if not isinstance(nms_iou, (int, float)) or not 0 < nms_iou <= 1:
            raise ValueError(f'WholeImageDetectionMetric: nms_iou must lie in (0, 1], got '
                             f'{nms_iou!r}')
        if not isinstance(patch_score_thr, (int, float)) or not np.isfinite(patch_score_thr):
            raise ValueError('WholeImageDetectionMetric: patch_score_thr must be a finite '
                             f'number, got {patch_score_thr!r}')
        if isinstance(max_per_patch, bool) or not isinstance(max_per_patch, (int, np.integer)) \
                or max_per_patch < 1:
            raise ValueError('WholeImageDetectionMetric: max_per_patch must be an int >= 1, '
                             f'got {max_per_patch!r}')
        if not isinstance(ann_file, str) or not ann_file:
            raise ValueError(f'WholeImageDetectionMetric: ann_file must be the path of a '
                             f'whole-image COCO file, got {ann_file!r}')
        self.ann_file = ann_file
        self.nms_iou = float(nms_iou)
        self.patch_score_thr = float(patch_score_thr)
        self.max_per_patch = int(max_per_patch)
        self._images, self._categories = _read_whole_images(ann_file)

    def _read_origin(self, sample: Any, name: str) -> Tuple[str, np.ndarray]:
        """``parent`` and the patch window xyxy in whole-image pixels; checked."""
        missing = [k for k in ('parent', 'offset', 'ori_shape') if _field(sample, k) is None]
        if missing:
            raise ValueError(
                f'{name}: the data sample has no {", ".join(repr(k) for k in missing)} '
                'metainfo. WholeImageDetectionMetric needs patch datasets whose images carry '
                '"parent" and "offset" (e.g. the MITOS-ATYPIA-14 converter\'s '
                'test_fold{k}.json) and a test pipeline that packs them: add \'parent\' and '
                '\'offset\' to PackDetInputs meta_keys (keeping \'ori_shape\'), e.g. '
                "meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', "
                "'scale_factor', 'parent', 'offset')")
        parent = _field(sample, 'parent')
        if not isinstance(parent, str) or not parent:
            raise ValueError(f'{name}: "parent" must be the file_name of the whole image, '
                             f'got {parent!r}')
        offset = _finite_numbers(_field(sample, 'offset'), 2)
        if offset is None or (offset < 0).any():
            raise ValueError(f'{name}: "offset" must be [x0, y0], two finite numbers >= 0, '
                             f'got {_field(sample, "offset")!r}')
        shape = _finite_numbers(_field(sample, 'ori_shape'), 2)
        if shape is None or (shape <= 0).any():
            raise ValueError(f'{name}: "ori_shape" must be (height, width), got '
                             f'{_field(sample, "ori_shape")!r}')
        if parent not in self._images:
            raise ValueError(f'{name}: parent {parent!r} is not an image file_name of '
                             f'{self.ann_file} (is ann_file the whole-image file of this '
                             f'patch dataset?)')
        img = self._images[parent]
        (x0, y0), (h, w) = offset, shape
        if x0 + w > img['width'] or y0 + h > img['height']:
            raise ValueError(f'{name}: the {w:g}x{h:g} patch at offset ({x0:g}, {y0:g}) '
                             f'reaches outside {parent} ({img["width"]:g}x'
                             f'{img["height"]:g}) of {self.ann_file}')
        return parent, np.array([x0, y0, x0 + w, y0 + h])

    def process(self, data_batch: Any, data_samples: Sequence[Any]) -> None:
        """Per patch: filter (score > patch_score_thr, top max_per_patch), shift by offset,
        store (parent, window, boxes, scores, labels) as numpy."""
        for k, sample in enumerate(data_samples):
            name = _sample_name(sample, k)
            parent, window = self._read_origin(sample, name)
            pred = self._read_pred(sample, name)
            keep = np.flatnonzero(pred['scores'] > self.patch_score_thr)
            keep = keep[np.argsort(-pred['scores'][keep], kind='stable')][:self.max_per_patch]
            shift = np.tile(window[:2], 2)
            self.results.append(dict(
                parent=parent, name=name, window=window, boxes=pred['boxes'][keep] + shift,
                scores=pred['scores'][keep], labels=pred['labels'][keep]))

    def merge(self, results: Sequence[dict]) -> Dict[str, Dict[str, np.ndarray]]:
        """Whole-image predictions: file_name -> ``boxes`` (N, 4), ``scores``, ``labels``
        after class-aware NMS over the patches' (filtered, shifted) boxes, sorted by
        decreasing score, in the image order of ``ann_file``. Checks that every image
        received patches covering it."""
        from projects.common.tiling import merge_detections

        by_parent: Dict[str, List[dict]] = {}
        for r in results:
            if r['parent'] not in self._images:
                raise ValueError(f'{r["name"]}: parent {r["parent"]!r} is not an image '
                                 f'file_name of {self.ann_file}')
            by_parent.setdefault(r['parent'], []).append(r)
        missing = [f for f in self._images if f not in by_parent]
        if missing:
            raise ValueError(
                f'{self.ann_file}: {len(missing)} of {len(self._images)} images received no '
                f'patch prediction (first: {", ".join(missing[:3])}); evaluate the patch '
                f'dataset of exactly these images (e.g. test_fold<k>.json with '
                f'frames_test_fold<k>.json), not a subset')
        merged = {}
        for fname, img in self._images.items():
            patches = by_parent[fname]
            hole = _uncovered_area(np.stack([p['window'] for p in patches]), img['width'],
                                   img['height'])
            if hole > 0:
                raise ValueError(
                    f'{self.ann_file}: image {fname} ({img["width"]:g}x{img["height"]:g}) '
                    f'is not covered by its {len(patches)} patches ({hole:g} px^2 outside '
                    f'every patch); evaluate every patch of it')
            boxes, scores, labels = merge_detections(
                [p['boxes'] for p in patches], [p['scores'] for p in patches],
                [p['labels'] for p in patches], [(0, 0)] * len(patches),
                iou_thr=self.nms_iou)
            merged[fname] = dict(boxes=boxes.cpu().numpy().astype(np.float64),
                                 scores=scores.cpu().numpy().astype(np.float64),
                                 labels=labels.cpu().numpy().astype(np.int64))
        return merged

    def _image_gt(self, fname: str, label_of: Dict[Any, int]) -> Dict[str, np.ndarray]:
        """GT of one whole image in the format of :meth:`CellDetectionMetric._read_gt`."""
        anns = self._images[fname]['anns']
        for a in anns:
            if a['cat'] not in label_of:
                raise ValueError(
                    f'{self.ann_file}: annotation id {a["id"]} ({fname}) has category '
                    f'{self._categories[a["cat"]]!r}, which is not among the classes '
                    f'{tuple((self.dataset_meta or {}).get("classes", ()))} of the dataset')
        boxes = np.array([a['box'] for a in anns], np.float64).reshape(-1, 4)
        labels = np.array([label_of[a['cat']] for a in anns], np.int64)
        points = np.array([a['point'] for a in anns], np.float64).reshape(-1, 2)
        ign = np.array([a['ignore'] for a in anns], bool)
        return dict(boxes=boxes[~ign], labels=labels[~ign], points=points[~ign],
                    ign_boxes=boxes[ign], ign_labels=labels[ign], ign_points=points[ign])

    def compute_metrics(self, results: list) -> Dict[str, float]:
        """Merge the patches of each whole image, score the images as
        :class:`CellDetectionMetric` does; see the class docstring."""
        if not results:
            return super().compute_metrics([])
        classes = (self.dataset_meta or {}).get('classes')
        names = list(classes) if classes else [self._categories[c]
                                               for c in sorted(self._categories)]
        index = {n: i for i, n in enumerate(names)}
        label_of = {cid: index[n] for cid, n in self._categories.items() if n in index}
        merged = self.merge(results)
        per_image = [self._image_result(self._image_gt(f, label_of), pred,
                                        f'{self.ann_file}: {f}')
                     for f, pred in merged.items()]
        n_kept = sum(len(r['boxes']) for r in results)
        n_merged = sum(len(p['boxes']) for p in merged.values())
        print_log(f'Whole-image evaluation on {self.ann_file}: {len(merged)} images from '
                  f'{len(results)} patches; {n_kept} patch predictions (score > '
                  f'{self.patch_score_thr:g}, at most {self.max_per_patch} per patch) merged '
                  f'by NMS (IoU > {self.nms_iou:g}) into {n_merged}', logger='current')
        return super().compute_metrics(per_image)


@register(METRICS)
class NucleiMetric(BaseMetric):
    """Nuclei segmentation scores: pixel accuracy / F1, object Dice, AJI and PQ / SQ / DQ.

    Per image: the predicted semantic map (``pred_sem_seg.data``, class ids) is turned
    into instances with :func:`instances_from_semantic` (pixels == ``fg_class``, remove
    objects < ``min_size`` px, fill holes, 8-connected components). GT instances are
    ``gt_instance_map`` from the metainfo when present, else the 8-connected components
    of ``gt_sem_seg == fg_class``. Pixels whose GT is ``ignore_index`` count nowhere: they
    are excluded from the pixel scores and set to background in both instance maps before
    the object scores.

    Output keys (prefixed ``nuclei/``): ``pixel_acc``, ``pixel_f1`` (counts pooled over all
    pixels of the set); ``dice_obj``, ``aji`` (mean over images that have at least one GT
    or predicted object; 1.0 if there is none); ``aji_pooled`` (C and U of the AJI summed
    over all images, then C / U); ``pq``, ``sq``, ``dq`` (:func:`pq` per image, averaged
    like ``dice_obj``: over the images with objects, 1.0 if there is none; an image with
    objects but no match has SQ = PQ = 0).
    """

    default_prefix: Optional[str] = 'nuclei'

    def __init__(self, ignore_index: int = 255, fg_class: int = 1, min_size: int = 20,
                 prefix: Optional[str] = 'nuclei', collect_device: str = 'cpu') -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        if min_size < 0:
            raise ValueError(f'NucleiMetric: min_size must be >= 0, got {min_size}')
        self.ignore_index = int(ignore_index)
        self.fg_class = int(fg_class)
        self.min_size = int(min_size)

    @staticmethod
    def _sem(sample: Any, key: str, name: str) -> np.ndarray:
        seg = _field(sample, key)
        data = None if seg is None else _field(seg, 'data')
        if data is None:
            raise ValueError(f'{name}: no {key}.data in the data sample'
                             + (' (the test pipeline must load annotations)'
                                if key.startswith('gt') else ''))
        arr = _numpy(data)
        if arr.ndim == 3 and arr.shape[0] == 1:
            arr = arr[0]
        if arr.ndim != 2:
            raise ValueError(f'{name}: {key}.data must be (1, H, W) or (H, W), got {arr.shape}')
        return arr

    def process(self, data_batch: Any, data_samples: Sequence[Any]) -> None:
        """Compute per-image pixel counts, Dice_obj, AJI terms and PQ / SQ / DQ."""
        for k, sample in enumerate(data_samples):
            name = _sample_name(sample, k)
            pred = self._sem(sample, 'pred_sem_seg', name)
            gt = self._sem(sample, 'gt_sem_seg', name)
            if pred.shape != gt.shape:
                raise ValueError(f'{name}: pred_sem_seg {pred.shape} and gt_sem_seg '
                                 f'{gt.shape} differ in shape')
            gt_inst = _field(sample, 'gt_instance_map')
            if gt_inst is not None:
                gt_inst = _check_map(_numpy(gt_inst), f'{name}: gt_instance_map').copy()
                if gt_inst.shape != gt.shape:
                    raise ValueError(f'{name}: gt_instance_map {gt_inst.shape} and gt_sem_seg '
                                     f'{gt.shape} differ in shape')
            else:
                gt_inst, _ = ndi.label(gt == self.fg_class, structure=_EIGHT)
            pred_inst = instances_from_semantic(pred, fg=self.fg_class, min_size=self.min_size)
            ignore = gt == self.ignore_index
            if ignore.any():
                gt_inst[ignore] = 0
                pred_inst[ignore] = 0
            pix = pixel_scores(gt, pred, self.ignore_index, (self.fg_class, ))
            c, u = _aji_sums(gt_inst, pred_inst)
            has_objects = bool(gt_inst.any() or pred_inst.any())
            self.results.append(
                dict(counts=np.array([pix['tp'], pix['fp'], pix['fn'], pix['tn']], np.int64),
                     aji=1.0 if u == 0 else c / u, aji_c=c, aji_u=u,
                     dice_obj=dice_obj(gt_inst, pred_inst), has_objects=has_objects,
                     **pq(gt_inst, pred_inst)))

    def compute_metrics(self, results: list) -> Dict[str, float]:
        """Pool pixel counts and AJI sums; average the per-image object scores."""
        counts = np.array([r['counts'] for r in results], np.int64).reshape(-1, 4).sum(0)
        metrics = _pixel_ratios(*(int(v) for v in counts))
        kept = [r for r in results if r['has_objects']]
        metrics['dice_obj'] = float(np.mean([r['dice_obj'] for r in kept])) if kept else 1.0
        metrics['aji'] = float(np.mean([r['aji'] for r in kept])) if kept else 1.0
        c = sum(int(r['aji_c']) for r in results)
        u = sum(int(r['aji_u']) for r in results)
        metrics['aji_pooled'] = 1.0 if u == 0 else c / u
        for key in ('pq', 'sq', 'dq'):
            metrics[key] = float(np.mean([r[key] for r in kept])) if kept else 1.0
        metrics = {k: float(v) for k, v in metrics.items()}
        rows = [('metric', 'value')] + [(k, f'{v:.4f}') for k, v in metrics.items()]
        print_log(f'Nuclei segmentation over {len(results)} images ({len(kept)} with '
                  f'objects):\n' + _format_table(rows), logger='current')
        return metrics
