"""Select the PU class prior pi by validation average recall (Zhao et al. 2021, sect. 3.2).

    python tools/analysis_tools/select_prior.py CONFIG --work-dir DIR \\
        [--priors 0.02 0.03 0.04 0.05 0.06] [--metric cell/avg_recall] \\
        [--cfg-options k=v ...] [--resume]

The paper picks pi from 0.02..0.06 (step 0.01) by the best average recall on the
validation set, whose annotations are incomplete (so precision cannot be trusted there),
independently for each cross-validation fold: run this tool once per fold config.

For every prior the config (with ``--cfg-options`` applied) gets ``prior`` set in every
``PULoss`` dict of ``cfg.model`` (RPN and RoI head alike; a per-class list becomes the one
scalar), is dumped to ``DIR/prior_<pi>/<name>_prior<pi>.py`` and trained by
``tools/train.py`` in a child process (its output goes to ``child_stdout.log`` /
``child_stderr.log`` next to the dump). The metric is read from the last validation record
of the child's newest ``<timestamp>/vis_data/scalars.json``.

Choices:

* Final validation: mmengine's train loops (0.10.x) validate at the last iteration / epoch
  whatever ``val_interval`` is, as long as ``val_begin`` is reached, so no validation has to
  be forced. The tool refuses (ValueError) a config without a validation set
  (``val_dataloader`` / ``val_cfg`` / ``val_evaluator``) or with ``val_begin`` after the end
  of training.
* Every child trains from scratch (``resume=False`` in the dump; ``load_from`` is kept).
* Selection: argmax of the metric; equal values (exact float equality) go to the smaller
  prior. A NaN or missing metric is an error, never skipped.
* ``--resume``: a prior is not retrained if a previous run of this tool finished it: its
  child exited 0 (``DIR/prior_<pi>/select_prior_done.json`` records that, with the SHA-256
  of the dumped config) and that run's scalars.json holds the metric. A prior whose dumped
  config changed since (other ``--cfg-options``, edited config) is retrained.
* Outputs (written atomically): ``DIR/select_prior.json`` (rows, selected prior, metric,
  config), ``DIR/select_prior.csv`` and ``DIR/select_prior.png`` (metric vs prior).
"""
import argparse
import csv
import math
import os
import os.path as osp
import time
from typing import Any, List, Optional, Sequence, Tuple

from mmengine.config import Config, DictAction

from projects.common.child_runs import NON_METRIC_KEYS, train_or_reuse
from projects.common.io import atomic_write, write_json
from projects.common.runner_utils import load_config

PAPER_PRIORS = (0.02, 0.03, 0.04, 0.05, 0.06)
DEFAULT_METRIC = 'cell/avg_recall'
DONE_FILE = 'select_prior_done.json'


# ----------------------------------------------------------------------------- helpers
def find_pu_losses(obj: Any, path: str = 'model') -> List[Tuple[str, dict]]:
    """Every dict whose ``type`` is PULoss (or ``<scope>.PULoss``) in a nested config.

    Walks dicts, lists and tuples; returns (dotted path, the dict itself) so that the
    caller can modify the config in place.
    """
    found: List[Tuple[str, dict]] = []
    if isinstance(obj, dict):
        t = obj.get('type', None)
        if (isinstance(t, str) and (t == 'PULoss' or t.endswith('.PULoss'))) or \
                getattr(t, '__name__', None) == 'PULoss':
            found.append((path, obj))
        for k, v in obj.items():
            found += find_pu_losses(v, f'{path}.{k}')
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            found += find_pu_losses(v, f'{path}[{i}]')
    return found


def set_prior(cfg: Config, prior: float, source: str) -> List[str]:
    """Set ``prior`` in every PULoss of ``cfg.model``; returns their paths.

    A top-level ``prior`` number (the configs' shared variable) is updated too so that the
    dumped config reads consistently; it has no effect once the config is loaded.
    """
    losses = find_pu_losses(cfg.get('model', None))
    if not losses:
        raise ValueError(f'{source}: no PULoss in model: nothing to select')
    for _, loss in losses:
        loss['prior'] = prior
    if isinstance(cfg.get('prior', None), (int, float)):
        cfg.prior = prior
    return [p for p, _ in losses]


