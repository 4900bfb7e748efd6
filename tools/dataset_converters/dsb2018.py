"""Convert the 2018 Data Science Bowl nuclei data (DSB2018, Kaggle) to MMHisto's layouts.

Example::

    python tools/dataset_converters/dsb2018.py --root stage1_train --out data/dsb2018
    python tools/dataset_converters/dsb2018.py --root stage1_train --out data/dsb2018 \\
        --val-fraction 0.1 --test-fraction 0.1 --seed 0 --box-size 32
    python tools/dataset_converters/dsb2018.py --root stage1_test --out data/dsb2018 --unlabeled

Input (the public Kaggle ``stage1_train`` / ``stage1_test`` layout)::

    <root>/<image_id>/images/<image_id>.png   RGBA (alpha always opaque) or RGB / grey PNG
    <root>/<image_id>/masks/<mask_id>.png     one binary mask per nucleus (0 / 255)

Output (docs/data_layout.md)::

    images/<image_id>.png                     RGB uint8 (every split)
    annotations/{train,val,test}.json         COCO, one category 1 'nucleus' (label 0)
    img_dir/{train,val,test}/<image_id>.png   RGB uint8
    ann_dir/{train,val,test}/<image_id>.png   semantic uint8: 0 background, 1 nucleus
    inst_dir/{train,val,test}/<image_id>.png  uint16 instance map (id k = k-th mask file)
    points/{train,val,test}/<image_id>.csv    x,y,label (centroids, label 0)
    annotations/unlabeled.json, img_dir/unlabeled/<image_id>.png   unlabeled images

Choices:

- **Split.** The labelled images (``stage1_train``; Kaggle's stage1 test labels are not
  in this layout) are split three ways: ``val`` chooses checkpoints and thresholds,
  ``test`` is only reported on, so the reported numbers are never tuned on the images
  they are measured on. Image ids are sorted and permuted with
  ``numpy.random.default_rng(seed).permutation``; the first ``n_val =
  round(val_fraction * n)`` go to ``val``, the next ``n_test = round(test_fraction * n)``
  to ``test``, the rest to ``train`` (rounding half up; with the defaults 0.1 / 0.1 the
  670 images of stage1_train give 536 / 67 / 67). ``train`` always keeps one image; then
  ``val`` gets at least one when ``val_fraction > 0`` and ``test`` at least one when
  ``test_fraction > 0``, as far as images remain (two labelled images: train and val
  only). ``val`` is the same for any ``test_fraction``: the same ids and seed give the
  same split on any machine. A split that gets no image writes no file.
- **Unlabeled images.** An image folder without a ``masks`` folder (all of
  ``stage1_test``), or every image with ``--unlabeled`` (its masks are then ignored and
  their count printed), goes to the split ``unlabeled``: listed in
  ``annotations/unlabeled.json`` with no annotation and written to
  ``img_dir/unlabeled/``; no ``ann_dir`` / ``inst_dir`` / ``points`` file is written,
  because "no mask" means "not annotated", not "no nucleus". They are never mixed into
  ``train``, where a detector would learn them as background. Converting ``stage1_train``
  and ``stage1_test`` into the same ``--out`` composes (each writes only its splits).
  A ``masks`` folder with no PNG is an error (remove it to mean "unlabeled").
- **Image.** RGBA must be fully opaque (ValueError naming the file and the number of
  non-opaque pixels otherwise); alpha is dropped. Grey images become 3 equal channels;
  16-bit images are stretched to 8 bit with ``projects.common.io.to_uint8``.
- **Masks.** Read in file-name order; mask k (1-based) becomes instance id k. A mask must
  be single-channel, of the image's size, and binary: every non-zero pixel has the same
  value (0 / 255 in DSB2018; 0 / 1 and bool are accepted too). Anything else raises a
  ValueError naming the mask file.
- **Overlapping masks** (a few DSB2018 masks overlap by some pixels): the later mask in
  file-name order wins. Pixels covered by two or more masks are counted and reported per
  split; a mask whose pixels are all taken by later masks disappears and is reported
  (warning naming the file, and in the summary). Boxes, points and areas of both layouts
  come from this final instance map, so the two layouts agree exactly.
- **Empty masks** (all zero): a warning naming the file, counted in the summary, no
  instance - conversion goes on (one bad mask should not stop 670 images).
- **Geometry** from ``projects.common.instances.instance_geometry`` (called by
  ``projects.common.layout.LayoutWriter`` on the instance map it writes) in MMHisto's
  continuous pixel coordinates: the point is the centroid (mean column + 0.5, mean row +
  0.5), the box is tight ([first col, first row, n cols, n rows] in COCO xywh), or with
  ``--box-size N`` an N x N box centred on the centroid (not clipped to the image). COCO
  ``area`` is the pixel count (tight boxes) or N * N.
"""
import argparse
import os
import os.path as osp
import sys
import warnings
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from projects.common.io import read_image, read_rgb_uint8
from projects.common.layout import LayoutWriter, seeded_split, split_count, track

