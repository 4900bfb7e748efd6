"""Overlapping tiles and sliding-window inference for mmdet detectors on large images.

The PU-detection protocol (Zhao et al., "Positive-unlabeled learning for cell detection in
histopathology images with incomplete annotations", MICCAI 2021, sect. 3) runs the
detector on 500x500 patches with 100 px overlap, keeps at most 100 boxes per patch with
score > 0.5, maps the boxes back to the whole image and merges them by NMS. This module
implements that protocol for any built mmdet detector:

* :func:`tile_grid` / :func:`crop_patches`: the tile layout. The stride is
  ``tile - overlap``; the last row / column is shifted inwards so that it ends exactly at
  the image border. Every tile therefore has the full tile size, except along a side
  where the image itself is smaller than a tile (then the tile spans the image).
* :func:`merge_detections`: shift per-tile boxes by their tile offset, optionally drop
  partial boxes cut by an inner tile border (see below), then class-aware NMS
  (``mmcv.ops.batched_nms``).
* :class:`SlidingWindowInference`: reads tiles through a callback ``(x, y, w, h) -> RGB``
  (so a whole-slide reader can plug in), runs the model in batches and merges.

Padding: tiles are never padded here. Because of the shifted last row / column, all
tiles of one image have the same shape, so a batch never mixes shapes and the
detector's ``data_preprocessor`` only pads to its ``pad_size_divisor``, identically for
every tile: the result does not depend on ``batch_size``.

Border filter (``drop_border_boxes``, off by default = the paper's plain NMS): a cell
cut by an inner tile border yields a partial box in that tile; when the cut is deep its
IoU with the full box of the neighbouring tile is below the NMS threshold and both
survive. With the filter, a box that touches an inner border of its tile (within
``border_margin`` px) is dropped if another tile contains it with ``border_margin`` px
clearance from that tile's inner borders, i.e. if another tile saw the whole object.
The cost: if that other tile missed the object, the object is lost.
"""
import sys
import time
from typing import Callable, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

IntPair = Union[int, Tuple[int, int], Sequence[int]]
TileReader = Callable[[int, int, int, int], np.ndarray]

# a progress bar is shown (when enabled) only for images with at least this many tiles
PROGRESS_MIN_TILES = 16


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _pair(value: IntPair, name: str) -> Tuple[int, int]:
    """``int`` or ``(h, w)`` -> ``(h, w)`` ints; ValueError naming ``name`` otherwise."""
    if _is_int(value):
        return int(value), int(value)
    if (isinstance(value, (tuple, list, np.ndarray)) and len(value) == 2
            and all(_is_int(v) for v in value)):
        return int(value[0]), int(value[1])
    raise ValueError(f'{name} must be an int or an (h, w) pair of ints, got {value!r}')


def _axis_starts(length: int, tile: int, overlap: int) -> Tuple[List[int], int]:
    """Tile start positions along one axis and the tile extent along it."""
    if tile >= length:
        return [0], length
    stride = tile - overlap
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] + tile < length:
        starts.append(length - tile)  # last tile shifted to end at the border
    return starts, tile


