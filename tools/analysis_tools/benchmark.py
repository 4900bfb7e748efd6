"""The benchmark: does each method beat the model zoo on the same incomplete labels?

    python tools/analysis_tools/benchmark.py configs/benchmarks/det_sparse.py \\
        [--work-dir work_dirs/benchmarks] [--jobs 2] [--resume] [--only NAME ...]
        [--datasets NAME ...] [--fractions F ...] [--seeds S ...]
    python tools/analysis_tools/benchmark.py configs/benchmarks/det_sparse.py --report
    python tools/analysis_tools/benchmark.py configs/benchmarks/cellgan.py --rescore
    python tools/analysis_tools/benchmark.py configs/benchmarks/det_sparse.py --plan

A SPEC (an mmengine config under ``configs/benchmarks/``) lists runs in ``groups``: each
group is a data set with its label fractions and its rows (name, config, role ``peer`` or
``method``, the ``baseline`` row(s) a method is compared with). Every row is trained for
every fraction and seed of its group by ``tools/train.py`` in a child process (the budget
``iters`` with the schedule rescaled, ``SparsifyAnnotations`` of the training and
validation pipelines set to the fraction and seed, the test pipeline complete), validated
ten times on the (incomplete) validation labels for the convergence rule, then tested by
``tools/test.py`` (``--out`` predictions) and scored by the spec's evaluator (below). Each
finished run appends one JSON line to ``docs/benchmarks/<spec>/runs.jsonl``: run key,
config path and the SHA-256 of the resolved config, every metric, the per-image terms of
the paired test, the validation curve, iterations, wall time and whether it converged.
``--resume`` skips runs whose line has the same config hash; a crashed run is reported
(``work_dir/failures.json``) and the others go on. ``--rescore`` scores the recorded runs
again from their run folders (predictions, checkpoint) when the evaluator has learnt to
measure more, and adds it to the records; it refuses to change a number already recorded.
The scoring here runs its forward passes (cellgan's features) on ``--threads`` torch
threads, like the runs, so that a score does not depend on the machine's default.
``--plan`` lists what ``--resume`` would run, in its order, with each run's estimated CPU
minutes (``cost_estimator``: finished runs of its row, else of its budget) and the total.

``--report`` reads ``runs.jsonl`` alone and writes ``docs/benchmarks/<spec>/README.md``
(tables) and ``results.png``; twice gives byte-identical files. Statistics
(``projects/common/stats.py``): mean +- 95% t-interval over seeds; for a method row, the
paired difference to each baseline (same seed, fraction and test images) with a 95%
bootstrap interval (2000 draws, seed 0) whose draws resample the seeds and the test images
independently (the spec's ``bootstrap='images'``: the images alone, as the report's last
section compares; set-level metrics such as COCO AP that do not split into per-image terms
use the paired t-interval over seeds instead) and a verdict: better / worse / no difference
at 95%; ``converged``: the validation metric moved by less than 1 point over the last 20%
of the iterations (the spec's ``converge_rule='best'``: its best value so far, for runs
that test their best checkpoint).

Evaluators:

* ``det``: COCO ``AP`` / ``AP50`` (pycocotools, through ``CellDetectionMetric``);
  point-matching F1 at score 0.5 (``F1@0.5``, the papers' operating point), at the
  threshold that maximises F1 on the incomplete validation labels (``F1@val``, what a user
  can do), at 0.5 c with c the mean score of the annotated validation cells (``F1@calib``,
  Elkan & Noto 2008) and at the best threshold on the test labels (``F1@oracle``, an
  oracle: ranking quality, not a deployable setting). Thresholds: 0.01..0.99 in steps of
  0.01 (c is exact; a run whose validation cells have no detection at all has c = 0 and
  no calibrated threshold: its ``F1@calib`` keeps nothing, see :func:`calibrated_counts`).
* ``seg``: ``Dice_obj``, ``AJI``, ``PQ`` / ``SQ`` / ``DQ`` of ``NucleiMetric`` (mean over
  the test images with objects) and ``pixel_F1``.
* ``patch``: ``OP`` / ``PC`` / ``mAcc`` / ``mIoU`` of ``PatchSegMetric`` (per-slide
  confusions for the bootstrap).
* ``cluster``: ``purity`` / ``entropy`` (lower is better) / ``f_score`` of argmax Q
  (``ClusteringMetric``) on the labelled test crops, and the same of k-means on raw pixels
  and on HOG (``@kmeans_pixels`` / ``@kmeans_hog``, Hu et al. 2018 Table II) with the
  run's seed; ``svm_f_score``: an L2-SVM trained on the labelled training crops' D
  features (Table I, sect. IV-C), and on their pixels / HOG (``@svm_pixels`` /
  ``@svm_hog``); the bootstrap resamples crops. The operating points ``pixels`` / ``hog``
  show a row of both baselines of one feature.

A row may reuse another row's runs at another operating point (``same_as='ce',
operating_point='calib'``: its ``F1@0.5`` is the source's ``F1@calib``; the calibrated-CE
baseline costs no training). A group with ``retest_of='DATASET'`` trains nothing either:
its rows test the checkpoints of the same rows of that group on its own test set (its
``cfg_options`` may change only the test loader and evaluator; checked), after every
training run has ended; e.g. the stain spec's stain-shifted test tiles.
"""
import argparse
import copy
import fcntl
import glob
import hashlib
import json
import os
import os.path as osp
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if REPO not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, REPO)

from projects.common import stats  # noqa: E402
from projects.common.child_runs import (TEST_PY, frac_tag, newest_scalars, pipelines,  # noqa
                                         run_child, scalar_records, sparsifiers, tail)
from projects.common.io import atomic_write, write_json  # noqa: E402

ROLES = ('peer', 'method')
THRESHOLDS = tuple(round(0.01 * i, 2) for i in range(1, 100))
N_BOOT = 2000
# the convergence rule (stats.converged) -> what the report calls "converged"
CONVERGE_RULES = {'last': 'the validation `{}` moved by < 1 point over the last 20% of the '
                          'iterations',
                  'best': 'the best validation `{}` so far (the checkpoint tested) moved by < 1 '
                          'point over the last 20% of the training'}
# tasks whose labels the benchmark does not thin (the fraction is always 1) -> what their
# training saw, for the table headings
UNTHINNED = dict(cluster='no labels in training',
                 patch='the labelled slides and the class proportions of the others')
# what one bootstrap draw resamples -> how the report says it
BOOTSTRAPS = {'seeds+images': 'seeds and test images (independently)',
              'images': 'test images (the seeds fixed)'}

# evaluator -> metric -> (how the paired test is taken, the per-image key)
EVALUATORS: Dict[str, Dict[str, Tuple[str, Optional[str]]]] = dict(
    det={
        'AP': ('seeds', None),
        'AP50': ('seeds', None),
        'F1@0.5': ('pooled_f1', 'counts@0.5'),
        'F1@val': ('pooled_f1', 'counts@val'),
        'F1@calib': ('pooled_f1', 'counts@calib'),
        'F1@oracle': ('pooled_f1', 'counts@oracle'),
    },
    seg={
        'Dice_obj': ('masked_mean', 'Dice_obj'),
        'AJI': ('masked_mean', 'AJI'),
        'PQ': ('masked_mean', 'PQ'),
        'SQ': ('masked_mean', 'SQ'),
        'DQ': ('masked_mean', 'DQ'),
        'pixel_F1': ('seeds', None),
    },
    patch={
        'OP': ('confusion_op', 'confusion'),
        'PC': ('confusion_pc', 'confusion'),
        'mAcc': ('confusion_macc', 'confusion'),
        'mIoU': ('confusion_miou', 'confusion'),
    },
    cluster={**{f'{m}{at}': (f'cluster_{m}', f'pairs{at}')
                for at in ('', '@kmeans_pixels', '@kmeans_hog', '@kmeans_q')
                for m in ('purity', 'entropy', 'f_score')},
             **{f'svm_f_score{at}': ('classification_f_score', f'svm_pairs{at}')
                for at in ('', '@svm_pixels', '@svm_hog')}})
# metrics where lower is better (the verdict flips)
LOWER_IS_BETTER = frozenset(m for m in EVALUATORS['cluster'] if m.startswith('entropy'))
# the validation scalar the convergence rule reads, per evaluator (spec may override)
CONVERGE_METRIC = dict(det='cell/coco_AP50', seg='nuclei/dice_obj', patch='mIoU',
                       cluster='purity')
# what an operating_point row takes from its source: task, {metric: source metric}
OPERATING_POINTS = dict(
    calib=('det', {'F1@0.5': 'F1@calib'}), val=('det', {'F1@0.5': 'F1@val'}),
    # the paper's baselines on the same run's crops, by feature: k-means for the clusters
    # (Hu et al. 2018, Table II), an L2-SVM for the classifier (Table I)
    **{op: ('cluster', {**{m: f'{m}@kmeans_{op}' for m in ('purity', 'entropy', 'f_score')},
                        'svm_f_score': f'svm_f_score@svm_{op}'})
       for op in ('pixels', 'hog')})
# operating points whose numbers do not depend on the source's training (k-means / SVM on
# the raw crops): no budget, no convergence of their own
UNTRAINED = ('pixels', 'hog')


def trains_nothing(row: dict) -> bool:
    """A row computed on the raw crops (:data:`UNTRAINED`): no budget, no convergence."""
    return row.get('operating_point') in UNTRAINED


# --------------------------------------------------------------------------- the spec
class SpecError(ValueError):
    """A problem of the spec file, naming the entry."""