def check_priors(priors: Sequence[float]) -> List[float]:
    """Validate ``--priors`` (each in (0, 1), no duplicates); returns them sorted."""
    if not priors:
        raise ValueError('--priors: at least one prior is needed')
    seen = set()
    for p in priors:
        if not (isinstance(p, (int, float)) and 0.0 < p < 1.0):
            raise ValueError(f'--priors: {p} is not a class prior in the open interval (0, 1)')
        if p in seen:
            raise ValueError(f'--priors: {p} is given more than once')
        seen.add(p)
    return sorted(float(p) for p in priors)


def prior_tag(prior: float) -> str:
    """Shortest text that round-trips the float ('0.02'); distinct priors never collide."""
    return repr(float(prior))


def check_final_validation(cfg: Config, source: str) -> None:
    """Refuse configs whose training never validates (see the module docstring)."""
    missing = [k for k in ('val_dataloader', 'val_cfg', 'val_evaluator')
               if cfg.get(k, None) is None]
    if missing:
        raise ValueError(f'{source}: {", ".join(missing)} missing: the prior is selected on '
                         f'the validation set, the config must define one')
    train_cfg = cfg.get('train_cfg', None) or {}
    end = train_cfg.get('max_iters', train_cfg.get('max_epochs', None))
    unit = 'max_iters' if 'max_iters' in train_cfg else 'max_epochs'
    val_begin = train_cfg.get('val_begin', 1)
    if end is not None and val_begin > end:
        raise ValueError(f'{source}: train_cfg.val_begin={val_begin} > {unit}={end}: '
                         f'training would end without a validation')


def select_best(rows: Sequence[dict], key: str = 'value') -> int:
    """Index of the row with the largest ``row[key]``; ties go to the smaller prior."""
    if not rows:
        raise ValueError('no result to select from')
    for r in rows:
        v = r[key]
        if not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f'prior {r["prior"]}: metric value {v!r} is not a finite number '
                             f'({r.get("scalars", "?")})')
    return min(range(len(rows)), key=lambda i: (-rows[i][key], rows[i]['prior']))


def make_row(prior: float, record: dict, metric: str, scalars: str, work_dir: str) -> dict:
    """One result row: the prior, the selection metric and the whole validation record."""
    return dict(prior=prior, value=float(record[metric]), step=record.get('step', None),
                metrics={k: v for k, v in record.items() if k not in NON_METRIC_KEYS},
                work_dir=osp.abspath(work_dir), scalars=osp.abspath(scalars))


# ----------------------------------------------------------------------------- outputs
def extra_keys(metric: str, rows: Sequence[dict]) -> List[str]:
    """recall / precision / f1 under the metric's prefix, when every row has them."""
    prefix = metric.rsplit('/', 1)[0] + '/' if '/' in metric else ''
    keys = [prefix + k for k in ('recall', 'precision', 'f1')]
    return [k for k in keys if k != metric and all(k in r['metrics'] for r in rows)]


def format_table(rows: Sequence[dict], metric: str, selected: int) -> str:
    """The printed table: prior, metric, recall / precision / f1 when present, step."""
    extras = extra_keys(metric, rows)
    head = ['prior', metric] + extras + ['step']
    body = [[prior_tag(r['prior']), f'{r["value"]:.4f}'] +
            [f'{r["metrics"][k]:.4f}' for k in extras] + [str(r['step'])] for r in rows]
    widths = [max(len(x[c]) for x in [head] + body) for c in range(len(head))]
    lines = [' | '.join(x[c].ljust(widths[c]) for c in range(len(head))) for x in [head] + body]
    lines = [line + ('  <- selected' if i - 1 == selected else '') for i, line in enumerate(lines)]
    lines.insert(1, '-+-'.join('-' * w for w in widths))
    return '\n'.join(lines)


