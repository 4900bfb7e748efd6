"""Cut every nucleus of a folder of H&E images into a 32 x 32 crop (Hu et al. 2018, cell GAN).

For each image: Reinhard normalisation (optional), Macenko deconvolution, threshold of the
hematoxylin intensity, small-object removal, opening, connected components
(:func:`projects.cell_gan.extraction.segment_nuclei`), then one crop per nucleus
(:func:`projects.cell_gan.extraction.cell_crops`, cut from the normalised image). Writes,
atomically::

    OUT/crops/<image_id>_<inst_id>.png   one RGB crop per nucleus
    OUT/cells.json                       CellCropDataset annotation file

``image_id`` is the image file name without extension (must be unique); every crop keeps
it, with its box, centroid and area in the source image. Crop labels are unknown (-1);
image-level labels come from ``--labels`` (CSV ``image_name,label``; ``image_name`` is
the file name with or without extension; images not listed get -1). Example::

    python tools/extract_cells.py data/bone_marrow/*.png --out data/bm_cells \\
        --target data/bone_marrow/ref.png --mode seg --labels data/bone_marrow/labels.csv

``--target-stats paper`` uses the paper's l-alpha-beta target (mean 8.98, 0.08, 0.02; std
0.64, 0.11, 0.03). A bad image (missing, corrupt, no stain to estimate) stops the run
with an error naming the file (exit code 1).
"""
import argparse
import glob
import os
import os.path as osp
import shutil
import sys
import time
from typing import Dict, List, Optional, Sequence

import numpy as np

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
from projects.cell_gan.dataset import save_crops, write_cell_json  # noqa: E402
from projects.cell_gan.extraction import (CROP_MODES, PAPER_TARGET_STATS,  # noqa: E402
                                          extract_cells, normalize_stats)
from projects.common.io import read_rgb_uint8  # noqa: E402
from projects.common.layout import track  # noqa: E402
from projects.common.stain import lab_stats  # noqa: E402

IMAGE_EXTS = ('.png', '.jpg', '.jpeg', '.tif', '.tiff', '.bmp')
SPACE = 'lalphabeta'


def list_images(source: str) -> List[str]:
    """Image files of a folder (by extension, sorted) or of a glob pattern (sorted)."""
    if osp.isdir(source):
        paths = sorted(osp.join(source, f) for f in os.listdir(source)
                       if f.lower().endswith(IMAGE_EXTS) and not f.startswith('.'))
        if not paths:
            raise FileNotFoundError(f'{source}: no image file ({", ".join(IMAGE_EXTS)}) in '
                                    f'this folder')
        return paths
    paths = sorted(p for p in glob.glob(source) if osp.isfile(p))
    if not paths:
        raise FileNotFoundError(f'{source}: no such folder, and no file matches this pattern')
    return paths


def image_ids(paths: Sequence[str]) -> List[str]:
    """File stems; ValueError naming both files if two images share one."""
    seen: Dict[str, str] = {}
    for p in paths:
        stem = osp.splitext(osp.basename(p))[0]
        if stem in seen:
            raise ValueError(f'{p}: image id {stem!r} (file name without extension) is also '
                             f'the id of {seen[stem]}; rename one of them')
        seen[stem] = p
    return list(seen)