def load_spec(path: str, only: Optional[Sequence[str]] = None) -> dict:
    """The spec as plain dicts, checked; errors name the spec entry. With ``only`` (row
    names), the config files of the other rows need not exist yet."""
    from mmengine.config import Config
    if not osp.isfile(path):
        raise FileNotFoundError(f'{path}: benchmark spec not found')
    raw = Config.fromfile(path).to_dict()
    name = osp.splitext(osp.basename(path))[0]
    task = raw.get('task')
    if task not in EVALUATORS:
        raise SpecError(f'{path}: task must be one of {sorted(EVALUATORS)}, got {task!r}')
    metrics = list(raw.get('metrics') or EVALUATORS[task])
    for m in metrics:
        if m not in EVALUATORS[task]:
            raise SpecError(f'{path}: metrics: {m!r} is not produced by the {task} evaluator '
                            f'(it gives {list(EVALUATORS[task])})')
    spec = dict(name=name, path=path, task=task, metrics=metrics,
                seeds=list(raw.get('seeds', [0, 1, 2])), iters=raw.get('iters'),
                epochs=raw.get('epochs'),
                val_times=int(raw.get('val_times', 10)),
                converge_metric=raw.get('converge_metric', CONVERGE_METRIC[task]),
                plot_metric=raw.get('plot_metric', metrics[0]),
                data=raw.get('data', {}), title=raw.get('title', name),
                notes=raw.get('notes', ''), groups=[],
                headlines=list(raw.get('headlines', [])),
                bootstrap=raw.get('bootstrap', 'seeds+images'),
                converge_rule=raw.get('converge_rule', 'last'))
    if spec['converge_rule'] not in CONVERGE_RULES:
        raise SpecError(f'{path}: converge_rule must be one of {list(CONVERGE_RULES)}, got '
                        f'{spec["converge_rule"]!r}')
    if spec['bootstrap'] not in BOOTSTRAPS:
        raise SpecError(f'{path}: bootstrap must be one of {list(BOOTSTRAPS)}, got '
                        f'{spec["bootstrap"]!r}')
    if spec['plot_metric'] not in metrics:
        raise SpecError(f'{path}: plot_metric {spec["plot_metric"]!r} is not in metrics')
    groups = raw.get('groups')
    if not groups:
        raise SpecError(f'{path}: no groups')
    seen_groups = set()
    for gi, g in enumerate(groups):
        where = f'{path}: groups[{gi}]'
        ds = g.get('dataset')
        if not ds:
            raise SpecError(f'{where}: no dataset name')
        fractions = [float(f) for f in g.get('fractions', [1.0])]
        for f in fractions:
            if not 0 < f <= 1:
                raise SpecError(f'{where} ({ds}): fraction {f} outside (0, 1]')
        if (ds, tuple(fractions)) in seen_groups:
            raise SpecError(f'{where}: data set {ds!r} with fractions {fractions} twice')
        seen_groups.add((ds, tuple(fractions)))
        group = dict(dataset=ds, fractions=fractions, cfg_options=g.get('cfg_options', {}),
                     retest_of=g.get('retest_of'), where=where, rows=[])
        names = set()
        for ri, r in enumerate(g.get('rows') or []):
            rname = r.get('name')
            rwhere = f'{where} ({ds}).rows[{ri}] ({rname})'
            if not rname or rname in names:
                raise SpecError(f'{rwhere}: a row needs a name, unique in its group')
            names.add(rname)
            role = r.get('role', 'method')
            if role not in ROLES:
                raise SpecError(f'{rwhere}: role must be one of {ROLES}, got {role!r}')
            seeds = list(r.get('seeds', spec['seeds']))
            if len(seeds) < 2 or len(set(seeds)) != len(seeds):
                raise SpecError(f'{rwhere}: needs at least 2 distinct seeds for a confidence '
                                f'interval, got {seeds}')
            baselines = r.get('baseline') or []
            baselines = [baselines] if isinstance(baselines, str) else list(baselines)
            if role == 'method' and not baselines:
                raise SpecError(f'{rwhere}: a method row names its baseline row(s)')
            row_fracs = [float(f) for f in r.get('fractions', fractions)]
            if not set(row_fracs) <= set(fractions):
                raise SpecError(f'{rwhere}: fractions {row_fracs} not all among the '
                                f"group's {fractions}")
            row = dict(name=rname, role=role, baselines=baselines, seeds=seeds,
                       fractions=row_fracs,
                       config=r.get('config'), same_as=r.get('same_as'),
                       operating_point=r.get('operating_point'),
                       cfg_options=r.get('cfg_options', {}),
                       iters=r.get('iters', None if r.get('epochs') else spec['iters']),
                       epochs=r.get('epochs', None if r.get('iters') else spec['epochs']),
                       where=rwhere)
            if row['same_as']:
                if row['operating_point'] not in OPERATING_POINTS:
                    raise SpecError(f'{rwhere}: same_as needs operating_point in '
                                    f'{sorted(OPERATING_POINTS)}')
                if OPERATING_POINTS[row['operating_point']][0] != task:
                    raise SpecError(f'{rwhere}: operating point {row["operating_point"]!r} '
                                    f'is for {OPERATING_POINTS[row["operating_point"]][0]!r} '
                                    f'specs, not {task!r}')
            else:
                if not row['config']:
                    raise SpecError(f'{rwhere}: no config')
                if not osp.isfile(osp.join(REPO, row['config'])) and \
                        (not only or rname in only):
                    raise SpecError(f'{rwhere}: config {row["config"]} not found')
                if bool(row['iters']) == bool(row['epochs']):
                    raise SpecError(f'{rwhere}: give one budget, "iters" or "epochs" (spec '
                                    'or row)')
            group['rows'].append(row)
        by_name = {r['name']: r for r in group['rows']}
        for row in group['rows']:
            for b in row['baselines'] + ([row['same_as']] if row['same_as'] else []):
                if b not in by_name or b == row['name']:
                    raise SpecError(f'{row["where"]}: {b!r} is not another row of the group '
                                    f'(rows: {sorted(by_name)})')
            if row['same_as']:
                src = by_name[row['same_as']]
                if src['same_as']:
                    raise SpecError(f'{row["where"]}: same_as {src["name"]!r}, itself a '
                                    'same_as row')
                row['seeds'] = src['seeds']
                row['fractions'] = [f for f in row['fractions'] if f in src['fractions']]
            for b in row['baselines']:
                missing = set(row['fractions']) - set(by_name[b]['fractions'])
                if missing:
                    raise SpecError(f'{row["where"]}: baseline {b!r} has no runs at '
                                    f'fractions {sorted(missing)}')
        spec['groups'].append(group)
    _check_retests(spec)
    return spec


def _check_retests(spec: dict) -> None:
    """A group with ``retest_of=DATASET`` trains nothing: each of its rows tests the
    checkpoints of the same row of that group (same config, seeds, fractions, budget) with
    its own ``cfg_options`` (another test set); errors name the group."""
    by_ds = {g['dataset']: g for g in spec['groups']}
    for g in spec['groups']:
        src_ds = g['retest_of']
        if not src_ds:
            continue
        where = f'{g["where"]} ({g["dataset"]})'
        src = by_ds.get(src_ds)
        if src is None or src is g or src['retest_of']:
            raise SpecError(f'{where}: retest_of {src_ds!r} is not another training group '
                            f'(groups: {sorted(by_ds)})')
        src_rows = {r['name']: r for r in src['rows']}
        for row in g['rows']:
            if row['same_as']:
                continue
            s_row = src_rows.get(row['name'])
            if s_row is None or any(s_row[k] != row[k] for k in (
                    'config', 'seeds', 'iters', 'epochs', 'cfg_options')) or \
                    not set(row['fractions']) <= set(s_row['fractions']):
                raise SpecError(f'{row["where"]}: a retest row must be a row of {src_ds!r} '
                                'with the same config, seeds, budget, options and fractions')
            row['retest_of'] = s_row


def run_key(dataset: str, fraction: float, name: str, seed: int) -> str:
    return f'{dataset}/frac{frac_tag(fraction)}/{name}/seed{seed}'


# --------------------------------------------------------------------------- configs
def _rescale_schedule(cfg, budget: int, unit: str, source: str) -> None:
    """Budget of ``budget`` iterations (``unit='iters'``) or epochs: train_cfg.max_iters /
    max_epochs and every scheduler's begin / end / milestones (warm-up included) rescaled
    by budget / the config's own. Hooks with their own epochs (e.g. the pseudo-label
    rounds) are not rescaled: give an epoch budget equal to the config's for those."""
    tc = cfg.get('train_cfg') or {}
    key = 'max_iters' if unit == 'iters' else 'max_epochs'
    old = int(tc.get(key) or 0)
    if old <= 0:
        raise ValueError(f'{source}: the benchmark sets a budget in {unit}; the config\'s '
                         f'train_cfg ({tc.get("type")}) has no {key}')
    scale = budget / old
    cfg.train_cfg[key] = int(budget)
    scheds = cfg.get('param_scheduler') or []
    for s in (scheds if isinstance(scheds, list) else [scheds]):
        if bool(s.get('by_epoch', True)) != (unit == 'epochs'):
            raise ValueError(f'{source}: scheduler {s.get("type")} counts '
                             f'{"epochs" if s.get("by_epoch", True) else "iterations"}; the '
                             f'budget is in {unit}')
        for k in ('begin', 'end', 'T_max', 'total_iters'):
            if isinstance(s.get(k), (int, float)) and s[k] < 10 ** 8:
                s[k] = int(round(s[k] * scale))
        if 'milestones' in s:
            s['milestones'] = [int(round(m * scale)) for m in s['milestones']]


def budget_of(row: dict) -> Tuple[str, int]:
    """('iters', n) or ('epochs', n)."""
    return ('iters', int(row['iters'])) if row['iters'] else ('epochs', int(row['epochs']))


def final_checkpoint(child: str, row: dict) -> str:
    """The checkpoint a run is tested with: the config's best (``save_best``) if written,
    else the last one."""
    best = sorted(glob.glob(osp.join(child, 'best_*.pth')))
    if len(best) > 1:
        raise ValueError(f'{child}: several best checkpoints {best}')
    unit, n = budget_of(row)
    path = best[0] if best else osp.join(child, f'{"iter" if unit == "iters" else "epoch"}_'
                                         f'{n}.pth')
    if not osp.isfile(path):
        raise FileNotFoundError(f'{path}: the final checkpoint is missing')
    return path


_LOADED: Dict[str, Any] = {}


def _load_row_config(path: str, opts: dict):
    """A row's config with its options, loaded once per (file, options, file contents) and
    copied for each (fraction, seed)."""
    from projects.common.runner_utils import load_config
    key = json.dumps([path, opts, osp.getmtime(path)], sort_keys=True, default=str)
    if key not in _LOADED:
        _LOADED[key] = load_config(path, opts or None)
    return copy.deepcopy(_LOADED[key])


def prepare_config(spec: dict, group: dict, row: dict, fraction: float, seed: int):
    """The resolved config of one run (work_dir not set) and the SHA-256 of its content."""
    opts = {**group['cfg_options'], **row['cfg_options']}
    src = f'{row["where"]}: {row["config"]}'
    cfg = _load_row_config(osp.join(REPO, row['config']), opts)
    cfg.pop('work_dir', None)
    cfg.pop('launcher', None)
    unit, budget = budget_of(row)
    _rescale_schedule(cfg, budget, unit, src)
    cfg.randomness = dict(seed=int(seed), deterministic=False)
    hooks = cfg.setdefault('default_hooks', {})
    if unit == 'iters':
        val_every = max(1, budget // spec['val_times'])
        cfg.train_cfg.val_interval = val_every
        cfg.train_cfg.val_begin = val_every
        hooks['checkpoint'] = dict(type='CheckpointHook', interval=budget, by_epoch=False,
                                   max_keep_ckpts=1, save_last=True)
    elif not (hooks.get('checkpoint') or {}).get('save_best'):
        # epochs: the config's validation interval; its best checkpoint if it keeps one
        # (early stopping on the validation labels), else the last
        hooks['checkpoint'] = dict(type='CheckpointHook', interval=budget, by_epoch=True,
                                   max_keep_ckpts=1, save_last=True)
    n = 0
    for loader in ('train_dataloader', 'val_dataloader'):
        for pipe in pipelines(cfg, loader):
            for t in sparsifiers(pipe):
                if t.get('mode', 'nested') != 'nested':
                    raise ValueError(f'{src}: SparsifyAnnotations mode {t["mode"]!r}; the '
                                     "benchmark varies fraction and seed of mode='nested'")
                t['fraction'] = float(fraction)
                t['seed'] = int(seed)
                n += loader == 'train_dataloader'
    if n == 0 and fraction != 1.0:
        raise ValueError(f'{src}: no SparsifyAnnotations in the training pipeline, so the '
                         f'fraction {fraction} cannot be applied')
    for pipe in pipelines(cfg, 'test_dataloader'):
        if sparsifiers(pipe):
            raise ValueError(f'{src}: the test pipeline sparsifies its labels; the '
                             'benchmark scores on complete labels')
    text = json.dumps(cfg.to_dict(), sort_keys=True, default=str)
    return cfg, hashlib.sha256(text.encode()).hexdigest()


def expected_runs(spec: dict, only: Optional[Sequence[str]] = None,
                  fractions: Optional[Sequence[float]] = None,
                  datasets: Optional[Sequence[str]] = None,
                  seeds: Optional[Sequence[int]] = None) -> List[dict]:
    """Every (group, row, fraction, seed) that trains (same_as rows train nothing), in
    the order of ``only`` when given (then spec order), restricted to ``fractions``,
    ``datasets`` and ``seeds`` (then in the order of ``seeds`` within a row)."""
    runs = []
    for group in spec['groups']:
        if datasets and group['dataset'] not in datasets:
            continue
        wanted = None
        if only:
            by_name = {r['name']: r for r in group['rows']}
            wanted = set(only) | {by_name[n]['same_as'] for n in only
                                  if n in by_name and by_name[n]['same_as']}
        for row in group['rows']:
            if row['same_as'] or (wanted is not None and row['name'] not in wanted):
                continue
            for f in row['fractions']:
                if fractions and not any(abs(f - x) < 1e-9 for x in fractions):
                    continue
                row_seeds = row['seeds'] if seeds is None else \
                    [s for s in seeds if s in row['seeds']]
                for s in row_seeds:
                    src = (run_key(group['retest_of'], f, row['name'], s)
                           if group['retest_of'] else None)
                    runs.append(dict(group=group, row=row, fraction=f, seed=s, source=src,
                                     key=run_key(group['dataset'], f, row['name'], s)))
    if only:  # the order asked for: rows named first run first
        rank = {n: i for i, n in enumerate(only)}
        runs.sort(key=lambda r: rank.get(r['row']['name'], len(rank)))
    runs.sort(key=lambda r: r['source'] is not None)  # retests after the trainings
    return runs


# --------------------------------------------------------------------------- results file
def results_dir(spec: dict) -> str:
    """``docs/benchmarks/<spec>/`` (or the spec's ``results_dir``, set by --results-dir)."""
    return spec.get('results_dir') or osp.join(REPO, 'docs', 'benchmarks', spec['name'])


def read_runs(path: str) -> Dict[str, dict]:
    """The records of ``runs.jsonl`` by run key (a later line replaces an earlier one);
    a line that is not a JSON object with a ``key`` is an error with its line number."""
    out: Dict[str, dict] = {}
    if not osp.isfile(path):
        return out
    with open(path) as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f'{path}: line {i} is not JSON ({err})') from err
            if not isinstance(rec, dict) or 'key' not in rec or 'config_sha256' not in rec:
                raise ValueError(f'{path}: line {i} is not a run record (no "key" / '
                                 '"config_sha256")')
            out[rec['key']] = rec
    return out


