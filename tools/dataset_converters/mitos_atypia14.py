"""Convert the MITOS-ATYPIA-14 training set (mitosis key points) to MMHisto's COCO layout.

Protocol of Zhao et al. 2021 (PU learning for cell detection, sect. 3.1): key points ->
32 x 32 boxes, frames cropped into 500 x 500 patches with 100 px overlap, frames split
about 4:1:1 into train / validation / test with a fixed validation set and 5 folds,
one annotation per patch kept on train and validation, test intact.

Example::

    python tools/dataset_converters/mitos_atypia14.py --root mitos_atypia_2014_training \\
        --out data/mitos_atypia14 --box-size 32 --patch-size 500 --overlap 100 --seed 0

Input (the public training layout)::

    <root>/<slide>/frames/x40/<slide>_<frame>.tiff            RGB uint8 frame (.tif too)
    <root>/<slide>/mitosis/<slide>_<frame>_mitosis.csv        "x,y[,confidence]" per line
    <root>/<slide>/mitosis/<slide>_<frame>_not_mitosis.csv    same format, no header

Output (docs/data_layout.md, detection layout)::

    images/<frame>_x<x0>_y<y0>.png            RGB patches (all splits)
    annotations/val.json                      val patches, one annotation per patch
    annotations/train_fold{k}.json            patches of the other folds, one per patch
    annotations/test_fold{k}.json             patches of fold k, every annotation
    annotations/group_{val,fold<k>}.json      every annotation of each frame group
                                              (written by LayoutWriter, see below)
    frames/<frame>.png                        whole RGB frames (whole-image evaluation)
    annotations/frames.json                   per frame: size, group, all points, ...
    annotations/frames_val.json               whole-frame COCO, val (one per patch)
    annotations/frames_test_fold{k}.json      whole-frame COCO, fold k (intact)

Every patch image entry of the patch COCO files (``val``, ``train_fold{k}``,
``test_fold{k}``, ``group_*``) carries ``"parent": "<frame>.png"`` (the frame's
``file_name`` in ``frames_*.json``) and ``"offset": [x0, y0]`` (the patch's top-left
pixel in the frame): ``WholeImageDetectionMetric`` maps patch predictions back with them.

Choices:

- **Coordinates.** A CSV ``x, y`` is a pixel index (column, row); the key point is that
  pixel's centre ``(x + 0.5, y + 0.5)`` in MMHisto's continuous coordinates (fractional
  values are snapped to their pixel, ``floor``). A point must satisfy ``0 <= x < W`` and
  ``0 <= y < H``, else ValueError naming the CSV. Several mitoses in the same pixel are
  merged into one (counted in the summary, warning naming the CSV).
- **Confidence.** The optional third column; missing means 1.0. Every mitosis is kept by
  default; ``--min-confidence c`` keeps those with confidence ``>= c`` (filtered ones are
  counted).
- **not_mitosis points** are not mitoses: the paper uses mitoses only as positives. The
  files are parsed and checked like the mitosis files (bad lines and points outside the
  frame are errors), then only counted in the summary; they never become annotations and
  never mark a region as background or ignore.
- **No CSV / empty CSV**: a frame without a mitosis file, or with an empty one, has no
  mitosis (its patches are kept, with no annotation).
- **Boxes.** ``box_size`` x ``box_size`` centred on the key point, not clipped to the
  patch (LayoutWriter's rule: the point stays the box centre; mmdet clips where needed).
  COCO ``area`` = box_size ** 2.
- **Patches** from :func:`projects.common.tiling.tile_grid` (stride patch - overlap, last
  patch shifted to end at the border, one patch of the frame extent on an axis shorter
  than the patch). A point belongs to every patch whose pixel range holds its pixel
  (``x0 <= x < x1``): points in overlaps appear in each patch containing them.
- **Split by frame** (never by patch). Frame names sorted, permuted with
  ``numpy.random.default_rng(seed).permutation``; the first ``max(1, round(n / 6))`` are
  the fixed validation set; the remaining frames, in permutation order, go to fold
  ``i % folds`` (i = position among them). Fold k's frames are the test set of fold k and
  the other folds form its train set (4:1:1 with 5 folds). At least ``folds`` non-val
  frames are needed. Frames of one slide can fall in different splits (the brief's rule:
  by frame).
- **One annotation per patch** (train and val): :func:`projects.common.sparsify.one_per_patch`
  on the whole frame with the same patch grid, seeded by ``image_seed(seed, frame)``, so a
  mitosis is either kept in every patch showing it or deleted in all of them, and a frame's
  kept set is the same in every fold. The test files keep every annotation.
- **LayoutWriter** writes patches and annotations through a 1-pixel instance map per patch
  (the key point's pixel), so its geometry gives exactly the pixel-centre point and the
  centred box. Its splits are the frame groups ``group_val`` / ``group_fold<k>`` (a patch
  name is written once); the segmentation folders it also writes (``img_dir``,
  ``ann_dir``, ``inst_dir``, ``points`` under ``group_*``) hold these 1-pixel maps: key
  points, not mitosis masks. The train / val / test files above are derived from the
  groups' COCO dicts.
"""
import argparse
import copy
import glob
import math
import os.path as osp
import sys
import warnings
from typing import Dict, List, Sequence, Tuple

