"""Score vs fraction of annotations: train configs on nested sparse variants, test each.

    python tools/analysis_tools/sparse_sweep.py CONFIG [CONFIG ...] --work-dir DIR \\
        [--fractions 0.1 0.3 0.6 1.0] [--metric cell/f1] [--jobs 2] [--threads 1] \\
        [--names ce focal ece focal-ece] [--cfg-options k=v ...] [--resume]

The protocol of Panteli et al. 2021 (sect. 4.1): nested non-exhaustive variants of the
training set (every instance kept at 10% is kept at 20%, ...; ``SparsifyAnnotations``
mode 'nested'), every model trained from scratch per variant with the same
hyper-parameters, scored on complete labels.

For every config and fraction the config (with ``--cfg-options``) gets ``fraction`` set in
every ``SparsifyAnnotations`` of its training pipeline, its validation replaced by its
test split and test evaluator (one validation, at the end of training: the score on the
complete test labels; nothing is selected on it), and is dumped to
``DIR/<name>/frac<pct>/<name>_frac<pct>.py`` and trained by ``tools/train.py`` in a child
process (``--jobs`` at a time, each with ``OMP_NUM_THREADS=--threads``). The test pipeline
must not sparsify (an error otherwise), and the training pipeline must.

``--resume`` skips runs a previous call finished with the same dumped config. Outputs
(written atomically): ``DIR/sparse_sweep.json`` (every run's whole test record),
``sparse_sweep.csv`` and ``sparse_sweep.png`` (``--metric`` vs fraction, one line per
config); the table is printed. ``--merge A/sparse_sweep.json B/sparse_sweep.json`` trains
nothing and writes the rows of several sweeps as one table / CSV / plot.
"""
import argparse
import copy
import csv
import io
import json
import os
import os.path as osp
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any, Dict, List, Optional, Sequence

from mmengine.config import Config, DictAction

from projects.common.child_runs import (NON_METRIC_KEYS, frac_tag, pipelines, sparsifiers,
                                         train_or_reuse, validate_on_test_at_end)
from projects.common.io import atomic_write, write_json
from projects.common.runner_utils import load_config

DONE_FILE = 'sparse_sweep_done.json'
PAPER_FRACTIONS = (0.1, 0.3, 0.6, 1.0)


def prepare(cfg: Config, fraction: float, source: str) -> int:
    """Set ``fraction`` in the training pipeline's SparsifyAnnotations, evaluate on the test
    split at the end; returns how many transforms were set."""
    if not 0 < fraction <= 1:
        raise ValueError(f'{source}: fraction must lie in (0, 1], got {fraction}')
    n = 0
    for pipe in pipelines(cfg, 'train_dataloader'):
        for t in sparsifiers(pipe):
            if t.get('mode', 'nested') != 'nested':
                raise ValueError(f'{source}: SparsifyAnnotations mode {t["mode"]!r} in the '
                                 "training pipeline; the sweep needs mode='nested'")
            t['fraction'] = float(fraction)
            n += 1
    if n == 0:
        raise ValueError(f'{source}: no SparsifyAnnotations in the training pipeline: '
                         'nothing to sweep')
    validate_on_test_at_end(cfg, source, 'the sweep')
    for pipe in pipelines(cfg, 'test_dataloader'):
        if sparsifiers(pipe):
            raise ValueError(f'{source}: the test pipeline sparsifies its labels; the sweep '
                             'scores on complete labels')
    return n


def _run(job: dict, metric: str, resume: bool, threads: int) -> dict:
    """Train one (config, fraction) child unless a finished run can be reused."""
    t0 = time.time()
    record, _, reused = train_or_reuse(
        job['cfg_path'], job['dir'], metric, DONE_FILE, resume,
        env={'OMP_NUM_THREADS': str(threads), 'MKL_NUM_THREADS': str(threads)})
    return dict(name=job['name'], config=job['config'], fraction=job['fraction'],
                value=float(record[metric]), reused=reused, seconds=time.time() - t0,
                metrics={k: v for k, v in record.items() if k not in NON_METRIC_KEYS},
                work_dir=osp.abspath(job['dir']))


def format_table(rows: Sequence[dict], metric: str) -> str:
    names = list(dict.fromkeys(r['name'] for r in rows))
    fracs = sorted({r['fraction'] for r in rows})
    value = {(r['name'], r['fraction']): r['value'] for r in rows}
    head = ['config'] + [f'{frac_tag(f)}%' for f in fracs]
    lines = [head] + [[n] + [f'{value[(n, f)]:.4f}' if (n, f) in value else '-'
                             for f in fracs] for n in names]
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    text = [f'{metric} on the complete test labels, by fraction of training annotations']
    text += ['  '.join(c.ljust(w) for c, w in zip(row, widths)) for row in lines]
    return '\n'.join(text)