_LOCK = threading.Lock()


def append_run(path: str, record: dict, in_place: bool = False) -> None:
    """Add ``record``, replacing any earlier line of the same key: at the end, or with
    ``in_place`` where that line was (atomic rewrite; a corrupt file is an error, never
    silently rewritten)."""
    with _LOCK:
        runs = read_runs(path)
        if not in_place:
            runs.pop(record['key'], None)
        runs[record['key']] = record

        def write(tmp: str) -> None:
            with open(tmp, 'w') as f:
                for r in runs.values():
                    f.write(json.dumps(r, sort_keys=True, separators=(',', ':')) + '\n')

        os.makedirs(osp.dirname(path), exist_ok=True)
        atomic_write(path, write)


# --------------------------------------------------------------------------- evaluation
def _load_pkl(path: str) -> list:
    import pickle
    if not osp.isfile(path):
        raise FileNotFoundError(f'{path}: predictions not found')
    with open(path, 'rb') as f:
        raw = pickle.load(f)
    if not isinstance(raw, list) or not raw:
        raise ValueError(f'{path}: expected a non-empty list of per-image results')
    return raw


def _build_metric(cfg_dict: dict, scope: str, **override):
    import importlib
    from mmengine.registry import DefaultScope
    importlib.import_module('projects.common')
    metrics = importlib.import_module(f'{scope}.registry').METRICS
    cfg = dict(cfg_dict)
    cfg.update(override)
    with DefaultScope.overwrite_default_scope(scope):
        return metrics.build(cfg)


def _evaluator_cfg(cfg, key: str, wanted: str) -> dict:
    ev = cfg.get(key)
    evs = ev if isinstance(ev, list) else [ev]
    for e in evs:
        if e and str(e.get('type', '')).split('.')[-1] == wanted:
            return dict(e)
    raise ValueError(f'{key} has no {wanted} (the benchmark scores with it)')


def _image_names(raw: list) -> List[str]:
    return [osp.basename(str(r.get('img_path', i))) for i, r in enumerate(raw)]


def _split_counts(ev_cfg: dict, pkl: str) -> Tuple[list, list, Any]:
    """The dumped samples of one split, their (gt, pred) as ``CellDetectionMetric`` reads
    them, and ``counts(thr)``: per-image point-matching (tp, fp, fn) at score >= thr."""
    from projects.common.metrics import _sample_name
    raw = _load_pkl(pkl)
    metric = _build_metric(ev_cfg, 'mmdet', coco_ap=False, classwise=False,
                           exclusive_recall=False)
    read = [(metric._read_gt(s, _sample_name(s, i)), metric._read_pred(s, _sample_name(s, i)))
            for i, s in enumerate(raw)]

    def counts(thr: float) -> np.ndarray:
        metric.score_thr = float(thr)
        return np.array([metric._image_result(g, p, 'image')['points'] for g, p in read],
                        dtype=np.int64).reshape(-1, 3)

    return raw, read, counts


def calibrated_counts(val_images: list, radius: float,
                      test_counts: Callable[[float], np.ndarray]
                      ) -> Tuple[float, Optional[float], np.ndarray]:
    """(c, the threshold 0.5 c, the per-image test counts at it) of ``F1@calib``.

    c is the mean score of the annotated validation cells (:func:`labelling_frequency`,
    scores below the dump's ``score_thr`` count as 0). c = 0 (no annotated validation cell
    has a detection) leaves no threshold to calibrate: the threshold is None and nothing
    is kept (every test cell missed), as a user's calibration step stops there.
    """
    from projects.common.calibration import calibrated_threshold, labelling_frequency
    c = labelling_frequency(val_images, radius)
    if c == 0:
        return c, None, test_counts(float('inf'))
    thr = calibrated_threshold(c)
    return c, thr, test_counts(thr)


def evaluate_det(cfg, val_pkl: str, test_pkl: str, ckpt: Optional[str] = None) -> dict:
    """Metrics and per-image counts of a detection run (see the module docstring)."""
    ev_cfg = _evaluator_cfg(cfg, 'test_evaluator', 'CellDetectionMetric')
    _, val_read, val_counts = _split_counts(ev_cfg, val_pkl)
    test_raw, _, test_counts = _split_counts(ev_cfg, test_pkl)
    val_grid = np.stack([val_counts(t) for t in THRESHOLDS])  # (T, images, 3)
    test_grid = np.stack([test_counts(t) for t in THRESHOLDS])
    i_val = THRESHOLDS.index(stats.best_threshold(THRESHOLDS, stats.pooled_f1(val_grid))[0])
    i_oracle = THRESHOLDS.index(stats.best_threshold(THRESHOLDS,
                                                     stats.pooled_f1(test_grid))[0])
    images = [dict(gt=g['points'], pred=(p['boxes'][:, :2] + p['boxes'][:, 2:]) / 2,
                   scores=p['scores']) for g, p in val_read]
    c, thr_calib, calib = calibrated_counts(images, float(ev_cfg.get('radius', 12.0)),
                                            test_counts)
    ops = {'0.5': 0.5, 'val': THRESHOLDS[i_val], 'calib': thr_calib,
           'oracle': THRESHOLDS[i_oracle]}
    # the grid already holds every operating point but the calibrated one
    counts = {'0.5': test_grid[THRESHOLDS.index(0.5)], 'val': test_grid[i_val],
              'calib': calib, 'oracle': test_grid[i_oracle]}
    per_image = {f'counts@{k}': v.tolist() for k, v in counts.items()}
    metrics = {f'F1@{k}': float(stats.pooled_f1(v)) for k, v in counts.items()}
    full = _build_metric(ev_cfg, 'mmdet', coco_ap=True, classwise=False,
                         exclusive_recall=False)
    full.process(None, test_raw)
    coco = full.compute_metrics(full.results)
    metrics.update(AP=float(coco['coco_AP']), AP50=float(coco['coco_AP50']))
    extra = {f'thr@{k}': None if t is None else float(t) for k, t in ops.items()}
    extra['c'] = float(c)
    return dict(metrics=metrics, extra=extra, per_image=per_image,
                images=_image_names(test_raw),
                curve_test=dict(thresholds=list(THRESHOLDS),
                                counts=test_grid.sum(1).tolist()))  # pooled (tp, fp, fn)


def evaluate_seg(cfg, val_pkl: Optional[str], test_pkl: str,
                 ckpt: Optional[str] = None) -> dict:
    """Metrics and per-image object scores of a segmentation run."""
    ev_cfg = _evaluator_cfg(cfg, 'test_evaluator', 'NucleiMetric')
    raw = _load_pkl(test_pkl)
    metric = _build_metric(ev_cfg, 'mmseg')
    metric.process(None, raw)
    agg = metric.compute_metrics(metric.results)
    per_image = {}
    for key, src in (('Dice_obj', 'dice_obj'), ('AJI', 'aji'), ('PQ', 'pq'), ('SQ', 'sq'),
                     ('DQ', 'dq')):
        per_image[key] = [[float(r[src]), float(bool(r['has_objects']))]
                          for r in metric.results]
    metrics = dict(Dice_obj=agg['dice_obj'], AJI=agg['aji'], PQ=agg['pq'], SQ=agg['sq'],
                   DQ=agg['dq'], pixel_F1=agg['pixel_f1'])
    return dict(metrics={k: float(v) for k, v in metrics.items()}, extra={},
                per_image=per_image, images=_image_names(raw))


def _ann_file(cfg, loader: str) -> str:
    """The annotation file of ``cfg[loader]``'s data set (``data_root`` joined)."""
    ds = cfg[loader]['dataset']
    return osp.join(ds.get('data_root', ''), ds['ann_file'])


def evaluate_patch(cfg, val_pkl: Optional[str], test_pkl: str,
                   ckpt: Optional[str] = None) -> dict:
    """OP / PC / mAcc / mIoU of a patch classifier stitched into its test slides
    (``PatchSegMetric``); per-image terms: each slide's (C, C) confusion, flattened."""
    from projects.negative_pseudo_labels.bags import read_bag_json
    ev_cfg = _evaluator_cfg(cfg, 'test_evaluator', 'PatchSegMetric')
    ev_cfg.pop('out_dir', None)
    raw = _load_pkl(test_pkl)
    metric = _build_metric(ev_cfg, 'mmseg')
    # the class names are the test file's, as tools/test.py's dataset gives them
    metric.dataset_meta = dict(
        classes=read_bag_json(_ann_file(cfg, 'test_dataloader'))['metainfo']['classes'])
    metric.process(None, raw)
    results = list(metric.results)
    agg = metric.compute_metrics(results)
    bags = sorted({r['bag'] for r in results})
    per_bag = []
    for b in bags:  # the same confusion code, one slide at a time
        metric.compute_metrics([r for r in results if r['bag'] == b])
        per_bag.append(metric.last_confusion.reshape(-1).astype(int).tolist())
    metrics = {k: float(agg[k]) for k in ('OP', 'PC', 'mAcc', 'mIoU')}
    return dict(metrics=metrics, extra={}, per_image=dict(confusion=per_bag), images=bags)


_CROP_BASELINES: Dict[tuple, tuple] = {}