def tile_grid(height: int, width: int, tile_size: IntPair, overlap: IntPair) -> np.ndarray:
    """Overlapping tiles covering a ``height`` x ``width`` image.

    Returns an int64 array (K, 4) of ``x0, y0, x1, y1`` (``x1``/``y1`` exclusive), in
    row-major order (y outer, x inner). Stride = ``tile_size - overlap`` per axis; the
    last row / column is shifted to end exactly at the image border; along an axis where
    the image is smaller than a tile there is one tile of the image extent.
    ``tile_size`` and ``overlap`` are ints or ``(h, w)`` pairs.
    """
    tile_h, tile_w = _pair(tile_size, 'tile_size')
    ov_h, ov_w = _pair(overlap, 'overlap')
    for name, val in (('height', height), ('width', width)):
        if not _is_int(val) or val <= 0:
            raise ValueError(f'image {name} must be a positive int, got {val!r}')
    if tile_h <= 0 or tile_w <= 0:
        raise ValueError(f'tile_size must be positive, got (h={tile_h}, w={tile_w})')
    if ov_h < 0 or ov_w < 0:
        raise ValueError(f'overlap must be >= 0, got (h={ov_h}, w={ov_w})')
    if ov_h >= tile_h or ov_w >= tile_w:
        raise ValueError(f'overlap (h={ov_h}, w={ov_w}) must be smaller than tile_size '
                         f'(h={tile_h}, w={tile_w})')
    ys, th = _axis_starts(int(height), tile_h, ov_h)
    xs, tw = _axis_starts(int(width), tile_w, ov_w)
    grid = [(x, y, x + tw, y + th) for y in ys for x in xs]
    return np.asarray(grid, dtype=np.int64).reshape(-1, 4)


def crop_patches(image: np.ndarray, tile_size: IntPair,
                 overlap: IntPair) -> List[Tuple[np.ndarray, Tuple[int, int]]]:
    """Cut ``image`` (H, W) or (H, W, C) into the tiles of :func:`tile_grid`.

    Returns ``[(patch, (x0, y0)), ...]``; patches are views into ``image`` (copy them
    before writing to them).
    """
    if not isinstance(image, np.ndarray) or image.ndim not in (2, 3):
        raise ValueError('image must be a numpy array of shape (H, W) or (H, W, C), got '
                         f'{getattr(image, "shape", type(image).__name__)}')
    height, width = image.shape[:2]
    if height == 0 or width == 0:
        raise ValueError(f'image is empty (shape {image.shape})')
    tiles = tile_grid(height, width, tile_size, overlap)
    return [(image[y0:y1, x0:x1], (int(x0), int(y0))) for x0, y0, x1, y1 in tiles]


def _as_tensor(value, dtype: torch.dtype, device: torch.device) -> Tensor:
    if isinstance(value, Tensor):
        return value.to(device=device, dtype=dtype)
    return torch.as_tensor(np.asarray(value), dtype=dtype, device=device)


def _border_keep_masks(boxes: List[Tensor], tiles: Tensor, margin: float) -> List[Tensor]:
    """Per tile, False for boxes cut by an inner tile border and seen whole elsewhere.

    ``boxes`` are in whole-image coordinates. A tile side is inner when it is not on the
    outer border of the tiled area. A box touches an inner side of its tile when it comes
    within ``margin`` px of it; it is covered by a tile when it lies strictly more than
    ``margin`` px inside that tile's inner sides (outer sides impose no limit). Touching
    and clearance are complementary, so a box never counts as covered by its own tile.
    """
    tiles = tiles.to(torch.float32)
    x0, y0, x1, y1 = tiles.unbind(1)
    inner_l, inner_t = x0 > x0.min(), y0 > y0.min()
    inner_r, inner_b = x1 < x1.max(), y1 < y1.max()
    inf = torch.full_like(x0, float('inf'))
    lo_x = torch.where(inner_l, x0 + margin, -inf)
    lo_y = torch.where(inner_t, y0 + margin, -inf)
    hi_x = torch.where(inner_r, x1 - margin, inf)
    hi_y = torch.where(inner_b, y1 - margin, inf)
    masks = []
    for t, b in enumerate(boxes):
        keep = torch.ones(len(b), dtype=torch.bool, device=b.device)
        if len(b) == 0:
            masks.append(keep)
            continue
        touch = ((inner_l[t] & (b[:, 0] <= lo_x[t]))
                 | (inner_t[t] & (b[:, 1] <= lo_y[t]))
                 | (inner_r[t] & (b[:, 2] >= hi_x[t]))
                 | (inner_b[t] & (b[:, 3] >= hi_y[t])))
        idx = touch.nonzero(as_tuple=True)[0]
        if idx.numel():
            c = b[idx].to(tiles.device)
            covered = ((c[:, None, 0] > lo_x[None]) & (c[:, None, 1] > lo_y[None])
                       & (c[:, None, 2] < hi_x[None]) & (c[:, None, 3] < hi_y[None])).any(1)
            keep[idx[covered.to(b.device)]] = False
        masks.append(keep)
    return masks