def write_outputs(out_dir: str, rows: List[dict], selected: int, metric: str,
                  config: str) -> None:
    """select_prior.json, select_prior.csv and select_prior.png in ``out_dir``."""
    write_json(osp.join(out_dir, 'select_prior.json'), dict(
        config=osp.abspath(config), metric=metric, priors=[r['prior'] for r in rows],
        rows=rows, selected_prior=rows[selected]['prior'], selected_value=rows[selected]['value'],
        tie_break='equal metric values: the smaller prior'))

    extras = extra_keys(metric, rows)

    def write_csv(tmp: str) -> None:
        with open(tmp, 'w', newline='') as f:
            w = csv.writer(f)
            w.writerow(['prior', metric] + extras + ['step', 'selected', 'work_dir'])
            for i, r in enumerate(rows):
                w.writerow([r['prior'], r['value']] + [r['metrics'][k] for k in extras] +
                           [r['step'], int(i == selected), r['work_dir']])

    atomic_write(osp.join(out_dir, 'select_prior.csv'), write_csv)

    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot([r['prior'] for r in rows], [r['value'] for r in rows], 'o-', lw=1.2)
    best = rows[selected]
    ax.plot([best['prior']], [best['value']], '*', color='tab:red', ms=15,
            label=f'selected pi = {prior_tag(best["prior"])}')
    ax.set_xlabel('class prior pi')
    ax.set_ylabel(metric)
    ax.set_title(osp.basename(config), fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(osp.join(out_dir, 'select_prior.png'),
                 lambda tmp: fig.savefig(tmp, dpi=100, format='png'))
    plt.close(fig)


# ----------------------------------------------------------------------------- main
def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Train a PU config for each class prior and pick the best one by a '
        'validation metric (Zhao et al. 2021, sect. 3.2).')
    parser.add_argument('config', help='config with PULoss in its model')
    parser.add_argument('--work-dir', required=True,
                        help='output folder; each prior trains in <work-dir>/prior_<pi>')
    parser.add_argument('--priors', nargs='+', type=float, default=list(PAPER_PRIORS),
                        help='candidate priors, each in (0, 1) (default: the paper\'s '
                        '0.02 .. 0.06, step 0.01)')
    parser.add_argument('--metric', default=DEFAULT_METRIC,
                        help='validation metric to maximise (default: %(default)s)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, e.g. train_cfg.max_iters=10')
    parser.add_argument('--resume', action='store_true',
                        help='do not retrain priors this tool already finished in --work-dir')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> dict:
    args = parse_args(argv)
    priors = check_priors(args.priors)
    cfg = load_config(args.config, args.cfg_options)
    source = args.config
    set_prior(cfg, priors[0], source)  # fails early when there is no PULoss
    check_final_validation(cfg, source)
    cfg.resume = False
    name = osp.splitext(osp.basename(args.config))[0]
    os.makedirs(args.work_dir, exist_ok=True)

    rows = []
    for i, prior in enumerate(priors):
        tag = prior_tag(prior)
        child_dir = osp.join(args.work_dir, f'prior_{tag}')
        cfg_path = osp.join(child_dir, f'{name}_prior{tag}.py')
        paths = set_prior(cfg, prior, source)
        cfg.work_dir = child_dir
        os.makedirs(child_dir, exist_ok=True)
        atomic_write(cfg_path, cfg.dump)
        head = f'[select_prior] ({i + 1}/{len(priors)}) prior {tag}'
        print(f'{head}: training {cfg_path} (PULoss at {", ".join(paths)}) unless finished '
              f'before (--resume); log: {osp.join(child_dir, "child_stdout.log")}', flush=True)
        t0 = time.time()
        record, scalars, reused = train_or_reuse(cfg_path, child_dir, args.metric, DONE_FILE,
                                                 args.resume)
        if reused:
            print(f'{head}: finished before, not retrained ({scalars})', flush=True)
        else:
            print(f'{head}: {args.metric} = {float(record[args.metric]):.4f} '
                  f'({time.time() - t0:.0f} s)', flush=True)
        rows.append(make_row(prior, record, args.metric, scalars, child_dir))

    selected = select_best(rows)
    print(f'[select_prior] {args.config}, validation {args.metric}:')
    print(format_table(rows, args.metric, selected))
    print(f'[select_prior] selected prior: {prior_tag(rows[selected]["prior"])} '
          f'({args.metric} = {rows[selected]["value"]:.4f}; ties go to the smaller prior)')
    write_outputs(args.work_dir, rows, selected, args.metric, args.config)
    print(f'[select_prior] wrote {osp.join(args.work_dir, "select_prior")}'
          f'.{{json,csv,png}}', flush=True)
    return dict(rows=rows, selected=selected)


if __name__ == '__main__':
    main()