import numpy as np

from projects.common.io import read_coco, read_image, write_image, write_json
from projects.common.layout import LayoutWriter, check_box_size, track
from projects.common.sparsify import image_seed, one_per_patch
from projects.common.tiling import tile_grid

CLASSES = ('mitosis', )
SOURCE = 'MITOS-ATYPIA-14 training set (https://mitos-atypia-14.grand-challenge.org/)'


def read_keypoint_csv(path: str, shape: Tuple[int, int]) -> Tuple[np.ndarray, np.ndarray]:
    """Points (N, 2) float64 pixel centres and confidences (N,) of one MITOS-ATYPIA CSV.

    Lines ``x,y[,confidence]`` (no header; blank lines skipped). ValueError naming ``path``
    for a malformed line or a point outside the ``shape`` (H, W) frame.
    """
    h, w = shape
    pts, conf = [], []
    with open(path) as f:
        for lineno, line in enumerate(f, start=1):
            row = line.strip()
            if not row:
                continue
            vals = [v.strip() for v in row.split(',')]
            try:
                if len(vals) not in (2, 3):
                    raise ValueError(f'{len(vals)} fields')
                nums = [float(v) for v in vals]
                if not all(math.isfinite(v) for v in nums):
                    raise ValueError('non-finite value')
            except ValueError as err:
                raise ValueError(f'{path}: line {lineno} "{row}" is not "x,y[,confidence]" '
                                 f'({err})') from err
            x, y = nums[0], nums[1]
            if not (0 <= x < w and 0 <= y < h):
                raise ValueError(f'{path}: line {lineno}: point (x={x:g}, y={y:g}) lies '
                                 f'outside the {w}x{h} frame (pixel indices 0 <= x < {w}, '
                                 f'0 <= y < {h})')
            pts.append((math.floor(x) + 0.5, math.floor(y) + 0.5))
            conf.append(nums[2] if len(nums) == 3 else 1.0)
    return np.asarray(pts, np.float64).reshape(-1, 2), np.asarray(conf, np.float64)


def read_frame(path: str) -> np.ndarray:
    """RGB uint8 (H, W, 3) frame; ValueError naming ``path`` if unreadable or not 8-bit."""
    img = read_image(path, channels=3)
    if img.dtype != np.uint8:
        raise ValueError(f'{path}: expected an 8-bit RGB frame, got {img.dtype}')
    return img


