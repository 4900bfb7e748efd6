"""Sparse-annotation simulator: which annotated instances survive at k% or one-per-patch.

Two rules (DESIGN.md sect. 3):

- **Nested fractions** (exclusive cross-entropy protocol): keep ``round(f * n)`` of the n
  instances of an image; a single seeded permutation per image is cut at every fraction,
  so each kept set contains the sets of all smaller fractions (10% subset of 30% subset
  of ...).
- **One per patch** (Zhao et al. 2021, PU learning for cell detection, sect. 3.1): "we
  randomly deleted the annotations until there was only one annotation per image patch",
  patches of 500x500 with 100 px overlap.

Sparsification is **per image**: the random stream of an image is seeded by the global
seed and a stable hash (``zlib.crc32``) of the image *file name* (not the full path, so the
subset does not depend on where the data lives, and not Python's ``hash``, which is
salted per process). The offline tool (``tools/sparsify_annotations.py``) and the
pipeline transform (``SparsifyAnnotations``) therefore keep exactly the same instances.

Instance geometry (centroids, point -> instance lookup, components of a semantic map) comes
from :mod:`projects.common.instances`. Everything here is plain numpy (+ scipy for label
maps): no OpenMMLab import.
"""
import copy
import math
import os.path as osp
import zlib
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .instances import (assign_points_to_instances, connected_components_per_class,
                        instance_geometry)
from .io import check_points_inside

__all__ = [
    'keep_count', 'nested_subsets', 'image_seed', 'patch_starts', 'one_per_patch',
    'subset_coco', 'nested_coco', 'one_per_patch_keep', 'coco_points', 'apply_keep_to_maps',
    'select_kept', 'sparsify_label_maps'
]