CLASSES = ('nucleus', )
LABELED_SPLITS = ('train', 'val', 'test')
UNLABELED_SPLIT = 'unlabeled'


def read_binary_mask(path: str, shape: Tuple[int, int], img_path: str) -> np.ndarray:
    """Boolean (H, W) mask of one nucleus; ValueError naming ``path`` if it is not a
    single-channel binary mask of the image's ``shape`` (H, W)."""
    arr = read_image(path, channels=None)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise ValueError(f'{path}: expected a single-channel mask, got shape {arr.shape}')
    if arr.shape != tuple(shape):
        raise ValueError(f'{path}: mask is {arr.shape[1]}x{arr.shape[0]} (WxH) but image '
                         f'{img_path} is {shape[1]}x{shape[0]}')
    if arr.dtype == bool:
        return arr
    values = np.unique(arr)
    if len(values[values != 0]) > 1:
        shown = values[:6].tolist()
        raise ValueError(f'{path}: mask is not binary: {len(values)} distinct values '
                         f'{shown}{"..." if len(values) > 6 else ""} (expected 0 and 255)')
    return arr != 0


def merge_masks(mask_paths: Sequence[str], shape: Tuple[int, int], img_path: str) -> dict:
    """Instance map from per-nucleus masks, later mask (in the given order) wins.

    Returns ``inst`` int32 (H, W) with id k = k-th mask (1-based; ids of empty or fully
    covered masks are absent), ``overlap_px`` (pixels covered by >= 2 masks), ``empty``
    and ``covered`` (paths of all-zero masks / masks left with no pixel).
    """
    if len(mask_paths) > 65535:
        raise ValueError(f'{img_path}: {len(mask_paths)} masks do not fit a uint16 instance '
                         f'map')
    inst = np.zeros(shape, np.int32)
    cover = np.zeros(shape, np.uint16)
    empty = []
    for k, path in enumerate(mask_paths, start=1):
        mask = read_binary_mask(path, shape, img_path)
        if not mask.any():
            warnings.warn(f'{path}: empty mask (no non-zero pixel): no instance, counted in '
                          f'the summary')
            empty.append(path)
            continue
        inst[mask] = k
        cover += mask
    present = np.zeros(len(mask_paths) + 1, bool)
    present[np.unique(inst)] = True
    covered, empty_set = [], set(empty)
    for k, path in enumerate(mask_paths, start=1):
        if not present[k] and path not in empty_set:
            warnings.warn(f'{path}: every pixel of this mask is covered by later masks '
                          f'(later mask wins): no instance left, counted in the summary')
            covered.append(path)
    return dict(inst=inst, overlap_px=int(np.count_nonzero(cover > 1)), empty=empty,
                covered=covered)


