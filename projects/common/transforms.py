"""Loading transforms for points and instance maps, and the sparse-label simulator.

All are :class:`mmcv.transforms.BaseTransform` subclasses registered in both mmdet's and
mmseg's TRANSFORMS, so the same names work in detection and segmentation pipelines.

Where the transforms go in a pipeline
-------------------------------------
- ``LoadInstanceAnnotations`` right after the image / semantic-map loading: it appends
  ``'gt_instance_map'`` to ``results['seg_fields']``, so mmseg's RandomFlip / RandomCrop /
  Resize move it together with ``gt_seg_map`` (nearest-neighbour, exact ids).
- ``SparsifyAnnotations`` right after the loading transforms, before any transform that
  crops or filters instances: the kept subset is drawn from the complete annotation of the
  image (the same subset as ``tools/sparsify_annotations.py`` writes).
- ``LoadPointAnnotations``: neither mmdet's nor mmseg's geometric transforms know
  ``gt_points``. In a **detection** pipeline put it *after* the geometric transforms: it
  maps the instances' points through ``results['homography_matrix']``, which mmdet's
  Resize / RandomFlip / RandomCrop / RandomAffine ... record, and keeps only the points of
  the boxes that survived (crops, filters). In a **segmentation** pipeline (mmseg records
  no homography) put it *before* geometric transforms (e.g. to build point labels with
  ``PointsToVoronoiLabel``); it raises if it sees a flipped / resized image without a
  homography, instead of returning misplaced points.

Coordinates
-----------
Points are continuous pixel coordinates, the convention of mmdet's boxes
(docs/data_layout.md): pixel (r, c) covers [c, c+1) x [r, r+1), a centroid is
``center_of_mass + 0.5`` (:func:`projects.common.instances.instance_geometry`). So
mmdet's homographies map points exactly like boxes: a horizontal flip x -> W - x, a
resize x -> s * x, a crop x -> x - x0, with no half-pixel correction.
"""
import os.path as osp
from typing import Optional

import numpy as np
from mmcv.transforms import BaseTransform

from .io import check_points_inside, read_instance_map, read_points
from .registry import TRANSFORMS, register
from .sparsify import image_seed, select_kept, sparsify_label_maps

__all__ = ['LoadPointAnnotations', 'LoadInstanceAnnotations', 'SparsifyAnnotations']


def _box_array(boxes) -> np.ndarray:
    """(N, 4) float64 numpy array from mmdet boxes, a tensor or an array."""
    if hasattr(boxes, 'tensor'):  # mmdet BaseBoxes
        boxes = boxes.tensor
    if hasattr(boxes, 'detach'):
        boxes = boxes.detach().cpu().numpy()
    return np.asarray(boxes, np.float64).reshape(-1, 4)


def _project(points: np.ndarray, hmat: np.ndarray) -> np.ndarray:
    """Apply a 3x3 homography to (N, 2) points."""
    if len(points) == 0:
        return points.copy()
    ph = np.concatenate([points, np.ones((len(points), 1))], 1) @ np.asarray(hmat, np.float64).T
    return ph[:, :2] / ph[:, 2:3]


def _project_boxes(boxes: np.ndarray, hmat: np.ndarray) -> np.ndarray:
    """Project xyxy boxes by their 4 corners and take the enclosing box (mmdet's rule)."""
    if len(boxes) == 0:
        return boxes.copy()
    x1, y1, x2, y2 = boxes.T
    corners = np.stack([np.stack([x1, y1], 1), np.stack([x2, y1], 1),
                        np.stack([x1, y2], 1), np.stack([x2, y2], 1)], 1)  # (N, 4, 2)
    pc = _project(corners.reshape(-1, 2), hmat).reshape(-1, 4, 2)
    return np.concatenate([pc.min(1), pc.max(1)], 1)


def _original_shape(results: dict) -> tuple:
    """(H, W) of the image as loaded: ori_shape, else the dataset's height / width."""
    if results.get('ori_shape') is not None:
        return tuple(results['ori_shape'][:2])
    if 'height' in results and 'width' in results:
        return int(results['height']), int(results['width'])
    if results.get('img_shape') is not None:
        return tuple(results['img_shape'][:2])
    raise ValueError(f'{results.get("img_path", "<unknown image>")}: no image shape to check '
                     f'points against (load the image first or give height/width)')