def write_outputs(out_dir: str, rows: List[dict], metric: str) -> None:
    """sparse_sweep.json / .csv / .png (metric vs fraction per config)."""
    write_json(osp.join(out_dir, 'sparse_sweep.json'), dict(metric=metric, rows=rows))
    keys = sorted({k for r in rows for k in r['metrics']})
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(['name', 'fraction', metric] + [k for k in keys if k != metric])
    for r in rows:
        w.writerow([r['name'], r['fraction'], r['value']]
                   + [r['metrics'].get(k, '') for k in keys if k != metric])

    def write_csv(path: str) -> None:
        with open(path, 'w', newline='') as f:
            f.write(buf.getvalue())

    atomic_write(osp.join(out_dir, 'sparse_sweep.csv'), write_csv)

    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for name in dict.fromkeys(r['name'] for r in rows):
        pts = sorted((r['fraction'] * 100, r['value']) for r in rows if r['name'] == name)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker='o', label=name)
    ax.set_xlabel('annotated instances in training (%)')
    ax.set_ylabel(f'{metric} (complete test labels)')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(osp.join(out_dir, 'sparse_sweep.png'), lambda p: fig.savefig(p, dpi=120,
                                                                              format='png'))
    plt.close(fig)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('configs', nargs='*', help='config files (each trained per fraction)')
    p.add_argument('--merge', nargs='+', metavar='JSON',
                   help='no training: merge the rows of earlier sparse_sweep.json files '
                   '(e.g. sweeps run apart) into one table / CSV / plot in --work-dir')
    p.add_argument('--work-dir', required=True, help='output folder')
    p.add_argument('--fractions', type=float, nargs='+', default=list(PAPER_FRACTIONS),
                   help='kept fractions of the training instances, in (0, 1]')
    p.add_argument('--metric', default='cell/f1', help='test metric to tabulate and plot')
    p.add_argument('--names', nargs='+', help='short names of the configs (default: '
                   'file names)')
    p.add_argument('--jobs', type=int, default=1, help='training runs at a time')
    p.add_argument('--threads', type=int, default=1, help='OMP threads per run')
    p.add_argument('--resume', action='store_true', help='reuse finished runs')
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='override settings of every config (key=value)')
    return p.parse_args(argv)


def merge_results(paths: Sequence[str]) -> tuple:
    """Rows and metric of several sparse_sweep.json files (same metric, distinct
    (name, fraction) pairs: errors name the file)."""
    rows: List[dict] = []
    metric = None
    seen = {}
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        if not isinstance(data, dict) or 'rows' not in data or 'metric' not in data:
            raise ValueError(f'{path}: not a sparse_sweep.json (no "metric" / "rows")')
        if metric is not None and data['metric'] != metric:
            raise ValueError(f'{path}: metric {data["metric"]!r} differs from {metric!r} of '
                             f'{paths[0]}')
        metric = data['metric']
        for r in data['rows']:
            key = (r['name'], r['fraction'])
            if key in seen:
                raise ValueError(f'{path}: {r["name"]} at {frac_tag(r["fraction"])}% is also '
                                 f'in {seen[key]}')
            seen[key] = path
            rows.append(r)
    return rows, metric


def main(argv: Optional[List[str]] = None) -> dict:
    args = parse_args(argv)
    if args.merge:
        if args.configs:
            raise ValueError('--merge takes sparse_sweep.json files, not configs')
        rows, metric = merge_results(args.merge)
        print(format_table(rows, metric))
        write_outputs(args.work_dir, rows, metric)
        print(f'[sparse_sweep] merged {len(args.merge)} sweeps into '
              f'{osp.join(args.work_dir, "sparse_sweep")}.{{json,csv,png}}', flush=True)
        return dict(rows=rows)
    if not args.configs:
        raise ValueError('give configs to sweep (or --merge sparse_sweep.json files)')
    names = args.names or [osp.splitext(osp.basename(c))[0] for c in args.configs]
    if len(names) != len(args.configs) or len(set(names)) != len(names):
        raise ValueError(f'--names must give {len(args.configs)} distinct names, got {names}')
    if args.jobs < 1 or args.threads < 1:
        raise ValueError('--jobs and --threads must be >= 1')
    fractions = sorted(set(args.fractions))
    jobs: List[Dict[str, Any]] = []
    for config, name in zip(args.configs, names):
        loaded = load_config(config, args.cfg_options)
        for f in fractions:
            cfg = copy.deepcopy(loaded)
            prepare(cfg, f, config)  # errors before any training starts
            child = osp.join(args.work_dir, name, f'frac{frac_tag(f)}')
            cfg.work_dir = child
            os.makedirs(child, exist_ok=True)
            cfg_path = osp.join(child, f'{name}_frac{frac_tag(f)}.py')
            atomic_write(cfg_path, cfg.dump)
            jobs.append(dict(config=config, name=name, fraction=f, dir=child,
                             cfg_path=cfg_path))
    print(f'[sparse_sweep] {len(jobs)} runs ({len(args.configs)} configs x {len(fractions)} '
          f'fractions), {args.jobs} at a time; logs in each run folder', flush=True)
    rows: List[dict] = []
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {pool.submit(_run, j, args.metric, args.resume, args.threads): j
                   for j in jobs}
        for fut in as_completed(futures):
            j = futures[fut]
            row = fut.result()
            rows.append(row)
            how = 'reused' if row['reused'] else f'{row["seconds"]:.0f} s'
            print(f'[sparse_sweep] ({len(rows)}/{len(jobs)}) {j["name"]} at '
                  f'{frac_tag(j["fraction"])}%: {args.metric} = {row["value"]:.4f} ({how})',
                  flush=True)
    order = {(j['name'], j['fraction']): i for i, j in enumerate(jobs)}
    rows.sort(key=lambda r: order[(r['name'], r['fraction'])])
    print(format_table(rows, args.metric))
    write_outputs(args.work_dir, rows, args.metric)
    print(f'[sparse_sweep] wrote {osp.join(args.work_dir, "sparse_sweep")}.{{json,csv,png}}',
          flush=True)
    return dict(rows=rows)


if __name__ == '__main__':
    main()