def evaluate_cluster(cfg, val_pkl: Optional[str], test_pkl: str,
                     ckpt: Optional[str] = None) -> dict:
    """Purity / entropy / F-score of a cell GAN's clusters (argmax Q, ``ClusteringMetric``)
    on the labelled test crops, and of the paper's baselines on the same crops (Hu et al.
    2018, Table II): k-means (K = Q's categories, the run's seed) on raw pixels and on HOG,
    fitted on the training crops. With the run's checkpoint ``ckpt``, also Table I: an
    L2-SVM trained on the labelled training crops' D features (sect. IV-C), and on their
    pixels and HOG, scored on the labelled test crops (support-weighted F-score); and the
    diagnostics of what c encodes: k-means on Q's own features (``*@kmeans_q``) and the
    agreement of argmax Q under the 8 rotations / flips of each test crop (``extra``).
    Per-crop terms: (cluster, class) and (predicted class, class) pairs of each."""
    import importlib
    importlib.import_module('projects.cell_gan')
    from projects.cell_gan.evaluation import (SVM_C, hog_features, kmeans_clusters,
                                              load_model, orientation_agreement,
                                              pixel_features, q_and_features, read_cells,
                                              svm_predict)
    ev_cfg = _evaluator_cfg(cfg, 'test_evaluator', 'ClusteringMetric')
    raw = _load_pkl(test_pkl)
    metric = _build_metric(ev_cfg, 'mmseg')
    metric.process(None, raw)
    q = np.array(metric.results, np.int64).reshape(-1, 2)

    size = int(cfg.model.get('img_size', 32))
    train = read_cells(_ann_file(cfg, 'train_dataloader'), size, progress=False)
    test = read_cells(_ann_file(cfg, 'test_dataloader'), size, progress=False)
    if len(test['labels']) != len(q) or (test['labels'] != q[:, 1]).any():
        raise ValueError(f'{test_pkl}: the predictions are not the crops of {test["path"]} '
                         'in order (the k-means baselines are paired crop by crop)')
    keep, lab_tr = q[:, 1] >= 0, train['labels'] >= 0
    pairs, extra = {'pairs': q[keep]}, {}
    k, seed = int(cfg.model.num_categories), int(cfg.get('randomness', {}).get('seed', 0))

    def km(f_tr: np.ndarray, f_te: np.ndarray) -> np.ndarray:
        _, (c_te, ) = kmeans_clusters(f_tr, k, seed, predict=[f_te])
        return np.stack([c_te, test['labels']], 1)[keep]

    def svm(f_tr: np.ndarray, f_te: np.ndarray, at: str, name: str) -> tuple:
        pred, warned = svm_predict(f_tr[lab_tr], train['labels'][lab_tr], f_te[keep], SVM_C,
                                   seed)
        # LinearSVC's convergence warnings while fitting (0: converged)
        return ({f'svm_pairs{at}': np.stack([pred, test['labels'][keep]], 1)},
                {f'svm_warnings@{name}': int(warned)})

    # the raw-crop baselines depend on the crops, K and the seed only: computed once per
    # process for the runs that share them (the rows of a grid, a rescore)
    base_key = (train['path'], test['path'], osp.getmtime(train['path']),
                osp.getmtime(test['path']), size, k, seed, ckpt is not None)
    if base_key not in _CROP_BASELINES:
        base_pairs, base_extra = {}, {}
        for name, fn in (('pixels', pixel_features), ('hog', hog_features)):
            f_tr, f_te = fn(train['crops']), fn(test['crops'])
            base_pairs[f'pairs@kmeans_{name}'] = km(f_tr, f_te)
            if ckpt is not None:
                p, e = svm(f_tr, f_te, f'@svm_{name}', name)
                base_pairs.update(p)
                base_extra.update(e)
        _CROP_BASELINES[base_key] = (base_pairs, base_extra)
    pairs.update(_CROP_BASELINES[base_key][0])
    extra.update(_CROP_BASELINES[base_key][1])
    if ckpt is not None:
        model = load_model(cfg, ckpt)
        (_, d_tr, q_tr), (logits, d_te, q_te) = (q_and_features(model, c, 64, progress=False)
                                                 for c in (train['crops'], test['crops']))
        p, e = svm(d_tr, d_te, '', 'd')
        pairs.update(p)
        extra.update(e)
        # what c encodes (issue 17, item 11): k-means on Q's own features, and how often
        # argmax Q keeps a test crop's cluster under the 8 rotations / flips
        pairs['pairs@kmeans_q'] = km(q_tr, q_te)
        views = orientation_agreement(model, test['crops'], logits.argmax(1), 64,
                                      progress=False)
        extra.update({f'orientation_{key}': views[key]
                      for key in ('agreement', 'chance', 'all_agree')})
    metrics = {}
    for m, (how, key) in EVALUATORS['cluster'].items():
        if key in pairs:
            metrics[m] = float(stats.STATISTICS[how](pairs[key]))
    names = [str(i) for i in np.flatnonzero(keep)]
    return dict(metrics=metrics, extra=extra,
                per_image={key: v.astype(int).tolist() for key, v in pairs.items()},
                images=names)


# evaluator(cfg, val_pkl, test_pkl, ckpt): the resolved config, tools/test.py's dumps of
# the validation (det only) and test predictions, the tested checkpoint (read by the
# cluster evaluator for the D features; the others score the dumps alone)
EVALUATE = dict(det=evaluate_det, seg=evaluate_seg, patch=evaluate_patch,
                cluster=evaluate_cluster)


# --------------------------------------------------------------------------- running
def _git_rev() -> str:
    try:
        rev = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=REPO,
                             capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(['git', 'status', '--porcelain', '--', 'projects', 'configs',
                                'tools'], cwd=REPO, capture_output=True, text=True,
                               timeout=10).stdout.strip()
        return rev + ('+dirty' if dirty else '')
    except (OSError, subprocess.SubprocessError):
        return 'unknown'


def _val_curve(scalars: str, metric: str) -> List[List[float]]:
    curve = []
    for rec in scalar_records(scalars):
        if 'iter' not in rec and metric in rec:
            curve.append([int(rec['step']), float(rec[metric])])
    if not curve:
        raise ValueError(f'{scalars}: no validation record with {metric!r} (the convergence '
                         'rule reads it; set converge_metric in the spec)')
    return curve


def run_dir(spec: dict, work_dir: str, key: str) -> str:
    """The folder of run ``key`` (checkpoints, logs, ``test_<split>/<split>_preds.pkl``)."""
    return osp.join(work_dir, spec['name'], key.replace('/', '__'))


def execute(spec: dict, run: dict, work_dir: str, threads: int) -> dict:
    """Train, test and score one run (``run['cfg']`` / ``run['sha']`` from
    :func:`prepare_config`: mmengine's config loading is not thread-safe); returns its
    record."""
    t0 = time.time()
    cfg, sha = copy.deepcopy(run['cfg']), run['sha']  # prepared in the main thread
    child = run_dir(spec, work_dir, run['key'])
    os.makedirs(child, exist_ok=True)
    cfg.work_dir = child
    cfg_path = osp.join(child, 'config.py')
    atomic_write(cfg_path, cfg.dump)
    env = {'OMP_NUM_THREADS': str(threads), 'MKL_NUM_THREADS': str(threads)}
    preds, trained = {}, child
    if run['source']:  # a retest: the source run's checkpoint on this group's test set
        trained = run_dir(spec, work_dir, run['source'])
        if not osp.isdir(trained):
            raise FileNotFoundError(
                f'{trained}: the run {run["source"]} this retest tests is not on disk; run '
                'it first (remove its line from runs.jsonl if --resume skips it)')
        cpu = 0.0
        if spec['task'] == 'det':
            preds['val'] = osp.join(trained, 'test_val', 'val_preds.pkl')
    else:
        cpu = run_child(cfg_path, child, env=env)
    scalars = newest_scalars(trained)
    ckpt = final_checkpoint(trained, run['row'])
    for split in (('val', 'test') if spec['task'] == 'det' and not run['source']
                  else ('test', )):
        test_cfg = copy.deepcopy(cfg)
        if split == 'val':
            test_cfg.test_dataloader = test_cfg.val_dataloader
            test_cfg.test_evaluator = test_cfg.val_evaluator
        split_dir = osp.join(child, f'test_{split}')
        os.makedirs(split_dir, exist_ok=True)
        test_cfg.work_dir = split_dir
        path = osp.join(split_dir, f'{split}.py')
        atomic_write(path, test_cfg.dump)
        preds[split] = osp.join(split_dir, f'{split}_preds.pkl')
        cpu += run_child(path, split_dir, train_py=TEST_PY, env=env,
                         extra=[ckpt, '--out', preds[split]])
    result = EVALUATE[spec['task']](cfg, preds.get('val'), preds['test'], ckpt)
    curve = _val_curve(scalars, spec['converge_metric'])
    return dict(key=run['key'], spec=spec['name'], dataset=run['group']['dataset'],
                fraction=run['fraction'], row=run['row']['name'], seed=run['seed'],
                config=run['row']['config'], config_sha256=sha,
                budget=list(budget_of(run['row'])), checkpoint=osp.basename(ckpt),
                wall_s=round(time.time() - t0, 1), cpu_s=round(cpu, 1), threads=threads,
                code=_git_rev(),
                val_curve=curve, converge_metric=spec['converge_metric'],
                converged=stats.converged(curve, rule=spec['converge_rule']), status='ok',
                retest_of=run['source'],
                **result)


_TEST_KEYS = ('test_dataloader', 'test_evaluator', 'test_cfg', 'work_dir')


def _check_same_training(spec: dict, run: dict, cfg) -> None:
    """A retest run's config must equal its source run's but for the test set."""
    src_group = next(g for g in spec['groups'] if g['dataset'] == run['group']['retest_of'])
    src_cfg, _ = prepare_config(spec, src_group, run['row']['retest_of'], run['fraction'],
                                run['seed'])
    mine, theirs = ({k: v for k, v in c.to_dict().items() if k not in _TEST_KEYS}
                    for c in (cfg, src_cfg))
    if json.dumps(mine, sort_keys=True, default=str) != \
            json.dumps(theirs, sort_keys=True, default=str):
        diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        raise SpecError(f'{run["group"]["where"]} ({run["group"]["dataset"]}): retest_of '
                        f'{src_group["dataset"]!r}, but '
                        f'its options change more than the test set ({diff})')


def _completed(pool: ThreadPoolExecutor, fn, items: list):
    """``fn`` over ``items`` in ``pool``, futures as they finish; the pool is shut down
    (all done) before the generator ends."""
    with pool:
        yield from as_completed([pool.submit(fn, x) for x in items])


def runs_to_do(spec: dict, records: Dict[str, dict], resume: bool,
               only: Optional[Sequence[str]] = None,
               fractions: Optional[Sequence[float]] = None,
               datasets: Optional[Sequence[str]] = None,
               seeds: Optional[Sequence[int]] = None) -> Tuple[List[dict], int]:
    """The selected runs to train, in order, each with its prepared ``cfg`` / ``sha``
    (with ``resume``, a run recorded with the same config hash is skipped), and the number
    skipped. A retest is checked to train as its source run did."""
    todo, skipped = [], 0
    for run in expected_runs(spec, only, fractions, datasets, seeds):
        cfg, sha = prepare_config(spec, run['group'], run['row'], run['fraction'], run['seed'])
        if run['source']:
            _check_same_training(spec, run, cfg)
        run.update(cfg=cfg, sha=sha)
        rec = records.get(run['key'])
        if resume and rec is not None and rec['config_sha256'] == sha:
            skipped += 1
            continue
        todo.append(run)
    return todo, skipped