def read_labels(path: str, ids: Sequence[str], paths: Sequence[str]) -> Dict[str, int]:
    """Image-level labels of a CSV ``image_name,label`` (optional header) -> {image_id:
    label}; an unknown image name or a non-integer label raises ValueError naming the
    CSV and the line."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'{path}: label CSV file not found')
    by_name = {}
    for iid, p in zip(ids, paths):
        by_name[iid] = iid
        by_name[osp.basename(p)] = iid
    labels: Dict[str, int] = {}
    with open(path) as f:
        lines = [ln.strip() for ln in f]
    for n, line in enumerate(lines, start=1):
        if not line:
            continue
        cols = [c.strip() for c in line.split(',')]
        if n == 1 and cols[:2] == ['image_name', 'label']:
            continue
        if len(cols) != 2:
            raise ValueError(f'{path}: line {n} "{line}" is not "image_name,label"')
        try:
            label = int(cols[1])
        except ValueError as err:
            raise ValueError(f'{path}: line {n}: label {cols[1]!r} is not an integer') from err
        if label < -1:
            raise ValueError(f'{path}: line {n}: label {label} must be >= -1 (-1 = unknown)')
        if cols[0] not in by_name:
            raise ValueError(f'{path}: line {n}: image {cols[0]!r} is not among the '
                             f'{len(ids)} input images')
        iid = by_name[cols[0]]
        if iid in labels:
            raise ValueError(f'{path}: line {n}: image {cols[0]!r} is labelled twice')
        labels[iid] = label
    return labels


def parse_target_stats(text: str):
    """``'paper'`` or six numbers ``l_mean,a_mean,b_mean,l_std,a_std,b_std``."""
    if text.strip().lower() == 'paper':
        return normalize_stats(PAPER_TARGET_STATS, '--target-stats')
    try:
        vals = [float(v) for v in text.split(',')]
    except ValueError as err:
        raise ValueError(f'--target-stats: expected 6 comma-separated numbers or "paper", '
                         f'got {text!r}') from err
    if len(vals) != 6:
        raise ValueError(f'--target-stats: expected 6 comma-separated numbers (3 means, 3 '
                         f'stds), got {len(vals)}')
    return normalize_stats((vals[:3], vals[3:]), '--target-stats')


def target_stats_from_args(target: Optional[str], target_stats: Optional[str]):
    """Reinhard target statistics from ``--target`` (an image) or ``--target-stats``;
    None (no normalisation) when neither is given."""
    if target is not None:
        return lab_stats(read_rgb_uint8(target), SPACE)
    if target_stats is not None:
        return parse_target_stats(target_stats)
    return None


def prepare_out(out: str, overwrite: bool) -> None:
    """Refuse to mix with an earlier run unless ``overwrite`` (which removes OUT/crops and
    OUT/cells.json only)."""
    crops, ann = osp.join(out, 'crops'), osp.join(out, 'cells.json')
    if osp.exists(out) and not osp.isdir(out):
        raise ValueError(f'{out}: output path exists and is not a folder')
    if (osp.isdir(crops) and os.listdir(crops)) or osp.exists(ann):
        if not overwrite:
            raise ValueError(f'{out}: holds an earlier extraction (crops/ or cells.json); '
                             f'pass --overwrite to replace it or choose another --out')
        if osp.isdir(crops):
            shutil.rmtree(crops)
        if osp.exists(ann):
            os.remove(ann)
    os.makedirs(out, exist_ok=True)


def run(args: argparse.Namespace) -> dict:
    paths = list_images(args.images)
    ids = image_ids(paths)
    labels = read_labels(args.labels, ids, paths) if args.labels else {}
    stats = target_stats_from_args(args.target, args.target_stats)
    prepare_out(args.out, args.overwrite)
    print(f'[extract_cells] {len(paths)} images -> {args.out} (mode {args.mode}, threshold '
          f'{args.threshold}, min size {args.min_size}, opening {args.opening}, crop '
          f'{args.size}, Reinhard target '
          f'{"none" if stats is None else np.round(np.concatenate(stats), 3).tolist()})')
    data_list, images = [], []
    for iid, path in track(list(zip(ids, paths)), not args.no_progress):
        rgb = read_rgb_uint8(path)
        try:
            res = extract_cells(rgb, stats, args.threshold, args.min_size, args.opening,
                                args.size, args.mode, space=SPACE)
        except ValueError as err:
            raise ValueError(f'{path}: {err}') from err
        data_list += save_crops(args.out, 'crops', iid, res['crops'][args.mode], res['info'])
        src = osp.abspath(path)
        rel = osp.relpath(src, osp.abspath(args.out))
        images.append(dict(image_id=iid, img_path=src if rel.startswith('..') else rel,
                           gt_label=int(labels.get(iid, -1)), num_cells=len(res['info'])))
    if not data_list:
        raise ValueError(f'{args.images}: no nucleus found in any of the {len(paths)} images '
                         f'(threshold {args.threshold}, min size {args.min_size}); nothing '
                         f'written')
    meta = dict(threshold=args.threshold, min_size=args.min_size, opening=args.opening,
                target_stats=None if stats is None else [list(map(float, s)) for s in stats],
                color_space=SPACE)
    write_cell_json(osp.join(args.out, 'cells.json'), [], args.size, args.mode, data_list,
                    images, meta)
    return dict(images=len(images), crops=len(data_list))


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description='Segment nuclei (Reinhard + Macenko + threshold + opening, Hu et al. '
        '2018) in every image and write one crop per nucleus plus cells.json '
        '(CellCropDataset).')
    p.add_argument('images', help='folder of images, or a glob pattern (quote it)')
    p.add_argument('--out', required=True, help='output folder (crops/ and cells.json)')
    p.add_argument('--mode', choices=CROP_MODES, default='seg',
                   help="'seg': masked nucleus centred on white (paper's w/ Seg); 'bbox': "
                   "minimum bounding box resized (w/o Seg). Default seg")
    tgt = p.add_mutually_exclusive_group()
    tgt.add_argument('--target', help='Reinhard target image (its l-alpha-beta mean / std)')
    tgt.add_argument('--target-stats',
                     help='Reinhard target "l_mean,a_mean,b_mean,l_std,a_std,b_std" '
                     '(l-alpha-beta) or "paper"; default: no normalisation')
    p.add_argument('--threshold', type=float, default=120,
                   help='nucleus = hematoxylin intensity < this (0-255, default 120)')
    p.add_argument('--min-size', type=int, default=200,
                   help='smallest nucleus in pixels (default 200)')
    p.add_argument('--opening', type=int, default=7,
                   help='side of the square of the opening, odd (default 7)')
    p.add_argument('--size', type=int, default=32, help='crop side (default 32)')
    p.add_argument('--labels', help='CSV "image_name,label" of image-level labels')
    p.add_argument('--overwrite', action='store_true',
                   help='replace OUT/crops and OUT/cells.json of an earlier run')
    p.add_argument('--no-progress', action='store_true', help='no progress bar')
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    t0 = time.time()
    try:
        summary = run(args)
    except (ValueError, FileNotFoundError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    print(f'[extract_cells] {summary["crops"]} crops from {summary["images"]} images in '
          f'{time.time() - t0:.1f} s -> {osp.join(args.out, "cells.json")}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
