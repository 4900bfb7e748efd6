"""Training runs in child processes and the records they leave (shared by the sweep tools).

A child is ``tools/train.py CONFIG --work-dir DIR`` run with the same interpreter; its
stdout / stderr go to ``DIR/child_stdout.log`` / ``child_stderr.log``. Results are read
from mmengine's ``DIR/<timestamp>/vis_data/scalars.json``; a tool marks a finished child
with a small JSON "done" file holding the SHA-256 of the config it trained, so that
``--resume`` retrains only what changed.
"""
import copy
import hashlib
import json
import os
import os.path as osp
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed
from decimal import Decimal
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from projects.common.io import atomic_write, write_json

_TOOLS = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'tools')
TRAIN_PY = osp.join(_TOOLS, 'train.py')
TEST_PY = osp.join(_TOOLS, 'test.py')
TIMESTAMP = re.compile(r'^\d{8}_\d{6}$')  # mmengine's run folder name, %Y%m%d_%H%M%S
NON_METRIC_KEYS = ('step', 'data_time', 'time')


def newest_run(work_dir: str) -> str:
    """``<work_dir>/<newest timestamp>``, mmengine's newest run folder (errors name the folder)."""
    runs = sorted(d for d in os.listdir(work_dir) if TIMESTAMP.match(d)
                  and osp.isdir(osp.join(work_dir, d))) if osp.isdir(work_dir) else []
    if not runs:
        raise FileNotFoundError(f'{work_dir}: no <timestamp> run folder written by mmengine')
    return osp.join(work_dir, runs[-1])


def newest_scalars(work_dir: str) -> str:
    """``<work_dir>/<newest timestamp>/vis_data/scalars.json`` (errors name the folder)."""
    path = osp.join(newest_run(work_dir), 'vis_data', 'scalars.json')
    if not osp.isfile(path):
        raise FileNotFoundError(f'{path}: not found (newest run of {work_dir}; was it made '
                                f'with LocalVisBackend?)')
    return path


def scalar_records(path: str) -> Iterator[dict]:
    """The JSON records of an mmengine ``scalars.json`` (one per line; training records
    have 'iter', validation records 'step'); a line that is not a JSON object is an error
    naming the file and the line."""
    with open(path) as f:
        for i, line in enumerate(f):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f'{path}: line {i + 1} is not JSON ({err})') from err
            if not isinstance(rec, dict):
                raise ValueError(f'{path}: line {i + 1} is not a JSON object')
            yield rec


def last_validation(path: str, metric: str) -> dict:
    """The last validation record of a scalars.json (JSON lines; training lines have 'iter').

    Raises ValueError naming the file when there is no validation record, or when the last
    one has no ``metric`` (listing the keys it has).
    """
    last: Optional[dict] = None
    for rec in scalar_records(path):
        if 'iter' not in rec:
            last = rec
    if last is None:
        raise ValueError(f'{path}: no validation record (did the run validate?)')
    if metric not in last:
        keys = sorted(k for k in last if k not in NON_METRIC_KEYS)
        raise ValueError(f'{path}: metric {metric!r} not in the last validation record; '
                         f'keys found: {keys}')
    return last


def sha256_file(path: str) -> str:
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


def tail(path: str, n: int = 40) -> str:
    if not osp.isfile(path):
        return ''
    with open(path, errors='replace') as f:
        return ''.join(f.readlines()[-n:])


def finished_result(child_dir: str, cfg_path: str, metric: str,
                    done_file: str) -> Optional[dict]:
    """The last validation of a child this tool finished with the same config, else None."""
    done = osp.join(child_dir, done_file)
    if not osp.isfile(done):
        return None
    with open(done) as f:
        info = json.load(f)
    if info.get('config_sha256') != sha256_file(cfg_path):
        print(f'[child_runs]   {cfg_path} differs from the finished run: retraining',
              flush=True)
        return None
    scalars = newest_scalars(child_dir)
    if osp.abspath(scalars) != info.get('scalars'):
        return None
    return last_validation(scalars, metric)


