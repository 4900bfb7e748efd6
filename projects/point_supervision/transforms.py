"""Pipeline transforms that turn point annotations into Qu et al.'s coarse labels.

``PointsToVoronoiLabel`` -> ``results['gt_voronoi_map']`` and ``PointsToClusterLabel`` ->
``results['gt_cluster_map']`` (uint8, 0 background, 1 nucleus, 255 ignore; see
:mod:`projects.point_supervision.labels`). Both read ``results['gt_points']`` (written by
``LoadPointAnnotations``) and the current image, and append their key to
``results['seg_fields']`` so that mmseg's ``RandomCrop`` and our ``RandomZoom`` /
``RandomRot90Flip`` (pipeline.py) move the maps with the image (mmcv's ``Resize`` and
``RandomFlip`` only move ``gt_seg_map``). Put them right after the loading transforms, before
any geometric or photometric transform: the labels are defined on the full image (the
paper computes them on whole images, then crops 250 x 250 patches)::

    train_pipeline = [
        dict(type='StrictLoadImageFromFile'),
        dict(type='LoadPointAnnotations'),
        dict(type='PointsToVoronoiLabel'),
        dict(type='PointsToClusterLabel'),   # reuses gt_voronoi_map when present
        dict(type='RandomCrop', crop_size=(224, 224)),
        ...]

With ``label_dir='vor_dir'`` / ``'clu_dir'`` the transforms read the PNGs written by
``tools/generate_point_labels.py`` instead of computing them (``img_dir`` in the image path
replaced by ``label_dir``, suffix ``.png``). Otherwise computed labels are memoised in the
process (``cache=True``): training re-reads the same full images every epoch.
"""
import os.path as osp
import zlib
from collections import OrderedDict
from pathlib import PurePath
from typing import Hashable, Optional, Tuple

import numpy as np
from mmcv.transforms import BaseTransform

from projects.common.io import read_image
from projects.common.registry import TRANSFORMS, register

from . import labels as L
from .pipeline import add_seg_field

__all__ = ['PointsToVoronoiLabel', 'PointsToClusterLabel', 'precomputed_label_path']


def _img_dir_index(img_path: str, label_dir: str) -> Tuple[Tuple[str, ...], int]:
    """Path components of ``img_path`` and the index of its last ``img_dir`` folder."""
    parts = PurePath(img_path).parts
    idx = [i for i, p in enumerate(parts[:-1]) if p == 'img_dir']
    if not idx:
        raise ValueError(f'{img_path}: label_dir={label_dir!r} needs an image path with an '
                         f'"img_dir" folder (docs/data_layout.md) to find the label file')
    return parts, idx[-1]


def precomputed_label_path(img_path: str, label_dir: str) -> str:
    """``img_path`` with its (last) path component ``img_dir`` replaced by ``label_dir`` and
    the suffix replaced by ``.png``; ValueError naming the path if it has no ``img_dir``."""
    parts, i = _img_dir_index(img_path, label_dir)
    stem = osp.splitext(parts[-1])[0]
    return str(PurePath(*parts[:i], label_dir, *parts[i + 1:-1], stem + '.png'))


def _generate_command(img_path: str, label_dir: str) -> str:
    parts, i = _img_dir_index(img_path, label_dir)
    root = str(PurePath(*parts[:i])) if i else '.'
    split = parts[i + 1] if i + 1 < len(parts) - 1 else '<split>'
    return f'python tools/generate_point_labels.py --root {root} --splits {split}'