def run_benchmark(spec: dict, work_dir: str, jobs: int, resume: bool,
                  only: Optional[Sequence[str]], threads: int = 1,
                  fractions: Optional[Sequence[float]] = None,
                  datasets: Optional[Sequence[str]] = None,
                  seeds: Optional[Sequence[int]] = None) -> dict:
    out = osp.join(results_dir(spec), 'runs.jsonl')
    todo, skipped = runs_to_do(spec, read_runs(out), resume, only, fractions, datasets,
                               seeds)
    print(f'[benchmark] {spec["name"]}: {len(todo)} runs to do, {skipped} already in {out}; '
          f'{jobs} at a time, {threads} thread(s) each', flush=True)
    failures = []

    def one(run: dict) -> Tuple[dict, Optional[dict]]:
        try:
            rec = execute(spec, run, work_dir, threads)
            append_run(out, rec)
            return run, rec
        except Exception as err:  # noqa: BLE001  (isolate a crashed run, report it)
            return run, dict(error=f'{type(err).__name__}: {err}',
                             traceback=traceback.format_exc()[-4000:])

    n = 0
    phases = [[r for r in todo if r['source'] is None], [r for r in todo if r['source']]]
    for fut in (f for phase in phases if phase  # retests start once every training ended
                for f in _completed(ThreadPoolExecutor(max_workers=jobs), one, phase)):
        run, rec = fut.result()
        n += 1
        if 'error' in rec:
            failures.append(dict(key=run['key'], where=run['row']['where'], **rec))
            print(f'[benchmark] ({n}/{len(todo)}) {run["key"]}: FAILED {rec["error"]}',
                  flush=True)
            write_json(osp.join(work_dir, spec['name'], 'failures.json'),
                       dict(failures=failures))
        else:
            shown = ', '.join(f'{m} {rec["metrics"][m]:.4f}' for m in spec['metrics'][:4])
            print(f'[benchmark] ({n}/{len(todo)}) {run["key"]}: {shown} '
                  f'(converged: {rec["converged"]}, {rec["wall_s"]:.0f} s)', flush=True)
    if failures:
        print(f'[benchmark] {len(failures)} run(s) failed; see '
              f'{osp.join(work_dir, spec["name"], "failures.json")}', flush=True)
    return dict(done=n - len(failures), failed=failures, skipped=skipped)


def rescore(spec: dict, work_dir: str, only: Optional[Sequence[str]] = None,
            fractions: Optional[Sequence[float]] = None,
            datasets: Optional[Sequence[str]] = None,
            seeds: Optional[Sequence[int]] = None) -> dict:
    """Score the recorded runs again with the current evaluator, from the predictions and
    the checkpoint in their run folders, without training: adds what a newer evaluator
    measures (metrics, ``extra``) to each record, in place. A stale config hash or a
    missing run folder is an error before anything is scored; a run whose stored numbers
    (or test images) the evaluator does not reproduce keeps its record unchanged, and is
    named in the error raised once the others are written."""
    out = osp.join(results_dir(spec), 'runs.jsonl')
    done = read_runs(out)
    todo = []
    for run in expected_runs(spec, only, fractions, datasets, seeds):
        rec = done.get(run['key'])
        if rec is None:
            continue
        where = f'{out}: {run["key"]} ({run["row"]["where"]})'
        cfg, sha = prepare_config(spec, run['group'], run['row'], run['fraction'], run['seed'])
        if rec['config_sha256'] != sha:
            raise SpecError(f'{where}: recorded from another config (hash); run it again '
                            '(--resume) instead of rescoring it')
        child = run_dir(spec, work_dir, run['key'])
        trained = run_dir(spec, work_dir, rec.get('retest_of') or run['key'])
        cfg.work_dir = child
        paths = dict(test=osp.join(child, 'test_test', 'test_preds.pkl'),
                     ckpt=osp.join(trained, rec['checkpoint']))
        if spec['task'] == 'det':
            paths['val'] = osp.join(trained, 'test_val', 'val_preds.pkl')
        missing = [p for p in paths.values() if not osp.isfile(p)]
        if missing:
            raise FileNotFoundError(f'{where}: {missing[0]} is missing (rescoring reads the '
                                    f'run folders under {work_dir})')
        todo.append((where, rec, cfg, paths))
    rescored, failed = 0, []
    for where, rec, cfg, paths in todo:
        result = EVALUATE[spec['task']](cfg, paths.get('val'), paths['test'], paths['ckpt'])
        changed = [m for m, v in rec['metrics'].items() if m in result['metrics']
                   and not np.isclose(result['metrics'][m], v, rtol=0, atol=1e-9)]
        problem = None
        if result['images'] != rec['images']:
            problem = f'{paths["test"]} holds other test images than the record'
        elif changed:
            problem = (f'rescoring changes {changed[0]} from {rec["metrics"][changed[0]]!r} '
                       f'to {result["metrics"][changed[0]]!r}')
        if problem:
            failed.append(f'{where}: {problem}')
            print(f'[benchmark] NOT rescored {rec["key"]}: {problem}', flush=True)
            continue
        added = sorted(set(result['metrics']) - set(rec['metrics'])) + \
            sorted(set(result['extra']) - set(rec.get('extra', {})))
        append_run(out, dict(rec, metrics={**rec['metrics'], **result['metrics']},
                             extra={**rec.get('extra', {}), **result['extra']},
                             per_image={**rec['per_image'], **result['per_image']}),
                   in_place=True)
        rescored += 1
        print(f'[benchmark] rescored {rec["key"]}: added {", ".join(added) or "nothing"}',
              flush=True)
    if failed:
        raise ValueError('; '.join(failed) + f' ({len(failed)} record(s) left as they were; '
                         'features computed with another number of torch threads differ in '
                         'the last bits: pass the --threads the run was scored with)')
    return dict(rescored=rescored)


# --------------------------------------------------------------------------- report
def _fmt(x: float, digits: int = 3) -> str:
    return 'nan' if x != x else f'{x:.{digits}f}'


def _signed(x: float, digits: int = 3) -> str:
    return f'{x:+.{digits}f}'


def collect(spec: dict, records: Dict[str, dict]) -> List[dict]:
    """Per group and fraction, per row: the records of its seeds (checked against the
    spec's current configs: a stale hash is an error naming the spec entry)."""
    tables = []
    for group in spec['groups']:
        for f in group['fractions']:
            rows = []
            for row in group['rows']:
                if f not in row['fractions']:
                    continue
                src = row if not row['same_as'] else \
                    next(r for r in group['rows'] if r['name'] == row['same_as'])
                found = {}
                for s in src['seeds']:
                    key = run_key(group['dataset'], f, src['name'], s)
                    rec = records.get(key)
                    if rec is None:
                        continue
                    _, sha = prepare_config(spec, group, src, f, s)
                    if rec['config_sha256'] != sha:
                        raise ValueError(
                            f'{src["where"]}: the result {key} in runs.jsonl was made from '
                            f'another version of {src["config"]} (config hash '
                            f'{rec["config_sha256"][:12]} != {sha[:12]}); rerun it with '
                            f'--resume (or --only {src["name"]})')
                    found[s] = _as_row_record(rec, row)
                rows.append(dict(row=row, seeds=found))
            tables.append(dict(group=group, fraction=f, rows=rows))
    return tables


def _as_row_record(rec: dict, row: dict) -> dict:
    """The record seen through a row's operating point (same_as rows)."""
    if not row['operating_point']:
        return rec
    rec = copy.deepcopy(rec)
    task, mapping = OPERATING_POINTS[row['operating_point']]
    for dst, src in mapping.items():
        rec['metrics'][dst] = rec['metrics'][src]
        pd_dst, pd_src = EVALUATORS[task][dst][1], EVALUATORS[task][src][1]
        rec['per_image'][pd_dst] = rec['per_image'][pd_src]
    return rec


def paired(spec: dict, method: dict, base: dict, metric: str,
           bootstrap: Optional[str] = None) -> Optional[Dict[str, float]]:
    """Paired difference of ``metric`` (method - base) over their common seeds; the
    bootstrap resamples what ``bootstrap`` names (default: the spec's). Computed once per
    (baseline, metric, bootstrap) and kept on the method's table row: the report, the
    README blocks, the headlines and the resampling comparison all read the same result."""
    bootstrap = bootstrap or spec['bootstrap']
    memo = method.setdefault('paired', {})
    slot = (base['row']['name'], metric, bootstrap)
    if slot not in memo:
        memo[slot] = _paired(spec, method, base, metric, bootstrap)
    return memo[slot]


def _paired(spec: dict, method: dict, base: dict, metric: str,
            bootstrap: str) -> Optional[Dict[str, float]]:
    seeds = sorted(set(method['seeds']) & set(base['seeds']))
    if len(seeds) < 2:
        return None
    how, key = EVALUATORS[spec['task']][metric]
    if how == 'seeds':
        return stats.paired_t([method['seeds'][s]['metrics'][metric] for s in seeds],
                              [base['seeds'][s]['metrics'][metric] for s in seeds])
    for s in seeds:
        if method['seeds'][s]['images'] != base['seeds'][s]['images']:
            raise ValueError(f'{method["row"]["where"]}: seed {s} was tested on other images '
                             f'than its baseline {base["row"]["name"]}; no paired test')
    return stats.paired_bootstrap([method['seeds'][s]['per_image'][key] for s in seeds],
                                  [base['seeds'][s]['per_image'][key] for s in seeds],
                                  stats.STATISTICS[how], n_boot=N_BOOT, seed=0,
                                  resample_seeds=bootstrap == 'seeds+images')


def render_tables(spec: dict, tables: List[dict], rows: Optional[Sequence[str]] = None,
                  level: str = '##') -> List[str]:
    """The score and paired-difference tables of every (data set, fraction), restricted to
    ``rows`` (names) when given."""
    metrics = spec['metrics']
    lines: List[str] = []
    for t in tables:
        g = t['group']
        t_rows = [r for r in t['rows'] if rows is None or r['row']['name'] in rows]
        if not t_rows:
            continue
        what = UNTHINNED.get(spec['task'],
                             f'{frac_tag(t["fraction"])}% of the training labels')
        lines += [f'{level} {g["dataset"]}, {what}',
                  '']
        head = ['row', 'role', 'seeds', 'budget', 'converged'] + metrics
        body = []
        for r in t_rows:
            recs = [r['seeds'][s] for s in sorted(r['seeds'])]
            row = r['row']
            cells = [f'`{row["name"]}`', row['role'], f'{len(recs)}/{len(row["seeds"])}']
            if trains_nothing(row):
                cells += ['n/a', 'n/a']
            else:
                cells += [_budget(recs[0]) if recs else '-',
                          f'{_n_converged(spec, r)}/{len(recs)}' if recs else '-']
            for m in metrics:
                vals = [x['metrics'][m] for x in recs]
                if not vals:
                    cells.append('-')
                    continue
                cells.append(_mean_ci(vals))
            body.append(cells)
        lines += _md_table(head, body) + ['']
        by_name = {r['row']['name']: r for r in t['rows']}
        diff_rows = []
        for r in t_rows:
            for b in r['row']['baselines']:
                if rows is not None and b not in rows:
                    continue
                cells = [f'`{r["row"]["name"]}` − `{b}`']
                for m in metrics:
                    d = paired(spec, r, by_name[b], m)
                    star = '*' if EVALUATORS[spec['task']][m][0] == 'seeds' else ''
                    cells.append('-' if d is None else
                                 f'{_signed(d["diff"])} [{_signed(d["lo"])}, '
                                 f'{_signed(d["hi"])}]{star} '
                                 f'{stats.verdict(d["lo"], d["hi"], m not in LOWER_IS_BETTER)}')
                diff_rows.append(cells)
        if diff_rows:
            lines += ['Paired differences (verdict at 95%):', '']
            lines += _md_table(['method − baseline'] + metrics, diff_rows) + ['']
    return lines