@register(TRANSFORMS)
class LoadPointAnnotations(BaseTransform):
    """Load key points into ``results['gt_points']`` (float32 (N, 2), x, y in continuous
    pixel coordinates, see the module docstring) and ``results['gt_point_labels']``
    (int64 (N,)).

    Sources: with ``from_instances=True`` and ``results['instances']`` present
    (detection, :class:`CellDetDataset`), each instance's ``'point'`` (else its box
    centre) and ``'bbox_label'``; otherwise the CSV at ``results['points_path']``
    (segmentation, :class:`NucleiSegDataset`; columns x, y, label). Zero points is valid.
    An image whose dataset flag ``labeled`` is False and has no point file is passed
    through unchanged.

    Points must lie inside the loaded image (``ori_shape``, else ``height`` / ``width``):
    otherwise ValueError naming the point file / image and the point. Then they are
    mapped to the current frame with ``results['homography_matrix']`` (mmdet's geometric
    transforms) and clipped to the current image (a cell cut by a crop keeps its point on
    the border). In detection, when boxes were dropped (crop, filter), only the points of
    the surviving boxes are kept, in box order: surviving boxes are matched in order to
    the projected (and clipped) original boxes, within 0.5 px. ``gt_points[i]`` belongs to
    ``gt_bboxes[i]``, ignored (crowd) instances included: mmdet's ``PackDetInputs`` moves
    those to ``ignored_instances``, so select with ``~gt_ignore_flags`` to align with
    ``gt_instances``. PackDetInputs does not pack ``gt_points``: add ``'gt_points'`` /
    ``'gt_point_labels'`` to its ``meta_keys`` (then ``data_sample.metainfo['gt_points']``).
    See the module docstring for where to put this transform.
    """

    def __init__(self, from_instances: bool = True, match_tol: float = 0.5) -> None:
        self.from_instances = from_instances
        self.match_tol = match_tol

    def transform(self, results: dict) -> Optional[dict]:
        img_path = results.get('img_path', '<unknown image>')
        boxes0 = None
        if self.from_instances and 'instances' in results:
            insts = results['instances']
            pts = np.zeros((len(insts), 2), np.float64)
            labels = np.zeros(len(insts), np.int64)
            boxes0 = np.zeros((len(insts), 4), np.float64)
            for i, inst in enumerate(insts):
                boxes0[i] = inst['bbox']
                x1, y1, x2, y2 = inst['bbox']
                pts[i] = inst.get('point', ((x1 + x2) / 2.0, (y1 + y2) / 2.0))[:2]
                labels[i] = inst.get('bbox_label', 0)
            source = img_path
        else:
            path = results.get('points_path')
            if path is None:
                if results.get('labeled', True) is False:
                    return results
                raise ValueError(f'{img_path}: no "instances" and no "points_path" to load '
                                 f'points from (configure data_prefix points_path)')
            pts, labels = read_points(path)
            pts = pts.astype(np.float64)
            source = f'{path} (image {img_path})'
        check_points_inside(pts, _original_shape(results), source)

        hmat = results.get('homography_matrix')
        if hmat is not None:
            pts = _project(pts, hmat)
        elif results.get('flip', False) or (results.get('img_shape') is not None
                                            and results.get('ori_shape') is not None and
                                            tuple(results['img_shape'][:2]) !=
                                            tuple(results['ori_shape'][:2])):
            raise ValueError(f'{img_path}: the image was flipped / resized / cropped by a '
                             f'transform that records no homography_matrix; put '
                             f'LoadPointAnnotations before the geometric transforms')

        if boxes0 is not None and results.get('gt_bboxes') is not None:
            cur = _box_array(results['gt_bboxes'])
            if len(cur) != len(boxes0):
                idx = self._match(boxes0, cur, hmat, results, img_path)
                pts, labels = pts[idx], labels[idx]
        if results.get('img_shape') is not None and len(pts):
            h, w = results['img_shape'][:2]
            pts[:, 0] = np.clip(pts[:, 0], 0, w)
            pts[:, 1] = np.clip(pts[:, 1], 0, h)
        results['gt_points'] = pts.astype(np.float32).reshape(-1, 2)
        results['gt_point_labels'] = labels.astype(np.int64)
        return results

    def _match(self, boxes0: np.ndarray, cur: np.ndarray, hmat, results: dict,
               img_path: str) -> np.ndarray:
        """Index of the original instance behind each current box (order is preserved)."""
        proj = _project_boxes(boxes0, hmat) if hmat is not None else boxes0.copy()
        cands = [proj]
        if results.get('img_shape') is not None:
            h, w = results['img_shape'][:2]
            cands.append(np.clip(proj, 0, [w, h, w, h]))
        idx, i = [], 0
        for j, box in enumerate(cur):
            while i < len(proj) and not any(
                    np.abs(c[i] - box).max() <= self.match_tol for c in cands):
                i += 1
            if i == len(proj):
                raise ValueError(
                    f'{img_path}: box {j} {box.round(1).tolist()} matches no annotated '
                    f'instance; a transform changed the boxes without recording a '
                    f'homography_matrix, or reordered them')
            idx.append(i)
            i += 1
        return np.asarray(idx, np.int64)

    def __repr__(self) -> str:
        return f'{type(self).__name__}(from_instances={self.from_instances})'


