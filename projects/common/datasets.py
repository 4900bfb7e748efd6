"""Datasets for cell detection (COCO) and nuclei segmentation (mmseg folders).

Layouts: ``docs/data_layout.md``. Both classes check their input when they are built and
raise errors that name the annotation file / folder and the offending image or
annotation id; nothing is dropped silently.
"""
import math
import os.path as osp
from numbers import Real
from typing import Dict, List, Optional, Sequence, Tuple

from mmdet.datasets import CocoDataset
from mmengine.logging import print_log
from mmseg.datasets import BaseSegDataset

from .io import read_coco
from .registry import DET_DATASETS, SEG_DATASETS, register

__all__ = ['CellDetDataset', 'NucleiSegDataset', 'adopt_file_classes']


def _palette(n: int) -> List[Tuple[int, int, int]]:
    """A fixed, distinct colour per class (golden-ratio hue steps; no randomness)."""
    import colorsys
    out = []
    for i in range(n):
        r, g, b = colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.75, 0.95)
        out.append((int(r * 255), int(g * 255), int(b * 255)))
    return out


def adopt_file_classes(metainfo: dict, classes: Sequence[str], ann_file: str) -> tuple:
    """Set ``metainfo['classes']`` to the annotation file's ``classes``; a config that
    gave other classes gets a ValueError naming ``ann_file``."""
    classes = tuple(classes)
    given = metainfo.get('classes')
    if given is not None and tuple(given) != classes:
        raise ValueError(f'{ann_file}: classes {list(classes)} differ from the config '
                         f'metainfo classes {list(given)}')
    metainfo['classes'] = classes
    return classes


