"""Patch predictions stitched into segmentation maps and scored with OP, PC and mIoU.

Tokunaga et al. 2020 ("Negative Pseudo Labeling using Class Proportion for Semantic
Segmentation in Pathology", ECCV), Sect. 5.3: each patch of a bag (slide) is classified,
the patch labels are put back on the bag's patch grid, and the resulting map is compared
with the region annotation using Overall Pixel (OP), Per-Class (PC) and mean IoU, eq. (7).

The maths are plain numpy functions (:func:`stitch`, :func:`upsample_grid`,
:func:`seg_scores`); :class:`PatchSegMetric` adapts them to MMEngine's ``process`` /
``compute_metrics`` contract.
"""
import math
import os.path as osp
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log

from projects.common.datasets import _palette as class_palette
from projects.common.io import write_image
from projects.common.metrics import _field, _format_table, _numpy, int_scalar
from projects.common.registry import METRICS, register

__all__ = ['stitch', 'upsample_grid', 'seg_scores', 'PatchSegMetric']

_NO_PATCH_RGB = (255, 255, 255)  # pixels not covered by any evaluated patch
_NO_LABEL_RGB = (200, 200, 200)  # ground-truth image: patch without a label
_GAP_RGB = (128, 128, 128)  # separator between the prediction and the ground truth
_GAP = 8  # separator width in pixels
_MAX_SIDE = 4096  # a bag larger than this (pixels) is drawn with smaller blocks per patch

# --------------------------------------------------------------------------- maps


def stitch(grid_rc: np.ndarray, values: np.ndarray, shape_rc: Tuple[int, int],
           fill: int = 255) -> np.ndarray:
    """Patch-grid map (rows, cols): cell (row, col) of patch k holds ``values[k]``.

    grid_rc: (K, 2) integer [row, col] of each patch; values: (K,); cells without a patch
    hold ``fill``. The dtype is the smallest common type of ``values`` and ``fill``.
    Raises ValueError for cells outside ``shape_rc`` or a cell given twice.
    """
    grid = np.asarray(grid_rc)
    vals = np.asarray(values)
    if len(shape_rc) != 2 or any(int(s) != s or s < 0 for s in shape_rc):
        raise ValueError(f'stitch: shape_rc must be two integers >= 0 (rows, cols), got '
                         f'{shape_rc!r}')
    rows, cols = int(shape_rc[0]), int(shape_rc[1])
    if grid.size == 0:
        grid = grid.reshape(0, 2)
    if grid.ndim != 2 or grid.shape[1] != 2:
        raise ValueError(f'stitch: grid_rc must have shape (K, 2) [row, col], got {grid.shape}')
    if grid.size and not np.issubdtype(grid.dtype, np.integer) and not (
            np.issubdtype(grid.dtype, np.floating) and np.all(np.isfinite(grid))
            and np.all(grid == np.round(grid))):
        raise ValueError('stitch: grid_rc must hold integer [row, col] cells')
    grid = grid.astype(np.int64)
    if vals.shape != (len(grid), ):
        raise ValueError(f'stitch: values must have shape ({len(grid)},) like grid_rc, got '
                         f'{vals.shape}')
    out_of = np.flatnonzero((grid[:, 0] < 0) | (grid[:, 0] >= rows) | (grid[:, 1] < 0)
                            | (grid[:, 1] >= cols))
    if out_of.size:
        k = out_of[0]
        raise ValueError(f'stitch: patch {k} at [row, col] = {grid[k].tolist()} lies outside '
                         f'the {rows}x{cols} grid')
    flat = grid[:, 0] * cols + grid[:, 1]
    uniq, counts = np.unique(flat, return_counts=True)
    if (counts > 1).any():
        cell = int(uniq[counts > 1][0])
        raise ValueError(f'stitch: {int(counts.max())} patches share the grid cell [row, col] '
                         f'= [{cell // cols}, {cell % cols}]; patches must not overlap')
    dtype = np.result_type(vals.dtype, np.min_scalar_type(fill))
    out = np.full((rows, cols), fill, dtype=dtype)
    out[grid[:, 0], grid[:, 1]] = vals
    return out