@register(TRANSFORMS)
class LoadInstanceAnnotations(BaseTransform):
    """Load ``results['inst_map_path']`` into ``results['gt_instance_map']`` (int32, 0 =
    background) and append ``'gt_instance_map'`` to ``results['seg_fields']``.

    mmseg's RandomFlip / RandomCrop and mmcv's Resize (nearest) act on every key in
    ``seg_fields``; they keep int32 ids exact (tested). The map must have the size of the
    image (or of ``gt_seg_map``): otherwise ValueError naming both files. An image whose
    dataset flag ``labeled`` is False and has no instance map is passed through unchanged.
    """

    def transform(self, results: dict) -> dict:
        img_path = results.get('img_path', '<unknown image>')
        path = results.get('inst_map_path')
        if path is None:
            if results.get('labeled', True) is False:
                return results
            raise ValueError(f'{img_path}: no "inst_map_path" (configure data_prefix '
                             f'inst_path)')
        inst = read_instance_map(path)
        if results.get('img') is not None:
            ref = tuple(results['img'].shape[:2])
            if inst.shape != ref:
                raise ValueError(f'{path}: instance map is {inst.shape[1]}x{inst.shape[0]} '
                                 f'but image {img_path} is {ref[1]}x{ref[0]} (load it '
                                 f'before geometric transforms)')
        if results.get('gt_seg_map') is not None:
            ref = tuple(results['gt_seg_map'].shape[:2])
            if inst.shape != ref:
                raise ValueError(f'{path}: instance map is {inst.shape[1]}x{inst.shape[0]} '
                                 f'but semantic map {results.get("seg_map_path")} is '
                                 f'{ref[1]}x{ref[0]}')
        results['gt_instance_map'] = inst.astype(np.int32)
        fields = results.setdefault('seg_fields', [])
        if 'gt_instance_map' not in fields:
            fields.append('gt_instance_map')
        return results


