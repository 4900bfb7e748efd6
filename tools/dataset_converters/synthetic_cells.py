"""Seeded synthetic cell crops with known classes for the cell GAN (Hu et al. 2018).

Example (about 2,700 train crops, all four classes, < 1 minute on one core)::

    python tools/dataset_converters/synthetic_cells.py --out data/synthetic_cells

Tiles come from :func:`projects.common.synthetic.generate_tile` (tile ``i`` of a split:
seed ``tile_seed(seed, split, i)``), ``--size`` x ``--size`` px at ``--scale`` 2.5. The
cells are extracted with the *same* pipeline as real images,
:func:`projects.cell_gan.extraction.extract_cells` (Reinhard, Macenko, threshold 120,
objects >= 200 px, opening 7, 32 x 32 crops), never from the ground-truth masks.

- **Scale**: at scale 1 a lymphocyte has a radius of 3.4-4.7 px (area ~50 px), far below
  the paper's 200 px minimum. At scale 2.5 its area is 230-430 px (tumour nuclei
  1,000-3,000 px, larger than 32 px and rescaled), so every class survives ``min_size``
  200 unchanged.
- **Reinhard target**: the l-alpha-beta mean / std of train tile 0 (written to the
  metainfo ``target_stats``), used for every split.
- **Mitoses**: ``--mitosis-rate`` 0.05 (the generator's default is 0.015) so that the rare
  class has a few dozen training crops.
- **Crop label** (``gt_label``): the ground-truth class (``NUCLEUS_CLASSES``: tumour,
  lymphocyte, stromal, mitosis) covering most pixels of the extracted nucleus; -1 when
  ground-truth background covers at least half of it. ``label_fraction`` = share of the
  nucleus covered by that class; ``num_gt`` = ground-truth nuclei it overlaps (> 1:
  merged nuclei).
- **Image label** (``images[].gt_label``): 1 ("tumour-rich") when tumour + mitotic nuclei
  are more than half of the tile's ground-truth nuclei, else 0 (with seed 0 and the
  defaults 55% of the train tiles are 1).

Output (``--mode both``, the default; ``seg`` / ``bbox`` write one of the two)::

    <out>/<split>/images/<split>_<i>.png      the tiles
    <out>/<split>/crops/*.png, cells.json     'seg' crops (paper's w/ Seg)
    <out>/<split>/crops_bbox/*.png, cells_bbox.json   'bbox' crops (w/o Seg baseline)
    <out>/summary.json                        options and class counts per split

``--num-val`` / ``--num-test`` 0 skip those splits (train needs at least one tile).
"""
import argparse
import os.path as osp
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
from projects.cell_gan.dataset import save_crops, write_cell_json  # noqa: E402
from projects.cell_gan.extraction import CROP_MODES, extract_cells  # noqa: E402
from projects.common import io  # noqa: E402
from projects.common.io import write_image, write_json  # noqa: E402
from projects.common.layout import track  # noqa: E402
from projects.common.stain import lab_stats  # noqa: E402
from projects.common.synthetic import (MITOSIS, NUCLEUS_CLASSES, SPLITS,  # noqa: E402
                                       TUMOUR, SyntheticOptions, generate_tile,
                                       tile_name, tile_seed)

SPACE = 'lalphabeta'
#: mode -> (crop folder, annotation file) inside a split folder
OUTPUTS = {'seg': ('crops', 'cells.json'), 'bbox': ('crops_bbox', 'cells_bbox.json')}


def crop_labels(inst_map: np.ndarray, info: Sequence[dict], gt_inst: np.ndarray,
                gt_labels: np.ndarray) -> Tuple[List[int], List[dict]]:
    """Class of each extracted nucleus from the ground truth (see the module docstring).

    Returns the labels (-1 = mostly background) and per-crop extras ``label_fraction``,
    ``num_gt``.
    """
    n_cls = len(NUCLEUS_CLASSES)
    gt_cls = np.zeros(gt_inst.shape, np.int64)  # 0 background, 1 + class
    fg = gt_inst > 0
    gt_cls[fg] = np.asarray(gt_labels, np.int64)[gt_inst[fg] - 1] + 1
    labels, extra = [], []
    for d in info:
        x1, y1, x2, y2 = d['bbox']
        mask = inst_map[y1:y2, x1:x2] == d['inst_id']
        counts = np.bincount(gt_cls[y1:y2, x1:x2][mask], minlength=n_cls + 1)
        total = int(mask.sum())
        ids = np.unique(gt_inst[y1:y2, x1:x2][mask])
        if 2 * counts[0] >= total:
            labels.append(-1)
            frac = counts[0] / total
        else:
            c = int(np.argmax(counts[1:]))
            labels.append(c)
            frac = counts[c + 1] / total
        extra.append(dict(label_fraction=round(float(frac), 4), num_gt=int((ids > 0).sum())))
    return labels, extra