def merge_detections(boxes_per_tile: Sequence, scores_per_tile: Sequence,
                     labels_per_tile: Sequence, offsets: Sequence, iou_thr: float = 0.5,
                     max_num: int = -1, tiles: Optional[np.ndarray] = None,
                     border_margin: float = 2.0) -> Tuple[Tensor, Tensor, Tensor]:
    """Map per-tile detections to whole-image coordinates and merge them by NMS.

    ``boxes_per_tile[k]`` (n_k, 4) x0, y0, x1, y1 in tile ``k``'s pixel frame,
    ``scores_per_tile[k]`` (n_k,), ``labels_per_tile[k]`` (n_k,) and ``offsets[k]`` =
    (x0, y0) of tile ``k`` in the image. Boxes are shifted by their offset, then
    class-aware NMS (``mmcv.ops.batched_nms``, IoU > ``iou_thr`` suppresses) keeps the
    best box per object; ``max_num`` > 0 keeps the top ``max_num`` by score.
    If ``tiles`` (K, 4 as from :func:`tile_grid`) is given, partial boxes cut by an inner
    tile border and seen whole by another tile are dropped before NMS (module docstring).
    Tensors in (any device; numpy accepted); returns ``(boxes float32 (N, 4), scores
    float32 (N,), labels int64 (N,))`` sorted by decreasing score, on the device of the
    first box tensor.
    """
    from mmcv.ops import batched_nms

    n_tiles = len(offsets)
    for name, seq in (('boxes_per_tile', boxes_per_tile), ('scores_per_tile', scores_per_tile),
                      ('labels_per_tile', labels_per_tile)):
        if len(seq) != n_tiles:
            raise ValueError(f'{name} has {len(seq)} entries but offsets has {n_tiles}')
    if not 0.0 < iou_thr <= 1.0:
        raise ValueError(f'iou_thr must be in (0, 1], got {iou_thr}')
    device = next((b.device for b in boxes_per_tile if isinstance(b, Tensor)),
                  torch.device('cpu'))
    all_boxes, all_scores, all_labels = [], [], []
    for k in range(n_tiles):
        boxes = _as_tensor(boxes_per_tile[k], torch.float32, device).reshape(-1, 4)
        scores = _as_tensor(scores_per_tile[k], torch.float32, device).reshape(-1)
        labels = _as_tensor(labels_per_tile[k], torch.int64, device).reshape(-1)
        if not len(boxes) == len(scores) == len(labels):
            raise ValueError(f'tile {k}: {len(boxes)} boxes, {len(scores)} scores and '
                             f'{len(labels)} labels; they must match')
        off = offsets[k]
        if len(off) != 2:
            raise ValueError(f'offsets[{k}] must be (x0, y0), got {off!r}')
        shift = torch.tensor([off[0], off[1], off[0], off[1]], dtype=torch.float32,
                             device=device)
        all_boxes.append(boxes + shift)
        all_scores.append(scores)
        all_labels.append(labels)
    if tiles is not None:
        tiles_t = _as_tensor(tiles, torch.float32, device).reshape(-1, 4)
        if len(tiles_t) != n_tiles:
            raise ValueError(f'tiles has {len(tiles_t)} rows but offsets has {n_tiles}')
        off_t = torch.as_tensor(np.asarray(offsets, dtype=np.float32), device=device)
        if not torch.equal(tiles_t[:, :2], off_t.reshape(-1, 2)):
            raise ValueError('tiles[:, :2] must equal offsets (the tile origins)')
        masks = _border_keep_masks(all_boxes, tiles_t, float(border_margin)) if n_tiles else []
        all_boxes = [b[m] for b, m in zip(all_boxes, masks)]
        all_scores = [s[m] for s, m in zip(all_scores, masks)]
        all_labels = [lab[m] for lab, m in zip(all_labels, masks)]
    if n_tiles == 0 or sum(len(b) for b in all_boxes) == 0:
        return (torch.zeros((0, 4), dtype=torch.float32, device=device),
                torch.zeros((0, ), dtype=torch.float32, device=device),
                torch.zeros((0, ), dtype=torch.int64, device=device))
    boxes, scores, labels = torch.cat(all_boxes), torch.cat(all_scores), torch.cat(all_labels)
    dets, keep = batched_nms(boxes, scores, labels, dict(type='nms', iou_threshold=iou_thr))
    if max_num > 0:
        dets, keep = dets[:max_num], keep[:max_num]
    return dets[:, :4].contiguous(), dets[:, 4].contiguous(), labels[keep]