def keep_count(n: int, fraction: float) -> int:
    """Number of instances kept out of ``n`` at ``fraction``: round half up, ``floor(f*n + 0.5)``.

    Python's ``round`` rounds half to even (round(2.5) == 2); we round half up so that
    0.5 of 5 keeps 3. A 1e-9 slack absorbs binary float error (0.35 * 10 = 3.4999...).
    At small n a fraction can keep nothing (10% of 4 cells -> 0): that is intended, it is
    what a non-exhaustive annotator who labels 10% of all cells gives on that image.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f'fraction must be in (0, 1], got {fraction}')
    return min(n, int(math.floor(fraction * n + 0.5 + 1e-9)))


def nested_subsets(n: int, fractions: Sequence[float], seed: int) -> Dict[float, np.ndarray]:
    """Sorted kept indices per fraction; each set contains every smaller fraction's set.

    One permutation of ``range(n)`` is drawn with ``np.random.default_rng(seed)``; fraction
    f keeps its first :func:`keep_count` (n, f) entries. Because the permutation depends
    only on (n, seed), sets are nested also across separate calls (a run at 10% and a run
    at 30% with the same seed). Raises ValueError for a fraction outside (0, 1] or n < 0.
    """
    if n < 0:
        raise ValueError(f'n must be >= 0, got {n}')
    fractions = [float(f) for f in fractions]
    for f in fractions:
        keep_count(0, f)  # validates the range
    perm = np.random.default_rng(seed).permutation(n)
    return {f: np.sort(perm[:keep_count(n, f)]).astype(np.int64) for f in fractions}


def image_seed(seed: int, key: str) -> int:
    """Seed of one image: the global ``seed`` mixed with ``zlib.crc32`` of the file name.

    ``key`` is reduced to its base name, so ``/data/a/img_01.png`` and ``img_01.png`` give
    the same seed. Mixing uses numpy's SeedSequence (stable across numpy versions).
    """
    name = osp.basename(str(key)).encode('utf-8')
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF,
                                       zlib.crc32(name)]).generate_state(1)[0])


def patch_starts(length: int, patch_size: int, overlap: int) -> np.ndarray:
    """Start offsets of patches along one axis of ``length`` pixels.

    Stride ``patch_size - overlap`` from 0; the last patch is shifted to end exactly at the
    border (``length - patch_size``), so it may overlap its neighbour by more than
    ``overlap``. A side not longer than ``patch_size`` is a single patch at 0.
    Example: 1600 px, 500/100 -> [0, 400, 800, 1100].
    """
    if patch_size <= 0:
        raise ValueError(f'patch_size must be > 0, got {patch_size}')
    if not 0 <= overlap < patch_size:
        raise ValueError(f'overlap must be in [0, patch_size={patch_size}), got {overlap}')
    if length <= patch_size:
        return np.zeros(1, np.int64)
    starts = list(range(0, length - patch_size, patch_size - overlap))
    starts.append(length - patch_size)
    return np.unique(np.asarray(starts, np.int64))


def one_per_patch(points: np.ndarray,
                  image_shape: Tuple[int, int],
                  patch_size: int = 500,
                  overlap: int = 100,
                  seed: int = 0) -> np.ndarray:
    """Keep at most one annotation per image patch (PU detection paper, sect. 3.1).

    The paper deletes annotations at random "until there was only one annotation per image
    patch". Patches come from :func:`patch_starts` on both axes (a point on the right or
    bottom border, x == W or y == H, belongs to the last patch). Points are visited in a
    seeded random order; a point is kept iff **none** of the (up to four) overlapping
    patches that contain it already holds a kept point, and then it occupies all of them.
    So every patch ends with at most one annotation, and no annotation is deleted unless
    it shares a patch with a kept one (the deletion stops as soon as the rule holds). A
    patch may end empty although it had points, when each of its points was blocked by a
    kept point in a neighbouring patch through an overlap region: with overlapping patches
    "exactly one per patch" is not always attainable.

    Args:
        points: (N, 2) float (x, y), continuous pixel coordinates (docs/data_layout.md).
        image_shape: (H, W) of the image.
    Returns:
        sorted int64 indices of the kept points.
    """
    points = np.asarray(points, np.float64).reshape(-1, 2)
    h, w = int(image_shape[0]), int(image_shape[1])
    check_points_inside(points, (h, w), 'one_per_patch')
    xs, ys = patch_starts(w, patch_size, overlap), patch_starts(h, patch_size, overlap)
    if len(points) == 0:
        return np.zeros(0, np.int64)
    px = np.minimum(points[:, 0], np.nextafter(w, 0))
    py = np.minimum(points[:, 1], np.nextafter(h, 0))
    in_col = (xs[None] <= px[:, None]) & (px[:, None] < xs[None] + patch_size)  # (N, nx)
    in_row = (ys[None] <= py[:, None]) & (py[:, None] < ys[None] + patch_size)  # (N, ny)
    occupied = np.zeros((len(ys), len(xs)), bool)
    kept = []
    for i in np.random.default_rng(seed).permutation(len(points)):
        rows, cols = np.flatnonzero(in_row[i]), np.flatnonzero(in_col[i])
        cell = np.ix_(rows, cols)
        if not occupied[cell].any():
            occupied[cell] = True
            kept.append(i)
    return np.sort(np.asarray(kept, np.int64))


# ----------------------------------------------------------------------------- COCO


def coco_points(anns: List[dict]) -> np.ndarray:
    """(N, 2) key points of COCO annotations: ``ann['point']``, else the box centre."""
    pts = np.zeros((len(anns), 2), np.float64)
    for i, ann in enumerate(anns):
        if 'point' in ann:
            pts[i] = ann['point'][:2]
        else:
            x, y, w, h = ann['bbox']
            pts[i] = x + w / 2.0, y + h / 2.0
    return pts


def _group_annotations(coco: dict, source: str) -> Tuple[List[dict], Dict[int, List[int]]]:
    if not isinstance(coco, dict) or 'images' not in coco:
        raise ValueError(f'{source}: not a COCO dict (no "images")')
    images = coco['images']
    by_image: Dict[int, List[int]] = {img['id']: [] for img in images}
    for k, ann in enumerate(coco.get('annotations', [])):
        if ann.get('image_id') not in by_image:
            raise ValueError(f'{source}: annotation id {ann.get("id")} refers to image_id '
                             f'{ann.get("image_id")}, which is not listed in "images"')
        by_image[ann['image_id']].append(k)  # file order = mmdet's per-image order
    return images, by_image


def subset_coco(coco: dict,
                fraction: Optional[float] = None,
                seed: int = 0,
                keep_fn: Optional[Callable[[dict, List[dict], int], np.ndarray]] = None,
                source: str = 'coco') -> dict:
    """Copy of a COCO dict keeping, per image, a subset of its annotations.

    Give either ``fraction`` (nested rule, :func:`nested_subsets` per image) or ``keep_fn``
    ``(image_info, image_annotations, image_seed) -> kept indices`` (e.g.
    :func:`one_per_patch_keep`). The image seed is :func:`image_seed` (seed, file_name),
    and an image's annotations are taken in file order, which is the order mmdet's
    ``CocoDataset`` gives the ``SparsifyAnnotations`` transform, so tool and transform keep
    the same instances. Images, categories and every other key are kept unchanged (images
    that lose all annotations stay: they are unlabeled data).
    """
    if (fraction is None) == (keep_fn is None):
        raise ValueError('subset_coco: give exactly one of fraction and keep_fn')
    images, by_image = _group_annotations(coco, source)
    anns = coco.get('annotations', [])
    keep_mask = np.zeros(len(anns), bool)
    for img in images:
        idx = by_image[img['id']]
        s = image_seed(seed, img.get('file_name', str(img['id'])))
        if fraction is not None:
            kept = nested_subsets(len(idx), [fraction], s)[float(fraction)]
        else:
            kept = np.asarray(keep_fn(img, [anns[k] for k in idx], s), np.int64)
        keep_mask[np.asarray(idx, np.int64)[kept]] = True
    out = {k: copy.deepcopy(v) for k, v in coco.items() if k != 'annotations'}
    out['annotations'] = [copy.deepcopy(a) for a, m in zip(anns, keep_mask) if m]
    return out


def nested_coco(coco: dict, fractions: Sequence[float], seed: int = 0,
                source: str = 'coco') -> Dict[float, dict]:
    """:func:`subset_coco` at several fractions (nested per image); fraction -> COCO dict."""
    return {float(f): subset_coco(coco, fraction=f, seed=seed, source=source)
            for f in fractions}


def one_per_patch_keep(patch_size: int = 500,
                       overlap: int = 100) -> Callable[[dict, List[dict], int], np.ndarray]:
    """``keep_fn`` for :func:`subset_coco` applying :func:`one_per_patch` to each image.

    The annotation's key point (``point``, else the box centre) decides its patches; the
    image size comes from the image entry's ``height`` / ``width``.
    """

    def keep(img: dict, anns: List[dict], seed: int) -> np.ndarray:
        try:
            shape = (int(img['height']), int(img['width']))
        except KeyError as err:
            raise ValueError(f'image id {img.get("id")} ({img.get("file_name")}): missing '
                             f'{err} needed by one_per_patch') from err
        pts = coco_points(anns)
        try:
            return one_per_patch(pts, shape, patch_size, overlap, seed)
        except ValueError as err:
            raise ValueError(f'image id {img.get("id")} ({img.get("file_name")}): {err}') \
                from err

    return keep


# ---------------------------------------------------------------------- label maps


def apply_keep_to_maps(keep_ids: np.ndarray,
                       inst_map: np.ndarray,
                       seg_map: Optional[np.ndarray] = None,
                       background: int = 0) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """Erase every instance not in ``keep_ids``: 0 in the instance map, ``background`` in
    the semantic map (non-exhaustive labelling: an unannotated cell looks like background).

    Ignore pixels (e.g. 255) of the semantic map that do not belong to a removed instance
    are left as they are. Returns new arrays (inputs are not modified).
    """
    removed = (inst_map > 0) & ~np.isin(inst_map, np.asarray(keep_ids))
    inst = inst_map.copy()
    inst[removed] = 0
    seg = None
    if seg_map is not None:
        if seg_map.shape[:2] != inst_map.shape[:2]:
            raise ValueError(f'semantic map {seg_map.shape} and instance map '
                             f'{inst_map.shape} differ in size')
        seg = seg_map.copy()
        seg[removed] = background
    return inst, seg


def select_kept(mode: str,
                n: int,
                seed: int,
                fraction: Optional[float] = None,
                points: Optional[np.ndarray] = None,
                image_shape: Optional[Tuple[int, int]] = None,
                patch_size: int = 500,
                overlap: int = 100) -> np.ndarray:
    """Kept indices out of n instances for ``mode`` 'nested' (needs ``fraction``) or
    'one_per_patch' (needs the instances' ``points`` and ``image_shape``)."""
    if mode == 'nested':
        if fraction is None:
            raise ValueError('mode="nested" needs a fraction in (0, 1]')
        return nested_subsets(n, [fraction], seed)[float(fraction)]
    if mode == 'one_per_patch':
        if points is None or image_shape is None or len(points) != n:
            raise ValueError('mode="one_per_patch" needs one point per instance and the '
                             'image shape')
        return one_per_patch(points, image_shape, patch_size, overlap, seed)
    raise ValueError(f'mode must be "nested" or "one_per_patch", got {mode!r}')


def sparsify_label_maps(seed: int,
                        mode: str = 'nested',
                        fraction: Optional[float] = None,
                        inst_map: Optional[np.ndarray] = None,
                        seg_map: Optional[np.ndarray] = None,
                        points: Optional[np.ndarray] = None,
                        image_shape: Optional[Tuple[int, int]] = None,
                        patch_size: int = 500,
                        overlap: int = 100,
                        ignore_index: int = 255) -> dict:
    """Sparsify the segmentation labels of one image (shared by transform and tool).

    Instances are the non-zero ids of ``inst_map`` in ascending order; without an
    instance map, the 8-connected components of each class of the semantic map
    (:func:`projects.common.instances.connected_components_per_class`); without either,
    the points themselves. The kept instances are :func:`select_kept` (one-per-patch
    positions: instance centroids, :func:`projects.common.instances.instance_geometry`,
    continuous pixel coordinates as in docs/data_layout.md). Removed
    instances become 0 in the instance map and background (0) in the semantic map; a
    point is kept iff its instance
    (:func:`projects.common.instances.assign_points_to_instances`) is kept.
    ``seed`` is the image's seed (:func:`image_seed`).

    Returns a dict with ``inst_map`` / ``seg_map`` (None when not given), ``point_keep``
    (bool mask over ``points`` or None), ``kept`` (indices into the instance list),
    ``kept_ids`` (instance ids kept; None when instances are points) and ``n`` (number of
    instances before sparsification).
    """
    have_inst = inst_map is not None
    inst = inst_map
    if inst is None and seg_map is not None:
        inst = connected_components_per_class(seg_map, ignore_index)
    if inst is not None:
        ids, pos, _ = instance_geometry(inst)
        shape = image_shape if image_shape is not None else inst.shape[:2]
        kept = select_kept(mode, len(ids), seed, fraction, pos, shape, patch_size, overlap)
        keep_ids = ids[kept]
        new_inst, new_seg = apply_keep_to_maps(keep_ids, inst, seg_map)
        point_keep = None
        if points is not None:
            point_keep = np.isin(assign_points_to_instances(points, inst), keep_ids)
        return dict(inst_map=new_inst if have_inst else None, seg_map=new_seg,
                    point_keep=point_keep, kept=kept, kept_ids=keep_ids, n=len(ids))
    if points is None:
        raise ValueError('nothing to sparsify: no instance map, semantic map or points')
    points = np.asarray(points, np.float64).reshape(-1, 2)
    kept = select_kept(mode, len(points), seed, fraction, points, image_shape, patch_size,
                       overlap)
    point_keep = np.zeros(len(points), bool)
    point_keep[kept] = True
    return dict(inst_map=None, seg_map=None, point_keep=point_keep, kept=kept, kept_ids=None,
                n=len(points))