def _mean_ci(vals: Sequence[float]) -> str:
    """'mean ± 95% t-interval' over seeds (the mean alone for one seed)."""
    s = stats.summarise_seeds(vals)
    return _fmt(s['mean']) + ('' if s['ci'] != s['ci'] else f' ± {_fmt(s["ci"])}')


def diagnostic_lines(spec: dict, tables: List[dict]) -> List[str]:
    """Cluster specs: what the categorical code encodes (issue 17, item 11), per trained
    row: argmax Q's purity next to k-means on Q's own features, and how often argmax Q
    keeps a test crop's cluster under its 8 rotations / flips, against chance. Runs
    scored before the evaluator measured these are left out (``--rescore`` adds them)."""
    if spec['task'] != 'cluster':
        return []
    keys = ('orientation_agreement', 'orientation_chance', 'orientation_all_agree')
    body = []
    for t in tables:
        for r in t['rows']:
            recs = [r['seeds'][s] for s in sorted(r['seeds'])
                    if keys[0] in r['seeds'][s].get('extra', {})]
            if r['row']['same_as'] or not recs:
                continue
            body.append([f'`{r["row"]["name"]}`', f'{len(recs)}/{len(r["seeds"])}']
                        + [_mean_ci([x['metrics'][m] for x in recs])
                           for m in ('purity', 'purity@kmeans_q')]
                        + [_mean_ci([x['extra'][k] for x in recs]) for k in keys])
    if not body:
        return []
    return ['## What does the categorical code encode?', '',
            'Diagnostics of issue 17 (item 11), on the test crops. If k-means on Q\'s own '
            'features (the input of its linear head) is much purer than argmax Q, the '
            'representation holds the classes and the code carves it otherwise. The '
            'agreement is the share of (crop, symmetry) pairs in which argmax Q keeps the '
            'crop\'s cluster under the 7 other rotations / flips; "chance" is the agreement '
            'of clusters of the same sizes drawn independently of the crop; "all 8" the '
            'share of crops whose 8 copies share one cluster. Cells: mean ± 95% t-interval '
            'over the runs that measured them.', ''] + _md_table(
        ['row', 'runs', 'purity (argmax Q)', 'purity (k-means on Q\'s features)',
         'agreement', 'chance', 'all 8'], body) + ['']


def headline_lines(spec: dict, tables: List[dict]) -> List[str]:
    """For each ``headlines`` entry of the spec (kind of label, data set, fraction, metric;
    optional ``methods`` / ``peers``: the rows to choose from): the best method row against
    the best peer row, by mean ``metric``, with the paired interval and verdict. Only rows
    with all their seeds compete (a row half-run is not a headline); a row whose runs did
    not all converge says how many did."""
    out = []
    for h in spec['headlines']:
        t = next((t for t in tables if t['group']['dataset'] == h['dataset']
                  and t['fraction'] == float(h.get('fraction', 1.0))), None)
        where = f'{spec["path"]}: headline {h.get("kind")!r}'
        if t is None:
            raise SpecError(f'{where}: no table for {h["dataset"]} at {h.get("fraction")}')
        m = h['metric']
        if m not in spec['metrics']:
            raise SpecError(f'{where}: metric {m!r} is not among the spec metrics')

        def best(role: str) -> Optional[dict]:
            allowed = h.get('methods' if role == 'method' else 'peers')
            # an operating-point row is the same model as its source: it competes only
            # on the metrics its threshold changes
            done = [r for r in t['rows'] if r['row']['role'] == role
                    and len(r['seeds']) >= max(2, len(r['row']['seeds']))
                    and (allowed is None or r['row']['name'] in allowed)
                    and (not r['row']['same_as']
                         or m in OPERATING_POINTS[r['row']['operating_point']][1])]
            sign = -1.0 if m in LOWER_IS_BETTER else 1.0
            return max(done, key=lambda r: (sign * np.mean([x['metrics'][m] for x in
                                                            r['seeds'].values()]),
                                            r['row']['name']), default=None)

        meth, peer = best('method'), best('peer')
        cmd = (f'`python tools/analysis_tools/benchmark.py configs/benchmarks/'
               f'{spec["name"]}.py --report`')
        if meth is None or peer is None:
            out.append(f'| {h["kind"]} | {_data_label(spec, t)} | {m} | '
                       f'(runs pending) | | | {cmd} |')
            continue
        d = paired(spec, meth, peer, m)
        mv = stats.summarise_seeds([x['metrics'][m] for x in meth['seeds'].values()])
        pv = stats.summarise_seeds([x['metrics'][m] for x in peer['seeds'].values()])
        diff = '-' if d is None else (
            f'{_signed(d["diff"])} [{_signed(d["lo"])}, {_signed(d["hi"])}] '
            f'{stats.verdict(d["lo"], d["hi"], m not in LOWER_IS_BETTER)}')
        out.append(f'| {h["kind"]} | {_data_label(spec, t)} | {m} | '
                   f'`{meth["row"]["name"]}` {_fmt(mv["mean"])} ± {_fmt(mv["ci"])}'
                   f'{_unconverged_note(spec, meth)} | '
                   f'`{peer["row"]["name"]}` {_fmt(pv["mean"])} ± {_fmt(pv["ci"])}'
                   f'{_unconverged_note(spec, peer)} | '
                   f'{diff} | {cmd} |')
    return out


def resampling_lines(spec: dict, tables: List[dict]) -> List[str]:
    """The verdicts that change when the bootstrap resamples the other way (seeds and
    images vs images alone): the two choices compared, in the report."""
    other = next(b for b in BOOTSTRAPS if b != spec['bootstrap'])
    body, n = [], 0
    for t in tables:
        by_name = {r['row']['name']: r for r in t['rows']}
        for r in t['rows']:
            for b in r['row']['baselines']:
                for m in spec['metrics']:
                    if EVALUATORS[spec['task']][m][0] == 'seeds':
                        continue
                    d, e = paired(spec, r, by_name[b], m), paired(spec, r, by_name[b], m, other)
                    if d is None:
                        continue
                    n += 1
                    hib = m not in LOWER_IS_BETTER
                    v = stats.verdict(d['lo'], d['hi'], hib)
                    w = stats.verdict(e['lo'], e['hi'], hib)
                    if v != w:
                        body.append([_data_label(spec, t),
                                     f'`{r["row"]["name"]}` − `{b}`', m,
                                     f'[{_signed(d["lo"])}, {_signed(d["hi"])}] {v}',
                                     f'[{_signed(e["lo"])}, {_signed(e["hi"])}] {w}'])
    if not n:
        return []
    change = 'changes its' if len(body) == 1 else 'change their'
    lines = ['## Does the verdict depend on what the bootstrap resamples?', '',
             f'Of the {n} bootstrapped comparisons above, {len(body)} {change} verdict when '
             f'a draw resamples {BOOTSTRAPS[other]} instead of {BOOTSTRAPS[spec["bootstrap"]]} '
             f'(spec key `bootstrap`). Resampling the images alone treats the seeds as fixed: '
             'a row whose runs disagree (one learns, the others collapse) then gets an '
             'interval as narrow as if every run had reached the mean.', '']
    if body:
        lines += _md_table(['data', 'method − baseline', 'metric', spec['bootstrap'], other],
                           body) + ['']
    return lines


def render_report(spec: dict, tables: List[dict]) -> str:
    metrics = spec['metrics']
    lines = [f'# Benchmark `{spec["name"]}`: {spec["title"]}', '',
             'Generated by `python tools/analysis_tools/benchmark.py '
             f'configs/benchmarks/{spec["name"]}.py --report` from `runs.jsonl` in this folder '
             '(do not edit by hand).', '']
    if spec['notes']:
        lines += [spec['notes'].strip(), '']
    recs = [rec for t in tables for r in t['rows'] if not r['row']['same_as']
            for rec in r['seeds'].values()]
    cpu_h = sum(rec.get('cpu_s', rec['wall_s']) for rec in recs) / 3600
    no_cpu = sum('cpu_s' not in rec for rec in recs)
    lines += [f'{len(recs)} runs, {cpu_h:.1f} CPU core-hours in all (the training and test '
              'children, one thread per run'
              + (f'; {no_cpu} runs recorded before the CPU time was, counted by their wall '
                 'time on a shared machine' if no_cpu else '')
              + '). Cells: mean ± 95% t-interval over seeds. Paired differences: '
              'method − baseline on the same seeds, fractions and test images, 95% bootstrap '
              f'interval; a draw resamples {BOOTSTRAPS[spec["bootstrap"]]} ({N_BOOT} draws; '
              'metrics marked * use the paired t-interval over seeds). "converged": '
              + CONVERGE_RULES[spec['converge_rule']].format(spec['converge_metric'])
              + ' (seeds that did / seeds run)'
              + ('; n/a: rows computed on the raw crops, which train nothing'
                 if any(trains_nothing(r) for g in spec['groups'] for r in g['rows'])
                 else '') + '.', '']
    lines += render_tables(spec, tables)
    lines += diagnostic_lines(spec, tables)
    lines += resampling_lines(spec, tables)
    lines += ['![results](results.png)', '']
    return '\n'.join(lines)


def _data_label(spec: dict, table: dict) -> str:
    """'synthetic, 30%' (the data set and its label fraction); the data set alone where the
    spec does not thin the labels (patch and cluster tasks: the fraction is always 1)."""
    if spec['task'] in UNTHINNED:
        return table['group']['dataset']
    return f'{table["group"]["dataset"]}, {frac_tag(table["fraction"])}%'


def _budget(rec: dict) -> str:
    unit, n = rec['budget']
    return f'{n} {"it" if unit == "iters" else "ep"}'


def _md_table(head: List[str], body: List[List[str]]) -> List[str]:
    out = ['| ' + ' | '.join(head) + ' |', '|' + '|'.join('---' for _ in head) + '|']
    out += ['| ' + ' | '.join(row) + ' |' for row in body]
    return out