@register(DET_DATASETS)
class CellDetDataset(CocoDataset):
    """COCO-format cell detection dataset (``docs/data_layout.md``, detection).

    Differences from mmdet's :class:`CocoDataset`:

    - **Classes**: when ``metainfo`` gives no ``classes``, they are the JSON's categories
      ordered by id (label i = i-th category). A palette is generated if none is given.
    - **Points**: every instance dict keeps ``'point'`` [x, y]: the annotation's ``point``,
      else the centre of its box. mmdet keys are unchanged: ``'bbox'`` (x1, y1, x2, y2),
      ``'bbox_label'``, ``'ignore_flag'`` (1 for ``iscrowd`` or ``ignore`` annotations,
      which mmdet would drop; we keep them flagged so per-image counts stay exact).
    - **Images without annotations are kept** (unlabeled data). mmdet drops them when
      ``filter_cfg=dict(filter_empty_gt=True)``; our default ``filter_cfg`` is None, so
      nothing is filtered. An explicit ``filter_empty_gt=True`` is honoured and the number
      of dropped images is logged as a warning.
    - **Validation** (ValueError / FileNotFoundError naming ``ann_file`` and the image /
      annotation id): missing file, invalid JSON, no ``images``; an image without
      ``file_name``/``height``/``width``; duplicate ids; an annotation whose ``image_id``
      is not listed (pycocotools ignores it silently); a box with w <= 0 or h <= 0 or
      entirely outside its image (mmdet drops both silently); a point outside its image;
      a ``category_id`` not among the JSON categories or not among ``classes``.
    - **Patches**: the optional image fields ``parent`` (str, the file_name of the whole
      image the patch was cut from) and ``offset`` ([x0, y0], finite, >= 0) are copied
      into the data info (ValueError naming ``ann_file`` and the image id otherwise);
      ``WholeImageDetectionMetric`` reads them (pack them with ``PackDetInputs``
      ``meta_keys``).
    - **Image files** are not stat-ed at build time by default (10k ``stat`` calls on a
      network file system are slow, and the dataset may be built lazily):
      ``LoadImageFromFile`` raises ``FileNotFoundError`` naming the missing file when
      the sample is loaded. ``check_files=True`` checks every image at build time.

    Args:
        check_files: stat every image file when the data list is loaded.
        Other arguments as :class:`mmdet.datasets.CocoDataset`; ``data_prefix`` uses key
        ``img`` (mmdet's) or ``img_path`` (mmengine's).
    """

    METAINFO: dict = dict()  # classes come from the JSON categories unless given

    def __init__(self, *args, check_files: bool = False, lazy_init: bool = False, **kwargs):
        self.check_files = check_files
        self._raw_json: Optional[dict] = None
        super().__init__(*args, lazy_init=True, **kwargs)
        if 'classes' not in self._metainfo:
            cats = sorted(self._read_json().get('categories', []), key=lambda c: c['id'])
            if not cats:
                raise ValueError(f'{self.ann_file}: no "categories" and no classes in '
                                 f'metainfo: cannot tell the class names')
            self._metainfo['classes'] = tuple(c['name'] for c in cats)
        self._metainfo['classes'] = tuple(self._metainfo['classes'])
        if len(self._metainfo.get('palette', [])) != len(self._metainfo['classes']):
            self._metainfo['palette'] = _palette(len(self._metainfo['classes']))
        if not lazy_init:
            self.full_init()

    # ------------------------------------------------------------------ reading
    def _read_json(self) -> dict:
        if self._raw_json is not None:
            return self._raw_json
        src = self.ann_file
        if not src:
            raise ValueError(f'{type(self).__name__}: ann_file is empty')
        raw = read_coco(src)
        self._raw_json = raw
        return raw

    def load_data_list(self) -> List[dict]:
        """Parse and validate the COCO file; one data info per listed image."""
        src = self.ann_file
        raw = self._read_json()
        self._raw_json = None  # free memory after this call
        classes = tuple(self._metainfo['classes'])

        cats = raw.get('categories', [])
        cat_name = {}
        for c in cats:
            if 'id' not in c or 'name' not in c:
                raise ValueError(f'{src}: category {c} needs "id" and "name"')
            cat_name[c['id']] = c['name']
        name_to_id = {n: i for i, n in cat_name.items()}
        missing = [n for n in classes if n not in name_to_id]
        if missing:
            raise ValueError(f'{src}: classes {missing} of metainfo are not among the '
                             f'categories {list(name_to_id)}')
        self.cat_ids = [name_to_id[n] for n in classes]
        self.cat2label = {cid: i for i, cid in enumerate(self.cat_ids)}
        self.cat_img_map: Dict[int, List[int]] = {cid: [] for cid in self.cat_ids}

        images: Dict[int, dict] = {}
        for img in raw['images']:
            iid = img.get('id')
            if iid is None:
                raise ValueError(f'{src}: an image entry has no "id": {img}')
            if iid in images:
                raise ValueError(f'{src}: image id {iid} is listed twice')
            for key in ('file_name', 'height', 'width'):
                if key not in img:
                    raise ValueError(f'{src}: image id {iid} has no "{key}"')
            if not (img['height'] > 0 and img['width'] > 0):
                raise ValueError(f'{src}: image id {iid} ({img["file_name"]}) has size '
                                 f'{img["width"]}x{img["height"]}')
            images[iid] = img

        anns_of: Dict[int, List[dict]] = {iid: [] for iid in images}
        seen_ann = set()
        for ann in raw.get('annotations', []):
            aid = ann.get('id')
            if aid in seen_ann:
                raise ValueError(f'{src}: annotation id {aid} is used twice')
            seen_ann.add(aid)
            iid = ann.get('image_id')
            if iid not in images:
                raise ValueError(f'{src}: annotation id {aid} refers to image_id {iid}, '
                                 f'which is not listed in "images"')
            anns_of[iid].append(ann)

        img_prefix = self.data_prefix.get('img', self.data_prefix.get('img_path', ''))
        seg_prefix = self.data_prefix.get('seg', None)
        data_list = []
        for iid, img in images.items():
            data_info = dict(
                img_path=osp.join(img_prefix, img['file_name']),
                img_id=iid,
                height=int(img['height']),
                width=int(img['width']),
                seg_map_path=None)
            if seg_prefix:
                data_info['seg_map_path'] = osp.join(
                    seg_prefix, img['file_name'].rsplit('.', 1)[0] + self.seg_map_suffix)
            if self.return_classes:
                data_info['text'] = classes
                data_info['caption_prompt'] = self.caption_prompt
                data_info['custom_entities'] = True
            data_info.update(self._patch_origin(img))
            data_info['instances'] = [self._parse_ann(a, img) for a in anns_of[iid]]
            for inst in data_info['instances']:
                cid = self.cat_ids[inst['bbox_label']]
                if not self.cat_img_map[cid] or self.cat_img_map[cid][-1] != iid:
                    self.cat_img_map[cid].append(iid)
            data_list.append(data_info)

        if self.check_files:
            for d in data_list:
                if not osp.isfile(d['img_path']):
                    raise FileNotFoundError(f'{src}: image id {d["img_id"]}: image file '
                                            f'{d["img_path"]} not found')
        return data_list

    def _patch_origin(self, img: dict) -> dict:
        """The optional image fields ``parent`` (file_name of the whole image a patch was
        cut from) and ``offset`` ([x0, y0] of the patch in it), checked, for
        :class:`projects.common.metrics.WholeImageDetectionMetric`."""
        where = f'{self.ann_file}: image id {img["id"]} ({img["file_name"]})'
        out = {}
        if 'parent' in img:
            parent = img['parent']
            if not isinstance(parent, str) or not parent:
                raise ValueError(f'{where}: "parent" must be the file_name of the whole '
                                 f'image, got {parent!r}')
            out['parent'] = parent
        if 'offset' in img:
            off = img['offset']
            ok = isinstance(off, (list, tuple)) and len(off) == 2 and all(
                isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v)
                and v >= 0 for v in off)
            if not ok:
                raise ValueError(f'{where}: "offset" must be [x0, y0], two finite numbers '
                                 f'>= 0, got {off!r}')
            out['offset'] = list(off)
        return out

    def _parse_ann(self, ann: dict, img: dict) -> dict:
        """Validate one annotation and turn it into an mmdet instance dict (+ 'point')."""
        src, aid, iid = self.ann_file, ann.get('id'), img['id']
        where = f'{src}: annotation id {aid} (image id {iid}, {img["file_name"]})'
        w_img, h_img = img['width'], img['height']
        cid = ann.get('category_id')
        if cid not in self.cat2label:
            known = [c for c in self.cat_ids]
            raise ValueError(f'{where}: category_id {cid} is not among the classes '
                             f'{tuple(self._metainfo["classes"])} (category ids {known}); '
                             f'list every category of the file in metainfo classes')
        box = ann.get('bbox')
        if box is None or len(box) != 4:
            raise ValueError(f'{where}: "bbox" must be [x, y, w, h], got {box}')
        x, y, w, h = (float(v) for v in box)
        if not (w > 0 and h > 0):
            raise ValueError(f'{where}: box [x={x}, y={y}, w={w}, h={h}] has w <= 0 or h <= 0')
        if x >= w_img or y >= h_img or x + w <= 0 or y + h <= 0:
            raise ValueError(f'{where}: box [x={x}, y={y}, w={w}, h={h}] lies entirely '
                             f'outside the {w_img}x{h_img} image')
        if 'point' in ann:
            pt = ann['point']
            if pt is None or len(pt) < 2:
                raise ValueError(f'{where}: "point" must be [x, y], got {pt}')
            px, py = float(pt[0]), float(pt[1])
        else:
            px, py = x + w / 2.0, y + h / 2.0
        if not (0 <= px <= w_img and 0 <= py <= h_img):
            raise ValueError(f'{where}: point (x={px:.1f}, y={py:.1f}) lies outside the '
                             f'{w_img}x{h_img} image')
        inst = dict(
            bbox=[x, y, x + w, y + h],
            bbox_label=self.cat2label[cid],
            ignore_flag=int(bool(ann.get('iscrowd', 0)) or bool(ann.get('ignore', 0))),
            point=[px, py])
        if ann.get('segmentation'):
            inst['mask'] = ann['segmentation']
        return inst

    def filter_data(self) -> List[dict]:
        """Keep every image unless ``filter_cfg`` explicitly asks otherwise (then log it)."""
        if self.test_mode or not self.filter_cfg:
            return self.data_list
        filter_empty = self.filter_cfg.get('filter_empty_gt', False)
        min_size = self.filter_cfg.get('min_size', 0)
        kept = [
            d for d in self.data_list
            if not (filter_empty and not d['instances'])
            and min(d['width'], d['height']) >= min_size
        ]
        if len(kept) != len(self.data_list):
            print_log(
                f'{self.ann_file}: filter_cfg={dict(self.filter_cfg)} dropped '
                f'{len(self.data_list) - len(kept)} of {len(self.data_list)} images '
                f'(images without annotation are unlabeled data; remove filter_empty_gt '
                f'to keep them)', logger='current', level=30)
        return kept


