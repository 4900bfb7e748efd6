"""Pseudo-label selection for many bags: one vectorised call against a per-bag Python loop.

DESIGN.md sect. 5: the speed figure is a ratio against a named peer measured in the same
run. Ours: :func:`projects.negative_pseudo_labels.selection.select_pseudo_labels_bags`
(all bags in one call). Peer ("per-bag loop"): group the patches by bag once, then call
:func:`~projects.negative_pseudo_labels.selection.select_pseudo_labels` once per bag, the
straightforward way a training hook would write it.

Data (seeded): patch probabilities ~ Dirichlet(0.5) over C classes, bag of each patch
uniform over the bags (bags interleaved, not contiguous), true ratios ~ Dirichlet(1) with
each class set to 0 with probability 0.3 (then renormalised; at least one class kept),
old negatives: each (patch, class) with probability 0.05 (a second multi-NPL round).

    python tools/analysis_tools/benchmark_pseudo_labels.py --patches 50000 --bags 400 \\
        --classes 5 --repeat 5 --seed 0

Prints the median time of each over --repeat runs, the ratio loop / ours, and whether the
outputs are identical (exit status 1 if they are not).
"""
import argparse
import os.path as osp
import sys
import time
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
from projects.common.io import write_json  # noqa: E402
from projects.negative_pseudo_labels.selection import (  # noqa: E402
    select_pseudo_labels, select_pseudo_labels_bags)


def make_data(patches: int, bags: int, classes: int,
              seed: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Random probs (N, C), bag_index (N,), true ratios (B, C), old negatives (N, C)."""
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.full(classes, 0.5), size=patches)
    bag_index = rng.integers(0, bags, size=patches)
    ratios = rng.dirichlet(np.ones(classes), size=bags)
    ratios[rng.random((bags, classes)) < 0.3] = 0.0
    empty = ratios.sum(1) == 0
    ratios[empty, rng.integers(0, classes, size=int(empty.sum()))] = 1.0
    ratios /= ratios.sum(1, keepdims=True)
    negatives = rng.random((patches, classes)) < 0.05
    return probs, bag_index, ratios, negatives


def per_bag_loop(probs: np.ndarray, bag_index: np.ndarray, ratios: np.ndarray,
                 negatives: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """The peer: one :func:`select_pseudo_labels` call per bag."""
    positive = np.full(len(probs), -1, np.int64)
    acc = negatives.copy()
    order = np.argsort(bag_index, kind='stable')
    bounds = np.searchsorted(bag_index[order], np.arange(len(ratios) + 1))
    for b in range(len(ratios)):
        idx = order[bounds[b]:bounds[b + 1]]
        positive[idx], acc[idx] = select_pseudo_labels(probs[idx], ratios[b], negatives[idx])
    return positive, acc


def _median(values: Sequence[float]) -> float:
    return float(np.median(np.asarray(values, np.float64)))


def run(patches: int, bags: int, classes: int, repeat: int, seed: int) -> Dict:
    """Time both on the same data; returns the numbers and whether the outputs agree."""
    probs, bag_index, ratios, negatives = make_data(patches, bags, classes, seed)
    ours_t, loop_t = [], []
    ours = loop = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        ours = select_pseudo_labels_bags(probs, bag_index, ratios, negatives)
        t1 = time.perf_counter()
        loop = per_bag_loop(probs, bag_index, ratios, negatives)
        t2 = time.perf_counter()
        ours_t.append(t1 - t0)
        loop_t.append(t2 - t1)
    identical = bool(np.array_equal(ours[0], loop[0]) and np.array_equal(ours[1], loop[1]))
    ours_s, loop_s = _median(ours_t), _median(loop_t)
    return dict(patches=patches, bags=bags, classes=classes, repeat=repeat, seed=seed,
                ours_s=ours_s, loop_s=loop_s, ratio=loop_s / ours_s, ours_times=ours_t,
                loop_times=loop_t, identical=identical,
                positives=int((ours[0] >= 0).sum()),
                new_negatives=int(ours[1].sum() - negatives.sum()))


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split('\n\n', 1)[1])
    p.add_argument('--patches', type=int, default=50000, help='patches N (default 50000)')
    p.add_argument('--bags', type=int, default=400, help='bags B (default 400)')
    p.add_argument('--classes', type=int, default=5, help='classes C (default 5)')
    p.add_argument('--repeat', type=int, default=5, help='timed runs, median (default 5)')
    p.add_argument('--seed', type=int, default=0, help='data seed (default 0)')
    p.add_argument('--out-json', default=None, help='also write the numbers as JSON')
    args = p.parse_args(argv)
    if args.patches < 1 or args.bags < 1 or args.classes < 2 or args.repeat < 1:
        p.error('--patches, --bags and --repeat must be >= 1, --classes >= 2')
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    print(f'[benchmark_pseudo_labels] {args.patches} patches, {args.bags} bags, '
          f'{args.classes} classes, seed {args.seed}, median of {args.repeat} run(s)')
    res = run(args.patches, args.bags, args.classes, args.repeat, args.seed)
    print(f'ours (select_pseudo_labels_bags): {res["ours_s"] * 1e3:9.2f} ms')
    print(f'peer (per-bag loop):              {res["loop_s"] * 1e3:9.2f} ms')
    print(f'ratio loop / ours: {res["ratio"]:.1f}x; {res["positives"]} positives, '
          f'{res["new_negatives"]} new negatives')
    print(f'outputs identical: {"yes" if res["identical"] else "NO"}')
    if args.out_json:
        write_json(args.out_json, res)
        print(f'written {args.out_json}')
    return 0 if res['identical'] else 1


if __name__ == '__main__':
    sys.exit(main())
