"""Patches grouped in bags with known class proportions (Tokunaga et al. 2020, sect. 5.1).

One bag = one slide or large image, cut into a non-overlapping grid of square patches
(layout: ``projects/negative_pseudo_labels/README.md``). Labelled bags come from fully
annotated slides (every kept patch has a class); proportion-only bags carry the slide's
class ratio and no patch label. Each sample is one patch, cropped from its slide on the
fly; grid coordinates travel with it so that predictions can be stitched back.
"""
import os.path as osp
from collections import OrderedDict
from typing import List

import numpy as np
from mmcv.transforms import BaseTransform
from mmengine.dataset import BaseDataset

from projects.common.datasets import _palette, adopt_file_classes
from projects.common.io import read_rgb_uint8
from projects.common.registry import SEG_DATASETS, TRANSFORMS, register
from projects.common.transforms import PackPatchInputs  # noqa: F401 (moved; re-exported)

from .bags import read_bag_json

__all__ = ['ProportionBagDataset', 'LoadPatchFromSlide', 'PackPatchInputs']

_BAG_KINDS = ('all', 'labelled', 'weak')


@register(SEG_DATASETS)
class ProportionBagDataset(BaseDataset):
    """Patch dataset of bags with class ratios (``<split>.json`` of the bag layout).

    Args:
        ann_file: the split's JSON (``train.json`` holds labelled and proportion-only
            bags, ``val.json`` / ``test.json`` labelled ones).
        bags: ``'all'``, ``'labelled'`` (fully annotated slides only) or ``'weak'``
            (proportion-only slides only).

    Every data info has ``img_path``, ``x``, ``y``, ``patch_size``, ``grid`` (row, col),
    ``bag_index``, ``bag_name``, ``bag_shape`` (height, width), ``gt_label`` (class, or
    -1 in a proportion-only bag) and ``pixel_counts`` (ground-truth pixels per class in
    the patch, labelled bags) . Arrays for the pseudo-label hook: :attr:`gt_labels` (N,),
    :attr:`patch_bag` (N,), :attr:`bag_ratios` (B, C), :attr:`bag_labelled` (B,).
    """

    METAINFO: dict = dict(classes=None, palette=None)

    def __init__(self, ann_file: str, bags: str = 'all', **kwargs) -> None:
        if bags not in _BAG_KINDS:
            raise ValueError(f'ProportionBagDataset: bags={bags!r}; expected one of {_BAG_KINDS}')
        if kwargs.get('indices') is not None:
            raise ValueError('ProportionBagDataset: `indices` would break the patch / bag '
                             'arrays the pseudo-label hook indexes; use bags= instead')
        self.bags = bags
        super().__init__(ann_file=ann_file, **kwargs)

    def load_data_list(self) -> List[dict]:
        layout = read_bag_json(self.ann_file)
        meta = layout['metainfo']
        classes = adopt_file_classes(self._metainfo, meta['classes'], self.ann_file)
        if self._metainfo.get('palette') is None:
            self._metainfo['palette'] = _palette(len(classes))
        self._metainfo['patch_size'] = int(meta['patch_size'])
        p = int(meta['patch_size'])
        data_list, gt, patch_bag, ratios, labelled, names = [], [], [], [], [], []
        for bag in layout['bags']:
            if (self.bags == 'labelled' and not bag['labelled']) or \
                    (self.bags == 'weak' and bag['labelled']):
                continue
            b = len(names)
            names.append(bag['name'])
            ratios.append(np.asarray(bag['ratio'], np.float64))
            labelled.append(bool(bag['labelled']))
            img_path = osp.join(self.data_root, bag['img_path'])
            labels = bag['labels'] if bag['labelled'] else None
            counts = bag.get('pixel_counts') if bag['labelled'] else None
            for k, (x, y) in enumerate(bag['patches']):
                label = int(labels[k]) if labels is not None else -1
                data_list.append(dict(
                    img_path=img_path, x=int(x), y=int(y), patch_size=p,
                    grid=(int(y) // p, int(x) // p), bag_index=b, bag_name=bag['name'],
                    bag_shape=(int(bag['height']), int(bag['width'])), gt_label=label,
                    pixel_counts=None if counts is None else
                    np.asarray(counts[k], np.int64)))
                gt.append(label)
                patch_bag.append(b)
        if not data_list:
            raise ValueError(f'{self.ann_file}: no patch in the {self.bags!r} bags of this file')
        self.gt_labels = np.asarray(gt, np.int64)
        self.patch_bag = np.asarray(patch_bag, np.int64)
        self.bag_ratios = np.stack(ratios)
        self.bag_labelled = np.asarray(labelled, bool)
        self.bag_names = names
        return data_list

    @property
    def weak_indices(self) -> np.ndarray:
        """Indices of the patches of proportion-only bags."""
        return np.flatnonzero(~self.bag_labelled[self.patch_bag])


@register(TRANSFORMS)
class LoadPatchFromSlide(BaseTransform):
    """Crop ``results['img']`` (RGB uint8, p x p) from the slide image at (x, y).

    Slides are decoded once per worker process and kept in a small LRU cache
    (``cache_size`` images), so neighbouring patches do not re-read the file.
    """

    def __init__(self, cache_size: int = 256) -> None:
        if cache_size < 1:
            raise ValueError(f'LoadPatchFromSlide: cache_size={cache_size} must be >= 1')
        self.cache_size = cache_size
        self._cache: 'OrderedDict[str, np.ndarray]' = OrderedDict()

    def _slide(self, path: str) -> np.ndarray:
        img = self._cache.get(path)
        if img is None:
            img = read_rgb_uint8(path)
            self._cache[path] = img
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(path)
        return img

    def transform(self, results: dict) -> dict:
        path = results['img_path']
        slide = self._slide(path)
        x, y, p = results['x'], results['y'], results['patch_size']
        h, w = slide.shape[:2]
        if x < 0 or y < 0 or x + p > w or y + p > h:
            raise ValueError(f'{path}: patch at (x={x}, y={y}) of size {p} lies outside the '
                             f'{w}x{h} image')
        if tuple(results.get('bag_shape', (h, w))) != (h, w):
            raise ValueError(f'{path}: the image is {w}x{h} but the bag file says '
                             f'{results["bag_shape"][1]}x{results["bag_shape"][0]}')
        results['img'] = np.ascontiguousarray(slide[y:y + p, x:x + p])
        results['img_shape'] = results['ori_shape'] = (p, p)
        return results

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(cache_size={self.cache_size})'