@register(SEG_DATASETS)
class NucleiSegDataset(BaseSegDataset):
    """Nuclei segmentation folders (``docs/data_layout.md``, segmentation).

    ``data_prefix`` keys: ``img_path`` (required), ``seg_map_path`` (semantic PNG),
    and optionally ``inst_path`` (instance map ``<name>.png``, else ``<name>.npy``) and
    ``points_path`` (``<name>.csv``). Every data info gets ``seg_map_path``,
    ``inst_map_path`` / ``points_path`` when the prefix is configured, and
    ``'labeled'`` (True when every configured annotation file exists).

    A configured annotation folder that lacks the file of an image raises
    FileNotFoundError naming it, unless ``allow_unlabeled=True``: then the image is kept
    as unlabeled data, the missing path(s) are None and ``'labeled'`` is False (the other
    annotation files of that image, if any, stay). A pipeline for such data must cope with
    None paths (``LoadInstanceAnnotations`` / ``LoadPointAnnotations`` skip an image whose
    ``labeled`` is False; mmseg's ``LoadAnnotations`` does not, so leave it out or use a
    separate unlabeled dataset).

    Classes: ('background', 'nucleus') by default. ``metainfo=dict(classes=...)`` with a
    list that is not a subset of these (e.g. background / nucleus / micronucleus) is taken
    as is (label value c = class c, no remapping; a palette is generated); a subset keeps
    mmseg's remapping semantics.
    """

    METAINFO = dict(classes=('background', 'nucleus'), palette=[[0, 0, 0], [230, 60, 60]])

    def __init__(self,
                 img_suffix: str = '.png',
                 seg_map_suffix: str = '.png',
                 inst_suffixes: Sequence[str] = ('.png', '.npy'),
                 points_suffix: str = '.csv',
                 allow_unlabeled: bool = False,
                 **kwargs) -> None:
        self.inst_suffixes = tuple(inst_suffixes)
        self.points_suffix = points_suffix
        self.allow_unlabeled = allow_unlabeled
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix, **kwargs)

    @classmethod
    def get_label_map(cls, new_classes: Optional[Sequence] = None) -> Optional[dict]:
        """mmseg's remapping for a subset of the default classes; None for a new class list."""
        old = cls.METAINFO['classes']
        if new_classes is not None and not set(new_classes).issubset(old):
            return None
        return super().get_label_map(new_classes)

    def _update_palette(self) -> list:
        palette = self._metainfo.get('palette', [])
        classes = self._metainfo.get('classes', [])
        if len(palette) == len(classes):
            return palette
        if self.label_map is None:
            return [list(c) for c in _palette(len(classes))]
        return super()._update_palette()

    def load_data_list(self) -> List[dict]:
        img_dir = self.data_prefix.get('img_path', None)
        if not img_dir and not self.ann_file:
            raise ValueError(f'{type(self).__name__}: data_prefix needs "img_path"')
        if not self.ann_file or osp.isdir(self.ann_file):
            if not osp.isdir(img_dir):
                raise FileNotFoundError(f'{img_dir}: image folder not found')
        elif not osp.isfile(self.ann_file):
            raise FileNotFoundError(f'{self.ann_file}: split file not found')
        data_list = super().load_data_list()
        if not data_list:
            raise ValueError(f'{img_dir}: no image with suffix "{self.img_suffix}" '
                             f'{"listed in " + self.ann_file if self.ann_file else "found"}')
        inst_dir = self.data_prefix.get('inst_path', None)
        pts_dir = self.data_prefix.get('points_path', None)
        for d in data_list:
            if not osp.isfile(d['img_path']):
                listed = f' (listed in {self.ann_file})' if self.ann_file else ''
                raise FileNotFoundError(f'{d["img_path"]}: image file not found{listed}')
            name = osp.relpath(d['img_path'], img_dir)[:-len(self.img_suffix)]
            labeled = True
            if 'seg_map_path' in d and not osp.isfile(d['seg_map_path']):
                labeled = self._missing(d['seg_map_path'], 'semantic annotation', d)
                d['seg_map_path'] = None
            if inst_dir is not None:
                cands = [osp.join(inst_dir, name + s) for s in self.inst_suffixes]
                found = [c for c in cands if osp.isfile(c)]
                if found:
                    d['inst_map_path'] = found[0]
                else:
                    labeled = self._missing(' or '.join(cands), 'instance map', d)
                    d['inst_map_path'] = None
            if pts_dir is not None:
                path = osp.join(pts_dir, name + self.points_suffix)
                if osp.isfile(path):
                    d['points_path'] = path
                else:
                    labeled = self._missing(path, 'point', d)
                    d['points_path'] = None
            d['labeled'] = labeled
        n_unlabeled = sum(not d['labeled'] for d in data_list)
        if n_unlabeled:
            print_log(f'{img_dir}: {n_unlabeled} of {len(data_list)} images lack an '
                      f'annotation file and are kept as unlabeled (allow_unlabeled=True)',
                      logger='current')
        return data_list

    def _missing(self, path: str, what: str, data_info: dict) -> bool:
        if not self.allow_unlabeled:
            raise FileNotFoundError(f'{path}: {what} file of image {data_info["img_path"]} '
                                    f'not found (allow_unlabeled=True keeps such images as '
                                    f'unlabeled data)')
        return False
