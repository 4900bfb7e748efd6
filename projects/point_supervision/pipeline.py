"""Pipeline steps that carry the co-training targets through mmseg's augmentations.

The co-training targets of Qu et al. (Voronoi / cluster labels, the H&E colour image and
the EMA pseudo label of eq. (5)-(6)) are full-image maps, while the network sees random
224 x 224 crops that are zoomed, flipped and rotated. Every map is added to
``results['seg_fields']`` and moved with the image by :class:`RandomZoom`, mmseg's
``RandomCrop`` and :class:`RandomRot90Flip` (mmcv's ``Resize`` / ``RandomFlip`` only move
``gt_seg_map``). The EMA store lives in
the main process (:class:`~.hooks.EMAPseudoLabelHook`), so instead of loading it in the
workers we carry a *source index* map: pixel value = row * W + column of the original
image. After augmentation the model gathers the store with it.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import mmcv
import numpy as np
import torch
from mmcv.transforms import BaseTransform
from mmengine.structures import PixelData
from mmseg.datasets.transforms import PackSegInputs

from projects.common.registry import TRANSFORMS, register

# float32 holds every integer up to 2**24 exactly: images up to 16.7 Mpx (4096 x 4096)
MAX_INDEX_PIXELS = 1 << 24


def add_seg_field(results: dict, key: str) -> None:
    """Append ``key`` to ``results['seg_fields']`` once (the maps mmseg's crop moves)."""
    fields = results.setdefault('seg_fields', [])
    if key not in fields:
        fields.append(key)


@register(TRANSFORMS)
class AddSourceIndex(BaseTransform):
    """Add ``results['gt_src_index']``: float32 (H, W), value = row * W + col.

    Put it after the loading steps and before any geometric transform. It also appends
    ``extra_keys`` (e.g. ``'gt_color'`` kept by ``ExtractHematoxylin(keep_key=...)``) to
    ``seg_fields`` so that they move with the image. Nearest-neighbour resizing, crops,
    flips and 90-degree rotations keep the values exact; an arbitrary-angle rotation
    would fill corners with the pad value, so use ``RandomRotFlip(rotate_prob=0)``.
    """

    def __init__(self, extra_keys: Sequence[str] = ()) -> None:
        self.extra_keys = tuple(extra_keys)

    def transform(self, results: dict) -> dict:
        h, w = results['img'].shape[:2]
        if h * w > MAX_INDEX_PIXELS:
            raise ValueError(f'{results.get("img_path", "<image>")}: {h}x{w} pixels is more '
                             f'than AddSourceIndex can index exactly ({MAX_INDEX_PIXELS}); '
                             f'cut the image into patches first')
        results['gt_src_index'] = np.arange(h * w, dtype=np.float32).reshape(h, w)
        results['src_shape'] = (h, w)
        add_seg_field(results, 'gt_src_index')
        for key in self.extra_keys:
            if key not in results:
                raise ValueError(f'AddSourceIndex: results has no {key!r} (keys: '
                                 f'{sorted(results)})')
            add_seg_field(results, key)
        return results

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(extra_keys={self.extra_keys})'


def _geometric_keys(results: dict) -> List[str]:
    return ['img'] + [k for k in results.get('seg_fields', []) if k in results]


@register(TRANSFORMS)
class RandomZoom(BaseTransform):
    """Rescale the image and every seg field by a factor drawn uniformly in ``ratio_range``.

    The paper's "zoomed" augmentation (sect. III.B). The image is resized bilinearly, the
    maps in ``seg_fields`` (labels, source index, colour target) with nearest neighbour,
    so label values stay exact. mmcv's ``Resize`` only moves ``gt_seg_map``.
    """

    def __init__(self, ratio_range: Tuple[float, float] = (0.8, 1.25)) -> None:
        lo, hi = ratio_range
        if not 0 < lo <= hi:
            raise ValueError(f'RandomZoom: ratio_range must be 0 < low <= high, got '
                             f'{ratio_range}')
        self.ratio_range = (float(lo), float(hi))

    def transform(self, results: dict) -> dict:
        ratio = float(np.random.uniform(*self.ratio_range))
        h, w = results['img'].shape[:2]
        size = (max(1, int(round(w * ratio))), max(1, int(round(h * ratio))))
        for key in _geometric_keys(results):
            interp = 'bilinear' if key == 'img' else 'nearest'
            results[key] = mmcv.imresize(results[key], size, interpolation=interp)
        results['img_shape'] = results['img'].shape[:2]
        results['zoom_ratio'] = ratio
        return results

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(ratio_range={self.ratio_range})'


@register(TRANSFORMS)
class RandomRot90Flip(BaseTransform):
    """Random 90-degree rotation (k = 0..3) then a horizontal flip with probability 0.5.

    The eight symmetries of the square, uniformly: the paper's "flipped and rotated"
    without interpolation. Applies to the image and every seg field (mmcv's
    ``RandomFlip`` only flips ``gt_seg_map``; mmseg's ``RandomRotFlip`` never returns a
    pure rotation).
    """

    def transform(self, results: dict) -> dict:
        k = int(np.random.randint(4))
        flip = bool(np.random.rand() < 0.5)
        for key in _geometric_keys(results):
            arr = np.rot90(results[key], k, axes=(0, 1))
            if flip:
                arr = arr[:, ::-1]
            results[key] = np.ascontiguousarray(arr)
        results['img_shape'] = results['img'].shape[:2]
        results['rot90_flip'] = (k, flip)
        return results


@register(TRANSFORMS)
class BinarizeSegMap(BaseTransform):
    """Map every class > 0 of ``results['gt_seg_map']`` to 1 (255 stays ignore).

    Nuclei segmentation is binary in Qu et al.; a data set with nucleus sub-classes (e.g.
    mnfinder's micronuclei, label 2) is scored as nucleus vs background.
    """

    def __init__(self, ignore_index: int = 255) -> None:
        self.ignore_index = ignore_index

    def transform(self, results: dict) -> dict:
        seg = results.get('gt_seg_map')
        if seg is None:
            raise ValueError(f'{results.get("img_path", "<image>")}: BinarizeSegMap needs '
                             f'gt_seg_map (put LoadAnnotations before it)')
        out = (seg > 0).astype(np.uint8)
        out[seg == self.ignore_index] = self.ignore_index
        results['gt_seg_map'] = out
        return results


def _map_tensor(arr: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    arr = np.ascontiguousarray(arr)
    if arr.ndim == 2:
        arr = arr[None]
    else:  # (H, W, C) -> (C, H, W)
        arr = np.ascontiguousarray(arr.transpose(2, 0, 1))
    return torch.from_numpy(arr).to(dtype)


@register(TRANSFORMS)
class PackCoTrainingInputs(PackSegInputs):
    """mmseg's ``PackSegInputs`` plus the co-training maps, when present.

    - ``gt_voronoi_map`` / ``gt_cluster_map`` -> ``data_sample.gt_voronoi`` /
      ``gt_cluster`` (int64 (1, H, W); 0 / 1 / 255);
    - ``gt_src_index`` -> ``data_sample.gt_src_index`` (int64 (1, H, W)) and the source
      image shape ``src_shape`` in the metainfo;
    - ``color_key`` (BGR uint8, e.g. kept by ``ExtractHematoxylin``) ->
      ``data_sample.gt_color`` (float32 RGB in [0, 1], (3, H, W)): the target of eq. (8).
    """

    def __init__(self, color_key: Optional[str] = 'gt_color',
                 meta_keys: Sequence[str] = ('img_path', 'seg_map_path', 'ori_shape',
                                             'img_shape', 'pad_shape', 'scale_factor',
                                             'flip', 'flip_direction', 'reduce_zero_label',
                                             'src_shape')) -> None:
        super().__init__(meta_keys=tuple(meta_keys))
        self.color_key = color_key

    def transform(self, results: dict) -> dict:
        packed = super().transform(results)
        sample = packed['data_samples']
        fields: Dict[str, torch.Tensor] = {}
        for src, dst in (('gt_voronoi_map', 'gt_voronoi'), ('gt_cluster_map', 'gt_cluster'),
                         ('gt_src_index', 'gt_src_index')):
            if src in results:
                fields[dst] = _map_tensor(results[src], torch.int64)
        if self.color_key is not None and self.color_key in results:
            color = results[self.color_key]
            if color.ndim == 2:
                color = np.repeat(color[..., None], 3, axis=2)
            if color.ndim != 3 or color.shape[2] != 3:
                raise ValueError(f'{results.get("img_path", "<image>")}: colour target '
                                 f'{self.color_key!r} must be (H, W, 3), got {color.shape}')
            scale = float(np.iinfo(color.dtype).max) if np.issubdtype(
                color.dtype, np.integer) else 1.0
            fields['gt_color'] = _map_tensor(color[..., ::-1], torch.float32) / scale
        for key, value in fields.items():
            sample.set_data({key: PixelData(data=value)})
        return packed

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(color_key={self.color_key!r}, ' \
               f'meta_keys={self.meta_keys})'
