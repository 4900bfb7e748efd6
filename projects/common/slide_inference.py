"""Whole-slide inference for any trained mmdet detector or mmseg segmentor.

A slide (:mod:`projects.common.slide`) is read tile by tile on the grid of
:func:`projects.common.tiling.tile_grid` (the PU-detection protocol: 500 px tiles,
100 px overlap; Zhao et al., MICCAI 2021, sect. 3), optionally only where a low-level
tissue mask has tissue, and every result is mapped to level-0 pixels. Memory is bounded
by a batch of tiles plus compact per-object records: the slide, a whole level or a
whole-slide label map are never held.

* **Detection** (:class:`projects.common.tiling.SlidingWindowInference`): per-tile boxes
  with score > ``score_thr``, shifted to the region, class-aware NMS across tile
  borders (optionally the border filter of :func:`~projects.common.tiling.merge_detections`).
* **Segmentation** (:class:`InstanceStitcher`): each tile's class map is kept only in
  its *core* (the tile minus half of the overlap on every inner side; cores partition
  the region, the overlap-tile strategy of U-Net), connected components (8-connected,
  per class, :func:`projects.common.instances.connected_components_per_class`) are
  computed per core and joined across core borders with a union-find, and an instance is
  emitted (polygon, centroid, mean class probability) as soon as no unprocessed core can
  still touch it, i.e. at the end of the last tile row it reaches.

Exactness: if every output pixel / cell depends only on inputs within ``r`` pixels
(receptive radius), tile offsets are multiples of the network stride and ``r`` is at
most half the overlap (segmentation) or the border margin with
``drop_border_boxes=True`` (detection), tiled inference equals inference on the whole
region at once: the same instance map, the same boxes after NMS up to float rounding
(tests/test_slide_inference.py checks both). Otherwise objects near tile borders may
differ slightly, as with any tiling.
"""
import math
import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from scipy import ndimage

from .instances import connected_components_per_class
from .slide import (Resolution, SlideReader, choose_resolution, open_slide, read_tile,
                    tissue_mask)
from .tiling import (PROGRESS_MIN_TILES, SlidingWindowInference, _pair,
                     check_batch_and_order, tile_grid, tile_inputs)

__all__ = [
    'load_model', 'model_task', 'class_names_and_colours', 'parse_roi', 'region_in_level',
    'region_at', 'tiles_with_tissue', 'mask_to_polygon', 'InstanceStitcher', 'SlideObjects',
    'SlideRun', 'RegionTiles', 'TileLoader', 'SlideInference'
]


# ====================================================================== model
def _state_dict_of(ckpt, checkpoint: str) -> Dict[str, torch.Tensor]:
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                              for v in state.values()):
        raise ValueError(f'{checkpoint}: not a model checkpoint (expected a state_dict of '
                         'tensors, or a dict with a "state_dict" key)')
    return {(k[7:] if k.startswith('module.') else k): v for k, v in state.items()}


def _list(keys: Sequence[str], limit: int = 8) -> str:
    keys = sorted(keys)
    more = f', ... ({len(keys) - limit} more)' if len(keys) > limit else ''
    return ', '.join(keys[:limit]) + more


def load_model(config: str, checkpoint: str, device: str = 'cpu',
               cfg_options: Optional[dict] = None):
    """Build the model of ``config`` and load ``checkpoint`` into it strictly.

    Returns ``(model, cfg, dataset_meta)`` with the model in eval mode on ``device``;
    ``dataset_meta`` is the checkpoint's ``meta['dataset_meta']`` (classes, palette) or
    {}. A checkpoint that does not fit the model (missing / unexpected keys, other
    shapes) raises ValueError naming both files and the keys.
    """
    import os.path as osp

    from mmengine.registry import DefaultScope
    from mmengine.runner.checkpoint import CheckpointLoader

    import projects  # noqa: F401  (torch.load fix for mmengine checkpoints)
    from .runner_utils import config_scope, load_config
    cfg = load_config(config, cfg_options)
    scope = config_scope(cfg)
    if scope == 'mmseg':
        from mmseg.registry import MODELS
    elif scope == 'mmdet':
        from mmdet.registry import MODELS
    else:
        raise ValueError(f'{config}: default_scope {scope!r} is neither mmdet nor mmseg')
    if not osp.isfile(checkpoint):
        raise FileNotFoundError(f'{checkpoint}: checkpoint file not found')
    with DefaultScope.overwrite_default_scope(scope):
        model = MODELS.build(cfg.model)
    try:
        ckpt = CheckpointLoader.load_checkpoint(checkpoint, map_location='cpu')
    except Exception as err:
        raise ValueError(f'{checkpoint}: unreadable checkpoint ({type(err).__name__}: '
                         f'{err})') from err
    state = _state_dict_of(ckpt, checkpoint)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f'{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}' for k in own
              if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f'{len(missing)} missing key(s): {_list(missing)}')
        if unexpected:
            parts.append(f'{len(unexpected)} unexpected key(s): {_list(unexpected)}')
        if shapes:
            parts.append(f'{len(shapes)} shape mismatch(es) (checkpoint vs model): '
                         f'{_list(shapes, 4)}')
        raise ValueError(f'checkpoint {checkpoint} does not match the model of config '
                         f'{config}: ' + '; '.join(parts))
    model.load_state_dict(state, strict=True)
    model.to(device)
    model.eval()
    meta = ckpt.get('meta', {}) if isinstance(ckpt, dict) else {}
    dataset_meta = dict(meta.get('dataset_meta', None) or {}) if isinstance(meta, dict) else {}
    return model, cfg, dataset_meta