def convert_sample(img_path: str, mask_paths: Optional[Sequence[str]]) -> dict:
    """Convert one image and its masks (None = unlabeled).

    Returns ``image`` (RGB uint8) and, when labelled, ``inst``, ``sem`` (0/1 uint8),
    ``overlap_px``, ``empty``, ``covered`` (see :func:`merge_masks`). Points, boxes and
    areas are computed from ``inst`` by :class:`projects.common.layout.LayoutWriter`.
    """
    img = read_rgb_uint8(img_path)
    if mask_paths is None:
        return dict(image=img)
    res = merge_masks(mask_paths, img.shape[:2], img_path)
    inst = res['inst']
    res.update(image=img, sem=(inst > 0).astype(np.uint8))
    return res


def find_samples(root: str, unlabeled: bool = False) -> Tuple[List[tuple], dict]:
    """(image_id, image path, sorted mask paths or None) for every image folder of ``root``,
    sorted by id, and counts of what was ignored (non-folder entries, non-PNG files in
    masks folders, masks ignored because of ``unlabeled``)."""
    root = osp.abspath(root)
    if not osp.isdir(root):
        raise FileNotFoundError(f'{root}: DSB2018 root folder not found')
    ignored = dict(entries=0, mask_files=0, masks_unlabeled=0)
    samples = []
    for image_id in sorted(os.listdir(root)):
        folder = osp.join(root, image_id)
        if not osp.isdir(folder):
            ignored['entries'] += 1
            continue
        img_path = osp.join(folder, 'images', image_id + '.png')
        if not osp.isfile(img_path):
            raise FileNotFoundError(f'{img_path}: image of DSB2018 sample {folder} not found '
                                    f'(expected <root>/<id>/images/<id>.png)')
        mask_dir = osp.join(folder, 'masks')
        if not osp.isdir(mask_dir):
            samples.append((image_id, img_path, None))
            continue
        names = sorted(os.listdir(mask_dir))
        pngs = [n for n in names if n.lower().endswith('.png')]
        if unlabeled:
            ignored['masks_unlabeled'] += len(pngs)
            samples.append((image_id, img_path, None))
            continue
        ignored['mask_files'] += len(names) - len(pngs)
        if not pngs:
            raise FileNotFoundError(f'{mask_dir}: masks folder holds no PNG mask (remove the '
                                    f'folder to keep {image_id} as an unlabeled image)')
        samples.append((image_id, img_path, [osp.join(mask_dir, n) for n in pngs]))
    if not samples:
        raise FileNotFoundError(f'{root}: no DSB2018 image folder (<root>/<id>/images/<id>.png)')
    return samples, ignored


def split_ids(ids: Sequence[str], val_fraction: float = 0.1, seed: int = 0,
              test_fraction: float = 0.1) -> Dict[str, list]:
    """Seeded train / val / test split of image ids (see the module docstring): val is the
    first ``round(val_fraction * n)`` of the permutation, test the next
    ``round(test_fraction * n)``; each split sorted."""
    for name, f in (('--val-fraction', val_fraction), ('--test-fraction', test_fraction)):
        if not 0 <= f < 1:
            raise ValueError(f'{name} must be in [0, 1), got {f}')
    if val_fraction + test_fraction >= 1:
        raise ValueError(f'--val-fraction {val_fraction} + --test-fraction {test_fraction} '
                         f'must be below 1 (train needs images)')
    ids = sorted(ids)
    n = len(ids)
    n_val = min(split_count(val_fraction, n), max(n - 1, 0))  # train keeps one image
    n_test = min(split_count(test_fraction, n), max(n - 1 - n_val, 0))
    return seeded_split(ids, [('val', n_val), ('test', n_test)], seed)


