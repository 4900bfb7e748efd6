"""Point-matching recall / precision / F1 of detectors over a sweep of score thresholds.

A loss that treats unannotated cells differently (stock CE, BDE, PU) also moves the scores:
CE trained on sparse labels is under-confident, PU with a large prior over-confident, so one
fixed threshold (the paper's 0.5) compares calibrations as much as detectors. This tool
reads the predictions ``tools/test.py CONFIG CKPT --out preds.pkl`` dumps (test pipeline with
``LoadPointAnnotations``: each entry holds ``gt_points``) and reports, per detector, the
scores at every threshold, at the fixed one, and the best F1 over the sweep (an oracle
threshold: it uses the test labels, so it shows the detector's ranking quality, not a
deployable setting). Writes a precision-recall plot.

    python tools/analysis_tools/score_sweep.py ce=work_dirs/pu_bench/ce/test_preds.pkl \\
        pu=work_dirs/pu_bench/pu/test_preds.pkl --radius 8 --out-png sweep.png
"""
import argparse
import os.path as osp
import pickle
import sys
from typing import Dict, List, Sequence

import numpy as np

from projects.common.calibration import read_threshold
from projects.common.io import atomic_write, write_json
from projects.common.metrics import match_points


def _array(value, name: str, source: str) -> np.ndarray:
    if hasattr(value, 'numpy'):
        value = value.detach().cpu().numpy() if hasattr(value, 'detach') else value.numpy()
    arr = np.asarray(value, dtype=np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f'{source}: {name} has non-finite values')
    return arr