def model_task(model) -> str:
    """'detection' for an mmdet BaseDetector, 'segmentation' for an mmseg BaseSegmentor."""
    from mmdet.models.detectors import BaseDetector
    from mmseg.models.segmentors import BaseSegmentor
    if isinstance(model, BaseDetector):
        return 'detection'
    if isinstance(model, BaseSegmentor):
        return 'segmentation'
    raise ValueError('model must be an mmdet BaseDetector or an mmseg BaseSegmentor, got '
                     f'{type(model).__name__}')


def _num_classes(model) -> int:
    for owner in (getattr(model, 'bbox_head', None), getattr(model, 'decode_head', None),
                  getattr(getattr(model, 'roi_head', None), 'bbox_head', None)):
        n = getattr(owner, 'num_classes', None)
        if isinstance(n, int):
            return n
    return 1


def _config_metainfo(cfg) -> dict:
    """``metainfo`` of the config's test dataset, else its class's ``METAINFO``."""
    from mmengine.registry import DefaultScope
    from .runner_utils import config_scope
    ds = (cfg.get('test_dataloader', None) or {}).get('dataset', None) or {}
    if ds.get('metainfo'):
        return dict(ds['metainfo'])
    scope = config_scope(cfg)
    try:
        if scope == 'mmseg':
            from mmseg.registry import DATASETS
        else:
            from mmdet.registry import DATASETS
        with DefaultScope.overwrite_default_scope(scope):
            cls = DATASETS.get(ds.get('type', ''))
    except Exception:  # an unknown or unset dataset type: no names from it
        cls = None
    return dict(getattr(cls, 'METAINFO', None) or {})


def class_names_and_colours(model, cfg=None, dataset_meta: Optional[dict] = None
                            ) -> Tuple[List[str], List[Tuple[int, int, int]]]:
    """Class names and RGB colours, label index = list index.

    From the checkpoint's ``dataset_meta`` (classes, palette), else the config's test
    dataset ``metainfo``, else ``class_0..``; missing colours come from the data sets'
    fixed palette. Segmentors: index 0 is the background class.
    (the config's dataset class ``METAINFO`` is used when the dataset sets no metainfo).
    """
    from .datasets import _palette
    meta = dict(dataset_meta or {})
    if not meta.get('classes') and cfg is not None:
        meta = _config_metainfo(cfg)
    n = _num_classes(model)
    if model_task(model) == 'segmentation':
        n = max(n, 2)
    names = [str(c) for c in (meta.get('classes') or [])]
    if len(names) < n:
        names += [f'class_{i}' for i in range(len(names), n)]
    palette = [tuple(int(v) for v in c) for c in (meta.get('palette') or [])]
    fill = _palette(len(names))
    colours = [palette[i] if i < len(palette) else fill[i] for i in range(len(names))]
    return names, colours


# ====================================================================== region
def parse_roi(text: Optional[str]) -> Optional[Tuple[int, int, int, int]]:
    """``'x,y,w,h'`` (level-0 pixels, ints) -> tuple; None stays None."""
    if text is None:
        return None
    parts = [p.strip() for p in str(text).split(',')]
    try:
        vals = tuple(int(p) for p in parts)
    except ValueError:
        vals = ()
    if len(vals) != 4:
        raise ValueError(f'--roi {text!r}: expected four integers x,y,w,h (level-0 pixels)')
    return vals


def region_in_level(slide: SlideReader, level: int,
                    roi: Optional[Sequence[int]] = None) -> Tuple[int, int, int, int]:
    """The region (x, y, w, h) in ``level`` pixels covering ``roi`` (level-0 x, y, w, h;
    None = the whole slide): x = floor(x0 / d), x_end = min(ceil((x0 + w0) / d), level
    width), the same for y. An ROI that is empty or not inside the slide raises
    ValueError naming the slide and its size."""
    level = slide.check_level(level, '--level')
    return _region(slide, slide.level_dimensions[level], slide.level_downsamples[level],
                   roi, f'level {level}')


def region_at(slide: SlideReader, res: Resolution,
              roi: Optional[Sequence[int]] = None) -> Tuple[int, int, int, int]:
    """The region (x, y, w, h) in pixels of ``res`` covering ``roi``: those of
    :func:`region_in_level` when tiles are read from the level as is; for resized tiles
    (``--mpp``) the slide spans ceil(w0 / scale) x ceil(h0 / scale) such pixels (the last
    ones partly outside the scan are read as white) and the same rule applies with
    d = ``res.scale``."""
    if not res.resized:
        return region_in_level(slide, res.level, roi)
    w0, h0 = slide.dimensions
    s = float(res.scale)
    dims = (int(math.ceil(w0 / s - 1e-9)), int(math.ceil(h0 / s - 1e-9)))
    return _region(slide, dims, s, roi, f'{res.mpp:g} um/px' if res.mpp else f'scale {s:g}')


def _region(slide: SlideReader, dims: Tuple[int, int], d: float,
            roi: Optional[Sequence[int]], where: str) -> Tuple[int, int, int, int]:
    lw, lh = dims
    if roi is None:
        return 0, 0, lw, lh
    if len(roi) != 4 or not all(isinstance(v, (int, np.integer)) for v in roi):
        raise ValueError(f'--roi {roi!r}: expected four integers x,y,w,h')
    x, y, w, h = (int(v) for v in roi)
    w0, h0 = slide.dimensions
    if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > w0 or y + h > h0:
        raise ValueError(f'--roi {x},{y},{w},{h}: the region (level-0 pixels) is empty or '
                         f'outside the slide {slide.path} ({w0}x{h0} at level 0)')
    xa, ya = int(math.floor(x / d + 1e-9)), int(math.floor(y / d + 1e-9))
    xb = min(int(math.ceil((x + w) / d - 1e-9)), lw)
    yb = min(int(math.ceil((y + h) / d - 1e-9)), lh)
    if xb <= xa or yb <= ya:
        raise ValueError(f'--roi {x},{y},{w},{h}: smaller than one pixel of {where}')
    return xa, ya, xb - xa, yb - ya