@register(TRANSFORMS)
class SparsifyAnnotations(BaseTransform):
    """Simulate sparse (non-exhaustive) labels inside a pipeline.

    Args:
        fraction: share of instances kept, in (0, 1] (``mode='nested'``).
        mode: 'nested' (:func:`projects.common.sparsify.nested_subsets`: every instance
            kept at 10% is kept at 30%, ...) or 'one_per_patch' (PU detection paper:
            :func:`projects.common.sparsify.one_per_patch`).
        seed: global seed; the image's own seed mixes it with ``zlib.crc32`` of the image
            file name, so every epoch (and the offline tool) keeps the same subset.
        patch_size, overlap: patch grid of 'one_per_patch'.
        ignore_index: semantic ignore label (kept as is).

    Detection (``gt_bboxes`` present): drops the same entries from ``gt_bboxes``
    (mmdet boxes, tensor or array), ``gt_bboxes_labels``, ``gt_ignore_flags``,
    ``gt_masks``, ``gt_points``, ``gt_point_labels`` and ``instances``. One-per-patch
    positions are ``gt_points`` if loaded, else the instances' points / box centres.
    Segmentation: instances from ``gt_instance_map`` (else the connected components of
    ``gt_seg_map``, else the points); removed instances become 0 in ``gt_instance_map``
    and background (0) in ``gt_seg_map`` (an unannotated cell looks like background);
    points of removed instances are removed. ``results['sparsify_kept']`` records the kept
    indices (into the instance order; segmentation: ascending instance ids, which are in
    ``results['sparsify_kept_ids']``).
    """

    def __init__(self,
                 fraction: Optional[float] = None,
                 mode: str = 'nested',
                 seed: int = 0,
                 patch_size: int = 500,
                 overlap: int = 100,
                 ignore_index: int = 255) -> None:
        if mode not in ('nested', 'one_per_patch'):
            raise ValueError(f'SparsifyAnnotations: mode must be "nested" or '
                             f'"one_per_patch", got {mode!r}')
        if mode == 'nested' and (fraction is None or not 0 < fraction <= 1):
            raise ValueError(f'SparsifyAnnotations: mode="nested" needs fraction in (0, 1], '
                             f'got {fraction}')
        self.fraction = None if fraction is None else float(fraction)
        self.mode = mode
        self.seed = seed
        self.patch_size = patch_size
        self.overlap = overlap
        self.ignore_index = ignore_index

    def _shape(self, results: dict) -> tuple:
        if results.get('img_shape') is not None:
            return tuple(results['img_shape'][:2])
        return _original_shape(results)

    def transform(self, results: dict) -> dict:
        img_path = results.get('img_path')
        if not img_path:
            raise ValueError('SparsifyAnnotations needs results["img_path"] to seed the '
                             'image deterministically')
        seed = image_seed(self.seed, osp.basename(img_path))
        if results.get('gt_bboxes') is not None:
            return self._detection(results, seed, img_path)
        if any(results.get(k) is not None for k in ('gt_instance_map', 'gt_seg_map',
                                                     'gt_points')):
            return self._segmentation(results, seed)
        if results.get('labeled', True) is False:
            return results
        raise ValueError(f'{img_path}: SparsifyAnnotations found no annotation to sparsify '
                         f'(load gt_bboxes, gt_instance_map, gt_seg_map or gt_points first)')

    def _detection(self, results: dict, seed: int, img_path: str) -> dict:
        boxes = results['gt_bboxes']
        n = len(boxes)
        insts = results.get('instances')
        if insts is not None and len(insts) != n:
            raise ValueError(f'{img_path}: {n} boxes but {len(insts)} annotated instances: '
                             f'put SparsifyAnnotations before transforms that drop boxes')
        points = None
        if self.mode == 'one_per_patch':
            if results.get('gt_points') is not None and len(results['gt_points']) == n:
                points = np.asarray(results['gt_points'], np.float64)
            elif insts is not None:
                points = np.asarray([i.get('point', ((i['bbox'][0] + i['bbox'][2]) / 2,
                                                     (i['bbox'][1] + i['bbox'][3]) / 2))
                                     for i in insts], np.float64).reshape(-1, 2)
            else:
                b = _box_array(boxes)
                points = np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2], 1)
        kept = select_kept(self.mode, n, seed, self.fraction, points, self._shape(results),
                           self.patch_size, self.overlap)
        for key in ('gt_bboxes', 'gt_bboxes_labels', 'gt_ignore_flags', 'gt_masks',
                    'gt_points', 'gt_point_labels'):
            val = results.get(key)
            if val is None:
                continue
            if len(val) != n:
                raise ValueError(f'{img_path}: results["{key}"] has {len(val)} entries, '
                                 f'gt_bboxes has {n}')
            results[key] = self._index(val, kept)
        if insts is not None:
            results['instances'] = [insts[i] for i in kept]
        results['sparsify_kept'] = kept
        return results

    @staticmethod
    def _index(val, kept: np.ndarray):
        if hasattr(val, 'tensor') or hasattr(val, 'detach'):  # mmdet boxes / tensors
            import torch
            return val[torch.as_tensor(kept, dtype=torch.long)]
        if isinstance(val, np.ndarray):
            return val[kept]
        return val[kept]  # mmdet BitmapMasks / PolygonMasks accept an index array

    def _segmentation(self, results: dict, seed: int) -> dict:
        pts = results.get('gt_points')
        out = sparsify_label_maps(
            seed, self.mode, self.fraction,
            inst_map=results.get('gt_instance_map'),
            seg_map=results.get('gt_seg_map'),
            points=pts,
            image_shape=self._shape(results),
            patch_size=self.patch_size,
            overlap=self.overlap,
            ignore_index=self.ignore_index)
        if out['inst_map'] is not None:
            results['gt_instance_map'] = out['inst_map']
        if out['seg_map'] is not None:
            results['gt_seg_map'] = out['seg_map']
        if pts is not None:
            keep = out['point_keep']
            results['gt_points'] = np.asarray(pts)[keep]
            if results.get('gt_point_labels') is not None:
                results['gt_point_labels'] = np.asarray(results['gt_point_labels'])[keep]
        results['sparsify_kept'] = out['kept']
        if out['kept_ids'] is not None:
            results['sparsify_kept_ids'] = out['kept_ids']
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(fraction={self.fraction}, mode={self.mode!r}, '
                f'seed={self.seed}, patch_size={self.patch_size}, overlap={self.overlap})')
