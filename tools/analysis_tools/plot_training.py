"""Plot the losses (and validation metrics) of a training run from its work dir.

    python tools/analysis_tools/plot_training.py WORK_DIR [--keys loss loss_cls] \
        [--metrics cell/f1] --out curves.png

Reads the newest ``<timestamp>/vis_data/scalars.json`` that mmengine's LocalVisBackend
wrote under WORK_DIR (or the file given).
"""
import argparse
import glob
import os.path as osp
from typing import Dict, List, Tuple

from projects.common.child_runs import scalar_records


def find_scalars(path: str) -> str:
    """The scalars.json of the newest run with one under ``path`` (or ``path`` itself)."""
    if osp.isfile(path):
        return path
    files = sorted(glob.glob(osp.join(path, '*', 'vis_data', 'scalars.json')))
    if not files:
        raise FileNotFoundError(f'{path}: no <timestamp>/vis_data/scalars.json (was the run '
                                f'made with LocalVisBackend?)')
    return files[-1]


def read_scalars(path: str) -> Tuple[Dict[str, List[Tuple[int, float]]], List[dict]]:
    """Training series key -> [(iter, value)], and the validation records (with 'step')."""
    train: Dict[str, List[Tuple[int, float]]] = {}
    val: List[dict] = []
    for rec in scalar_records(path):
        if 'iter' in rec:
            for k, v in rec.items():
                if isinstance(v, (int, float)) and k not in ('iter', 'step', 'epoch'):
                    train.setdefault(k, []).append((rec['iter'], float(v)))
        else:
            val.append(rec)
    return train, val


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('work_dir', help='work dir of a run (or a scalars.json file)')
    parser.add_argument('--keys', nargs='+', default=None,
                        help='training series to plot (default: every key starting with loss)')
    parser.add_argument('--metrics', nargs='+', default=None,
                        help='validation metrics to plot (default: all but times)')
    parser.add_argument('--out', required=True, help='output PNG')
    args = parser.parse_args()

    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    path = find_scalars(args.work_dir)
    train, val = read_scalars(path)
    keys = args.keys or sorted(k for k in train if k.startswith('loss'))
    missing = [k for k in keys if k not in train]
    if missing:
        raise KeyError(f'{path}: no training series {missing}; there are {sorted(train)}')
    metrics = args.metrics or sorted({k for r in val for k in r
                                      if k not in ('step', 'data_time', 'time')})
    fig, axes = plt.subplots(1, 2 if val else 1, figsize=(11 if val else 6, 4), squeeze=False)
    ax = axes[0, 0]
    for k in keys:
        it, v = zip(*train[k])
        ax.plot(it, v, label=k, lw=1.2)
    ax.set_xlabel('iteration')
    ax.set_ylabel('loss')
    ax.set_title('training')
    ax.legend(fontsize=8)
    if val:
        ax = axes[0, 1]
        for k in metrics:
            pts = [(r['step'], r[k]) for r in val if k in r]
            if pts:
                s, v = zip(*pts)
                ax.plot(s, v, 'o-', label=k, lw=1.2)
        ax.set_xlabel('iteration')
        ax.set_title('validation')
        ax.legend(fontsize=7)
    fig.tight_layout()
    from projects.common.io import atomic_write
    atomic_write(args.out, lambda tmp: fig.savefig(tmp, dpi=100, format='png'))
    print(f'[mmhisto] {path} -> {args.out}')


if __name__ == '__main__':
    main()