def tiles_with_tissue(tiles: np.ndarray, origin: Tuple[int, int], downsample: float,
                      mask: np.ndarray, mask_scale: float) -> np.ndarray:
    """Bool (K,): True for tiles (x0, y0, x1, y1, level pixels relative to ``origin``)
    whose footprint holds a tissue pixel of ``mask`` (thumbnail pixel j covers level-0
    [j * mask_scale, (j + 1) * mask_scale))."""
    mh, mw = mask.shape
    # integral image: the tissue count of any rectangle in O(1) per tile
    ii = np.pad(mask.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    t = np.asarray(tiles, np.float64).reshape(-1, 4)
    ox, oy = origin
    f = downsample / mask_scale
    x0 = np.clip(np.floor((t[:, 0] + ox) * f + 1e-9), 0, mw).astype(np.int64)
    y0 = np.clip(np.floor((t[:, 1] + oy) * f + 1e-9), 0, mh).astype(np.int64)
    x1 = np.clip(np.ceil((t[:, 2] + ox) * f - 1e-9), 0, mw).astype(np.int64)
    y1 = np.clip(np.ceil((t[:, 3] + oy) * f - 1e-9), 0, mh).astype(np.int64)
    count = ii[y1, x1] - ii[y0, x1] - ii[y1, x0] + ii[y0, x0]
    return count > 0


# ====================================================================== polygons
def _drop_collinear(ring: np.ndarray) -> np.ndarray:
    """Closed ring (first == last) without its repeated and collinear vertices (the
    same polygon with fewer points)."""
    d = np.diff(ring, axis=0)  # edge k: vertex k -> k + 1
    p, d = ring[:-1][np.any(d != 0, axis=1)], d[np.any(d != 0, axis=1)]
    if len(p) >= 3:
        a = np.concatenate([d[-1:], d[:-1]])  # the edge arriving at each vertex
        turn = np.abs(a[:, 0] * d[:, 1] - a[:, 1] * d[:, 0]) > 1e-9
        if turn.sum() >= 3:
            p = p[turn]
    return np.concatenate([p, p[:1]])


def mask_to_polygon(mask: np.ndarray, simplify: float = 0.0) -> np.ndarray:
    """Outer boundary of a binary mask as a closed polygon (K, 2) of (x, y).

    Marching squares (``skimage.measure.find_contours`` at 0.5 on the zero-padded mask,
    ``fully_connected='high'`` so that 8-connected pixels stay one object); in the
    continuous convention (pixel (r, c) covers [c, c+1) x [r, r+1)) the outline runs
    along pixel edges with corners cut at 45 degrees. The contour enclosing the largest
    area is the exterior; holes are not returned. Collinear vertices are dropped (the
    same polygon); ``simplify`` > 0 further applies Douglas-Peucker with that tolerance
    in pixels (``cv2.approxPolyDP``). First point == last point.
    """
    from skimage.measure import find_contours
    mask = np.asarray(mask, bool)
    if mask.ndim != 2 or not mask.any():
        raise ValueError(f'mask: expected a 2-D mask with at least one pixel, got shape '
                         f'{mask.shape}')
    contours = find_contours(np.pad(mask, 1).astype(np.float32), 0.5,
                             fully_connected='high')

    def area(c: np.ndarray) -> float:  # shoelace; find_contours closes its rings
        y, x = c[:, 0], c[:, 1]
        return abs(float(np.dot(x[:-1], y[1:]) - np.dot(y[:-1], x[1:]))) / 2

    ring = contours[0] if len(contours) == 1 else max(contours, key=area)
    xy = ring[:, ::-1] - 0.5  # padded index -> continuous: -1 (pad) + 0.5 (pixel centre)
    if not np.array_equal(xy[0], xy[-1]):
        xy = np.vstack([xy, xy[:1]])
    xy = _drop_collinear(xy)
    if simplify > 0 and len(xy) > 4:
        import cv2
        approx = cv2.approxPolyDP(xy[:-1].astype(np.float32).reshape(-1, 1, 2),
                                  float(simplify), True).reshape(-1, 2).astype(np.float64)
        if len(approx) >= 3:
            xy = np.vstack([approx, approx[:1]])
    return xy


# ====================================================================== stitching
class InstanceStitcher:
    """Exact connected components of a label map that arrives as a grid of cores.

    The region (``height`` x ``width``) is cut by ``x_bounds`` / ``y_bounds`` (ascending
    cut positions, starting at 0, ending at width / height) into cores; cores arrive in
    row-major order through :meth:`add_core` (class map, 0 = background, and the
    probability of each pixel's class). Components are 8-connected and per class (those
    of :func:`connected_components_per_class` on the whole map); pieces in adjacent cores
    are joined with a union-find through the last pixel row of the previous core row
    and the last column of the previous core. :meth:`end_row` returns the instances that
    no later core can touch. Instances with fewer than ``min_size`` pixels are dropped
    (counted in ``removed``); ``fill_holes`` fills each instance's holes before its
    polygon, area and centroid are taken.

    Each instance is a dict: ``label``, ``score`` (mean class probability over its
    predicted pixels), ``pixels`` (predicted pixels), ``area`` (pixels after hole
    filling), ``centroid`` (x, y), ``box`` (x0, y0, x1, y1), ``polygon`` (K, 2), all in
    region pixels (continuous convention).
    """

    def __init__(self, height: int, width: int, y_bounds: Sequence[int],
                 x_bounds: Sequence[int], min_size: int = 0, fill_holes: bool = True,
                 simplify: float = 0.0) -> None:
        self.height, self.width = int(height), int(width)
        self.yb, self.xb = [int(v) for v in y_bounds], [int(v) for v in x_bounds]
        for name, b, n in (('y_bounds', self.yb, self.height), ('x_bounds', self.xb, self.width)):
            if len(b) < 2 or b[0] != 0 or b[-1] != n or any(q <= p for p, q in zip(b, b[1:])):
                raise ValueError(f'{name} must increase strictly from 0 to {n}, got {b}')
        self.min_size, self.fill_holes, self.simplify = int(min_size), bool(fill_holes), simplify
        self.removed = 0
        self._next = (0, 0)
        self._prev_row = np.zeros(self.width, np.int64)  # piece ids of the row above the band
        self._next_row = np.zeros(self.width, np.int64)
        self._left_col: Optional[np.ndarray] = None
        # piece id -> [label, y0, x0, mask, prob_sum, count, core row if it touches the
        # bottom of its core and a row follows, else -1]
        self._pieces: Dict[int, list] = {}
        self._parent: Dict[int, int] = {}
        self._cls = {0: -1}
        self._count = 0

    def _find(self, a: int) -> int:
        root = a
        while self._parent[root] != root:
            root = self._parent[root]
        while self._parent[a] != root:
            self._parent[a], a = root, self._parent[a]
        return root

    def _union_pairs(self, a: np.ndarray, b: np.ndarray) -> None:
        ok = (a > 0) & (b > 0)
        if not ok.any():
            return
        pairs = np.unique(np.stack([a[ok], b[ok]], 1), axis=0)
        for p, q in pairs:
            p, q = int(p), int(q)
            if self._cls[p] != self._cls[q]:
                continue
            rp, rq = self._find(p), self._find(q)
            if rp != rq:
                self._parent[max(rp, rq)] = min(rp, rq)

    def add_core(self, row: int, col: int, labels: Optional[np.ndarray],
                 probs: Optional[np.ndarray] = None) -> None:
        """Core (``row``, ``col``): ``labels`` int (h, w) with 0 = background (None = all
        background, e.g. a skipped tile), ``probs`` float (h, w) (None = 1)."""
        if (row, col) != self._next:
            raise ValueError(f'cores must arrive in row-major order: expected {self._next}, '
                             f'got {(row, col)}')
        y0, y1 = self.yb[row], self.yb[row + 1]
        x0, x1 = self.xb[col], self.xb[col + 1]
        h, w = y1 - y0, x1 - x0
        if labels is None:
            gid = np.zeros((h, w), np.int64)
        else:
            labels = np.asarray(labels)
            if labels.shape != (h, w):
                raise ValueError(f'core ({row}, {col}): labels shape {labels.shape} != {(h, w)}')
            inst = connected_components_per_class(labels, ignore_index=-1)
            n = int(inst.max(initial=0))
            gid = np.where(inst > 0, inst.astype(np.int64) + self._count, 0)
            if n:
                flat = inst.ravel()
                counts = np.bincount(flat, minlength=n + 1)
                p = np.ones(flat.size) if probs is None else np.asarray(probs, np.float64).ravel()
                psum = np.bincount(flat, weights=p, minlength=n + 1)
                for k, sl in enumerate(ndimage.find_objects(inst), start=1):
                    pid = self._count + k
                    m = inst[sl] == k
                    cls = int(labels[sl][m][0])
                    self._pieces[pid] = [cls, y0 + sl[0].start, x0 + sl[1].start, m,
                                         float(psum[k]), int(counts[k]),
                                         row if sl[0].stop == h and row + 2 < len(self.yb) else -1]
                    self._parent[pid] = pid
                    self._cls[pid] = cls
                self._count += n
        # joins: top row with the row above (3 neighbours each), left column with the
        # previous core's right column (3 neighbours each, inside this band)
        if row > 0:
            top = gid[0]
            cols = np.arange(x0, x1)
            for d in (-1, 0, 1):
                c = cols + d
                ok = (c >= 0) & (c < self.width)
                self._union_pairs(top[ok], self._prev_row[c[ok]])
        if col > 0:
            left = gid[:, 0]
            for d in (-1, 0, 1):
                r = np.arange(h) + d
                ok = (r >= 0) & (r < h)
                self._union_pairs(left[ok], self._left_col[r[ok]])
        self._next_row[x0:x1] = gid[-1]
        self._left_col = gid[:, -1].copy()
        self._next = (row, col + 1) if col + 2 < len(self.xb) else (row + 1, 0)

    def end_row(self, row: int) -> List[dict]:
        """Close tile row ``row`` (all its cores added): the finished instances."""
        if self._next != (row + 1, 0):
            raise ValueError(f'end_row({row}) before all cores of row {row} were added')
        self._prev_row, self._next_row = self._next_row, np.zeros(self.width, np.int64)
        self._left_col = None
        groups: Dict[int, List[int]] = {}
        for pid in self._pieces:
            groups.setdefault(self._find(pid), []).append(pid)
        done = []
        for root, pids in sorted(groups.items()):
            if any(self._pieces[p][6] == row for p in pids):
                continue  # touches the next row of cores: not finished
            inst = self._assemble([self._pieces.pop(p) for p in pids])
            for p in pids:
                del self._parent[p]
                del self._cls[p]
            if inst is not None:
                done.append(inst)
        return done

    def _assemble(self, pieces: List[list]) -> Optional[dict]:
        count = sum(p[5] for p in pieces)
        if count < self.min_size:
            self.removed += 1
            return None
        y0 = min(p[1] for p in pieces)
        x0 = min(p[2] for p in pieces)
        y1 = max(p[1] + p[3].shape[0] for p in pieces)
        x1 = max(p[2] + p[3].shape[1] for p in pieces)
        mask = np.zeros((y1 - y0, x1 - x0), bool)
        for p in pieces:
            m = p[3]
            mask[p[1] - y0:p[1] - y0 + m.shape[0], p[2] - x0:p[2] - x0 + m.shape[1]] |= m
        if self.fill_holes:
            mask = ndimage.binary_fill_holes(mask)
        # centroid and box in the convention of instances.instance_geometry: mean pixel
        # index + 0.5; first row / column, last + 1 (the mask crop is the tight box)
        rows, cols = np.nonzero(mask)
        cen = np.array([cols.mean() + 0.5 + x0, rows.mean() + 0.5 + y0])
        box = np.array([x0, y0, x1, y1], np.float64)
        poly = mask_to_polygon(mask, self.simplify) + np.array([x0, y0], np.float64)
        return dict(label=pieces[0][0], score=sum(p[4] for p in pieces) / count,
                    pixels=count, area=int(len(rows)), centroid=cen, box=box, polygon=poly)


def core_bounds(starts: Sequence[int], ends: Sequence[int], length: int) -> List[int]:
    """Cut positions between consecutive tiles of one axis at the middle of their
    overlap: [0, (end_0 + start_1) // 2, ..., length]."""
    cuts = [0]
    for k in range(1, len(starts)):
        cuts.append((int(ends[k - 1]) + int(starts[k])) // 2)
    cuts.append(int(length))
    return cuts


# ====================================================================== results
@dataclass
class SlideObjects:
    """A batch of objects in level-0 pixels: centres (N, 2) x, y; labels (N,); scores
    (N,); boxes (N, 4) x0, y0, x1, y1; polygons: list of (K, 2) or None (detections);
    areas (N,) level-0 px^2 or None."""
    centres: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray
    polygons: Optional[List[np.ndarray]] = None
    areas: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class SlideRun:
    """What :meth:`SlideInference.run` returns (plus what its ``sink`` received)."""
    task: str
    level: int
    downsample: float  # level-0 pixels per pixel of the tiles (``resolution.scale``)
    region: Tuple[int, int, int, int]  # pixels of the tiles x, y, w, h
    tiles: np.ndarray  # (K, 4) level pixels, relative to the region
    keep: np.ndarray  # (K,) bool: tiles run (False: skipped as background)
    centres: np.ndarray  # (N, 2) level-0, every object (for the overview)
    labels: np.ndarray  # (N,)
    timings: Dict[str, float] = field(default_factory=dict)
    thumbnail: Optional[np.ndarray] = None
    thumbnail_scale: float = 1.0  # level-0 px per thumbnail px
    mask: Optional[np.ndarray] = None
    mask_threshold: Optional[float] = None
    removed_small: int = 0
    resolution: Optional[Resolution] = None


# ====================================================================== tile reading
class RegionTiles:
    """Tiles of a slide at a :class:`~projects.common.slide.Resolution`, addressed in its
    pixels relative to ``origin`` (the region's top-left corner): ``tiles(x, y, w, h)``.

    Tiles read from a level as is come from ``read_level`` (level pixels); resized ones
    (``--mpp``) from :func:`~projects.common.slide.read_tile` at level-0 (origin + x) *
    scale. Pickled into a reader process, it reopens the slide file there (lazily, with
    the same back-end): an open OpenSlide / tifffile handle is not shared across processes.
    """

    def __init__(self, slide: SlideReader, res: Resolution, origin: Tuple[int, int]) -> None:
        self.slide, self.res, self.origin = slide, res, (int(origin[0]), int(origin[1]))
        self.path, self.backend = slide.path, slide.backend

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state['slide'] = None
        return state

    def __call__(self, x: int, y: int, w: int, h: int) -> np.ndarray:
        if self.slide is None:
            self.slide = open_slide(self.path, self.backend)
        x, y = self.origin[0] + int(x), self.origin[1] + int(y)
        if not self.res.resized:
            return self.slide.read_level(self.res.level, x, y, int(w), int(h))
        s = self.res.scale
        return read_tile(self.slide, self.res, x * s, y * s, int(w), int(h))


class _TileError:
    """A read error raised in a reader process, re-raised by the consumer."""

    def __init__(self, err: BaseException) -> None:
        self.message = str(err) if isinstance(err, (ValueError, FileNotFoundError)) else \
            f'{type(err).__name__}: {err}'


class _TileDataset(torch.utils.data.Dataset):

    def __init__(self, reader: RegionTiles, tiles: np.ndarray) -> None:
        self.reader, self.tiles = reader, np.asarray(tiles, np.int64).reshape(-1, 4)

    def __len__(self) -> int:
        return len(self.tiles)

    def __getitem__(self, i: int):
        x0, y0, x1, y1 = (int(v) for v in self.tiles[i])
        try:
            # a tensor travels between processes through shared memory, not a pickle copy
            return torch.from_numpy(self.reader(x0, y0, x1 - x0, y1 - y0))
        except Exception as err:  # re-raised in the main process, naming the slide
            return _TileError(err)


def _as_list(batch: list) -> list:
    return batch


def _reader_process_init(worker_id: int) -> None:
    import cv2
    cv2.setNumThreads(1)  # a reader resizes one tile at a time; no thread pool per process


class TileLoader:
    """Batches of tile images read ahead by ``workers`` background processes.

    A ``torch.utils.data.DataLoader`` over the tile list (one ``batch_size`` batch per
    model call, in order): each process holds its own slide handle and reads whole
    batches; ``prefetch`` batches per process are read ahead while the model runs, so at
    most ``workers * prefetch`` batches (plus the one in the model) are in memory.
    Iterating yields lists of RGB uint8 arrays; a read error in a process is raised here
    as ValueError with its message (naming the slide).
    """

    def __init__(self, reader: RegionTiles, tiles: np.ndarray, batch_size: int, workers: int,
                 prefetch: int = 2) -> None:
        if not isinstance(workers, int) or workers < 1:
            raise ValueError(f'workers must be an int >= 1, got {workers!r}')
        self.loader = torch.utils.data.DataLoader(
            _TileDataset(reader, tiles), batch_size=batch_size, shuffle=False,
            num_workers=workers, collate_fn=_as_list, prefetch_factor=prefetch,
            worker_init_fn=_reader_process_init)

    def __iter__(self) -> Iterator[List[np.ndarray]]:
        return self._batches(iter(self.loader))  # the processes start (fork) here

    @staticmethod
    def _batches(loader_iter) -> Iterator[List[np.ndarray]]:
        for batch in loader_iter:
            for item in batch:
                if isinstance(item, _TileError):
                    raise ValueError(item.message)
            yield [t.numpy() for t in batch]


class _Background:
    """Run ``fn(item)`` on a thread for every :meth:`put` item, in order, with at most
    ``depth`` items waiting (the model thread blocks beyond that: memory stays bounded).
    An error in ``fn`` stops the work and is raised by the next :meth:`put` or by
    :meth:`close`."""

    def __init__(self, fn: Callable, depth: int = 2) -> None:
        self.fn, self.error = fn, None
        self.queue: 'queue.Queue' = queue.Queue(maxsize=depth)
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            if self.error is None:
                try:
                    self.fn(item)
                except BaseException as err:  # handed to the model thread
                    self.error = err

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    def put(self, item) -> None:
        self._raise()
        self.queue.put(item)

    def close(self, reraise: bool = True) -> None:
        self.queue.put(None)
        self.thread.join()
        if reraise:
            self._raise()


# ====================================================================== engine
class SlideInference:
    """Run a detector or a segmentor over a slide (module docstring).

    Args:
        model: built mmdet BaseDetector or mmseg BaseSegmentor (eval mode is set).
        tile_size, overlap, batch_size: the tiling (``tile_grid``).
        score_thr, max_per_tile, nms_iou, drop_border_boxes, border_margin: detection,
            as in :class:`SlidingWindowInference`.
        min_size, fill_holes, simplify: segmentation instances (pixels of the inference
            level; ``simplify`` = Douglas-Peucker tolerance of the polygons).
        channel_order: order of the tiles fed to the model ('bgr' as mmcv loads images).
        progress: a progress bar over tiles (when there are at least 16).
        workers: 0 reads tiles in the model's thread (one batch at a time); N >= 1 reads
            them in N background processes (:class:`TileLoader`, ``prefetch`` batches
            ahead per process) and, for segmentors, stitches and hands objects to the
            sink on a background thread, so that the model never waits for either.
            The objects are the same.
    """

    def __init__(self, model, tile_size=500, overlap=100, batch_size: int = 4,
                 score_thr: float = 0.5, max_per_tile: int = 100, nms_iou: float = 0.5,
                 drop_border_boxes: bool = False, border_margin: float = 2.0,
                 min_size: int = 0, fill_holes: bool = True, simplify: float = 0.0,
                 channel_order: str = 'bgr', progress: bool = True, workers: int = 0,
                 prefetch: int = 2) -> None:
        self.task = model_task(model)
        self.model = model
        self.tile_size, self.overlap = _pair(tile_size, 'tile_size'), _pair(overlap, 'overlap')
        tile_grid(1, 1, self.tile_size, self.overlap)  # validates them
        if self.task == 'detection':
            self.det = SlidingWindowInference(
                model, tile_size=self.tile_size, overlap=self.overlap, batch_size=batch_size,
                score_thr=score_thr, max_per_tile=max_per_tile, nms_iou=nms_iou,
                progress=progress, channel_order=channel_order,
                drop_border_boxes=drop_border_boxes, border_margin=border_margin)
        else:
            check_batch_and_order(batch_size, channel_order)
            if not isinstance(min_size, int) or min_size < 0:
                raise ValueError(f'min_size must be an int >= 0, got {min_size!r}')
        self.batch_size, self.channel_order = batch_size, channel_order
        self.min_size, self.fill_holes, self.simplify = min_size, fill_holes, float(simplify)
        self.progress = progress
        for name, val, low in (('workers', workers, 0), ('prefetch', prefetch, 1)):
            if not isinstance(val, int) or isinstance(val, bool) or val < low:
                raise ValueError(f'{name} must be an int >= {low}, got {val!r}')
        self.workers, self.prefetch = workers, prefetch

    # ------------------------------------------------------------------ run
    def run(self, slide: SlideReader, level: int = 0, roi: Optional[Sequence[int]] = None,
            tissue: Optional[str] = None, thumbnail_size: int = 1024,
            sink: Optional[Callable[[SlideObjects], None]] = None,
            resolution: Optional[Resolution] = None,
            thumbnail: Optional[Tuple[np.ndarray, float]] = None,
            on_reading: Optional[Callable[[], None]] = None) -> SlideRun:
        """Infer on ``level`` of ``slide`` inside ``roi`` (level-0 x, y, w, h; None = all).

        ``resolution`` (:func:`~projects.common.slide.choose_resolution`, e.g. for an
        mpp) replaces ``level``: tiles are then cut from the slide at its scale.
        ``thumbnail``: ``slide.thumbnail(thumbnail_size)`` when it was read already (e.g.
        ahead, while the model ran on the previous slide). ``on_reading()`` is called once
        the tile readers run (with ``workers``: once their processes are forked, so that
        work started then on another thread cannot hold a lock a reader inherits).

        ``tissue``: None (every tile) or a :func:`tissue_mask` method ('saturation',
        'od'): tiles with no tissue pixel in the mask of a thumbnail of the lowest level
        (longer side <= ``thumbnail_size``) are skipped. Objects are passed to ``sink``
        in batches as soon as they are final (level-0 pixels); the returned
        :class:`SlideRun` keeps only their centres and labels.
        """
        t_start = time.perf_counter()
        if resolution is None:
            resolution = choose_resolution(slide, level=slide.check_level(level, '--level'))
        level = resolution.level
        x0, y0, w, h = region_at(slide, resolution, roi)
        d = float(resolution.scale)
        tiles = tile_grid(h, w, self.tile_size, self.overlap)
        timings = {}
        mask, thr = None, None
        t0 = time.perf_counter()
        thumb, scale = thumbnail if thumbnail is not None else slide.thumbnail(thumbnail_size)
        if tissue is not None:
            mask, thr = tissue_mask(thumb, tissue)
            keep = tiles_with_tissue(tiles, (x0, y0), d, mask, scale)
        else:
            keep = np.ones(len(tiles), bool)
        timings['thumbnail_mask_s'] = time.perf_counter() - t0
        out = SlideRun(task=self.task, level=level, downsample=d, region=(x0, y0, w, h),
                       tiles=tiles, keep=keep, centres=np.zeros((0, 2)),
                       labels=np.zeros(0, np.int64), thumbnail=thumb, thumbnail_scale=scale,
                       mask=mask, mask_threshold=thr, resolution=resolution)
        centres, labels = [], []
        export_s = [0.0]

        def emit(objs: SlideObjects) -> None:
            centres.append(objs.centres)
            labels.append(objs.labels)
            if sink is not None and len(objs):
                t = time.perf_counter()
                sink(objs)
                export_s[0] += time.perf_counter() - t

        read_tile = RegionTiles(slide, resolution, (x0, y0))
        batches = None
        if self.workers:
            batches = iter(TileLoader(read_tile, tiles[keep], self.batch_size, self.workers,
                                      self.prefetch))
        if on_reading is not None:
            on_reading()
        if self.task == 'detection':
            res = self.det.run(read_tile, h, w, keep=keep, batches=batches)
            st = self.det.last_stats
            timings.update(read_s=st['read_s'], forward_s=st['forward_s'], merge_s=st['merge_s'])
            boxes = res.bboxes.numpy().astype(np.float64)
            boxes = (boxes + np.array([x0, y0, x0, y0], np.float64)) * d
            emit(SlideObjects(centres=(boxes[:, :2] + boxes[:, 2:]) / 2,
                              labels=res.labels.numpy().astype(np.int64),
                              scores=res.scores.numpy().astype(np.float64), boxes=boxes))
        else:
            self._run_seg(read_tile, tiles, keep, (x0, y0), d, emit, timings, out, batches)
            timings['merge_s'] -= export_s[0]  # the sink ran inside the stitching loop
        out.centres = np.concatenate(centres) if centres else np.zeros((0, 2))
        out.labels = np.concatenate(labels) if labels else np.zeros(0, np.int64)
        timings['export_s'] = export_s[0]
        timings['total_s'] = time.perf_counter() - t_start
        out.timings = timings
        return out

    # ------------------------------------------------------------------ segmentation
    def _pad_divisor(self) -> int:
        """Input size multiple the segmentor needs: the preprocessor's ``size_divisor``
        and, for mmseg's UNet, its whole downsampling rate (UNet asserts it)."""
        div = int(getattr(self.model.data_preprocessor, 'size_divisor', None) or 1)
        bb = getattr(self.model, 'backbone', None)
        if all(hasattr(bb, a) for a in ('num_stages', 'strides', 'downsamples')):
            rate = 1
            for i in range(1, bb.num_stages):
                if bb.strides[i] == 2 or bb.downsamples[i - 1]:
                    rate *= 2
            div = div * rate // math.gcd(div, rate)
        return div

    def _predict_seg(self, imgs: List[np.ndarray], device) -> List[Tuple[np.ndarray, np.ndarray]]:
        """Per tile: (class map int64 (h, w), probability of that class float32 (h, w))."""
        import torch.nn.functional as F
        from mmseg.structures import SegDataSample
        inputs = tile_inputs(imgs, self.channel_order, device)
        samples = [SegDataSample(metainfo=dict(img_shape=img.shape[:2], ori_shape=img.shape[:2]))
                   for img in imgs]
        data = self.model.data_preprocessor(dict(inputs=inputs, data_samples=samples), False)
        x, samples = data['inputs'], data['data_samples']
        div = self._pad_divisor()
        ph, pw = -x.shape[-2] % div, -x.shape[-1] % div
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), value=0.0)  # normalised zeros, as mmseg pads
        for s in samples:
            left, right, top, bottom = s.metainfo.get('padding_size', [0, 0, 0, 0])
            s.set_metainfo(dict(pad_shape=tuple(x.shape[-2:]),
                                padding_size=[left, right + pw, top, bottom + ph]))
        out = []
        for pred in self.model.predict(x, samples):
            logits = pred.seg_logits.data.float()
            if logits.shape[0] == 1:  # sigmoid head: mmseg already applied the sigmoid
                thr = float(getattr(self.model.decode_head, 'threshold', 0.5) or 0.5)
                p = logits[0]
                lab = (p > thr).long()
                prob = torch.where(lab > 0, p, 1 - p)
            else:
                prob, lab = logits.softmax(0).max(0)
            out.append((lab.detach().cpu().numpy(), prob.detach().cpu().numpy().astype(np.float32)))
        return out

    def _run_seg(self, read_tile, tiles: np.ndarray, keep: np.ndarray, origin, d: float,
                 emit, timings: dict, out: SlideRun, batches=None) -> None:
        from mmengine.utils import ProgressBar
        xs = np.unique(tiles[:, 0])
        ys = np.unique(tiles[:, 1])
        x_end = [int(tiles[tiles[:, 0] == v, 2][0]) for v in xs]
        y_end = [int(tiles[tiles[:, 1] == v, 3][0]) for v in ys]
        h, w = int(tiles[:, 3].max()), int(tiles[:, 2].max())
        yb, xb = core_bounds(ys, y_end, h), core_bounds(xs, x_end, w)
        st = InstanceStitcher(h, w, yb, xb, self.min_size, self.fill_holes, self.simplify)
        n_cols = len(xs)
        param = next(self.model.parameters(), None)
        device = param.device if param is not None else torch.device('cpu')
        todo = np.flatnonzero(keep)
        bar = None
        if self.progress and len(todo) >= PROGRESS_MIN_TILES:
            bar = ProgressBar(len(todo), file=sys.stdout)
        read_s = forward_s = 0.0
        merge_s = [0.0]
        results: Dict[int, Tuple[np.ndarray, np.ndarray]] = {}

        def feed(nxt: int, last: int) -> int:
            """Hand the cores of tiles nxt..last (row-major) to the stitcher, emitting each
            finished row; a tile without a prediction is background. Returns the next
            tile index."""
            for t in range(nxt, last + 1):
                r, c = divmod(t, n_cols)
                lab_prob = results.pop(t, None)
                if lab_prob is None:
                    st.add_core(r, c, None)
                else:
                    tx, ty = int(tiles[t, 0]), int(tiles[t, 1])
                    sl = (slice(yb[r] - ty, yb[r + 1] - ty), slice(xb[c] - tx, xb[c + 1] - tx))
                    st.add_core(r, c, lab_prob[0][sl], lab_prob[1][sl])
                if c == n_cols - 1:
                    emit(self._objects(st.end_row(r), origin, d))
            return max(nxt, last + 1)

        nxt = [0]  # next tile index (row-major) to hand to the stitcher

        def stitch(item: Tuple[np.ndarray, list, int]) -> None:
            idx, preds, last = item
            t = time.perf_counter()
            results.update(zip(idx.tolist(), preds))
            nxt[0] = feed(nxt[0], last)
            merge_s[0] += time.perf_counter() - t
            if bar is not None:
                for _ in idx:
                    bar.update()

        if batches is None:
            batches = ([read_tile(int(t[0]), int(t[1]), int(t[2] - t[0]), int(t[3] - t[1]))
                        for t in tiles[todo[start:start + self.batch_size]]]
                       for start in range(0, len(todo), self.batch_size))
        # pipelined (workers): stitching and the sink run on a thread, off the model's path
        back = _Background(stitch) if self.workers else None
        batch_iter = iter(batches)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                for start in range(0, len(todo), self.batch_size):
                    idx = todo[start:start + self.batch_size]
                    t0 = time.perf_counter()
                    imgs = next(batch_iter)
                    t1 = time.perf_counter()
                    preds = self._predict_seg(imgs, device)
                    t2 = time.perf_counter()
                    read_s, forward_s = read_s + t1 - t0, forward_s + t2 - t1
                    last = idx[-1] if start + self.batch_size < len(todo) else len(tiles) - 1
                    if back is None:
                        stitch((idx, preds, last))
                    else:
                        back.put((idx, preds, last))
            if back is not None:
                back, b = None, back
                b.close()
            if not len(todo):  # no tissue anywhere: every core is background
                feed(0, len(tiles) - 1)
        finally:
            if back is not None:  # an error in the model thread: it is the one raised
                back.close(reraise=False)
            self.model.train(was_training)
        if bar is not None:
            bar.file.write('\n')
        out.removed_small = st.removed
        timings.update(read_s=read_s, forward_s=forward_s, merge_s=merge_s[0])

    @staticmethod
    def _objects(insts: List[dict], origin: Tuple[int, int], d: float) -> SlideObjects:
        """Region-level instances -> level-0 :class:`SlideObjects`."""
        ox, oy = origin
        off = np.array([ox, oy], np.float64)
        if not insts:
            return SlideObjects(np.zeros((0, 2)), np.zeros(0, np.int64), np.zeros(0),
                                np.zeros((0, 4)), [], np.zeros(0))
        return SlideObjects(
            centres=(np.stack([i['centroid'] for i in insts]) + off) * d,
            labels=np.array([i['label'] for i in insts], np.int64),
            scores=np.array([i['score'] for i in insts], np.float64),
            boxes=(np.stack([i['box'] for i in insts]) + np.r_[off, off]) * d,
            polygons=[(i['polygon'] + off) * d for i in insts],
            areas=np.array([i['area'] for i in insts], np.float64) * d * d)
