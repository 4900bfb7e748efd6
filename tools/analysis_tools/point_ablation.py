"""Qu et al.'s ablation (Table II) and upper bound: train configs, score each on the test split.

Example (the README's table)::

    C=configs/point_supervision/scnet_r18-c32
    python tools/analysis_tools/point_ablation.py \\
        ${C}_{vor,vor-clu,vor-clu-cot,vor-clu-cot-color,fullsup}_400i_synthetic.py \\
        --work-dir work_dirs/point_ablation --jobs 2 --resume

Each config is trained in a child process (``tools/train.py``, ``--jobs`` at a time, each
with ``OMP_NUM_THREADS=--threads``) and validated once, after training, on its test split
with its test evaluator (nothing is selected on it). The table lists the nuclei metrics
(pixel accuracy, pixel F1, object Dice, AJI, in %) per config, and is written with the
whole records to ``DIR/point_ablation.{json,md}``. ``--resume`` reuses finished runs whose
config did not change.
"""
import argparse
import os.path as osp
import time
from typing import Dict, List, Optional, Sequence

from mmengine.config import DictAction

from projects.common.child_runs import (NON_METRIC_KEYS, prepare_children, run_jobs,
                                        train_or_reuse, validate_on_test_at_end, write_table)

DONE_FILE = 'point_ablation_done.json'
COLUMNS = (('nuclei/pixel_acc', 'Acc'), ('nuclei/pixel_f1', 'F1'),
           ('nuclei/dice_obj', 'Dice_obj'), ('nuclei/aji', 'AJI'))


def format_table(rows: Sequence[dict]) -> str:
    """Markdown table, metrics in %."""
    head = '| config | ' + ' | '.join(c for _, c in COLUMNS) + ' | train s |'
    lines = [head, '|' + '---|' * (len(COLUMNS) + 2)]
    for r in rows:
        vals = ' | '.join(f'{100 * r["metrics"][k]:.2f}' for k, _ in COLUMNS)
        lines.append(f'| {r["name"]} | {vals} | {r["seconds"]:.0f} |')
    return '\n'.join(lines)


def _run(job: dict, resume: bool, threads: int) -> dict:
    t0 = time.time()
    record, _, reused = train_or_reuse(
        job['cfg_path'], job['dir'], COLUMNS[2][0], DONE_FILE, resume,
        env={'OMP_NUM_THREADS': str(threads), 'MKL_NUM_THREADS': str(threads)})
    missing = [k for k, _ in COLUMNS if k not in record]
    if missing:
        raise ValueError(f'{job["config"]}: the test record has no {missing} (the test '
                         f'evaluator must be NucleiMetric)')
    return dict(name=job['name'], config=job['config'], reused=reused,
                seconds=time.time() - t0, work_dir=osp.abspath(job['dir']),
                metrics={k: v for k, v in record.items() if k not in NON_METRIC_KEYS})


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('configs', nargs='+', help='configs to train and score')
    p.add_argument('--work-dir', required=True, help='one run folder per config inside')
    p.add_argument('--jobs', type=int, default=1, help='trainings at a time')
    p.add_argument('--threads', type=int, default=1, help='OMP threads per training')
    p.add_argument('--resume', action='store_true', help='reuse finished runs')
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='override settings of every config (e.g. train_cfg.max_iters=50)')
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> Dict[str, list]:
    args = parse_args(argv)
    if args.jobs < 1 or args.threads < 1:
        raise ValueError('--jobs and --threads must be >= 1')
    jobs = prepare_children(
        args.configs, args.work_dir, args.cfg_options,
        edit=lambda cfg, config: validate_on_test_at_end(cfg, config, 'point_ablation'))
    rows = run_jobs(jobs, lambda j: _run(j, args.resume, args.threads), args.jobs,
                    'point_ablation',
                    lambda row: f'Dice_obj = {row["metrics"]["nuclei/dice_obj"]:.4f}')
    table = format_table(rows)
    print(table)
    write_table(args.work_dir, 'point_ablation', table, rows)
    print(f'[point_ablation] wrote {osp.join(args.work_dir, "point_ablation")}.{{json,md}}',
          flush=True)
    return dict(rows=rows)


if __name__ == '__main__':
    main()
