"""Cell crops for the cell-level GAN (Hu et al. 2018, sect. III.B.1 / IV.B) and their files.

Annotation file (``cells.json``, mmengine's standard ``metainfo`` + ``data_list``, plus an
image-level table)::

    {"metainfo": {"classes": [...], "crop_size": 32, "mode": "seg", ...},
     "data_list": [{"img_path": "crops/<image_id>_<inst_id>.png", "image_id": "<source>",
                    "inst_id": 3, "gt_label": 0, "bbox": [x1, y1, x2, y2],
                    "centroid": [x, y], "area": 312}, ...],
     "images": [{"image_id": "<source>", "img_path": "<source image path>",
                 "gt_label": 1}, ...]}

``gt_label`` -1 = unknown (crop-level: no class; image-level: no label). Crop paths are
relative to the dataset's ``data_prefix['img_path']`` (default: the annotation file's
folder); source image paths are relative to the annotation file's folder unless absolute.
Written by ``tools/extract_cells.py`` and ``tools/dataset_converters/synthetic_cells.py``
through :func:`save_crops` and :func:`write_cell_json`.
"""
import os.path as osp
from typing import List, Optional, Sequence

import numpy as np
from mmcv.transforms import BaseTransform
from mmengine.dataset import BaseDataset

from projects.common.datasets import adopt_file_classes
from projects.common.io import read_json, write_image, write_json
from projects.common.registry import DET_DATASETS, SEG_DATASETS, TRANSFORMS, register

__all__ = ['CellCropDataset', 'RandomRot90', 'crop_name', 'save_crops', 'write_cell_json',
           'read_cell_json']


def crop_name(image_id: str, inst_id: int) -> str:
    """File name of the crop of instance ``inst_id`` of image ``image_id``."""
    return f'{image_id}_{int(inst_id):05d}.png'


def save_crops(out_dir: str, folder: str, image_id: str, crops: np.ndarray,
               info: Sequence[dict], labels: Optional[Sequence[int]] = None,
               extra: Optional[Sequence[dict]] = None) -> List[dict]:
    """Write ``crops`` (N, s, s, 3) as ``out_dir/folder/<crop_name>`` PNGs (atomically)
    and return their ``data_list`` entries (``img_path`` relative to ``out_dir``).

    ``info``: the per-crop dicts of :func:`projects.cell_gan.extraction.cell_crops`;
    ``labels``: per-crop class or -1 (default all -1); ``extra``: more keys per crop.
    """
    if len(crops) != len(info):
        raise ValueError(f'{image_id}: {len(crops)} crops but {len(info)} info entries')
    if labels is not None and len(labels) != len(info):
        raise ValueError(f'{image_id}: {len(labels)} labels for {len(info)} crops')
    entries = []
    for k, (crop, inf) in enumerate(zip(crops, info)):
        rel = f'{folder}/{crop_name(image_id, inf["inst_id"])}'
        write_image(osp.join(out_dir, rel), np.ascontiguousarray(crop))
        entry = dict(img_path=rel, image_id=image_id, inst_id=int(inf['inst_id']),
                     gt_label=-1 if labels is None else int(labels[k]),
                     bbox=[int(v) for v in inf['bbox']],
                     centroid=[float(v) for v in inf['centroid']], area=int(inf['area']))
        if extra is not None:
            entry.update(extra[k])
        entries.append(entry)
    return entries