def find_frames(root: str) -> List[dict]:
    """Frames of ``root`` sorted by name: ``name``, ``image`` path, ``mitosis`` and
    ``not_mitosis`` CSV paths (None when absent)."""
    if not osp.isdir(root):
        raise FileNotFoundError(f'{root}: MITOS-ATYPIA-14 root folder not found')
    frames = []
    for slide_dir in sorted(glob.glob(osp.join(root, '*', ''))):
        paths = glob.glob(osp.join(slide_dir, 'frames', 'x40', '*.tif*'))
        for path in sorted(p for p in paths if p.lower().endswith(('.tif', '.tiff'))):
            name = osp.splitext(osp.basename(path))[0]
            csvs = {}
            for kind in ('mitosis', 'not_mitosis'):
                c = osp.join(slide_dir, 'mitosis', f'{name}_{kind}.csv')
                csvs[kind] = c if osp.isfile(c) else None
            frames.append(dict(name=name, image=path, **csvs))
    if not frames:
        raise FileNotFoundError(f'{root}: no frame <slide>/frames/x40/*.tiff found')
    names = [f['name'] for f in frames]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f'{root}: frame name(s) {dup} found in several slide folders')
    return sorted(frames, key=lambda f: f['name'])


def split_frames(names: Sequence[str], folds: int = 5, seed: int = 0) -> Dict[str, list]:
    """Seeded frame split (module docstring): ``val`` and ``fold0`` .. ``fold<folds-1>``,
    each sorted."""
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 1:
        raise ValueError(f'--folds must be an int >= 1, got {folds!r}')
    names = sorted(names)
    n = len(names)
    n_val = max(1, int(math.floor(n / 6 + 0.5)))
    if n - n_val < folds:
        raise ValueError(f'{n} frames: {n_val} go to val and {n - n_val} remain for '
                         f'{folds} folds (need at least one test frame per fold)')
    perm = np.random.default_rng(seed).permutation(n)
    groups = {'val': sorted(names[i] for i in perm[:n_val])}
    rest = perm[n_val:]
    for k in range(folds):
        groups[f'fold{k}'] = sorted(names[i] for i in rest[k::folds])
    return groups


def _coco_subset(cocos: Sequence[dict], keep: Dict[str, List[bool]], description: str) -> dict:
    """Merge COCO dicts (renumbering ids); ``keep[file_name]`` (or None: keep all) selects
    each image's annotations in file order."""
    out = dict(info=dict(description=description, source=SOURCE), images=[],
               annotations=[], categories=copy.deepcopy(cocos[0]['categories']))
    for coco in cocos:
        by_img: Dict[int, list] = {im['id']: [] for im in coco['images']}
        for ann in coco['annotations']:
            by_img[ann['image_id']].append(ann)
        for im in coco['images']:
            new_im = dict(im, id=len(out['images']) + 1)
            out['images'].append(new_im)
            flags = keep.get(im['file_name']) if keep else None
            for j, ann in enumerate(by_img[im['id']]):
                if flags is None or flags[j]:
                    out['annotations'].append(dict(ann, id=len(out['annotations']) + 1,
                                                   image_id=new_im['id']))
    return out


def _frame_coco(frames: Sequence[dict], sparse: bool, box: float, description: str) -> dict:
    """Whole-frame COCO (images ``<frame>.png`` under ``frames/``)."""
    out = dict(info=dict(description=description, source=SOURCE), images=[], annotations=[],
               categories=[dict(id=1, name=CLASSES[0])])
    for fr in frames:
        out['images'].append(dict(id=len(out['images']) + 1, file_name=fr['name'] + '.png',
                                  height=fr['height'], width=fr['width']))
        idx = fr['kept'] if sparse else range(len(fr['points']))
        for i in idx:
            x, y = fr['points'][i]
            out['annotations'].append(dict(
                id=len(out['annotations']) + 1, image_id=out['images'][-1]['id'],
                category_id=1, bbox=[x - box / 2, y - box / 2, box, box], area=box * box,
                iscrowd=0, point=[x, y]))
    return out


