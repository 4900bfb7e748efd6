"""One writer for MMHisto's two dataset layouts (docs/data_layout.md).

Every dataset writer (the synthetic generator, the mnfinder and DSB2018 converters) hands
its samples to :class:`LayoutWriter`, which writes, per sample::

    images/<name>.png                  RGB uint8 (detection layout, shared by all splits)
    img_dir/<split>/<name>.png         the same image (segmentation layout)
    ann_dir/<split>/<name>.png         semantic map, uint8            } labelled samples
    inst_dir/<split>/<name>.png        instance map, uint16 PNG       } only
    points/<split>/<name>.csv          x,y,label, one row per instance}
    <folder>/<split>/<name>.png        extra maps (e.g. region_dir)   }

and, at :meth:`LayoutWriter.close`, ``annotations/<split>.json`` (COCO). The COCO
geometry (``point``, tight ``bbox``, ``area``) is computed here from the instance map that
is written, with :func:`projects.common.instances.instance_geometry`, so the two layouts
agree exactly by construction. The point of an instance is its centroid by default, or
its bounding-box centre with ``point_mode='bbox'`` (the convention of the point-supervised
segmentation authors, DESIGN 4.3).
"""
import os
import os.path as osp
from math import isfinite
from numbers import Real
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from projects.common.instances import box_centres, instance_geometry
from projects.common.io import write_image, write_instance_map, write_json, write_points

__all__ = ['LAYOUT_DIRS', 'POINT_MODES', 'LayoutWriter', 'check_box_size', 'seeded_split', 'track']

LAYOUT_DIRS: tuple = ('images', 'annotations', 'img_dir', 'ann_dir', 'inst_dir', 'points')
POINT_MODES: tuple = ('centroid', 'bbox')
_ANN_KEYS = ('id', 'image_id', 'category_id', 'bbox', 'area', 'iscrowd', 'point')


def check_box_size(box_size) -> Optional[float]:
    """``box_size`` as a float (None stays None); ValueError naming ``--box-size`` unless it
    is a finite number > 0."""
    if box_size is None:
        return None
    if (isinstance(box_size, bool) or not isinstance(box_size, Real)
            or not isfinite(box_size) or box_size <= 0):
        raise ValueError(f'--box-size must be a finite number > 0, got {box_size!r}')
    return float(box_size)


def split_count(fraction: float, n: int) -> int:
    """Images a split of ``fraction`` gets out of ``n``: round half up, at least one when
    ``fraction > 0`` (the converters' seeded splits)."""
    k = int(np.floor(fraction * n + 0.5))
    return max(k, 1) if fraction > 0 else 0


def seeded_split(ids: Sequence[str], sizes: Sequence[Tuple[str, int]],
                 seed: int) -> Dict[str, List[str]]:
    """The converters' seeded split: over the sorted ``ids``, ``default_rng(seed)
    .permutation`` hands its first ``sizes[0][1]`` ids to split ``sizes[0][0]``, the next
    ``sizes[1][1]`` to ``sizes[1][0]`` and so on; the rest go to ``train``. Each split is
    sorted. The sizes are the caller's (checked against ``len(ids)`` there, with its own
    option names)."""
    ids = sorted(ids)
    perm = np.random.default_rng(seed).permutation(len(ids))
    out, start, taken = {}, 0, set()
    for name, k in sizes:
        chosen = {ids[i] for i in perm[start:start + k]}
        out[name] = [i for i in ids if i in chosen]
        taken |= chosen
        start += k
    return dict(train=[i for i in ids if i not in taken], **out)


def track(items: Iterable, enabled: bool = True) -> Iterable:
    """``items`` wrapped in mmengine's progress bar when ``enabled`` and not empty (the bar
    advances after each item is processed and ends with a newline)."""
    items = list(items)
    if not enabled or not items:
        return items
    from mmengine.utils import track_iter_progress
    return track_iter_progress(items)


def _check_name(value: str, what: str) -> None:
    if (not isinstance(value, str) or not value or value in ('.', '..') or '/' in value
            or '\\' in value):
        raise ValueError(f'{what}: expected a non-empty file name without path separators, '
                         f'got {value!r}')


