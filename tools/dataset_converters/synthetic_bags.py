"""Generate a seeded synthetic bag data set for negative pseudo labelling (class proportions).

Example::

    python tools/dataset_converters/synthetic_bags.py --out data/synthetic_bags \\
        --num-labelled 40 --num-weak 200 --num-val 10 --num-test 20 --size 384 \\
        --patch-size 32 --seed 0 --jobs 2

Each slide is a synthetic H&E tile (``projects.common.synthetic.generate_tile``); the
classes are its tissue regions ``tumour, stroma, lymphocytic, necrosis`` (REGION_CLASSES
without ``background``) and the region mask is ``region_map - 1`` with background -> 255
(ignore): like the paper (Tokunaga et al. 2020, sect. 5.1), only tissue-region patches
are used. Slides and seeds::

    lab_###   labelled train bags     generate_tile(tile_seed(seed, 'train', i))
    weak_###  proportion-only bags    generate_tile(tile_seed(seed, 'train', 1000000 + i))
    val_###   labelled val bags       generate_tile(tile_seed(seed, 'val', i))
    test_###  labelled test bags      generate_tile(tile_seed(seed, 'test', i))

Proportion-only bags keep the grid patches whose tissue fraction (region != background,
a perfect tissue proposal, where the paper uses a multi-field-of-view CNN) is >=
``--min-tissue``; their ratio is the region areas over all tissue pixels of the slide
(the same definition as for labelled bags) and nothing else about them is written to
``train.json``. ``weak_truth.json`` ({bag name: majority label of each of its patches, in
``train.json`` order}) is for diagnostics only and is never read by training. Slides with
no qualifying patch are skipped (their index is not reused) and counted.

Output (``projects/negative_pseudo_labels/README.md``): ``images/<name>.png``,
``masks/<name>.png`` (labelled bags), ``train.json`` (labelled + proportion-only bags),
``val.json``, ``test.json``, ``weak_truth.json``, ``summary.json``. The output does not
depend on ``--jobs``.
"""
import argparse
import os.path as osp
import sys
import time
from typing import List, Optional, Sequence, Tuple

import numpy as np

from projects.common.io import write_image, write_json
from projects.common.synthetic import REGION_CLASSES, SyntheticOptions, generate_tile, tile_seed
from projects.negative_pseudo_labels.bags import (NoPatchError, patch_grid, prepare_out_dir,
                                                  tissue_grid, write_bag_json)

CLASSES = tuple(REGION_CLASSES[1:])
IGNORE = 255
#: tile_seed index offset of the proportion-only slides (they share the 'train' stream
#: with the labelled slides, so the two sets must not overlap).
WEAK_INDEX_OFFSET = 1_000_000
#: kind -> (name prefix, tile_seed split, index offset, split file, labelled)
KINDS = {
    'lab': ('lab', 'train', 0, 'train', True),
    'weak': ('weak', 'train', WEAK_INDEX_OFFSET, 'train', False),
    'val': ('val', 'val', 0, 'val', True),
    'test': ('test', 'test', 0, 'test', True),
}


def bag_name(kind: str, index: int, count: int) -> str:
    """``<prefix>_<index>`` with at least 3 digits (more when ``count`` needs them)."""
    return f'{KINDS[kind][0]}_{index:0{max(3, len(str(max(count - 1, 0))))}d}'


def region_mask(region: np.ndarray) -> np.ndarray:
    """Region map (REGION_CLASSES indices) -> class mask: region - 1, background -> 255."""
    return np.where(region == 0, IGNORE, region.astype(np.int64) - 1).astype(np.uint8)


def make_bag(task: tuple) -> Tuple[str, Optional[dict], Optional[list]]:
    """Generate, grid and write one slide (a picklable task for the worker pool).

    Returns (kind, bag dict or None if no patch qualifies, weak-truth labels or None).
    """
    out, kind, index, count, seed, size, patch_size, min_tissue, options = task
    _, split, offset, _, labelled = KINDS[kind]
    name = bag_name(kind, index, count)
    tile = generate_tile(tile_seed(seed, split, offset + index), (size, size), **options)
    mask = region_mask(tile['region_map'])
    try:
        grid = patch_grid(mask, patch_size, len(CLASSES), IGNORE, min_tissue, source=name)
        if not labelled:
            patches = tissue_grid(tile['region_map'] != 0, patch_size, min_tissue, source=name)
    except NoPatchError:
        return kind, None, None
    img_path = f'images/{name}.png'
    write_image(osp.join(out, img_path), tile['image'])
    bag = dict(name=name, img_path=img_path, labelled=labelled, height=size, width=size,
               ratio=grid['ratio'].tolist())
    if labelled:
        mask_path = f'masks/{name}.png'
        write_image(osp.join(out, mask_path), mask)
        bag.update(mask_path=mask_path, patches=grid['patches'].tolist(),
                   labels=grid['labels'].tolist(), pixel_counts=grid['pixel_counts'].tolist())
        return kind, bag, None
    if not np.array_equal(patches, grid['patches']):  # same criterion on the same pixels
        raise RuntimeError(f'{name}: tissue_grid and patch_grid disagree')
    bag.update(mask_path=None, patches=patches.tolist(), labels=None, pixel_counts=None)
    return kind, bag, grid['labels'].tolist()