class _PointLabel(BaseTransform):
    """Shared logic: where the points and the shape come from, reading, caching."""

    key = ''
    what = ''
    max_cached = 4096  # LRU bound per transform instance (~1 MB per 1000 x 1000 map)

    def __init__(self, label_dir: Optional[str] = None, cache: bool = True) -> None:
        if label_dir is not None and (not isinstance(label_dir, str) or not label_dir
                                      or '/' in label_dir or '\\' in label_dir):
            raise ValueError(f'label_dir: expected a folder name such as "vor_dir", got '
                             f'{label_dir!r}')
        self.label_dir = label_dir
        self.cache = bool(cache)
        self._cache: 'OrderedDict[Hashable, np.ndarray]' = OrderedDict()

    def _compute(self, results: dict, points: np.ndarray, img: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _cache_key(self, results: dict, points: np.ndarray, img: np.ndarray) -> Hashable:
        return (results.get('img_path'), points.tobytes(), img.shape[:2])

    def _read(self, img_path: str, shape: tuple) -> np.ndarray:
        path = precomputed_label_path(img_path, self.label_dir)
        if not osp.isfile(path):
            raise FileNotFoundError(
                f'{path}: precomputed {self.what} label not found for image {img_path}; '
                f'write it with `{_generate_command(img_path, self.label_dir)}` (it writes '
                f'vor_dir / clu_dir), '
                f'or drop label_dir to compute labels on the fly')
        label = read_image(path, channels=1)
        if label.shape != tuple(shape):
            raise ValueError(f'{path}: {self.what} label is {label.shape[1]}x{label.shape[0]} '
                             f'but image {img_path} is {shape[1]}x{shape[0]} (apply '
                             f'{type(self).__name__} before geometric transforms)')
        return L.check_label_map(label, tuple(shape), path)

    def transform(self, results: dict) -> dict:
        img_path = results.get('img_path', '<unknown image>')
        img = results.get('img')
        if img is None:
            raise ValueError(f'{img_path}: {type(self).__name__} needs results["img"] (load '
                             f'the image first)')
        shape = tuple(img.shape[:2])
        points = results.get('gt_points')
        if points is None:
            if results.get('labeled', True) is not False:
                raise ValueError(f'{img_path}: no "gt_points"; put LoadPointAnnotations before '
                                 f'{type(self).__name__}')
            label = np.full(shape, L.IGNORE_INDEX, np.uint8)  # unlabeled image: all ignored
        elif self.label_dir is not None:
            label = self._read(img_path, shape)
        else:
            points = np.ascontiguousarray(points, np.float32).reshape(-1, 2)
            try:
                if not self.cache:
                    label = self._compute(results, points, img)
                else:
                    key = self._cache_key(results, points, img)
                    label = self._cache.get(key)
                    if label is None:
                        label = self._compute(results, points, img)
                        self._cache[key] = label
                        if len(self._cache) > self.max_cached:
                            self._cache.popitem(last=False)
                    else:
                        self._cache.move_to_end(key)
                    label = label.copy()
            except ValueError as err:
                raise ValueError(f'{img_path}: {err}') from err
        results[self.key] = label
        add_seg_field(results, self.key)
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(label_dir={self.label_dir!r}, cache={self.cache})'


@register(TRANSFORMS)
class PointsToVoronoiLabel(_PointLabel):
    """Voronoi label of ``results['gt_points']`` on the current image (Qu et al.,
    sect. II.A.1; :func:`projects.point_supervision.labels.voronoi_label`) ->
    ``results['gt_voronoi_map']`` (uint8 0 / 1 / 255), added to ``seg_fields``.

    Args:
        label_dir: None computes the label; a folder name (e.g. ``'vor_dir'``) reads
            ``<root>/<label_dir>/<split>/<name>.png`` for ``<root>/img_dir/<split>/<name>.*``
            (FileNotFoundError with the command that writes it if missing).
        cache: memoise computed labels per (img_path, points, shape) in this process.
        close_edges: close the Voronoi edges with disk(1) (off: the authors' code).

    An image whose ``labeled`` flag is False and that has no ``gt_points`` gets an
    all-255 map (unlabeled data is valid).
    """

    key = 'gt_voronoi_map'
    what = 'Voronoi'

    def __init__(self, label_dir: Optional[str] = None, cache: bool = True,
                 close_edges: bool = False) -> None:
        super().__init__(label_dir, cache)
        self.close_edges = bool(close_edges)

    def _compute(self, results: dict, points: np.ndarray, img: np.ndarray) -> np.ndarray:
        return L.voronoi_label(points, img.shape[:2], close_edges=self.close_edges)


@register(TRANSFORMS)
class PointsToClusterLabel(_PointLabel):
    """Cluster label of ``results['gt_points']`` and ``results['img']`` (mmcv BGR, converted
    to RGB; a grey image is used in all channels) (Qu et al., sect. II.A.1;
    :func:`projects.point_supervision.labels.cluster_label`) ->
    ``results['gt_cluster_map']`` (uint8 0 / 1 / 255), added to ``seg_fields``.

    Args:
        label_dir: None computes the label; a folder name (e.g. ``'clu_dir'``) reads the
            precomputed PNG (see :class:`PointsToVoronoiLabel`).
        cache: memoise computed labels per (img_path, points, shape, image checksum).
        seed: k-means seed. max_samples, n_init, close_edges: see ``cluster_label``.
        voronoi_key: reuse this results key (``gt_voronoi_map`` of a preceding
            ``PointsToVoronoiLabel``) as the Voronoi label when it has the image's shape;
            None always recomputes it from the points.

    An image whose ``labeled`` flag is False and that has no ``gt_points`` gets an
    all-255 map. Zero points give an all-255 map.
    """

    key = 'gt_cluster_map'
    what = 'cluster'

    def __init__(self, label_dir: Optional[str] = None, cache: bool = True, seed: int = 0,
                 max_samples: Optional[int] = L.DEFAULT_MAX_SAMPLES, n_init: int = 10,
                 close_edges: bool = False,
                 voronoi_key: Optional[str] = 'gt_voronoi_map') -> None:
        super().__init__(label_dir, cache)
        self.seed = seed
        self.max_samples = max_samples
        self.n_init = n_init
        self.close_edges = bool(close_edges)
        self.voronoi_key = voronoi_key

    def _cache_key(self, results: dict, points: np.ndarray, img: np.ndarray) -> Hashable:
        # the checksum guards against a photometric transform placed before this one
        return super()._cache_key(results, points, img) + (
            zlib.adler32(np.ascontiguousarray(img).tobytes()), )

    def _compute(self, results: dict, points: np.ndarray, img: np.ndarray) -> np.ndarray:
        rgb = img[..., ::-1] if img.ndim == 3 and img.shape[2] == 3 else img
        vor = results.get(self.voronoi_key) if self.voronoi_key else None
        if vor is not None and tuple(vor.shape) != tuple(img.shape[:2]):
            vor = None
        return L.cluster_label(rgb, points, seed=self.seed, voronoi=vor,
                               max_samples=self.max_samples, n_init=self.n_init,
                               close_edges=self.close_edges)

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(label_dir={self.label_dir!r}, cache={self.cache}, '
                f'seed={self.seed}, max_samples={self.max_samples}, n_init={self.n_init})')