def check_batch_and_order(batch_size: int, channel_order: str) -> None:
    """ValueError unless ``batch_size`` is a positive int and ``channel_order`` is 'bgr'
    or 'rgb' (the tiled-inference options shared by detectors and segmentors)."""
    if not _is_int(batch_size) or batch_size < 1:
        raise ValueError(f'batch_size must be a positive int, got {batch_size!r}')
    if channel_order not in ('bgr', 'rgb'):
        raise ValueError(f"channel_order must be 'bgr' or 'rgb', got {channel_order!r}")


def tile_inputs(imgs: Sequence[np.ndarray], channel_order: str,
                device: Union[str, torch.device]) -> List[torch.Tensor]:
    """RGB uint8 tiles (h, w, 3) as the CHW uint8 tensors a data preprocessor takes, in
    ``channel_order`` ('bgr': what mmcv's ``LoadImageFromFile`` gives), on ``device``."""
    out = []
    for img in imgs:
        chans = img[..., ::-1] if channel_order == 'bgr' else img
        out.append(torch.from_numpy(np.ascontiguousarray(chans.transpose(2, 0, 1))).to(device))
    return out


class SlidingWindowInference:
    """Tile a large image, run an mmdet detector per tile in batches, merge by NMS.

    ``model``: a built mmdet ``BaseDetector`` (with its ``data_preprocessor``). Tiles are
    fed as CHW uint8 tensors in ``channel_order`` (default ``'bgr'``: what mmcv's
    ``LoadImageFromFile`` gives, so a ``bgr_to_rgb=True`` preprocessor sees what it was
    trained on), at native resolution (``scale_factor`` 1). Per tile, boxes with score
    > ``score_thr`` are kept, at most ``max_per_tile`` of them (highest scores; -1 = all);
    the whole image keeps at most ``max_per_img`` after NMS at IoU ``nms_iou`` (-1 = all).
    Defaults follow the PU-detection paper (500 / 100 px, 100 boxes, score > 0.5).
    ``drop_border_boxes`` enables the border filter of :func:`merge_detections`.
    Tiles are never padded (module docstring). The model is put in eval mode for the
    call and its previous mode restored afterwards. Results are returned on the CPU.
    """

    def __init__(self, model, tile_size: IntPair = 500, overlap: IntPair = 100,
                 batch_size: int = 4, score_thr: float = 0.5, max_per_tile: int = 100,
                 nms_iou: float = 0.5, max_per_img: int = -1, progress: bool = True,
                 channel_order: str = 'bgr', drop_border_boxes: bool = False,
                 border_margin: float = 2.0) -> None:
        from mmdet.models.detectors import BaseDetector
        if not isinstance(model, BaseDetector):
            raise ValueError('model must be a built mmdet BaseDetector, got '
                             f'{type(model).__name__}')
        tile_hw, ov_hw = _pair(tile_size, 'tile_size'), _pair(overlap, 'overlap')
        tile_grid(1, 1, tile_hw, ov_hw)  # validates tile_size / overlap
        check_batch_and_order(batch_size, channel_order)
        for name, val in (('max_per_tile', max_per_tile), ('max_per_img', max_per_img)):
            if not _is_int(val) or (val < 1 and val != -1):
                raise ValueError(f'{name} must be a positive int or -1 (no limit), got {val!r}')
        if not 0.0 < nms_iou <= 1.0:
            raise ValueError(f'nms_iou must be in (0, 1], got {nms_iou}')
        self.model = model
        self.tile_size, self.overlap = tile_hw, ov_hw
        self.batch_size = int(batch_size)
        self.score_thr = float(score_thr)
        self.max_per_tile, self.max_per_img = int(max_per_tile), int(max_per_img)
        self.nms_iou = float(nms_iou)
        self.progress = bool(progress)
        self.channel_order = channel_order
        self.drop_border_boxes = bool(drop_border_boxes)
        self.border_margin = float(border_margin)
        self.last_stats: dict = {}  # filled by run()

    def __call__(self, image: np.ndarray):
        """Detect on an in-memory RGB uint8 image (H, W, 3); see :meth:`run`."""
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError('image must be an RGB numpy array of shape (H, W, 3), got '
                             f'{getattr(image, "shape", type(image).__name__)}')
        if image.dtype != np.uint8:
            raise ValueError(f'image must be uint8, got {image.dtype}')
        height, width = image.shape[:2]

        def read_tile(x: int, y: int, w: int, h: int) -> np.ndarray:
            return image[y:y + h, x:x + w]

        return self.run(read_tile, height, width)

    def _read(self, read_tile: TileReader, tile: np.ndarray) -> np.ndarray:
        x0, y0, x1, y1 = (int(v) for v in tile)
        w, h = x1 - x0, y1 - y0
        arr = read_tile(x0, y0, w, h)
        if not isinstance(arr, np.ndarray) or arr.shape != (h, w, 3) or arr.dtype != np.uint8:
            raise ValueError(f'read_tile(x={x0}, y={y0}, w={w}, h={h}) must return a uint8 '
                             f'RGB array of shape ({h}, {w}, 3), got '
                             f'{getattr(arr, "shape", type(arr).__name__)} '
                             f'{getattr(arr, "dtype", "")}')
        return arr

    def _predict_batch(self, imgs: List[np.ndarray], device: torch.device) -> list:
        from mmdet.structures import DetDataSample
        inputs = tile_inputs(imgs, self.channel_order, device)
        samples = []
        for img in imgs:
            h, w = img.shape[:2]
            samples.append(DetDataSample(metainfo=dict(
                img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w),
                scale_factor=(1.0, 1.0), batch_input_shape=(h, w))))
        data = self.model.data_preprocessor(dict(inputs=inputs, data_samples=samples), False)
        return self.model.predict(data['inputs'], data['data_samples'], rescale=True)

    def _select(self, pred) -> Tuple[Tensor, Tensor, Tensor]:
        """Boxes of one tile with score > score_thr, top max_per_tile, on the CPU."""
        inst = pred.pred_instances
        scores = inst.scores.detach().float()
        keep = (scores > self.score_thr).nonzero(as_tuple=True)[0]
        keep = keep[scores[keep].argsort(descending=True, stable=True)]
        if self.max_per_tile > 0:
            keep = keep[:self.max_per_tile]
        return (inst.bboxes[keep].detach().float().cpu(), scores[keep].cpu(),
                inst.labels[keep].detach().long().cpu())

    def run(self, read_tile: TileReader, height: int, width: int, progress: Optional[bool] = None,
            keep: Optional[np.ndarray] = None,
            batches: Optional[Iterable[List[np.ndarray]]] = None):
        """Detect on a ``height`` x ``width`` image read tile by tile.

        ``read_tile(x, y, w, h)`` returns the RGB uint8 array (h, w, 3) of the region at
        column ``x``, row ``y``; it is called once per tile, never outside the image, and
        only for the tiles of the current batch (``batch_size`` tiles, one model call).
        ``keep``: optional bool array (K,) over the tiles of :func:`tile_grid` (same
        order); tiles where it is False are neither read nor run (e.g. background tiles
        of a whole slide) and contribute no box.
        Returns an ``mmengine.structures.InstanceData`` with ``bboxes`` (N, 4) x0, y0,
        x1, y1 in whole-image pixels, ``scores`` (N,), ``labels`` (N,), sorted by score;
        metainfo ``img_shape`` = (height, width).
        ``batches``: optional iterable of the tile images themselves, one list of
        ``batch_size`` RGB arrays per model call, for the kept tiles in grid order (a
        background reader, :class:`projects.common.slide_inference.TileLoader`); then
        ``read_tile`` is not called and ``read_s`` is the time spent waiting for them.
        Afterwards :attr:`last_stats` holds the
        tile counts and the seconds spent reading tiles (``read_s``), in the model
        (``forward_s``: preprocessing + ``predict``, the pure model cost) and merging
        (``merge_s``).
        """
        from mmengine.structures import InstanceData
        from mmengine.utils import ProgressBar

        tiles = tile_grid(height, width, self.tile_size, self.overlap)
        n_grid = len(tiles)
        if keep is not None:
            keep = np.asarray(keep)
            if keep.dtype != bool or keep.shape != (n_grid, ):
                raise ValueError(f'keep must be a bool array of shape ({n_grid},) (one entry '
                                 f'per tile of the grid), got {keep.dtype} {keep.shape}')
            tiles = tiles[keep]
        show = self.progress if progress is None else bool(progress)
        bar = None
        if show and len(tiles) >= PROGRESS_MIN_TILES:
            bar = ProgressBar(len(tiles), file=sys.stdout)
        param = next(self.model.parameters(), None)
        device = param.device if param is not None else torch.device('cpu')
        was_training = self.model.training
        self.model.eval()
        boxes, scores, labels = [], [], []
        read_s = forward_s = 0.0
        if batches is None:
            batches = ([self._read(read_tile, t) for t in tiles[start:start + self.batch_size]]
                       for start in range(0, len(tiles), self.batch_size))
        batch_iter = iter(batches)
        try:
            with torch.no_grad():
                for start in range(0, len(tiles), self.batch_size):
                    batch = tiles[start:start + self.batch_size]
                    t0 = time.perf_counter()
                    imgs = next(batch_iter)
                    t1 = time.perf_counter()
                    preds = self._predict_batch(imgs, device)
                    read_s, forward_s = read_s + t1 - t0, forward_s + time.perf_counter() - t1
                    for pred in preds:
                        b, s, lab = self._select(pred)
                        boxes.append(b)
                        scores.append(s)
                        labels.append(lab)
                    if bar is not None:
                        for _ in batch:
                            bar.update()
        finally:
            self.model.train(was_training)
        if bar is not None:
            bar.file.write('\n')
        t0 = time.perf_counter()
        merged = merge_detections(boxes, scores, labels, tiles[:, :2].tolist(),
                                  iou_thr=self.nms_iou, max_num=self.max_per_img,
                                  tiles=tiles if self.drop_border_boxes else None,
                                  border_margin=self.border_margin)
        self.last_stats = dict(tiles=n_grid, processed=len(tiles), skipped=n_grid - len(tiles),
                               read_s=read_s, forward_s=forward_s,
                               merge_s=time.perf_counter() - t0)
        result = InstanceData(metainfo=dict(img_shape=(int(height), int(width))))
        result.bboxes, result.scores, result.labels = merged
        return result