def write_cell_json(path: str, classes: Sequence[str], crop_size: int, mode: str,
                    data_list: List[dict], images: List[dict],
                    extra_meta: Optional[dict] = None) -> None:
    """Write a ``cells.json`` (format in the module docstring) atomically."""
    meta = dict(classes=list(classes), crop_size=int(crop_size), mode=mode)
    meta.update(extra_meta or {})
    write_json(path, dict(metainfo=meta, data_list=data_list, images=images))


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def read_cell_json(path: str) -> dict:
    """Read and check a ``cells.json``; ValueError naming ``path`` and the bad entry."""
    ann = read_json(path, 'cell annotation')
    if not isinstance(ann, dict) or not isinstance(ann.get('metainfo'), dict):
        raise ValueError(f'{path}: expected a JSON object with "metainfo", "data_list" and '
                         f'"images"')
    data_list, images = ann.get('data_list'), ann.get('images')
    if not isinstance(data_list, list) or not data_list:
        raise ValueError(f'{path}: "data_list" is missing or empty (no cell crop)')
    if not isinstance(images, list) or not images:
        raise ValueError(f'{path}: "images" (the image-level table) is missing or empty')
    classes = ann['metainfo'].get('classes')
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise ValueError(f'{path}: metainfo "classes" must be a list of names, got {classes!r}')
    n_cls = len(classes)
    ids = set()
    for j, img in enumerate(images):
        if not isinstance(img, dict) or not isinstance(img.get('image_id'), str) \
                or not img['image_id'] or not isinstance(img.get('img_path'), str):
            raise ValueError(f'{path}: images[{j}] needs a non-empty "image_id" and an '
                             f'"img_path" string, got {img!r}')
        if img['image_id'] in ids:
            raise ValueError(f'{path}: images[{j}]: image_id {img["image_id"]!r} repeated')
        if not _is_int(img.get('gt_label', -1)) or img.get('gt_label', -1) < -1:
            raise ValueError(f'{path}: images[{j}] ({img["image_id"]}): gt_label must be an '
                             f'int >= -1, got {img.get("gt_label")!r}')
        ids.add(img['image_id'])
    for i, d in enumerate(data_list):
        where = f'{path}: data_list[{i}]'
        if not isinstance(d, dict) or not isinstance(d.get('img_path'), str) \
                or not d['img_path']:
            raise ValueError(f'{where} has no "img_path" string: {d!r}')
        if d.get('image_id') not in ids:
            raise ValueError(f'{where} ({d["img_path"]}): image_id {d.get("image_id")!r} is '
                             f'not in "images"')
        label = d.get('gt_label', -1)
        if not _is_int(label) or not -1 <= label < n_cls:
            raise ValueError(f'{where} ({d["img_path"]}): gt_label must be -1 or a class '
                             f'index < {n_cls} ({classes}), got {label!r}')
    return ann