def plot_report(spec: dict, tables: List[dict], path: str) -> None:
    """One panel per (data set, fraction), two to a line: ``plot_metric`` per row, seeds as
    dots, the mean with its 95% interval as a bar. A metric whose values all lie in [0, 1]
    is drawn on [0, 1] (a 3-seed t-interval may reach beyond: the bar is cut at the
    frame)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    m = spec['plot_metric']
    n = len(tables)
    cols = min(2, n)
    lines = -(-n // cols)
    width = max(6.0 / cols, 0.45 * max(len(t['rows']) for t in tables) + 1.5)
    fig, axes = plt.subplots(lines, cols, figsize=(width * cols, 4.6 * lines), squeeze=False)
    every = [x['metrics'][m] for t in tables for r in t['rows'] for x in r['seeds'].values()]
    unit = bool(every) and 0.0 <= min(every) and max(every) <= 1.0
    for ax, t in zip(axes.flat, tables):
        names = [r['row']['name'] for r in t['rows']]
        for i, r in enumerate(t['rows']):
            vals = [r['seeds'][s]['metrics'][m] for s in sorted(r['seeds'])]
            colour = 'tab:blue' if r['row']['role'] == 'peer' else 'tab:orange'
            ax.plot([i] * len(vals), vals, '.', color=colour, alpha=0.6)
            if len(vals) >= 2:
                s = stats.summarise_seeds(vals)
                ax.errorbar([i], [s['mean']], yerr=[s['ci']], fmt='o', color=colour,
                            capsize=3)
        if not any(r['seeds'] for r in t['rows']):
            ax.text(0.5, 0.5, 'runs pending', transform=ax.transAxes, ha='center',
                    va='center', color='0.5')
        if unit:
            ax.set_ylim(-0.03, 1.03)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=60, ha='right', fontsize=7)
        ax.set_title(_data_label(spec, t), fontsize=9)
        ax.set_ylabel(m)
        ax.grid(alpha=0.3)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    fig.suptitle(f'{spec["name"]}: {m}\n(blue: peers, orange: methods; dots: seeds, bar: '
                 'mean with 95% CI)', fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / fig.get_figheight()))
    atomic_write(path, lambda tmp: fig.savefig(tmp, format='png', dpi=110,
                                               metadata={'Software': None}))
    plt.close(fig)


# --------------------------------------------------------------------------- model index
# configs folder -> the metafile's Collection (OpenMMLab model-index format, as mmdet's
# configs/<model>/metafile.yml)
COLLECTIONS = {
    'configs/benchmarks/zoo': dict(
        Name='MMHisto zoo peers',
        Paper=dict(Title='MMDetection / MMSegmentation model zoo configs, retrained on '
                   'sparsely annotated cells'),
        README='configs/benchmarks/zoo/README.md'),
    'configs/pu_detection': dict(
        Name='PU detection',
        Paper=dict(Title='Positive-unlabeled Learning for Cell Detection in Histopathology '
                   'Images with Incomplete Annotations (Zhao et al., MICCAI 2021)'),
        README='projects/pu_detection/README.md'),
    'configs/exclusive_ce': dict(
        Name='Exclusive cross-entropy',
        Paper=dict(Title='Sparse-shot Learning with Exclusive Cross-Entropy for Extremely '
                   'Many Localisations (Panteli et al., ICCV 2021)'),
        README='projects/exclusive_ce/README.md'),
    'configs/point_supervision': dict(
        Name='Point supervision',
        Paper=dict(Title='Nuclei Segmentation with Point Annotations from Pathology Images '
                   'via Self-Supervised Learning and Co-Training (Lin et al., MedIA 2023)'),
        README='projects/point_supervision/README.md'),
    'configs/negative_pseudo_labels': dict(
        Name='Negative pseudo labels',
        Paper=dict(Title='Negative Pseudo Labeling using Class Proportion for Semantic '
                   'Segmentation in Pathology (Tokunaga et al., ECCV 2020)'),
        README='projects/negative_pseudo_labels/README.md'),
    'configs/stain': dict(
        Name='Stain augmentation',
        Paper=dict(Title='Whole-Slide Mitosis Detection in H&E Breast Histology Using PHH3 as '
                   'a Reference to Train Distilled Stain-Invariant Convolutional Networks '
                   '(Tellez et al., IEEE TMI 2018)'),
        README='README.md'),
    'configs/cell_gan': dict(
        Name='Cell GAN',
        Paper=dict(Title='Unsupervised Learning for Cell-level Visual Representation in '
                   'Histopathology Images with Generative Adversarial Networks (Hu et al., '
                   'IEEE JBHI 2019)'),
        README='projects/cell_gan/README.md'),
}
TASK_NAMES = dict(det='Object Detection', seg='Semantic Segmentation',
                  patch='Semantic Segmentation', cluster='Unsupervised Clustering')


def model_summaries(spec: dict, tables: List[dict]) -> List[dict]:
    """One entry per (config, data set, fraction) with >= 1 finished seed: the means."""
    out = []
    for t in tables:
        for r in t['rows']:
            row = r['row']
            if row['same_as'] or not r['seeds']:
                continue
            recs = [r['seeds'][s] for s in sorted(r['seeds'])]
            out.append(dict(
                config=row['config'], task=spec['task'], spec=spec['name'],
                dataset=f'{t["group"]["dataset"]}-labels{frac_tag(t["fraction"])}',
                # a retest group tests the checkpoints trained on its source group
                train_dataset=f'{t["group"]["retest_of"] or t["group"]["dataset"]}'
                              f'-labels{frac_tag(t["fraction"])}',
                budget=recs[0]['budget'], seeds=len(recs),
                metrics={m: round(float(np.mean([x['metrics'][m] for x in recs])), 4)
                         for m in spec['metrics']}))
    return out


def write_model_index(repo: str = REPO) -> List[str]:
    """``configs/<folder>/metafile.yml`` per folder with benchmarked configs and the root
    ``model-index.yml`` importing them, from every ``docs/benchmarks/*/models.json``
    (written by --report). Returns the files written."""
    import yaml
    models: List[dict] = []
    for path in sorted(glob.glob(osp.join(repo, 'docs', 'benchmarks', '*', 'models.json'))):
        with open(path) as f:
            models += json.load(f)['models']
    by_dir: Dict[str, Dict[str, dict]] = {}
    for m in models:
        folder = osp.dirname(m['config'])
        if folder not in COLLECTIONS:
            raise ValueError(f'{m["config"]}: no model-index collection for {folder} (add '
                             'it to COLLECTIONS in tools/analysis_tools/benchmark.py)')
        name = osp.splitext(osp.basename(m['config']))[0]
        entry = by_dir.setdefault(folder, {}).setdefault(name, dict(
            Name=name, **{'In Collection': COLLECTIONS[folder]['Name']}, Config=m['config'],
            Metadata={'Training Data': [], 'Training Resources': '1 CPU thread',
                      ('Iterations' if m['budget'][0] == 'iters' else 'Epochs'):
                          m['budget'][1]},
            Results=[], Weights=''))
        entry['Metadata']['Training Data'].append(m['train_dataset'])
        entry['Results'].append(dict(Task=TASK_NAMES[m['task']], Dataset=m['dataset'],
                                     Metrics=dict(m['metrics'])))
    written = []
    for folder in sorted(by_dir):
        entries = [by_dir[folder][k] for k in sorted(by_dir[folder])]
        for e in entries:
            e['Metadata']['Training Data'] = sorted(set(e['Metadata']['Training Data']))
            e['Results'].sort(key=lambda r: r['Dataset'])
        doc = dict(Collections=[dict(COLLECTIONS[folder])], Models=entries)
        path = osp.join(repo, folder, 'metafile.yml')
        _write_text(path, '# written by tools/analysis_tools/benchmark.py --report from '
                    'docs/benchmarks/*/models.json\n'
                    + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100))
        written.append(path)
    index = dict(Import=[osp.join(f, 'metafile.yml') for f in sorted(by_dir)])
    path = osp.join(repo, 'model-index.yml')
    _write_text(path, yaml.safe_dump(index, sort_keys=False))
    written.append(path)
    return written


def _write_text(path: str, text: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, 'w') as f:
            f.write(text)

    atomic_write(path, write)


HEADLINE_HEAD = ['| kind of label | data | metric | best method (mean ± 95% CI) | best peer '
                 '| method − peer [95% CI] | regenerate |', '|---|---|---|---|---|---|---|']
# the order of the root README's headlines: from the most labels to none (sparse boxes or
# masks, points only, class proportions, nothing); other specs follow by name
HEADLINE_ORDER = ('det_sparse', 'seg_sparse', 'points', 'npl', 'cellgan')


def _headline_rank(path: str) -> Tuple[int, str]:
    name = osp.basename(osp.dirname(path))
    return (HEADLINE_ORDER.index(name) if name in HEADLINE_ORDER else len(HEADLINE_ORDER),
            name)


def update_readmes(spec: dict, tables: List[dict], repo: str = REPO) -> List[str]:
    """Rewrite the generated blocks of README.md and projects/*/README.md:

    * ``<!-- benchmark:SPEC rows=a,b -->`` ... ``<!-- /benchmark:SPEC -->``: this spec's
      tables restricted to the rows named (all rows without ``rows=``);
    * ``<!-- benchmark:headlines -->`` ... ``<!-- /benchmark:headlines -->``: every spec's
      headline verdicts (``docs/benchmarks/*/headlines.json``), the root README's "Which
      method should I use?".
    Returns the files changed."""
    import re
    heads = []
    for path in sorted(glob.glob(osp.join(repo, 'docs', 'benchmarks', '*', 'headlines.json')),
                       key=_headline_rank):
        with open(path) as f:
            heads += json.load(f)['lines']
    own = re.compile(r'(<!-- benchmark:' + re.escape(spec['name'])
                     + r'(?: rows=([\w,.\-]+))? -->\n)(.*?)(<!-- /benchmark:'
                     + re.escape(spec['name']) + r' -->)', re.S)
    head_re = re.compile(r'(<!-- benchmark:headlines -->\n)(.*?)(<!-- /benchmark:headlines -->)',
                         re.S)
    changed = []
    for path in [osp.join(repo, 'README.md')] + sorted(
            glob.glob(osp.join(repo, 'projects', '*', 'README.md'))):
        if not osp.isfile(path):
            continue
        with open(path) as f:
            text = f.read()

        def tables_block(m) -> str:
            rows = m.group(2).split(',') if m.group(2) else None
            body = render_tables(spec, tables, rows, level='####')
            note = (f'From [docs/benchmarks/{spec["name"]}](../../docs/benchmarks/'
                    f'{spec["name"]}/README.md) (`python tools/analysis_tools/benchmark.py '
                    f'configs/benchmarks/{spec["name"]}.py --report`; do not edit this block).')
            if path == osp.join(repo, 'README.md'):
                note = note.replace('../../docs', 'docs')
            return m.group(1) + '\n'.join([note, ''] + body) + '\n' + m.group(4)

        new = own.sub(tables_block, text)
        new = head_re.sub(lambda m: m.group(1) + '\n'.join(HEADLINE_HEAD + heads) + '\n'
                          + m.group(3), new)
        if new != text:
            _write_text(path, new)
            changed.append(path)
    return changed


def is_converged(spec: dict, rec: dict) -> Optional[bool]:
    """The spec's convergence rule on the record's validation curve (recomputed, so a
    report follows the spec's ``converge_rule`` whatever the run recorded)."""
    return stats.converged(rec['val_curve'], rule=spec['converge_rule'])


def _n_converged(spec: dict, r: dict) -> int:
    """How many of a table row's runs converged."""
    return sum(1 for x in r['seeds'].values() if is_converged(spec, x))


def _unconverged_note(spec: dict, r: dict) -> str:
    """' (k/n converged)' for a trained row whose runs did not all converge, else ''."""
    n = _n_converged(spec, r)
    if n == len(r['seeds']) or trains_nothing(r['row']):
        return ''
    return f' ({n}/{len(r["seeds"])} converged)'


