"""Instance geometry: the one place where centroids, boxes and point <-> pixel lookups live.

Coordinate convention (docs/data_layout.md, "Coordinates"; the one of mmdet's boxes):
continuous pixel coordinates. Pixel (row r, column c) covers [c, c+1) x [r, r+1), so its
centre is (c + 0.5, r + 0.5); a point (x, y) lies in pixel (floor(y), floor(x)). A box
is x1, y1, x2, y2 with x2 = last column + 1 and y2 = last row + 1. The centroid of an
instance is therefore ``scipy.ndimage.center_of_mass`` + 0.5 on each axis (the centroid
of a full rectangle is the centre of its box), and a horizontal flip of a W-wide image
maps x -> W - x exactly (mmdet's RandomFlip homography). Valid points satisfy
0 <= x <= W and 0 <= y <= H (:func:`projects.common.io.check_points_inside`); a point on
the right / bottom border belongs to the last column / row.

Plain numpy + scipy: no OpenMMLab import.
"""
from typing import Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

__all__ = [
    'instance_geometry', 'point_to_pixel', 'assign_points_to_instances',
    'connected_components_per_class'
]

_EIGHT = np.ones((3, 3), bool)


def _check_inst_map(inst_map: np.ndarray, source: str) -> np.ndarray:
    inst = np.asarray(inst_map)
    if inst.ndim != 2:
        raise ValueError(f'{source}: an instance map must be 2-D, got shape {inst.shape}')
    if not np.issubdtype(inst.dtype, np.integer):
        raise ValueError(f'{source}: an instance map must hold integers, got {inst.dtype}')
    if inst.size and inst.min() < 0:
        raise ValueError(f'{source}: instance map has negative ids (min {inst.min()})')
    return inst


def instance_geometry(inst_map: np.ndarray,
                      ids: Optional[Sequence[int]] = None,
                      source: str = 'inst_map') -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ids, centroids and tight boxes of the instances of an instance map (0 = background).

    Args:
        inst_map: (H, W) non-negative integer map; ids need not be contiguous.
        ids: instances to measure, in the order wanted; None = every non-zero id present,
            ascending. An id absent from the map (or <= 0) raises ValueError naming it.
        source: name used in error messages (e.g. the file the map came from).
    Returns:
        ids int64 (K,); points float64 (K, 2) centroids (x, y) = (mean column + 0.5, mean
        row + 0.5); boxes float64 (K, 4) x1, y1, x2, y2 = first column, first row, last
        column + 1, last row + 1. See the module docstring for the convention.
    """
    inst = _check_inst_map(inst_map, source)
    h, w = inst.shape
    flat = inst.ravel()
    max_id = int(flat.max(initial=0))
    if max_id <= max(4 * flat.size, 1 << 16):
        lab, uniq = inst, None  # ids are their own bincount / find_objects labels
        n_lab = max_id
    else:  # huge ids (e.g. 2**31 - 1): relabel to 1..n first to keep memory O(H W)
        uniq, inv = np.unique(flat, return_inverse=True)
        if uniq[0] != 0:
            uniq, inv = np.r_[0, uniq], inv + 1
        lab = inv.reshape(h, w)
        n_lab = len(uniq) - 1
    count = np.bincount(lab.ravel(), minlength=n_lab + 1)

    if ids is None:
        codes = np.flatnonzero(count[1:]) + 1
        out_ids = codes if uniq is None else uniq[codes]
    else:
        out_ids = np.asarray(ids)
        if out_ids.size and not np.issubdtype(out_ids.dtype, np.integer):
            raise ValueError(f'{source}: instance ids must be integers, got {out_ids.dtype}')
        out_ids = out_ids.astype(np.int64).reshape(-1)
        if uniq is None:
            inside = (out_ids > 0) & (out_ids <= n_lab)
            codes = np.where(inside, out_ids, 0)
        else:
            pos = np.minimum(np.searchsorted(uniq, out_ids), len(uniq) - 1)
            inside = (out_ids > 0) & (uniq[pos] == out_ids)
            codes = np.where(inside, pos, 0)
        missing = out_ids[~inside | (count[codes] == 0)]
        if missing.size:
            raise ValueError(f'{source}: instance id(s) {missing[:10].tolist()} not present '
                             f'in the instance map')
    out_ids = np.asarray(out_ids, np.int64)
    k = len(out_ids)
    if k == 0:
        return out_ids, np.zeros((0, 2), np.float64), np.zeros((0, 4), np.float64)

    n = count[codes].astype(np.float64)
    rows = np.repeat(np.arange(h, dtype=np.float64), w)
    cols = np.tile(np.arange(w, dtype=np.float64), h)
    cy = np.bincount(lab.ravel(), weights=rows, minlength=n_lab + 1)[codes] / n + 0.5
    cx = np.bincount(lab.ravel(), weights=cols, minlength=n_lab + 1)[codes] / n + 0.5
    slices = ndimage.find_objects(lab, max_label=n_lab)
    boxes = np.array([(slices[c - 1][1].start, slices[c - 1][0].start,
                       slices[c - 1][1].stop, slices[c - 1][0].stop) for c in codes],
                     np.float64).reshape(k, 4)
    return out_ids, np.stack([cx, cy], axis=1), boxes


def box_centres(boxes: np.ndarray) -> np.ndarray:
    """Centres (N, 2) ``((x1 + x2) / 2, (y1 + y2) / 2)`` of xyxy boxes (N, 4): the point of
    an instance in the point-supervision authors' convention (box centre, not centroid)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return (boxes[:, :2] + boxes[:, 2:]) / 2.0