class LayoutWriter:
    """Write samples in the COCO detection and mmseg segmentation layouts.

    Args:
        out_dir: dataset root.
        classes: class names; label c (0-based, as in the point CSVs) is COCO category
            id c + 1.
        description: COCO ``info.description``; ``{split}`` is replaced by the split name.
        source: COCO ``info.source``; None omits the key.
        box_size: None: tight boxes, ``area`` = pixel count. N: N x N boxes centred on the
            point, ``area`` = N * N, NOT clipped to the image (the point stays the box
            centre; mmdet's loading and transforms clip where they need to).
        supercategory: COCO category ``supercategory``; None omits the key.
        licenses: COCO ``licenses`` list; None omits the key.
        decimals: ``bbox`` and ``point`` rounded to this many decimals; None keeps full
            float precision.
        splits: splits written even when no sample is added to them: their
            ``annotations/<split>.json`` and empty ``img_dir`` / ``ann_dir`` / ``inst_dir``
            / ``points`` / extra-map folders (other splits appear with their first sample).
        point_mode: the point of each instance (points CSV, COCO ``point``, centre of the
            ``box_size`` boxes): ``'centroid'`` (default; mean column + 0.5, mean row + 0.5)
            or ``'bbox'``: the centre ((x1 + x2) / 2, (y1 + y2) / 2) of the tight box
            x1, y1, x2, y2 (last column / row + 1), which may lie outside a concave
            instance.

    Image ids and annotation ids run 1, 2, ... per split in the order of :meth:`add`.
    """

    def __init__(self, out_dir: str, classes: Sequence[str], description: str,
                 source: Optional[str] = None, box_size: Optional[float] = None, *,
                 supercategory: Optional[str] = None, licenses: Optional[Sequence] = (),
                 decimals: Optional[int] = 3, splits: Sequence[str] = (),
                 point_mode: str = 'centroid'):
        self.box_size = check_box_size(box_size)
        if point_mode not in POINT_MODES:
            raise ValueError(f'point_mode: expected one of {POINT_MODES}, got {point_mode!r}')
        self.point_mode = point_mode
        classes = tuple(classes)
        if not classes or not all(isinstance(c, str) and c for c in classes) or \
                len(set(classes)) != len(classes):
            raise ValueError(f'classes: expected unique non-empty names, got {classes!r}')
        if decimals is not None and (isinstance(decimals, bool)
                                     or not isinstance(decimals, int) or decimals < 0):
            raise ValueError(f'decimals: expected None or an int >= 0, got {decimals!r}')
        self.out_dir = out_dir
        self.classes = classes
        self.description = description
        self.source = source
        self.licenses = None if licenses is None else list(licenses)
        self.decimals = decimals
        self.categories = [dict(id=i + 1, name=c) for i, c in enumerate(classes)]
        if supercategory is not None:
            for cat in self.categories:
                cat['supercategory'] = supercategory
        self._cocos: Dict[str, dict] = {}
        self._counts: Dict[str, dict] = {}
        self._split_of: Dict[str, str] = {}
        self._declared = tuple(splits)
        self._extra_dirs: Dict[str, None] = {}  # extra-map folders used, in order
        self._closed = False
        for split in splits:
            self._split(split)

    def _split(self, split: str) -> dict:
        """The COCO dict of ``split``, created on first use."""
        if split not in self._cocos:
            _check_name(split, 'split')
            info = dict(description=self.description.replace('{split}', split))
            if self.source is not None:
                info['source'] = self.source
            coco = dict(info=info)
            if self.licenses is not None:
                coco['licenses'] = list(self.licenses)
            coco.update(images=[], annotations=[], categories=[dict(c) for c in self.categories])
            self._cocos[split] = coco
            self._counts[split] = dict(images=0, unlabeled_images=0, empty_images=0,
                                       instances=0, per_class={c: 0 for c in self.classes})
        return self._cocos[split]

    def _round(self, values: List[float]) -> List[float]:
        if self.decimals is None:
            return [float(v) for v in values]
        return [round(float(v), self.decimals) for v in values]

    def _labels(self, labels, k: int, src: str) -> np.ndarray:
        if isinstance(labels, (int, np.integer)) and not isinstance(labels, bool):
            labels = np.full(k, int(labels), np.int64)
        labels = np.asarray(labels)
        if labels.size == 0:
            labels = labels.astype(np.int64).reshape(0)
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f'{src}: labels must be one int or a 1-D int array, got '
                             f'{labels.dtype} of shape {labels.shape}')
        if len(labels) != k:
            raise ValueError(f'{src}: {len(labels)} labels for {k} instances in inst_map '
                             f'(one label per instance id, ascending id order)')
        bad = (labels < 0) | (labels >= len(self.classes))
        if bad.any():
            raise ValueError(f'{src}: label {int(labels[bad][0])} is not a class index in '
                             f'[0, {len(self.classes)})')
        return labels.astype(np.int64)

    def add(self, split: str, name: str, image: np.ndarray,
            semantic: Optional[np.ndarray] = None, inst_map: Optional[np.ndarray] = None,
            labels: Union[int, Sequence[int], np.ndarray, None] = None,
            extra_maps: Optional[Mapping[str, np.ndarray]] = None,
            ann_extra: Optional[Sequence[Mapping]] = None,
            geometry: Optional[Tuple[np.ndarray, np.ndarray]] = None,
            image_extra: Optional[Mapping] = None) -> int:
        """Write one sample; return its COCO image id (in ``split``).

        Args:
            split: split name, e.g. ``train`` or ``unlabeled``.
            name: file stem, unique over all splits (``images/`` is shared).
            image: RGB uint8 (H, W, 3).
            semantic: uint8 (H, W) semantic map; None = unlabeled sample: only the image
                files and a COCO image entry are written (no annotation, no ann_dir /
                inst_dir / points file), and the other arguments must be None.
            inst_map: (H, W) non-negative int instance map (0 = background, ids need not
                be contiguous); required with ``semantic``.
            labels: class index (0-based) of each instance in ascending id order, or one
                int for all instances; required with ``semantic``.
            extra_maps: further per-pixel maps, folder -> (H, W) uint8/uint16 array,
                written to ``<folder>/<split>/<name>.png`` (e.g. ``region_dir``).
            ann_extra: one dict per instance (ascending id order) of extra COCO annotation
                fields (e.g. RLE ``segmentation``); may not redefine the standard fields.
            geometry: (points (K, 2), boxes (K, 4) x1, y1, x2, y2) of the instances in
                ascending id order, given instead of computed from ``inst_map`` (e.g.
                annotated points with boxes of a class's size); ``area`` is then the box
                area. Not with the writer's ``box_size``.
            image_extra: extra fields of the COCO image record (e.g. where the tile lies
                in its slide); may not redefine ``id``, ``file_name``, ``height``, ``width``.
        """
        if self._closed:
            raise RuntimeError(f'{self.out_dir}: LayoutWriter.add() after close()')
        _check_name(name, 'name')
        _check_name(split, 'split')
        src = f'{split}/{name}'
        if name in self._split_of:
            raise ValueError(f'{src}: sample name already written in split '
                             f'"{self._split_of[name]}" (images/<name>.png is shared by all '
                             f'splits)')
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f'{src}: image must be RGB uint8 (H, W, 3), got {image.dtype} '
                             f'of shape {image.shape}')
        h, w = image.shape[:2]
        labelled = semantic is not None
        if not labelled:
            given = [k for k, v in (('inst_map', inst_map), ('labels', labels),
                                    ('extra_maps', extra_maps), ('ann_extra', ann_extra),
                                    ('geometry', geometry))
                     if v is not None]
            if given:
                raise ValueError(f'{src}: an unlabeled sample (semantic=None) takes no '
                                 f'{", ".join(given)}')
        else:
            if inst_map is None or labels is None:
                raise ValueError(f'{src}: a labelled sample needs semantic, inst_map and '
                                 f'labels')
            semantic, inst_map = np.asarray(semantic), np.asarray(inst_map)
            if semantic.shape != (h, w) or semantic.dtype != np.uint8:
                raise ValueError(f'{src}: semantic must be uint8 of shape {(h, w)}, got '
                                 f'{semantic.dtype} of shape {semantic.shape}')
            if inst_map.shape != (h, w):
                raise ValueError(f'{src}: inst_map has shape {inst_map.shape}, image '
                                 f'{(h, w)}')
            ids, points, boxes = instance_geometry(inst_map, source=f'{src} inst_map')
            if self.point_mode == 'bbox':
                points = box_centres(boxes)
            _, areas = np.unique(inst_map[inst_map > 0], return_counts=True)  # ids order
            k = len(ids)
            if geometry is not None:
                points, boxes = self._given_geometry(geometry, k, src)
                areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
            labels = self._labels(labels, k, src)
            extra_maps = dict(extra_maps or {})
            for folder, m in extra_maps.items():
                _check_name(folder, 'extra_maps folder')
                if folder in LAYOUT_DIRS:
                    raise ValueError(f'{src}: extra map folder "{folder}" is a standard '
                                     f'layout folder')
                if np.shape(m) != (h, w):
                    raise ValueError(f'{src}: extra map "{folder}" has shape {np.shape(m)}, '
                                     f'image {(h, w)}')
            ann_extra = [{}] * k if ann_extra is None else list(ann_extra)
            if len(ann_extra) != k:
                raise ValueError(f'{src}: {len(ann_extra)} ann_extra entries for {k} '
                                 f'instances')
            for extra in ann_extra:
                clash = sorted(set(extra) & set(_ANN_KEYS))
                if clash:
                    raise ValueError(f'{src}: ann_extra may not redefine {clash}')

        coco, counts = self._split(split), self._counts[split]
        fname = name + '.png'
        write_image(osp.join(self.out_dir, 'images', fname), image)
        write_image(osp.join(self.out_dir, 'img_dir', split, fname), image)
        img_id = len(coco['images']) + 1
        record = dict(id=img_id, file_name=fname, height=h, width=w)
        clash = sorted(set(image_extra or {}) & set(record))
        if clash:
            raise ValueError(f'{src}: image_extra may not redefine {clash}')
        coco['images'].append(dict(record, **(image_extra or {})))
        self._split_of[name] = split
        counts['images'] += 1
        if not labelled:
            counts['unlabeled_images'] += 1
            return img_id
        write_image(osp.join(self.out_dir, 'ann_dir', split, fname), semantic)
        write_instance_map(osp.join(self.out_dir, 'inst_dir', split, fname), inst_map)
        write_points(osp.join(self.out_dir, 'points', split, name + '.csv'), points, labels)
        for folder, m in extra_maps.items():
            self._extra_dirs[folder] = None
            write_image(osp.join(self.out_dir, folder, split, fname), np.asarray(m))
        b = self.box_size
        for j in range(k):
            px, py = float(points[j, 0]), float(points[j, 1])
            if b is None:
                x1, y1, x2, y2 = (float(v) for v in boxes[j])
                bbox, area = [x1, y1, x2 - x1, y2 - y1], float(areas[j])
            else:
                bbox, area = [px - b / 2.0, py - b / 2.0, b, b], b * b
            ann = dict(id=len(coco['annotations']) + 1, image_id=img_id,
                       category_id=int(labels[j]) + 1, bbox=self._round(bbox), area=area,
                       iscrowd=0, point=self._round([px, py]))
            ann.update(ann_extra[j])
            coco['annotations'].append(ann)
            counts['per_class'][self.classes[labels[j]]] += 1
        counts['instances'] += k
        counts['empty_images'] += int(k == 0)
        return img_id

    def _given_geometry(self, geometry, k: int, src: str) -> Tuple[np.ndarray, np.ndarray]:
        if self.box_size is not None:
            raise ValueError(f'{src}: geometry given to a writer with box_size')
        points, boxes = (np.asarray(a, np.float64) for a in geometry)
        if points.shape != (k, 2) or boxes.shape != (k, 4):
            raise ValueError(f'{src}: geometry must be points ({k}, 2) and boxes ({k}, 4) for '
                             f'the {k} instances, got {points.shape} and {boxes.shape}')
        if not (np.isfinite(points).all() and np.isfinite(boxes).all()) or \
                np.any(boxes[:, 2:] <= boxes[:, :2]):
            raise ValueError(f'{src}: geometry holds non-finite values or empty boxes')
        return points, boxes

    def close(self) -> Dict[str, dict]:
        """Write ``annotations/<split>.json`` of every split (atomically); return per-split
        counts: ``images``, ``unlabeled_images``, ``empty_images`` (labelled, no
        instance), ``instances``, ``per_class`` (class name -> instances)."""
        if self._closed:
            raise RuntimeError(f'{self.out_dir}: LayoutWriter.close() called twice')
        self._closed = True
        for split in self._declared:
            for folder in ('img_dir', 'ann_dir', 'inst_dir', 'points', *self._extra_dirs):
                os.makedirs(osp.join(self.out_dir, folder, split), exist_ok=True)
        for split, coco in self._cocos.items():
            write_json(osp.join(self.out_dir, 'annotations', f'{split}.json'), coco)
        return {s: dict(c, per_class=dict(c['per_class'])) for s, c in self._counts.items()}