def convert(root: str, out: str, box_size: float = 32, patch_size: int = 500,
            overlap: int = 100, seed: int = 0, folds: int = 5, min_confidence: float = 0.0,
            progress: bool = True) -> dict:
    """Convert ``root`` into ``out``; return ``groups`` (val / fold<k> -> frame names) and
    ``stats`` (counts for the summary)."""
    box = check_box_size(box_size)
    tile_grid(1, 1, patch_size, overlap)  # validates patch_size / overlap
    if not math.isfinite(min_confidence):
        raise ValueError(f'--min-confidence must be finite, got {min_confidence}')
    frames = find_frames(root)
    groups = split_frames([f['name'] for f in frames], folds, seed)
    group_of = {n: g for g, names in groups.items() for n in names}
    writer = LayoutWriter(out, CLASSES, 'MITOS-ATYPIA-14 frame group {split} (all mitoses)',
                          source=SOURCE, box_size=box,
                          splits=[f'group_{g}' for g in groups])
    stats = dict(frames=len(frames), patches=0, mitoses=0, low_confidence=0,
                 same_pixel=0, not_mitosis=0, frames_without_csv=0, kept_one_per_patch=0)
    keep: Dict[str, List[bool]] = {}
    origin: Dict[str, dict] = {}  # patch file name -> parent frame file name and offset
    records = []
    for fr in track(frames, progress):
        img = read_frame(fr['image'])
        h, w = img.shape[:2]
        pts, conf = np.zeros((0, 2)), np.zeros(0)
        if fr['mitosis'] is None:
            stats['frames_without_csv'] += 1
        else:
            pts, conf = read_keypoint_csv(fr['mitosis'], (h, w))
        if fr['not_mitosis'] is not None:
            stats['not_mitosis'] += len(read_keypoint_csv(fr['not_mitosis'], (h, w))[0])
        low = conf < min_confidence
        stats['low_confidence'] += int(low.sum())
        pts, conf = pts[~low], conf[~low]
        _, first = np.unique(pts, axis=0, return_index=True)
        if len(first) < len(pts):
            warnings.warn(f'{fr["mitosis"]}: {len(pts) - len(first)} mitoses share a pixel '
                          f'with an earlier one: merged')
            stats['same_pixel'] += len(pts) - len(first)
            first = np.sort(first)
            pts, conf = pts[first], conf[first]
        kept = one_per_patch(pts, (h, w), patch_size, overlap, image_seed(seed, fr['name']))
        kept_mask = np.zeros(len(pts), bool)
        kept_mask[kept] = True
        stats['mitoses'] += len(pts)
        stats['kept_one_per_patch'] += len(kept)
        write_image(osp.join(out, 'frames', fr['name'] + '.png'), img)
        cols, rows = np.floor(pts[:, 0]).astype(int), np.floor(pts[:, 1]).astype(int)
        patch_names = []
        for x0, y0, x1, y1 in tile_grid(h, w, patch_size, overlap).tolist():
            inside = np.flatnonzero((cols >= x0) & (cols < x1) & (rows >= y0) & (rows < y1))
            inst = np.zeros((y1 - y0, x1 - x0), np.int32)
            inst[rows[inside] - y0, cols[inside] - x0] = np.arange(1, len(inside) + 1)
            name = f'{fr["name"]}_x{x0}_y{y0}'
            writer.add(f'group_{group_of[fr["name"]]}', name,
                       np.ascontiguousarray(img[y0:y1, x0:x1]), (inst > 0).astype(np.uint8),
                       inst, labels=0)
            keep[name + '.png'] = kept_mask[inside].tolist()
            origin[name + '.png'] = dict(parent=fr['name'] + '.png', offset=[x0, y0])
            patch_names.append(name + '.png')
        stats['patches'] += len(patch_names)
        records.append(dict(name=fr['name'], file_name=fr['name'] + '.png',
                            source=osp.relpath(fr['image'], root), width=w, height=h,
                            group=group_of[fr['name']], points=pts.tolist(),
                            confidence=conf.tolist(), kept=kept.tolist(),
                            patches=patch_names))
    writer.close()
    ann_dir = osp.join(out, 'annotations')
    cocos = {}
    for g in groups:  # every patch entry names its frame (for whole-image evaluation)
        path = osp.join(ann_dir, f'group_{g}.json')
        cocos[g] = read_coco(path)
        for im in cocos[g]['images']:
            im.update(origin[im['file_name']])
        write_json(path, cocos[g])
    fold_names = [g for g in groups if g != 'val']
    write_json(osp.join(ann_dir, 'val.json'), _coco_subset(
        [cocos['val']], keep, 'MITOS-ATYPIA-14 val patches, one annotation per patch'))
    by_group = {g: [r for r in records if r['group'] == g] for g in groups}
    write_json(osp.join(ann_dir, 'frames_val.json'), _frame_coco(
        by_group['val'], True, box, 'MITOS-ATYPIA-14 val frames, one annotation per patch'))
    for k, g in enumerate(fold_names):
        train = [cocos[o] for o in fold_names if o != g]
        write_json(osp.join(ann_dir, f'train_fold{k}.json'), _coco_subset(
            train, keep, f'MITOS-ATYPIA-14 fold {k} train patches, one annotation per patch'))
        write_json(osp.join(ann_dir, f'test_fold{k}.json'), _coco_subset(
            [cocos[g]], {}, f'MITOS-ATYPIA-14 fold {k} test patches, all annotations'))
        write_json(osp.join(ann_dir, f'frames_test_fold{k}.json'), _frame_coco(
            by_group[g], False, box, f'MITOS-ATYPIA-14 fold {k} test frames, all annotations'))
    params = dict(box_size=box, patch_size=patch_size, overlap=overlap, seed=seed,
                  folds=folds, min_confidence=min_confidence)
    write_json(osp.join(ann_dir, 'frames.json'),
               dict(info=dict(description='MITOS-ATYPIA-14 frames: all mitosis key points '
                              '(continuous pixel coordinates), kept = one-per-patch subset '
                              'used for train/val', source=SOURCE),
                    params=params, groups=groups, frames=records))
    return dict(groups=groups, stats=stats)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Convert the MITOS-ATYPIA-14 training set (<root>/<slide>/frames/x40/'
        '*.tiff + <root>/<slide>/mitosis/*_mitosis.csv) into patches in the COCO detection '
        'layout with the PU-detection protocol: fixed val set + k folds split by frame, one '
        'annotation per patch on train/val, test intact (see the module docstring).')
    parser.add_argument('--root', required=True, help='folder holding one folder per slide')
    parser.add_argument('--out', required=True, help='output dataset root')
    parser.add_argument('--box-size', type=float, default=32,
                        help='side of the square box centred on each key point (default 32)')
    parser.add_argument('--patch-size', type=int, default=500, help='patch side (default 500)')
    parser.add_argument('--overlap', type=int, default=100,
                        help='overlap of adjacent patches in px (default 100)')
    parser.add_argument('--seed', type=int, default=0,
                        help='seed of the frame split and of the deletion (default 0)')
    parser.add_argument('--folds', type=int, default=5, help='number of folds (default 5)')
    parser.add_argument('--min-confidence', type=float, default=0.0,
                        help='keep mitoses with confidence >= this (default 0: all)')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    print(f'[mitos_atypia14] converting {args.root} -> {args.out}')
    res = convert(args.root, args.out, args.box_size, args.patch_size, args.overlap,
                  args.seed, args.folds, args.min_confidence)
    st = res['stats']
    sizes = ', '.join(f'{g} {len(n)}' for g, n in res['groups'].items())
    print(f'[mitos_atypia14] {st["frames"]} frames ({sizes}), {st["patches"]} patches')
    print(f'[mitos_atypia14] {st["mitoses"]} mitoses kept ({st["kept_one_per_patch"]} after '
          f'one-per-patch deletion, used for train/val), {st["low_confidence"]} below '
          f'--min-confidence, {st["same_pixel"]} merged (same pixel); '
          f'{st["frames_without_csv"]} frames without mitosis CSV; {st["not_mitosis"]} '
          f'not-mitosis points (counted only)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