def convert(root: str, out: str, val_fraction: float = 0.1, seed: int = 0,
            box_size: Optional[float] = None, unlabeled: bool = False,
            progress: bool = True, test_fraction: float = 0.1) -> dict:
    """Convert every image folder under ``root`` into ``out``.

    Returns ``splits`` (split -> list of image ids), ``stats`` (split -> counts: images,
    nuclei, overlap_px, images_with_overlap, empty_masks, covered_masks) and ``ignored``
    (see :func:`find_samples`).
    """
    writer = LayoutWriter(out, CLASSES, 'DSB2018 {split} split converted by MMHisto',
                          source='2018 Data Science Bowl (Kaggle), stage1 layout',
                          box_size=box_size)
    samples, ignored = find_samples(root, unlabeled)
    splits = split_ids([s[0] for s in samples if s[2] is not None], val_fraction, seed,
                       test_fraction)
    splits[UNLABELED_SPLIT] = [s[0] for s in samples if s[2] is None]
    split_of = {i: s for s, ids in splits.items() for i in ids}
    splits = {s: ids for s, ids in splits.items() if ids}
    stats = {s: dict(images=0, nuclei=0, overlap_px=0, images_with_overlap=0, empty_masks=0,
                     covered_masks=0) for s in splits}
    for image_id, img_path, mask_paths in track(samples, progress):
        split = split_of[image_id]
        res = convert_sample(img_path, mask_paths)
        if mask_paths is None:
            writer.add(split, image_id, res['image'])
            continue
        writer.add(split, image_id, res['image'], res['sem'], res['inst'], labels=0)
        st = stats[split]
        st['overlap_px'] += res['overlap_px']
        st['images_with_overlap'] += int(res['overlap_px'] > 0)
        st['empty_masks'] += len(res['empty'])
        st['covered_masks'] += len(res['covered'])
    for split, counts in writer.close().items():
        stats[split].update(images=counts['images'], nuclei=counts['instances'])
    return dict(splits=splits, stats=stats, ignored=ignored)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Convert the 2018 Data Science Bowl nuclei data (Kaggle stage1 layout '
        '<root>/<id>/images/<id>.png + <root>/<id>/masks/*.png) to the COCO detection '
        'layout and the mmseg segmentation layout (docs/data_layout.md). Labelled images '
        'are split train/val/test by a seeded permutation of the ids (val for model '
        'selection, test for reporting only); images without a masks '
        'folder go to the split "unlabeled" (no annotation files). Overlapping masks: the '
        'later mask in file-name order wins (overlap reported).')
    parser.add_argument('--root', required=True,
                        help='folder holding one sub-folder per image (e.g. stage1_train)')
    parser.add_argument('--out', required=True, help='output dataset root')
    parser.add_argument('--val-fraction', type=float, default=0.1,
                        help='fraction of the labelled images put in val (model '
                        'selection; default 0.1)')
    parser.add_argument('--test-fraction', type=float, default=0.1,
                        help='fraction of the labelled images put in test (reported on, '
                        'never used for selection; default 0.1; 0 writes no test split)')
    parser.add_argument('--seed', type=int, default=0,
                        help='seed of the train/val/test permutation (default 0)')
    parser.add_argument('--box-size', type=float, default=None, metavar='N',
                        help='N x N boxes centred on the centroid instead of tight boxes')
    parser.add_argument('--unlabeled', action='store_true',
                        help='treat every image as unlabeled (e.g. stage1_test); masks, if '
                        'any, are ignored and counted')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    print(f'[dsb2018] converting {args.root} -> {args.out}')
    res = convert(args.root, args.out, args.val_fraction, args.seed, args.box_size,
                  args.unlabeled, test_fraction=args.test_fraction)
    for split, st in res['stats'].items():
        if split == UNLABELED_SPLIT:
            print(f'[dsb2018] {split}: {st["images"]} images (no annotation files)')
            continue
        print(f'[dsb2018] {split}: {st["images"]} images, {st["nuclei"]} nuclei; '
              f'{st["overlap_px"]} pixels covered by >= 2 masks in '
              f'{st["images_with_overlap"]} images (later mask wins); '
              f'{st["empty_masks"]} empty masks, {st["covered_masks"]} masks fully covered '
              f'(no instance)')
    ign = res['ignored']
    if any(ign.values()):
        print(f'[dsb2018] ignored: {ign["entries"]} non-folder entries in --root, '
              f'{ign["mask_files"]} non-PNG files in masks folders, '
              f'{ign["masks_unlabeled"]} masks (--unlabeled)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