def load_predictions(path: str) -> List[dict]:
    """Per image: ``name``, ``gt`` points (N, 2), ``pred`` box centres (M, 2), ``scores``."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'{path}: prediction file not found')
    with open(path, 'rb') as f:
        raw = pickle.load(f)
    if not isinstance(raw, list) or not raw:
        raise ValueError(f'{path}: expected a non-empty list of per-image results '
                         '(tools/test.py --out)')
    images = []
    for k, r in enumerate(raw):
        src = f'{path}: entry {k} ({r.get("img_path", "?")})'
        if 'pred_instances' not in r:
            raise ValueError(f'{src}: no pred_instances')
        if r.get('gt_points') is not None:
            gt = _array(r['gt_points'], 'gt_points', src).reshape(-1, 2)
        elif r.get('gt_instances') is not None:
            b = _array(r['gt_instances']['bboxes'], 'gt bboxes', src).reshape(-1, 4)
            gt = (b[:, :2] + b[:, 2:]) / 2
        else:
            raise ValueError(f'{src}: no gt_points or gt_instances: the test pipeline must '
                             'load the annotations')
        boxes = _array(r['pred_instances']['bboxes'], 'pred bboxes', src).reshape(-1, 4)
        scores = _array(r['pred_instances']['scores'], 'pred scores', src).reshape(-1)
        if len(scores) != len(boxes):
            raise ValueError(f'{src}: {len(boxes)} boxes but {len(scores)} scores')
        images.append(dict(name=osp.basename(str(r.get('img_path', k))), gt=gt,
                           pred=(boxes[:, :2] + boxes[:, 2:]) / 2, scores=scores))
    return images


def sweep(images: Sequence[dict], thresholds: Sequence[float], radius: float) -> np.ndarray:
    """(T, 6) rows: threshold, tp, fp, fn, recall, precision, F1 pooled over images; the
    predictions kept at threshold t are those with score >= t."""
    rows = []
    for t in thresholds:
        tp = fp = fn = 0
        for im in images:
            keep = im['scores'] >= t
            a, b, c = match_points(im['gt'], im['pred'][keep], radius)
            tp, fp, fn = tp + a, fp + b, fn + c
        rec = tp / (tp + fn) if tp + fn else 1.0
        prec = tp / (tp + fp) if tp + fp else 1.0
        f1 = 2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn else 1.0
        rows.append((t, tp, fp, fn, rec, prec, f1))
    return np.asarray(rows, dtype=np.float64)


def summarise(table: np.ndarray, fixed: float) -> Dict[str, float]:
    """Scores at the threshold closest to ``fixed`` and the best F1 (ties: lower threshold)."""
    i = int(np.argmin(np.abs(table[:, 0] - fixed)))
    j = int(np.argmax(table[:, 6]))
    return dict(threshold=float(table[i, 0]), recall=float(table[i, 4]),
                precision=float(table[i, 5]), f1=float(table[i, 6]),
                best_threshold=float(table[j, 0]), best_recall=float(table[j, 4]),
                best_precision=float(table[j, 5]), best_f1=float(table[j, 6]))


def plot(results: Dict[str, np.ndarray], out: str, fixed: Dict[str, float]) -> None:
    """Precision-recall curves; a circle marks each detector's own threshold."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 4.2))
    for name, table in results.items():
        line, = ax.plot(table[:, 4], table[:, 5], '.-', label=name)
        i = int(np.argmin(np.abs(table[:, 0] - fixed[name])))
        ax.plot(table[i, 4], table[i, 5], 'o', ms=9, mfc='none', color=line.get_color())
    ax.set_xlabel('recall')
    ax.set_ylabel('precision')
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title('score sweep (circle: each detector\'s threshold)')
    ax.legend(loc='lower left')
    fig.tight_layout()
    atomic_write(out, lambda tmp: fig.savefig(tmp, format='png', dpi=120))
    plt.close(fig)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Recall / precision / F1 of detectors over '
                                     'score thresholds (point matching)')
    parser.add_argument('preds', nargs='+',
                        help='NAME=PREDICTIONS.pkl (tools/test.py --out), optionally '
                        '@THRESHOLD or @CALIBRATION.json: that detector\'s own operating '
                        'point instead of --fixed (e.g. calibrated CE)')
    parser.add_argument('--radius', type=float, default=8.0, help='matching radius in px')
    parser.add_argument('--thresholds', type=float, nargs='+',
                        default=[0.01, 0.02] + [round(0.05 * i, 2) for i in range(1, 20)]
                        + [0.98, 0.99], help='score thresholds (default 0.01, 0.02, 0.05, '
                        '0.10, ..., 0.95, 0.98, 0.99)')
    parser.add_argument('--fixed', type=float, default=0.5, help='the reference threshold')
    parser.add_argument('--out-png', help='precision-recall plot')
    parser.add_argument('--out-json', help='all rows and summaries')
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if not args.radius > 0:
        raise ValueError(f'--radius must be > 0, got {args.radius}')
    results, summary, fixed_at = {}, {}, {}
    for item in args.preds:
        name, sep, path = item.partition('=')
        if not sep or not name or not path:
            raise ValueError(f'{item}: expected NAME=PREDICTIONS.pkl[@THRESHOLD]')
        path, _, at = path.partition('@')
        fixed = read_threshold(at, item) if at else args.fixed
        results[name] = sweep(load_predictions(path), sorted(set(args.thresholds) | {fixed}),
                              args.radius)
        summary[name] = summarise(results[name], fixed)
        fixed_at[name] = fixed
    width = max(12, *(len(name) for name in summary))
    print(f'{"detector":<{width}} {"thr":>5} {"recall":>7} {"prec":>7} {"F1":>7}   '
          f'{"best thr":>8} {"recall":>7} {"prec":>7} {"best F1":>7}')
    for name, s in summary.items():
        print(f'{name:<{width}} {s["threshold"]:>5.2f} {s["recall"]:>7.4f} {s["precision"]:>7.4f} '
              f'{s["f1"]:>7.4f}   {s["best_threshold"]:>8.2f} {s["best_recall"]:>7.4f} '
              f'{s["best_precision"]:>7.4f} {s["best_f1"]:>7.4f}')
    if args.out_png:
        plot(results, args.out_png, fixed_at)
        print(f'wrote {args.out_png}')
    if args.out_json:
        cols = ['threshold', 'tp', 'fp', 'fn', 'recall', 'precision', 'f1']
        write_json(args.out_json, dict(radius=args.radius, fixed=args.fixed, summary=summary,
                                       rows={n: [dict(zip(cols, r.tolist())) for r in t]
                                             for n, t in results.items()}))
        print(f'wrote {args.out_json}')
    return summary


if __name__ == '__main__':
    main()
    sys.exit(0)