def _init_worker() -> None:
    """One BLAS / OpenMP thread per worker process (the pool supplies the parallelism)."""
    from threadpoolctl import threadpool_limits
    threadpool_limits(1)


def run_tasks(tasks: List[tuple], jobs: int, progress: bool) -> list:
    """Results of :func:`make_bag` in task order (with ``jobs`` worker processes)."""
    bar = None
    if progress and tasks:
        from mmengine.utils import ProgressBar
        bar = ProgressBar(len(tasks))
    results = []
    if jobs == 1:
        for task in tasks:
            results.append(make_bag(task))
            if bar is not None:
                bar.update()
    else:
        import multiprocessing
        with multiprocessing.Pool(min(jobs, len(tasks)), _init_worker) as pool:
            for res in pool.imap(make_bag, tasks):  # imap keeps the task order
                results.append(res)
                if bar is not None:
                    bar.update()
    if bar is not None:
        sys.stdout.write('\n')
    return results


def generate(out: str, num_labelled: int, num_weak: int, num_val: int, num_test: int,
             size: int = 384, patch_size: int = 32, seed: int = 0, min_tissue: float = 0.5,
             jobs: int = 1, overwrite: bool = False, progress: bool = True,
             **options) -> dict:
    """Write the bag data set to ``out`` (see the module docstring); return the summary."""
    counts = dict(lab=num_labelled, weak=num_weak, val=num_val, test=num_test)
    for kind, n in counts.items():
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f'--num-{dict(lab="labelled").get(kind, kind)}: expected a '
                             f'non-negative int, got {n!r}')
    if num_labelled >= WEAK_INDEX_OFFSET:
        raise ValueError(f'--num-labelled must be < {WEAK_INDEX_OFFSET}')
    if num_labelled + num_weak < 1 or num_val < 1 or num_test < 1:
        raise ValueError('need at least one train bag (--num-labelled + --num-weak), one '
                         'val bag and one test bag (every split file must hold a bag)')
    if size < patch_size:
        raise ValueError(f'--size {size} is smaller than --patch-size {patch_size}')
    SyntheticOptions.parse(options)
    prepare_out_dir(out, overwrite)
    tasks = [(out, kind, i, n, seed, size, patch_size, min_tissue, options)
             for kind, n in counts.items() for i in range(n)]
    results = run_tasks(tasks, jobs, progress)
    split_bags = {s: [] for s in ('train', 'val', 'test')}
    weak_truth, skipped = {}, {k: 0 for k in KINDS}
    for kind, bag, truth in results:
        if bag is None:
            skipped[kind] += 1
            continue
        split_bags[KINDS[kind][3]].append(bag)
        if truth is not None:
            weak_truth[bag['name']] = truth
    for split, bags in split_bags.items():
        if not bags:
            raise ValueError(f'{out}: every {split} slide was skipped (no patch with a tissue '
                             f'fraction >= {min_tissue}); lower --min-tissue or --patch-size')
        write_bag_json(osp.join(out, f'{split}.json'), CLASSES, patch_size, bags, IGNORE,
                       min_tissue)
    write_json(osp.join(out, 'weak_truth.json'), weak_truth)

    def class_counts(label_lists) -> dict:
        c = np.zeros(len(CLASSES), np.int64)
        for labels in label_lists:
            c += np.bincount(np.asarray(labels, np.int64), minlength=len(CLASSES))
        return {name: int(v) for name, v in zip(CLASSES, c)}

    summary = dict(seed=seed, size=size, patch_size=patch_size,
                   min_tissue=min_tissue, classes=list(CLASSES), ignore_index=IGNORE,
                   options={k: (np.asarray(v).tolist() if isinstance(v, np.ndarray) else v)
                            for k, v in options.items()},
                   skipped={KINDS[k][0]: v for k, v in skipped.items()}, splits={})
    for split, bags in split_bags.items():
        lab = [b for b in bags if b['labelled']]
        weak = [b for b in bags if not b['labelled']]
        summary['splits'][split] = dict(
            bags=len(bags), labelled_bags=len(lab), weak_bags=len(weak),
            patches=sum(len(b['patches']) for b in bags),
            labelled_patches=sum(len(b['patches']) for b in lab),
            weak_patches=sum(len(b['patches']) for b in weak),
            class_patches=class_counts(b['labels'] for b in lab))
        if weak:
            summary['splits'][split]['weak_class_patches_truth'] = class_counts(
                weak_truth[b['name']] for b in weak)
    write_json(osp.join(out, 'summary.json'), summary)
    return summary


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description='Generate seeded synthetic bags (slides cut into a patch grid) with class '
        'proportions for negative pseudo labelling: labelled train / val / test slides with '
        'region masks and proportion-only train slides (ratio only). Classes: '
        f'{", ".join(CLASSES)}; background is ignored.')
    p.add_argument('--out', required=True, help='output folder (bag data root)')
    p.add_argument('--num-labelled', type=int, default=40,
                   help='fully annotated train slides lab_### (default 40)')
    p.add_argument('--num-weak', type=int, default=200,
                   help='proportion-only train slides weak_### (default 200)')
    p.add_argument('--num-val', type=int, default=10, help='labelled val slides (default 10)')
    p.add_argument('--num-test', type=int, default=20, help='labelled test slides (default 20)')
    p.add_argument('--size', type=int, default=384, help='slide side in px (default 384)')
    p.add_argument('--patch-size', type=int, default=32, help='patch side in px (default 32)')
    p.add_argument('--min-tissue', type=float, default=0.5,
                   help='keep a patch when this fraction of it is tissue (default 0.5)')
    p.add_argument('--seed', type=int, default=0, help='data set seed (default 0)')
    p.add_argument('--stain-jitter', type=float, default=None,
                   help='per-slide stain variation of generate_tile (default 1)')
    p.add_argument('--scale', type=float, default=None,
                   help='nucleus / texture size multiplier of generate_tile (default 1)')
    p.add_argument('--jobs', type=int, default=1, help='worker processes (default 1)')
    p.add_argument('--overwrite', action='store_true',
                   help='replace an existing bag data set in --out (its images/, masks/ and '
                   'json files are deleted first)')
    p.add_argument('--no-progress', action='store_true', help='no progress bar')
    args = p.parse_args(argv)
    if args.jobs < 1:
        p.error('--jobs must be >= 1')
    if args.patch_size < 1:
        p.error('--patch-size must be >= 1')
    if args.seed < 0:
        p.error('--seed must be >= 0')
    if not 0 < args.min_tissue <= 1:
        p.error('--min-tissue must lie in (0, 1]')
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    options = {k: v for k, v in (('stain_jitter', args.stain_jitter), ('scale', args.scale))
               if v is not None}
    total = args.num_labelled + args.num_weak + args.num_val + args.num_test
    print(f'[synthetic_bags] {total} slides of {args.size}x{args.size} px (seed {args.seed}), '
          f'{args.patch_size}-px patches, {args.jobs} job(s) -> {args.out}')
    t0 = time.time()
    try:
        summary = generate(args.out, args.num_labelled, args.num_weak, args.num_val,
                           args.num_test, args.size, args.patch_size, args.seed,
                           args.min_tissue, args.jobs, args.overwrite,
                           not args.no_progress, **options)
    except (ValueError, FileNotFoundError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    print(f'{"split":<6} {"bags":>5} {"lab":>4} {"weak":>5} {"patches":>8} {"lab.p":>6} '
          f'{"weak.p":>7}  ' + ' '.join(f'{c:>11}' for c in CLASSES))
    for split, s in summary['splits'].items():
        print(f'{split:<6} {s["bags"]:>5} {s["labelled_bags"]:>4} {s["weak_bags"]:>5} '
              f'{s["patches"]:>8} {s["labelled_patches"]:>6} {s["weak_patches"]:>7}  ' +
              ' '.join(f'{s["class_patches"][c]:>11}' for c in CLASSES))
        if 'weak_class_patches_truth' in s:
            print(f'{"  weak patches by hidden label (diagnostic only)":<49}'
                  + ' '.join(f'{s["weak_class_patches_truth"][c]:>11}' for c in CLASSES))
    sk = summary['skipped']
    print(f'skipped slides without a qualifying patch: {sum(sk.values())} '
          f'({", ".join(f"{k} {v}" for k, v in sk.items())})')
    print(f'done in {time.time() - t0:.1f} s; summary in {osp.join(args.out, "summary.json")}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