def cost_estimator(spec: dict, records: Dict[str, dict]) -> Callable[[dict], Optional[float]]:
    """CPU seconds a pending run (of ``expected_runs``) will cost: the mean of the finished
    runs of its row on its data set, else of its row, else of the spec's training runs with
    its budget on its data set, else with its budget anywhere (a retest: of the row's
    retests only); None when nothing comparable has run."""
    pools: Dict[tuple, List[float]] = {}
    for rec in records.values():
        if rec.get('cpu_s') is None:  # the first version of the tool did not time runs
            continue
        retest = bool(rec.get('retest_of'))
        budget = json.dumps(rec['budget'])
        for key in ((rec['row'], rec['dataset'], retest), (rec['row'], retest)) + (
                () if retest else ((budget, rec['dataset']), (budget, ))):
            pools.setdefault(key, []).append(rec['cpu_s'])

    def estimate(run: dict) -> Optional[float]:
        name, ds, retest = run['row']['name'], run['group']['dataset'], run['source'] is not None
        budget = json.dumps(list(budget_of(run['row'])))
        tiers = [(name, ds, retest), (name, retest)] + (
            [] if retest else [(budget, ds), (budget, )])
        est = next((pools[t] for t in tiers if t in pools), None)
        return float(np.mean(est)) if est else None
    return estimate


def grid_status(spec: dict, records: Dict[str, dict]) -> dict:
    """How far the spec's grid is: runs expected / done / converged, CPU hours spent and
    an estimate of the hours left (``cost_estimator``; unknown: runs it cannot estimate)."""
    runs = expected_runs(spec)
    keys = {r['key'] for r in runs}
    done = [records[r['key']] for r in runs if r['key'] in records]
    estimate = cost_estimator(spec, {k: v for k, v in records.items() if k in keys})
    pending = [estimate(r) for r in runs if r['key'] not in records]
    left = sum(e for e in pending if e is not None)
    return dict(spec=spec['name'], title=spec['title'], expected=len(runs), done=len(done),
                converged=sum(bool(is_converged(spec, r)) for r in done),
                cpu_h_done=round(sum(r.get('cpu_s') or 0.0 for r in done) / 3600, 2),
                cpu_h_left=round(left / 3600, 2),
                left_unknown=sum(e is None for e in pending))


def plan(spec: dict, only: Optional[Sequence[str]] = None,
         fractions: Optional[Sequence[float]] = None,
         datasets: Optional[Sequence[str]] = None,
         seeds: Optional[Sequence[int]] = None) -> dict:
    """What ``--resume`` would run, in its order, with each run's estimated CPU minutes
    (``cost_estimator``): runs not in ``runs.jsonl``, and recorded runs whose config hash
    no longer matches (stale). Prints the list and the total; trains nothing."""
    records = read_runs(osp.join(results_dir(spec), 'runs.jsonl'))
    keys = {r['key'] for r in expected_runs(spec)}  # as grid_status: the spec's runs only
    estimate = cost_estimator(spec, {k: v for k, v in records.items() if k in keys})
    runs, _ = runs_to_do(spec, records, True, only, fractions, datasets, seeds)
    todo = [dict(key=r['key'], stale=r['key'] in records, cpu_s=estimate(r)) for r in runs]
    for t in todo:
        cost = '?' if t['cpu_s'] is None else f'{t["cpu_s"] / 60:.0f} min'
        print(f'[benchmark] plan: {t["key"]:<60} {cost:>8}'
              + ('  (recorded with another config: stale)' if t['stale'] else ''))
    known = [t['cpu_s'] for t in todo if t['cpu_s'] is not None]
    unknown = len(todo) - len(known)
    print(f'[benchmark] plan: {len(todo)} run(s) to do, about {sum(known) / 3600:.1f} CPU '
          'core-hours' + (f' + {unknown} run(s) with no estimate' if unknown else '')
          + ' (each the mean CPU time of finished runs of its row, else of its budget; on '
          'its data set first)',
          flush=True)
    return dict(todo=todo, cpu_h=sum(known) / 3600, unknown=unknown)


def write_index(repo: str = REPO) -> str:
    """``docs/benchmarks/README.md``: every spec's grid status (``status.json``)."""
    rows = []
    for path in sorted(glob.glob(osp.join(repo, 'docs', 'benchmarks', '*', 'status.json'))):
        with open(path) as f:
            st = json.load(f)
        left = f'{st["cpu_h_left"]:.1f}' + (f' + {st["left_unknown"]} run(s) not yet timed'
                                            if st['left_unknown'] else '')
        rows.append([f'[`{st["spec"]}`]({st["spec"]}/README.md)', st['title'],
                     f'{st["done"]}/{st["expected"]}', f'{st["converged"]}/{st["done"]}',
                     f'{st["cpu_h_done"]:.1f}', left])
    lines = ['# Benchmarks', '',
             'Generated by `python tools/analysis_tools/benchmark.py SPEC --report` (every '
             "spec's `status.json`); do not edit. Each spec's README holds its tables; "
             '`configs/benchmarks/SPEC.py` says what runs. Grids resume with '
             '`python tools/analysis_tools/benchmark.py configs/benchmarks/SPEC.py --jobs 2 '
             '--resume` (`--only ROW...`, `--datasets`, `--fractions`, `--seeds` pick a part; '
             '`--plan` lists the runs it would do, with their estimated CPU time); '
             '`--rescore` adds what a newer evaluator measures to the recorded runs, from '
             'their run folders, without training.', '',
             'CPU hours are core-hours on this project\'s CPU machine (one thread per run); '
             'the hours left are estimated from the finished runs of the same row, else of '
             'the same budget (on the same data set first).',
             ''] + _md_table(['spec', 'question', 'runs done', 'converged', 'CPU h spent',
                              'CPU h left (est.)'], rows)
    path = osp.join(repo, 'docs', 'benchmarks', 'README.md')
    _write_text(path, '\n'.join(lines) + '\n')
    return path


def report(spec: dict) -> Tuple[str, str]:
    out_dir = results_dir(spec)
    records = read_runs(osp.join(out_dir, 'runs.jsonl'))
    tables = collect(spec, records)
    os.makedirs(out_dir, exist_ok=True)
    write_json(osp.join(out_dir, 'models.json'),
               dict(models=model_summaries(spec, tables)))
    md = osp.join(out_dir, 'README.md')
    _write_text(md, render_report(spec, tables))
    png = osp.join(out_dir, 'results.png')
    plot_report(spec, tables, png)
    write_json(osp.join(out_dir, 'headlines.json'), dict(lines=headline_lines(spec, tables)))
    write_json(osp.join(out_dir, 'status.json'), grid_status(spec, records))
    if not spec.get('results_dir'):  # the published results: model index and READMEs
        write_model_index()
        update_readmes(spec, tables)
        write_index()
    return md, png


# --------------------------------------------------------------------------- data
def ensure_data(spec: dict) -> None:
    """Each ``data`` entry: ``path`` must exist, else ``make`` (a command line; ``$VARS``
    from the environment) builds it; a missing variable is an error naming it.

    Building holds an exclusive lock (a file in the temporary folder, named by the path),
    so two benchmarks started together build a data set once: the second waits, then finds
    it. A failed build is an error naming the entry, and a half-written folder at ``path``
    is removed so that the next run does not take it for the data set.
    """
    for name, d in spec['data'].items():
        path = osp.join(REPO, d['path'])
        if osp.exists(path):
            continue
        cmd = d.get('make')
        if not cmd:
            raise FileNotFoundError(f'{spec["path"]}: data {name}: {d["path"]} not found')
        expanded = osp.expandvars(cmd)
        if '$' in expanded:
            raise ValueError(f'{spec["path"]}: data {name}: {d["path"]} not found and its '
                             f'command needs an environment variable: {cmd}')
        key = hashlib.sha1(osp.abspath(path).encode()).hexdigest()[:16]
        with open(osp.join(tempfile.gettempdir(), f'mmhisto-data-{key}.lock'), 'w') as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            if osp.exists(path):  # another benchmark built it while this one waited
                continue
            print(f'[benchmark] making data {name}: {expanded}', flush=True)
            args = shlex.split(expanded)
            if args and args[0] == 'python':
                args[0] = sys.executable
            done = subprocess.run(args, cwd=REPO)
            if done.returncode != 0:
                if osp.isdir(path):
                    shutil.rmtree(path)
                raise RuntimeError(f'{spec["path"]}: data {name}: `{expanded}` failed with '
                                   f'exit status {done.returncode}; {d["path"]} was not made')


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('spec', help='benchmark spec, e.g. configs/benchmarks/det_sparse.py')
    p.add_argument('--work-dir', default=osp.join('work_dirs', 'benchmarks'),
                   help='run folders (checkpoints, logs, predictions)')
    p.add_argument('--jobs', type=int, default=1, help='runs at a time')
    p.add_argument('--threads', type=int, default=1,
                   help='OMP threads per run, and torch threads of the scoring here')
    p.add_argument('--resume', action='store_true',
                   help='skip runs already in runs.jsonl with the same config hash')
    p.add_argument('--report', action='store_true',
                   help='only rebuild README.md and results.png from runs.jsonl')
    p.add_argument('--plan', action='store_true',
                   help='only list the runs --resume would do (missing or stale), in order, '
                   'with their estimated CPU minutes; trains nothing')
    p.add_argument('--rescore', action='store_true',
                   help='score the recorded runs again from their run folders (predictions, '
                   'checkpoint) with the current evaluator, adding what it measures that '
                   'the records lack; no training')
    p.add_argument('--only', nargs='+', metavar='NAME',
                   help='only these rows, run in this order')
    p.add_argument('--fractions', type=float, nargs='+',
                   help='only the runs at these label fractions')
    p.add_argument('--datasets', nargs='+', metavar='NAME',
                   help='only the runs on these data sets (the groups\' `dataset`)')
    p.add_argument('--seeds', nargs='+', type=int, metavar='S',
                   help='only these seeds of each row, in this order (e.g. to split a grid '
                   'between machines)')
    p.add_argument('--results-dir', help='where runs.jsonl, README.md and results.png live '
                   '(default: docs/benchmarks/<spec name>)')
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> dict:
    args = parse_args(argv)
    spec = load_spec(args.spec, args.only)
    if args.results_dir:
        spec['results_dir'] = osp.abspath(args.results_dir)
    for flag, given, known, problem, what in (
            ('--only', args.only, {r['name'] for g in spec['groups'] for r in g['rows']},
             'no such row', 'rows'),
            ('--datasets', args.datasets, {g['dataset'] for g in spec['groups']},
             'no such data set', 'data sets'),
            ('--seeds', args.seeds, {s for g in spec['groups'] for r in g['rows']
                                     for s in r['seeds']}, 'no row has these seeds', 'seeds')):
        unknown = sorted(set(given or ()) - known)
        if unknown:
            raise SpecError(f'{args.spec}: {flag} {unknown}: {problem} ({what}: '
                            f'{sorted(known)})')
    if args.plan:
        return plan(spec, args.only, args.fractions, args.datasets, args.seeds)
    if args.report:
        md, png = report(spec)
        print(f'[benchmark] wrote {md} and {png}', flush=True)
        return dict(report=md)
    if args.jobs < 1 or args.threads < 1:
        raise ValueError('--jobs and --threads must be >= 1')
    import torch  # the evaluators' forward passes (cellgan): as many threads as a run
    before = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        if args.rescore:
            result = rescore(spec, args.work_dir, args.only, args.fractions, args.datasets,
                             args.seeds)
        else:
            ensure_data(spec)
            result = run_benchmark(spec, args.work_dir, args.jobs, args.resume, args.only,
                                   args.threads, args.fractions, args.datasets, args.seeds)
    finally:
        torch.set_num_threads(before)
    md, png = report(spec)
    print(f'[benchmark] wrote {md} and {png}', flush=True)
    return result


if __name__ == '__main__':
    sys.exit(1 if main().get('failed') else 0)