def upsample_grid(grid_map: np.ndarray, patch_size: int, height: int, width: int,
                  fill: int = 255) -> np.ndarray:
    """Pixel map (height, width): every grid cell becomes a ``patch_size`` square.

    The blown-up map (rows * patch_size, cols * patch_size) is cropped to height x width
    or padded at the bottom / right with ``fill`` (pixels no grid cell covers).
    """
    grid_map = np.asarray(grid_map)
    if grid_map.ndim != 2:
        raise ValueError(f'upsample_grid: grid_map must be 2-D (rows, cols), got '
                         f'{grid_map.shape}')
    for name, v, low in (('patch_size', patch_size, 1), ('height', height, 0),
                         ('width', width, 0)):
        if isinstance(v, bool) or int(v) != v or v < low:
            raise ValueError(f'upsample_grid: {name} must be an integer >= {low}, got {v!r}')
    p, height, width = int(patch_size), int(height), int(width)
    big = np.repeat(np.repeat(grid_map, p, axis=0), p, axis=1)[:height, :width]
    dtype = np.result_type(grid_map.dtype, np.min_scalar_type(fill))
    out = np.full((height, width), fill, dtype=dtype)
    out[:big.shape[0], :big.shape[1]] = big
    return out


# --------------------------------------------------------------------------- scores


def _ratio(num: np.ndarray, den: np.ndarray) -> Tuple[List[Optional[float]], float]:
    """Per-class num / den (None where den == 0) and their mean over den > 0."""
    valid = den > 0
    per = [float(n / d) if d > 0 else None for n, d in zip(num, den)]
    return per, float(np.mean(num[valid] / den[valid]))


def seg_scores(confusion: np.ndarray) -> Dict[str, Any]:
    """OP, PC and mIoU of Tokunaga et al. 2020, eq. (7), plus mAcc, from a confusion matrix.

    confusion: (C, C), rows = ground truth, columns = prediction (pixel or patch counts).
    With TP_c = confusion[c, c], FP_c = column sum - TP_c, FN_c = row sum - TP_c:

    * ``OP`` = sum_c TP_c / sum_c (TP_c + FP_c) (overall pixel accuracy);
    * ``PC`` = (1/M) sum_c TP_c / (TP_c + FP_c), exactly as printed in eq. (7), i.e. the
      mean per-class *precision*;
    * ``mAcc`` = (1/M) sum_c TP_c / (TP_c + FN_c), the mean per-class accuracy (recall) of
      Csurka et al. 2013, ref. [10] of the paper, whose "per-class" score uses FN; reported
      alongside because eq. (7)'s PC uses FP;
    * ``mIoU`` = (1/M) sum_c TP_c / (TP_c + FP_c + FN_c).

    M counts, for each mean separately, the classes whose denominator is > 0 (as mmseg's
    nan-mean): classes absent from both ground truth and prediction are left out of every
    mean; a class present in the ground truth but never predicted is left out of PC (its
    precision is undefined) and a class predicted but absent from the ground truth is left
    out of mAcc. Also returned: per-class lists ``iou``, ``precision``, ``recall`` (None
    where undefined) and ``support`` (ground-truth count per class, row sums).
    Raises ValueError for a non-square, negative or all-zero matrix.
    """
    conf = np.asarray(confusion)
    if conf.ndim != 2 or conf.shape[0] != conf.shape[1] or conf.shape[0] == 0:
        raise ValueError(f'seg_scores: confusion must be a square (C, C) matrix, got '
                         f'{conf.shape}')
    if not np.issubdtype(conf.dtype, np.number) or np.issubdtype(conf.dtype, np.complexfloating):
        raise ValueError(f'seg_scores: confusion must be numeric, got dtype {conf.dtype}')
    conf = conf.astype(np.float64)
    if not np.isfinite(conf).all() or (conf < 0).any():
        raise ValueError('seg_scores: confusion entries must be finite and >= 0')
    if conf.sum() == 0:
        raise ValueError('seg_scores: the confusion matrix is all zeros (nothing was scored)')
    tp = np.diag(conf)
    fp = conf.sum(axis=0) - tp
    fn = conf.sum(axis=1) - tp
    precision, pc = _ratio(tp, tp + fp)
    recall, macc = _ratio(tp, tp + fn)
    iou, miou = _ratio(tp, tp + fp + fn)
    support = conf.sum(axis=1)
    return dict(OP=float(tp.sum() / (tp + fp).sum()), PC=pc, mAcc=macc, mIoU=miou, iou=iou,
                precision=precision, recall=recall,
                support=[int(s) if s == int(s) else float(s) for s in support])


# --------------------------------------------------------------------------- pictures