def validate_on_test_at_end(cfg, source: str, who: str = 'the tool') -> None:
    """Make ``cfg`` validate once, after training, on its test split and test evaluator.

    Nothing is selected on that validation: it is the score of the trained model on the
    test labels, read back from ``scalars.json`` like any validation. ``who`` names the
    caller in errors.
    """
    for key in ('test_dataloader', 'test_evaluator'):
        if cfg.get(key, None) is None:
            raise ValueError(f'{source}: {key} missing: {who} scores the test split')
    cfg.val_dataloader = cfg.test_dataloader
    cfg.val_evaluator = cfg.test_evaluator
    cfg.val_cfg = cfg.get('val_cfg', None) or dict(type='ValLoop')
    # mmengine's loops validate when iter >= val_begin and (iter % val_interval == 0 or
    # iter == max): val_begin = max validates once, at the end, whatever val_interval is
    train_cfg = cfg.get('train_cfg', None) or {}
    end = train_cfg.get('max_iters', None) or train_cfg.get('max_epochs', None)
    if not end:
        raise ValueError(f'{source}: train_cfg has neither max_iters nor max_epochs')
    cfg.train_cfg.val_begin = int(end)
    cfg.resume = False


def pipelines(cfg: Any, loader: str) -> List[list]:
    """Every pipeline list of a dataloader's dataset (wrappers such as ConcatDataset too)."""
    found: List[list] = []

    def walk(ds: Any) -> None:
        if isinstance(ds, dict):
            if isinstance(ds.get('pipeline'), list):
                found.append(ds['pipeline'])
            for key in ('dataset', 'datasets'):
                if key in ds:
                    walk(ds[key])
        elif isinstance(ds, (list, tuple)):
            for d in ds:
                walk(d)

    walk((cfg.get(loader) or {}).get('dataset'))
    return found


def sparsifiers(obj: Any) -> List[dict]:
    """Every SparsifyAnnotations dict (``type`` with or without a scope prefix, as
    'mmdet.SparsifyAnnotations') in a pipeline, also inside wrapping transforms
    (``RandomApply(transforms=[...])``, ``RandomChoice``, ...)."""
    found: List[dict] = []
    if isinstance(obj, dict):
        if str(obj.get('type', '')).split('.')[-1] == 'SparsifyAnnotations':
            found.append(obj)
        for v in obj.values():
            found += sparsifiers(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            found += sparsifiers(v)
    return found


def frac_tag(fraction: float) -> str:
    """0.3 -> '30', 0.125 -> '12p5' (percent, 'frac30'): the exact percentage of the float's
    shortest repr, so distinct fractions never share a run folder (6 significant digits,
    '%g', would merge 0.1234571 and 0.1234574)."""
    pct = (Decimal(repr(float(fraction))) * 100).normalize()
    return format(pct, 'f').replace('.', 'p')


def run_child(cfg_path: str, child_dir: str, train_py: str = TRAIN_PY,
              env: Optional[Dict[str, str]] = None, extra: Sequence[str] = ()) -> float:
    """``tools/train.py cfg_path`` in a child process (same interpreter and environment).

    Its stdout / stderr go to ``child_stdout.log`` / ``child_stderr.log`` in ``child_dir``;
    ``env`` adds environment variables, ``extra`` arguments after the config (e.g. the
    checkpoint of ``tools/test.py``); a non-zero exit raises RuntimeError with the command,
    the log paths and the stderr tail.
    """
    out, err = osp.join(child_dir, 'child_stdout.log'), osp.join(child_dir, 'child_stderr.log')
    cmd = [sys.executable, train_py, cfg_path, *extra, '--work-dir', child_dir]
    with open(out, 'w') as fo, open(err, 'w') as fe:
        proc = subprocess.Popen(cmd, stdout=fo, stderr=fe,
                                env=None if env is None else {**os.environ, **env})
        # wait4: the exit status and the CPU time of the child and of the processes it
        # reaped (its data-loader workers)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f'{" ".join(cmd)} exited with {code} (logs: {out}, {err}); '
                           f'last lines of its stderr:\n{tail(err)}')
    return usage.ru_utime + usage.ru_stime