def image_label(gt_labels: np.ndarray) -> int:
    """1 when tumour + mitotic nuclei are more than half of the tile's nuclei, else 0."""
    counts = np.bincount(np.asarray(gt_labels, np.int64), minlength=len(NUCLEUS_CLASSES))
    return int(2 * (counts[TUMOUR] + counts[MITOSIS]) > counts.sum())


def prepare_out_dir(out: str, overwrite: bool) -> None:
    """Refuse a non-empty ``out`` unless ``overwrite`` (then only our outputs are removed)."""
    io.prepare_out_dir(out, SPLITS + ('summary.json', ), overwrite,
                       'the synthetic cell data set')


def generate(out: str, num_train: int = 40, num_val: int = 8, num_test: int = 16,
             seed: int = 0, size: int = 512, scale: float = 2.5, mitosis_rate: float = 0.05,
             mode: str = 'both', threshold: float = 120, min_size: int = 200,
             opening: int = 7, crop_size: int = 32, overwrite: bool = False,
             progress: bool = True) -> dict:
    """Write the data set (see the module docstring); return the summary."""
    counts = dict(train=num_train, val=num_val, test=num_test)
    for split, n in counts.items():
        low = 1 if split == 'train' else 0
        if isinstance(n, bool) or not isinstance(n, int) or n < low:
            raise ValueError(f'--num-{split}: expected an int >= {low}, got {n!r}')
    if mode not in CROP_MODES + ('both', ):
        raise ValueError(f'--mode: expected seg, bbox or both, got {mode!r}')
    if isinstance(size, bool) or not isinstance(size, int) or size < crop_size:
        raise ValueError(f'--size: expected an int >= the crop size {crop_size}, got {size!r}')
    options = dict(scale=scale, mitosis_rate=mitosis_rate)
    SyntheticOptions.parse(options)
    modes = CROP_MODES if mode == 'both' else (mode, )
    prepare_out_dir(out, overwrite)
    ref = generate_tile(tile_seed(seed, 'train', 0), (size, size), **options)
    target = lab_stats(ref['image'], SPACE)
    meta = dict(threshold=threshold, min_size=min_size, opening=opening,
                target_stats=[list(map(float, s)) for s in target], color_space=SPACE,
                target_tile=tile_name('train', 0, num_train), seed=seed, scale=scale,
                mitosis_rate=mitosis_rate, image_classes=['other', 'tumour-rich'])
    summary = dict(meta, size=size, crop_size=crop_size, classes=list(NUCLEUS_CLASSES),
                   modes=list(modes), splits={})
    tasks = [(split, i) for split in SPLITS for i in range(counts[split])]
    per_split: Dict[str, dict] = {s: dict(images=[], data={m: [] for m in modes})
                                  for s in SPLITS}
    for split, i in track(tasks, progress):
        name = tile_name(split, i, counts[split])
        tile = ref if (split, i) == ('train', 0) else generate_tile(
            tile_seed(seed, split, i), (size, size), **options)
        split_dir = osp.join(out, split)
        try:
            res = extract_cells(tile['image'], target, threshold, min_size, opening,
                                crop_size, modes, space=SPACE)
        except ValueError as err:
            raise ValueError(f'{name} (seed {tile_seed(seed, split, i)}): {err}') from err
        labels, extra = crop_labels(res['inst_map'], res['info'], tile['inst_map'],
                                    tile['labels'])
        write_image(osp.join(split_dir, 'images', f'{name}.png'), tile['image'])
        for m in modes:
            per_split[split]['data'][m] += save_crops(split_dir, OUTPUTS[m][0], name,
                                                      res['crops'][m], res['info'], labels,
                                                      extra)
        per_split[split]['images'].append(dict(
            image_id=name, img_path=f'images/{name}.png', gt_label=image_label(tile['labels']),
            num_cells=len(labels), num_gt=int(len(tile['labels'])),
            gt_class_counts=np.bincount(tile['labels'],
                                        minlength=len(NUCLEUS_CLASSES)).tolist()))
    for split in SPLITS:
        images = per_split[split]['images']
        if not images:  # --num-val / --num-test 0: the split is not written
            continue
        for m in modes:
            data = per_split[split]['data'][m]
            if not data:
                raise ValueError(f'{out}: no nucleus was extracted from the {split} tiles; '
                                 f'raise --size or --num-{split}')
            write_cell_json(osp.join(out, split, OUTPUTS[m][1]), NUCLEUS_CLASSES, crop_size, m,
                            data, images, meta)
        data = per_split[split]['data'][modes[0]]
        lab = np.array([d['gt_label'] for d in data], np.int64)
        summary['splits'][split] = dict(
            tiles=len(images), crops=len(data), unknown=int((lab < 0).sum()),
            class_crops={c: int((lab == k).sum()) for k, c in enumerate(NUCLEUS_CLASSES)},
            image_labels={'0': sum(img['gt_label'] == 0 for img in images),
                          '1': sum(img['gt_label'] == 1 for img in images)})
    write_json(osp.join(out, 'summary.json'), summary)
    return summary


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description='Generate seeded synthetic H&E tiles and extract their nuclei as 32x32 '
        'cell crops with the cell-GAN segmentation pipeline; each crop is labelled with the '
        f'ground-truth class covering it ({", ".join(NUCLEUS_CLASSES)}; -1 = background), '
        'each tile with an image-level label (1 = tumour-rich).')
    p.add_argument('--out', required=True, help='output folder')
    p.add_argument('--num-train', type=int, default=40, help='train tiles (default 40)')
    p.add_argument('--num-val', type=int, default=8, help='val tiles (default 8)')
    p.add_argument('--num-test', type=int, default=16, help='test tiles (default 16)')
    p.add_argument('--seed', type=int, default=0, help='data set seed (default 0)')
    p.add_argument('--size', type=int, default=512, help='tile side in px (default 512)')
    p.add_argument('--scale', type=float, default=2.5,
                   help='nucleus size multiplier of generate_tile (default 2.5: every class '
                   'above the 200 px minimum)')
    p.add_argument('--mitosis-rate', type=float, default=0.05,
                   help='fraction of tumour-region tumour nuclei drawn as mitoses '
                   '(default 0.05)')
    p.add_argument('--mode', choices=CROP_MODES + ('both', ), default='both',
                   help="crops to write: 'seg', 'bbox' or 'both' (default)")
    p.add_argument('--threshold', type=float, default=120,
                   help='hematoxylin intensity threshold (default 120)')
    p.add_argument('--min-size', type=int, default=200, help='smallest nucleus px (default 200)')
    p.add_argument('--opening', type=int, default=7, help='opening square side (default 7)')
    p.add_argument('--overwrite', action='store_true',
                   help='replace an existing data set in --out (train/, val/, test/ and '
                   'summary.json are deleted first)')
    p.add_argument('--no-progress', action='store_true', help='no progress bar')
    args = p.parse_args(argv)
    if args.seed < 0:
        p.error('--seed must be >= 0')
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    print(f'[synthetic_cells] {args.num_train}/{args.num_val}/{args.num_test} tiles of '
          f'{args.size}x{args.size} px (seed {args.seed}, scale {args.scale}), mode '
          f'{args.mode} -> {args.out}')
    t0 = time.time()
    try:
        summary = generate(args.out, args.num_train, args.num_val, args.num_test, args.seed,
                           args.size, args.scale, args.mitosis_rate, args.mode,
                           args.threshold, args.min_size, args.opening,
                           overwrite=args.overwrite, progress=not args.no_progress)
    except (ValueError, FileNotFoundError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    print(f'{"split":<6} {"tiles":>5} {"crops":>6} {"unknown":>7}  ' +
          ' '.join(f'{c:>10}' for c in NUCLEUS_CLASSES) + '  image labels 0/1')
    for split, s in summary['splits'].items():
        print(f'{split:<6} {s["tiles"]:>5} {s["crops"]:>6} {s["unknown"]:>7}  ' +
              ' '.join(f'{s["class_crops"][c]:>10}' for c in NUCLEUS_CLASSES) +
              f'  {s["image_labels"]["0"]}/{s["image_labels"]["1"]}')
    print(f'[synthetic_cells] done in {time.time() - t0:.1f} s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