def point_to_pixel(points: np.ndarray, shape: Tuple[int, int]) -> Tuple[np.ndarray, np.ndarray]:
    """Pixel (rows, cols) int64 holding each point (x, y): (floor(y), floor(x)), clipped to
    the (H, W) image, so a point on the right / bottom border (x == W, y == H) falls in the
    last column / row. Non-finite coordinates raise ValueError."""
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    if not np.isfinite(pts).all():
        i = int(np.flatnonzero(~np.isfinite(pts).all(1))[0])
        raise ValueError(f'points: point {i} {pts[i].tolist()} is not finite')
    h, w = int(shape[0]), int(shape[1])
    if h <= 0 or w <= 0:
        raise ValueError(f'shape: expected a positive (H, W), got {tuple(shape)}')
    rows = np.clip(np.floor(pts[:, 1]), 0, h - 1).astype(np.int64)
    cols = np.clip(np.floor(pts[:, 0]), 0, w - 1).astype(np.int64)
    return rows, cols


def assign_points_to_instances(points: np.ndarray, inst_map: np.ndarray) -> np.ndarray:
    """Instance id (int64) of each point: the id of the pixel holding it
    (:func:`point_to_pixel`), else the id of the nearest instance pixel.

    A centroid of a concave nucleus may fall on background: it then belongs to the
    nearest instance (Euclidean distance transform between pixel centres). Returns 0 for
    every point when the map has no instance.
    """
    inst = _check_inst_map(inst_map, 'inst_map')
    points = np.asarray(points, np.float64).reshape(-1, 2)
    if len(points) == 0:
        return np.zeros(0, np.int64)
    r, c = point_to_pixel(points, inst.shape)
    ids = inst[r, c].astype(np.int64)
    miss = ids == 0
    if miss.any() and inst.any():
        _, (ri, ci) = ndimage.distance_transform_edt(inst == 0, return_indices=True)
        ids[miss] = inst[ri[r[miss], c[miss]], ci[r[miss], c[miss]]]
    return ids


def connected_components_per_class(seg_map: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """Instance map (int32) = the 8-connected components of each class of a semantic map,
    taken class by class, with no cleaning.

    Every label other than 0 and ``ignore_index`` is a class; components of different
    classes are separate instances even where they touch; ids run 1..K by class, then
    raster order. No small-object removal, no hole filling: every annotated pixel stays
    in an instance (used to sparsify annotations when no instance map exists; touching
    nuclei of one class then merge). Compare
    :func:`projects.common.metrics.instances_from_semantic`, which post-processes a
    *predicted* binary map (one foreground class, small objects removed, holes filled).
    """
    seg = np.asarray(seg_map)
    if seg.ndim != 2:
        raise ValueError(f'seg_map: expected a 2-D semantic map, got shape {seg.shape}')
    inst = np.zeros(seg.shape, np.int32)
    next_id = 0
    for c in np.unique(seg):
        if c == 0 or c == ignore_index:
            continue
        lab, n = ndimage.label(seg == c, structure=_EIGHT)
        inst[lab > 0] = lab[lab > 0] + next_id
        next_id += n
    return inst