def _colourise(label_map: np.ndarray, palette: np.ndarray,
               fill_rgb: Dict[int, tuple]) -> np.ndarray:
    """(H, W) class ids -> (H, W, 3) uint8; special ids get ``fill_rgb[id]``."""
    lut_size = max(len(palette), *(k + 1 for k in fill_rgb))
    lut = np.zeros((lut_size, 3), dtype=np.uint8)
    lut[:len(palette)] = palette
    for k, rgb in fill_rgb.items():
        lut[k] = rgb
    return lut[label_map]


def _legend(classes: Sequence[str], palette: np.ndarray, width: int, title: str) -> np.ndarray:
    """A white strip with ``title`` and one colour swatch + name per class (and for the
    'no patch' / 'no label' colours)."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    entries = [(str(n), tuple(int(v) for v in palette[i])) for i, n in enumerate(classes)]
    entries += [('no patch', _NO_PATCH_RGB), ('no label', _NO_LABEL_RGB)]
    line = 16
    text_w = max([int(font.getbbox(title)[2])]
                 + [22 + int(font.getbbox(n)[2]) for n, _ in entries]) + 8
    img = Image.new('RGB', (max(width, text_w), line * (len(entries) + 1) + 6), 'white')
    draw = ImageDraw.Draw(img)
    draw.text((4, 3), title, fill=(0, 0, 0), font=font)
    for i, (name, rgb) in enumerate(entries):
        y = line * (i + 1) + 3
        draw.rectangle((4, y, 16, y + 12), fill=rgb, outline=(0, 0, 0))
        draw.text((22, y), name, fill=(0, 0, 0), font=font)
    return np.asarray(img)


def _bag_picture(pred_px: np.ndarray, gt_px: np.ndarray, classes: Sequence[str],
                 palette: np.ndarray, title: str) -> np.ndarray:
    """[prediction | separator | ground truth] on top, legend below; (H, W, 3) uint8."""
    no_patch, no_label = len(palette), len(palette) + 1
    fills = {no_patch: _NO_PATCH_RGB, no_label: _NO_LABEL_RGB}
    h, w = pred_px.shape
    top = np.empty((h, 2 * w + _GAP, 3), dtype=np.uint8)
    top[:, :w] = _colourise(pred_px, palette, fills)
    top[:, w:w + _GAP] = _GAP_RGB
    top[:, w + _GAP:] = _colourise(gt_px, palette, fills)
    legend = _legend(classes, palette, top.shape[1], title)
    out = np.full((h + legend.shape[0], legend.shape[1], 3), 255, dtype=np.uint8)
    out[:h, :top.shape[1]] = top
    out[h:] = legend
    return out


# --------------------------------------------------------------------------- metric


@register(METRICS)
class PatchSegMetric(BaseMetric):
    """Segmentation scores of patch classifications stitched into bag maps.

    Tokunaga et al. 2020, Sect. 5.3, eq. (7): returns ``OP``, ``PC`` (mean precision, as
    printed), ``mAcc`` (mean recall), ``mIoU`` (see :func:`seg_scores`) and ``patch_acc``
    (fraction of the labelled patches whose predicted class is their label).

    Each data sample (a dict, as MMEngine's Evaluator passes them) is one patch with
    ``bag_name``, ``grid`` (row, col), ``patch_size``, ``pred_label`` (class id),
    ``gt_label`` (class id; -1, ``ignore_index`` or absent = no ground truth), optional
    ``pixel_counts`` (C,) (ground-truth pixels of each class inside the patch, ignore
    pixels excluded) and optional ``bag_shape`` (height, width).

    Confusion (rows = ground truth, columns = prediction), over the patches with ground
    truth only (the others are still drawn):

    * pixel level when they carry ``pixel_counts``: confusion[c, pred] += pixel_counts[c],
      which is exactly the stitched prediction map compared pixel by pixel with the region
      mask, restricted to the pixels of the evaluated patches (mask pixels outside every
      evaluated patch, e.g. patches dropped for too little tissue, have no prediction and
      are not counted);
    * patch level otherwise: confusion[gt, pred] += 1.

    Mixing the two (some labelled patches with ``pixel_counts``, some without) raises a
    ValueError, as does a split without any labelled patch.

    ``out_dir``: one PNG per bag, ``<bag_name>.png`` (characters other than letters,
    digits, ``.``, ``-``, ``_`` replaced by ``_``): the stitched prediction (left, pixel
    (r, c) of the image = pixel (r, c) of the bag) and the patch labels (right, after an
    8-px separator), colours from ``dataset_meta['palette']`` or the data sets' own
    (:func:`projects.common.datasets._palette`), white = no patch, grey = no label, legend
    below. Bags larger than 4096 px are drawn with fewer pixels per patch.

    After :meth:`compute_metrics`, ``last_confusion`` holds the (C, C) int64 confusion that
    was scored (on the rank that computed the metrics).
    """

    default_prefix: Optional[str] = None

    def __init__(self, classes: Optional[Sequence[str]] = None, ignore_index: int = 255,
                 out_dir: Optional[str] = None, prefix: Optional[str] = None,
                 collect_device: str = 'cpu') -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        if classes is not None:
            if isinstance(classes, str) or len(classes) == 0:
                raise ValueError(f'PatchSegMetric: classes must be a non-empty sequence of '
                                 f'names, got {classes!r}')
            classes = tuple(str(c) for c in classes)
        if isinstance(ignore_index, bool) or int(ignore_index) != ignore_index:
            raise ValueError(f'PatchSegMetric: ignore_index must be an integer, got '
                             f'{ignore_index!r}')
        if out_dir is not None and (not isinstance(out_dir, str) or not out_dir):
            raise ValueError(f'PatchSegMetric: out_dir must be a folder path, got {out_dir!r}')
        self.classes = classes
        self.ignore_index = int(ignore_index)
        self.out_dir = out_dir
        self.last_confusion: Optional[np.ndarray] = None

    def _classes(self) -> Tuple[str, ...]:
        """``classes`` if given, else ``dataset_meta['classes']``; ValueError if neither."""
        if self.classes is not None:
            return self.classes
        classes = (self.dataset_meta or {}).get('classes')
        if not classes:
            raise ValueError('PatchSegMetric needs the class names: pass classes=[...] or '
                             'evaluate a dataset whose metainfo has "classes"')
        return tuple(str(c) for c in classes)

    def _palette(self, num_classes: int) -> np.ndarray:
        palette = (self.dataset_meta or {}).get('palette')
        if palette is None or len(palette) == 0:
            return np.array(class_palette(num_classes), dtype=np.uint8)
        arr = np.asarray(palette)
        if (arr.ndim != 2 or arr.shape[1] != 3 or len(arr) < num_classes
                or not np.issubdtype(arr.dtype, np.number) or (arr < 0).any()
                or (arr > 255).any()):
            raise ValueError(f'PatchSegMetric: dataset_meta["palette"] must hold at least '
                             f'{num_classes} RGB triples in 0..255, got shape {arr.shape}')
        return arr[:num_classes].astype(np.uint8)

    def _read(self, sample: Any, index: int, num_classes: int) -> dict:
        """One patch as plain Python / numpy values, checked."""
        name = _field(sample, 'bag_name')
        if not isinstance(name, str) or not name:
            raise ValueError(f'data sample {index}: "bag_name" must be a non-empty string, '
                             f'got {name!r}')
        missing = [k for k in ('grid', 'patch_size', 'pred_label')
                   if _field(sample, k) is None]
        if missing:
            raise ValueError(f'bag {name!r}, data sample {index}: missing '
                             f'{", ".join(repr(k) for k in missing)} (the dataset must set '
                             'grid and patch_size; the model pred_label)')
        grid = _numpy(_field(sample, 'grid')).reshape(-1)
        if grid.size != 2 or not np.all(np.isfinite(grid)) or not np.all(grid == np.round(grid)) \
                or (grid < 0).any():
            raise ValueError(f'bag {name!r}, data sample {index}: "grid" must be (row, col), '
                             f'two integers >= 0, got {_field(sample, "grid")!r}')
        row, col = int(grid[0]), int(grid[1])
        what = f'bag {name!r} patch (row {row}, col {col})'
        p = int_scalar(_field(sample, 'patch_size'), f'{what}: patch_size')
        if p < 1:
            raise ValueError(f'{what}: patch_size must be >= 1, got {p}')
        pred = int_scalar(_field(sample, 'pred_label'), f'{what}: pred_label')
        if not 0 <= pred < num_classes:
            raise ValueError(f'{what}: pred_label {pred} is not a class id in '
                             f'[0, {num_classes})')
        gt = -1
        if _field(sample, 'gt_label') is not None:
            gt = int_scalar(_field(sample, 'gt_label'), f'{what}: gt_label')
            if gt == self.ignore_index:
                gt = -1
            elif not -1 <= gt < num_classes:
                raise ValueError(f'{what}: gt_label {gt} is neither a class id in '
                                 f'[0, {num_classes}) nor -1 / ignore_index '
                                 f'{self.ignore_index} (no ground truth)')
        counts = None
        if _field(sample, 'pixel_counts') is not None:
            counts = _numpy(_field(sample, 'pixel_counts'))
            if counts.shape != (num_classes, ) or not np.issubdtype(counts.dtype, np.number) \
                    or not np.all(np.isfinite(counts)) or (counts < 0).any() \
                    or not np.all(counts == np.round(counts)):
                raise ValueError(f'{what}: pixel_counts must be {num_classes} integers >= 0 '
                                 f'(one per class), got {counts!r}')
            counts = counts.astype(np.int64)
            if counts.sum() > p * p:
                raise ValueError(f'{what}: pixel_counts sum to {int(counts.sum())}, more '
                                 f'than the {p}x{p} = {p * p} pixels of the patch')
        shape = None
        if _field(sample, 'bag_shape') is not None:
            arr = _numpy(_field(sample, 'bag_shape')).reshape(-1)
            if arr.size != 2 or not np.all(np.isfinite(arr)) or (arr < 1).any() \
                    or not np.all(arr == np.round(arr)):
                raise ValueError(f'{what}: bag_shape must be (height, width), two integers '
                                 f'>= 1, got {_field(sample, "bag_shape")!r}')
            shape = (int(arr[0]), int(arr[1]))
            if (row + 1) * p > shape[0] or (col + 1) * p > shape[1]:
                raise ValueError(f'{what}: the {p}x{p} patch at pixel (y={row * p}, '
                                 f'x={col * p}) reaches outside the bag of height '
                                 f'{shape[0]}, width {shape[1]}')
        return dict(bag=name, rc=(row, col), p=p, pred=pred, gt=gt, counts=counts, shape=shape)

    def process(self, data_batch: Any, data_samples: Sequence[Any]) -> None:
        """Store each patch's bag, grid cell, labels and pixel counts (checked)."""
        num_classes = len(self._classes())
        if 0 <= self.ignore_index < num_classes:
            raise ValueError(f'PatchSegMetric: ignore_index {self.ignore_index} is a class id '
                             f'(there are {num_classes} classes); use a value outside '
                             f'[0, {num_classes}), e.g. 255')
        for k, sample in enumerate(data_samples):
            self.results.append(self._read(sample, k, num_classes))

    @staticmethod
    def _bags(results: Sequence[dict]) -> Dict[str, dict]:
        """Per bag: patch size, pixel shape, grid (rows, cols) and its patches; checks that
        the patches agree on patch_size / bag_shape and do not share a grid cell."""
        bags: Dict[str, dict] = {}
        for r in results:
            bag = bags.setdefault(r['bag'], dict(p=r['p'], shape=r['shape'], items=[]))
            if r['p'] != bag['p']:
                raise ValueError(f'bag {r["bag"]!r}: patches with patch_size {bag["p"]} and '
                                 f'{r["p"]}; one bag has one patch size')
            if r['shape'] is not None and bag['shape'] is not None \
                    and r['shape'] != bag['shape']:
                raise ValueError(f'bag {r["bag"]!r}: patches give bag_shape {bag["shape"]} '
                                 f'and {r["shape"]}')
            bag['shape'] = bag['shape'] or r['shape']
            bag['items'].append(r)
        for name, bag in bags.items():
            rc = np.array([r['rc'] for r in bag['items']], dtype=np.int64)
            p = bag['p']
            if bag['shape'] is None:
                bag['shape'] = (int(rc[:, 0].max() + 1) * p, int(rc[:, 1].max() + 1) * p)
            h, w = bag['shape']
            bag['grid'] = (math.ceil(h / p), math.ceil(w / p))
            bag['rc'] = rc
            try:  # duplicate / outside cells
                stitch(rc, np.zeros(len(rc), np.int64), bag['grid'])
            except ValueError as err:
                raise ValueError(f'bag {name!r}: {err}') from None
        return bags

    def _write_pictures(self, bags: Dict[str, dict], classes: Sequence[str]) -> None:
        palette = self._palette(len(classes))
        no_patch, no_label = len(classes), len(classes) + 1
        files: Dict[str, str] = {}
        for name, bag in bags.items():
            fname = re.sub(r'[^\w.-]', '_', name) + '.png'
            if fname in files:
                raise ValueError(f'PatchSegMetric: bags {files[fname]!r} and {name!r} would '
                                 f'both be written to {osp.join(self.out_dir, fname)}')
            files[fname] = name
            p, (h, w) = bag['p'], bag['shape']
            s = p if max(h, w) <= _MAX_SIDE else max(1, (p * _MAX_SIDE) // max(h, w))
            hs, ws = math.ceil(h * s / p), math.ceil(w * s / p)
            preds = np.array([r['pred'] for r in bag['items']], np.int64)
            gts = np.array([r['gt'] if r['gt'] >= 0 else no_label for r in bag['items']],
                           np.int64)
            pred_px = upsample_grid(stitch(bag['rc'], preds, bag['grid'], no_patch), s, hs,
                                    ws, no_patch)
            gt_px = upsample_grid(stitch(bag['rc'], gts, bag['grid'], no_patch), s, hs, ws,
                                  no_patch)
            title = f'{name}: prediction (left) | ground-truth patch labels (right)'
            write_image(osp.join(self.out_dir, fname),
                        _bag_picture(pred_px, gt_px, classes, palette, title))

    def compute_metrics(self, results: list) -> Dict[str, float]:
        """Build the confusion (pixel or patch level), score it with :func:`seg_scores`,
        log a per-class table and write the pictures; see the class docstring."""
        classes = self._classes()
        num_classes = len(classes)
        bags = self._bags(results)
        labelled = [r for r in results if r['gt'] >= 0]
        if not labelled:
            raise ValueError(
                f'PatchSegMetric: none of the {len(results)} evaluated patches ({len(bags)} '
                f'bags) has a ground-truth label (gt_label is -1 or ignore_index '
                f'{self.ignore_index} everywhere): the evaluation split has no labelled '
                'patches. Evaluate on a split of labelled bags (with region masks).')
        with_counts = [r['counts'] is not None for r in labelled]
        if any(with_counts) and not all(with_counts):
            bad = labelled[with_counts.index(False)]
            raise ValueError(
                f'PatchSegMetric: {sum(with_counts)} of the {len(labelled)} labelled patches '
                f'carry pixel_counts and the others do not (e.g. bag {bad["bag"]!r} patch '
                f'(row {bad["rc"][0]}, col {bad["rc"][1]})); pixel and patch counts cannot '
                'be pooled in one confusion matrix')
        level = 'pixel' if all(with_counts) else 'patch'
        confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
        gt = np.array([r['gt'] for r in labelled], np.int64)
        pred = np.array([r['pred'] for r in labelled], np.int64)
        if level == 'pixel':
            counts = np.stack([r['counts'] for r in labelled])  # (N, C)
            for c in range(num_classes):
                confusion[:, c] = counts[pred == c].sum(axis=0)
            if confusion.sum() == 0:
                raise ValueError(f'PatchSegMetric: the pixel_counts of all {len(labelled)} '
                                 'labelled patches are zero: no ground-truth pixel to score')
        else:
            np.add.at(confusion, (gt, pred), 1)
        self.last_confusion = confusion
        scores = seg_scores(confusion)
        metrics = {k: float(scores[k]) for k in ('OP', 'PC', 'mAcc', 'mIoU')}
        metrics['patch_acc'] = float(np.mean(gt == pred))

        def fmt(v: Optional[float]) -> str:
            return 'n/a' if v is None else f'{v:.4f}'

        unit = 'pixels' if level == 'pixel' else 'patches'
        rows = [('class', 'IoU', 'precision', 'recall', f'support ({unit})')]
        rows += [(n, fmt(i), fmt(pr), fmt(rc), str(s)) for n, i, pr, rc, s in zip(
            classes, scores['iou'], scores['precision'], scores['recall'], scores['support'])]
        print_log(
            f'Patch segmentation over {len(bags)} bags, {len(results)} patches '
            f'({len(labelled)} labelled), {level}-level confusion (Tokunaga et al. 2020, '
            'eq. 7; PC = mean precision, mAcc = mean recall):\n' + _format_table(rows)
            + '\n' + ', '.join(f'{k} {v:.4f}' for k, v in metrics.items()), logger='current')
        if self.out_dir is not None:
            self._write_pictures(bags, classes)
        return metrics