@register(DET_DATASETS + SEG_DATASETS)
class CellCropDataset(BaseDataset):
    """Cell crops of :func:`projects.cell_gan.extraction.cell_crops` (``cells.json``).

    One sample = one crop: data info ``img_path``, ``image_id`` (the source image),
    ``gt_label`` (class index or -1), ``inst_id``, ``bbox``, ``centroid``, ``area`` (and
    ``sample_idx``, added by mmengine). Classes, ``crop_size`` and ``mode`` come from the
    file's metainfo (a config ``metainfo.classes`` must agree).

    Attributes (after ``full_init``): :attr:`images` the image-level table (``image_id``,
    ``img_path`` resolved, ``gt_label``), :attr:`image_ids` (N,) the source image of each
    crop, :attr:`image_index` (N,) its row in :attr:`images`, :attr:`gt_labels` (N,).

    Args:
        ann_file: the ``cells.json``.
        check_files: check at build time that every crop file exists
            (FileNotFoundError naming the annotation file, the entry and the crop).
        data_prefix: ``dict(img_path=...)`` folder of the crops; default the annotation
            file's folder.
    """

    METAINFO: dict = dict(classes=None)

    def __init__(self, ann_file: str, check_files: bool = False,
                 data_prefix: Optional[dict] = None, **kwargs) -> None:
        self.check_files = bool(check_files)
        self._prefix_given = bool(data_prefix and data_prefix.get('img_path'))
        self.images: List[dict] = []
        self._image_ids: Optional[np.ndarray] = None
        self._image_index: Optional[np.ndarray] = None
        self._gt_labels: Optional[np.ndarray] = None
        super().__init__(ann_file=ann_file, data_prefix=data_prefix or dict(img_path=''),
                         **kwargs)

    def load_data_list(self) -> List[dict]:
        ann = read_cell_json(self.ann_file)
        meta = ann['metainfo']
        adopt_file_classes(self._metainfo, meta['classes'], self.ann_file)
        for key, value in meta.items():
            if key != 'classes':
                self._metainfo[key] = value
        ann_dir = osp.dirname(self.ann_file)
        prefix = self.data_prefix.get('img_path', '') if self._prefix_given else ann_dir
        self.images = [dict(image_id=img['image_id'],
                            img_path=osp.join(ann_dir, img['img_path']),
                            gt_label=int(img.get('gt_label', -1)))
                       for img in ann['images']]
        data_list = []
        for i, d in enumerate(ann['data_list']):
            info = dict(d)
            info['img_path'] = osp.join(prefix, d['img_path'])
            info['gt_label'] = int(d.get('gt_label', -1))
            if self.check_files and not osp.isfile(info['img_path']):
                raise FileNotFoundError(f'{self.ann_file}: data_list[{i}]: crop file '
                                        f'{info["img_path"]} not found')
            data_list.append(info)
        return data_list

    def full_init(self) -> None:
        if self._fully_initialized:
            return
        super().full_init()
        infos = [self.get_data_info(i) for i in range(len(self))]
        row = {img['image_id']: j for j, img in enumerate(self.images)}
        self._image_ids = np.array([d['image_id'] for d in infos], dtype=object)
        self._image_index = np.array([row[d['image_id']] for d in infos], np.int64)
        self._gt_labels = np.array([d['gt_label'] for d in infos], np.int64)

    def _arrays(self) -> None:
        if not self._fully_initialized:
            self.full_init()

    @property
    def image_ids(self) -> np.ndarray:
        """Source image id of every crop (object array of str, dataset order)."""
        self._arrays()
        return self._image_ids

    @property
    def image_index(self) -> np.ndarray:
        """Row of :attr:`images` of every crop (int64)."""
        self._arrays()
        return self._image_index

    @property
    def gt_labels(self) -> np.ndarray:
        """Class of every crop (int64, -1 = unknown)."""
        self._arrays()
        return self._gt_labels

    def get_cat_ids(self, idx: int) -> List[int]:
        label = self.get_data_info(idx)['gt_label']
        return [label] if label >= 0 else []


@register(TRANSFORMS)
class RandomRot90(BaseTransform):
    """Rotate ``img`` (and the maps of ``seg_fields``) by 90, 180 or 270 degrees.

    Hu et al. 2018 (sect. IV.B) augment by rotations of 90/180/270 degrees. With
    probability ``prob`` one of the three is drawn uniformly (numpy's global RNG, as
    mmcv's transforms), else the image is unchanged: ``prob=0.75`` (default) makes the
    four orientations equally likely. Writes ``results['rot90']`` = number of
    counter-clockwise quarter turns (``np.rot90``) and updates ``img_shape``.
    """

    def __init__(self, prob: float = 0.75) -> None:
        if isinstance(prob, bool) or not isinstance(prob, (int, float)) or not 0 <= prob <= 1:
            raise ValueError(f'RandomRot90: prob must be a number in [0, 1], got {prob!r}')
        self.prob = float(prob)

    def transform(self, results: dict) -> dict:
        k = int(np.random.randint(1, 4)) if np.random.rand() < self.prob else 0
        results['rot90'] = k
        if k:
            results['img'] = np.ascontiguousarray(np.rot90(results['img'], k))
            for key in results.get('seg_fields', []):
                if key in results:
                    results[key] = np.ascontiguousarray(np.rot90(results[key], k))
            results['img_shape'] = results['img'].shape[:2]
        return results

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(prob={self.prob})'