def train_or_reuse(cfg_path: str, child_dir: str, metric: str, done_file: str,
                   resume: bool, env: Optional[Dict[str, str]] = None
                   ) -> Tuple[dict, str, bool]:
    """The last validation record of the child training ``cfg_path`` in ``child_dir``.

    With ``resume``, a run this tool finished with the same config (``done_file``) is
    reused; otherwise the child is trained now (:func:`run_child`) and marked done with the
    config's SHA-256. Returns ``(record, scalars.json path, reused)``.
    """
    if resume:
        record = finished_result(child_dir, cfg_path, metric, done_file)
        if record is not None:
            return record, newest_scalars(child_dir), True
    done = osp.join(child_dir, done_file)
    if osp.isfile(done):
        os.remove(done)
    run_child(cfg_path, child_dir, env=env)
    scalars = newest_scalars(child_dir)
    record = last_validation(scalars, metric)
    write_json(done, dict(config_sha256=sha256_file(cfg_path), scalars=osp.abspath(scalars),
                          returncode=0))
    return record, scalars, False


def prepare_children(configs: Sequence[str], work_dir: str, cfg_options: Optional[dict] = None,
                     edit: Optional[Callable] = None) -> List[dict]:
    """One run folder per config: ``<work_dir>/<config name>/<config name>.py``.

    Each config is loaded with ``cfg_options``, passed to ``edit(cfg, config)`` if given,
    pointed at its folder and dumped there. Returns the jobs (``config``, ``name``,
    ``dir``, ``cfg_path``, ``cfg``); config names must be distinct.
    """
    from projects.common.runner_utils import load_config
    names = [osp.splitext(osp.basename(c))[0] for c in configs]
    if len(set(names)) != len(names):
        raise ValueError(f'config names must be distinct, got {names}')
    jobs = []
    for config, name in zip(configs, names):
        cfg = copy.deepcopy(load_config(config, cfg_options))
        if edit is not None:
            edit(cfg, config)
        child = osp.join(work_dir, name)
        cfg.work_dir = child
        os.makedirs(child, exist_ok=True)
        cfg_path = osp.join(child, f'{name}.py')
        atomic_write(cfg_path, cfg.dump)
        jobs.append(dict(config=config, name=name, dir=child, cfg_path=cfg_path, cfg=cfg))
    return jobs


def run_jobs(jobs: Sequence[dict], run: Callable[[dict], dict], workers: int, tag: str,
             describe: Callable[[dict], str]) -> List[dict]:
    """``run(job)`` for every job, ``workers`` at a time (threads driving child processes).

    Prints ``[tag] (k/n) name: describe(row) (time or 'reused')`` as each finishes; the
    rows come back in the order of the jobs.
    """
    print(f'[{tag}] {len(jobs)} runs, {workers} at a time; logs in each run folder',
          flush=True)
    rows: List[dict] = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(run, j) for j in jobs]
        for fut in as_completed(futures):
            row = fut.result()
            rows.append(row)
            how = 'reused' if row['reused'] else f'{row["seconds"]:.0f} s'
            print(f'[{tag}] ({len(rows)}/{len(jobs)}) {row["name"]}: {describe(row)} ({how})',
                  flush=True)
    order = {j['name']: i for i, j in enumerate(jobs)}
    return sorted(rows, key=lambda r: order[r['name']])


def write_table(work_dir: str, stem: str, table: str, rows: Sequence[dict]) -> None:
    """``<work_dir>/<stem>.json`` (the rows) and ``<stem>.md`` (the table), atomically."""
    write_json(osp.join(work_dir, f'{stem}.json'), dict(rows=list(rows)))

    def write_md(tmp: str) -> None:
        with open(tmp, 'w') as f:
            f.write(table + '\n')

    atomic_write(osp.join(work_dir, f'{stem}.md'), write_md)
