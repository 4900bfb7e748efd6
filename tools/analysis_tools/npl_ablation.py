"""Tokunaga et al.'s Tables 1-2 on proportion bags: train configs, test the best checkpoint.

Example (the README's table)::

    C=configs/negative_pseudo_labels/patchcls_mobilenetv2-w05
    S=40e_synthetic-bags.py
    python tools/analysis_tools/npl_ablation.py ${C}_{sup,pl-fixed,pl-adaptive,npl}_$S \\
        ${C}_{multi-npl,pl-adaptive-npl,pl-adaptive-multi-npl}_$S \\
        --work-dir work_dirs/npl_ablation --jobs 2 --resume --stage1-epochs 24 \\
        --figure-bag test_000 --figure docs/negative_pseudo_labels/test_maps.png

With ``--stage1-epochs E`` the supervised stage, which every config shares (same model,
optimiser, schedule, data and seed; pseudo-label rounds from epoch >= E only), is trained
once (``DIR/stage1``: the first config without its NegativePseudoLabelHook, E epochs,
no best-checkpoint tracking), and each config resumes from its ``epoch_E.pth``: the
paper's two steps ("first trained using the supervised data ... second, fine-tuned using
the pseudo labeling"). It equals training each config from scratch except for the
random flips after epoch E (mmengine does not restore the RNG state on resume), and the
best checkpoint is then chosen among the epochs after E.

Each config is trained in a child process (``tools/train.py``, ``--jobs`` at a time, each
with ``OMP_NUM_THREADS=--threads``); its checkpoint with the best validation mIoU (the
configs' ``save_best``, the paper's early stopping) is scored on the test split by
``tools/test.py`` (predictions kept in ``<run>/test/preds.pkl``). The table lists OP, PC,
mAcc, mIoU (paper eq. 7) and, when the data root holds ``weak_truth.json`` (the synthetic
bags' hidden patch labels, never read by training), the precision of the last round's
positive and negative pseudo labels. Outputs: ``DIR/npl_ablation.{json,md}``,
``DIR/npl_rounds.png`` (per round: mean SAE of the bags and pseudo-label precision) and
with ``--figure`` one picture of the test slide ``--figure-bag``: image, ground truth and
each config's stitched prediction.
``--resume`` reuses finished runs whose config did not change.
"""
import argparse
import copy
import glob
import json
import os
import os.path as osp
import re
import time
from typing import Dict, List, Optional, Sequence

import numpy as np
from mmengine.config import DictAction

from projects.common.child_runs import (TEST_PY, newest_run, newest_scalars, prepare_children,
                                        run_child, run_jobs, train_or_reuse, write_table)
from projects.common.io import atomic_write, read_json, read_rgb_uint8, write_image

DONE_FILE = 'npl_ablation_done.json'
METRICS = ('OP', 'PC', 'mAcc', 'mIoU')
BEST = re.compile(r'best_mIoU_epoch_(\d+)\.pth$')


def best_checkpoint(work_dir: str) -> str:
    """The ``best_mIoU_epoch_<k>.pth`` CheckpointHook kept (error names the folder)."""
    found = [p for p in glob.glob(osp.join(work_dir, 'best_mIoU_epoch_*.pth')) if BEST.search(p)]
    if len(found) != 1:
        raise FileNotFoundError(f'{work_dir}: expected one best_mIoU_epoch_<k>.pth (the '
                                f"configs' save_best='mIoU'), found {len(found)}")
    return found[0]


def read_test_metrics(test_dir: str) -> dict:
    """The metrics JSON tools/test.py left in its newest run folder."""
    files = glob.glob(osp.join(newest_run(test_dir), '*.json'))
    if len(files) != 1:
        raise FileNotFoundError(f'{test_dir}: no metrics JSON from tools/test.py')
    return read_json(files[0], 'test metrics')


def pseudo_label_precision(work_dir: str, truth: np.ndarray) -> List[dict]:
    """Per round: counts and precision of the positive / negative pseudo labels against
    the hidden labels ``truth`` (training-set order of the weak patches)."""
    rounds = []
    for k in range(1, 10_000):
        path = osp.join(work_dir, f'npl_round_{k}.npz')
        if not osp.isfile(path):
            break
        with np.load(path) as z:
            pos, neg, probs = z['positive'], z['negative'], z['probs']
        if len(pos) != len(truth):
            raise ValueError(f'{path}: {len(pos)} weak patches, weak_truth.json has '
                             f'{len(truth)}')
        has = pos >= 0
        rows, cols = np.nonzero(neg)
        rounds.append(dict(
            round=k, positive=int(has.sum()), negative=int(len(rows)),
            positive_precision=float((pos[has] == truth[has]).mean()) if has.any() else None,
            negative_precision=float((truth[rows] != cols).mean()) if len(rows) else None,
            accuracy=float((probs.argmax(1) == truth).mean())))
    return rounds


def _weak_truth(cfg) -> Optional[np.ndarray]:
    ds = cfg.train_dataloader.dataset
    root = ds.get('data_root', '')
    path = osp.join(root, 'weak_truth.json')
    if not osp.isfile(path):
        return None
    truth = read_json(path, 'hidden-label')
    bags = read_json(osp.join(root, ds.ann_file), 'bag')['bags']
    return np.asarray([c for b in bags if not b['labelled'] for c in truth[b['name']]])


SHARED_KEYS = ('model', 'optim_wrapper', 'param_scheduler', 'train_dataloader',
               'val_dataloader', 'val_evaluator', 'randomness', 'train_cfg.val_interval')
HOOK = 'NegativePseudoLabelHook'


def _get(cfg, dotted: str):
    for part in dotted.split('.'):
        cfg = cfg.get(part, None) if cfg is not None else None
    return cfg


def share_stage1(jobs: Sequence[dict], epochs: int, work_dir: str, resume: bool,
                 threads: int) -> str:
    """Train the shared supervised stage once; point every job's config at its last
    checkpoint (``resume=True, load_from=...``). Returns the checkpoint path."""
    if epochs < 1:
        raise ValueError(f'--stage1-epochs must be >= 1, got {epochs}')
    first = jobs[0]
    for job in jobs:
        for key in SHARED_KEYS:
            if _get(job['cfg'], key) != _get(first['cfg'], key):
                raise ValueError(f'{job["config"]}: {key} differs from {first["config"]}: '
                                 'the configs cannot share their supervised stage')
        for hook in job['cfg'].get('custom_hooks', None) or []:
            if hook.get('type') == HOOK and hook.get('begin', 0) < epochs:
                raise ValueError(f'{job["config"]}: {HOOK} begins at epoch '
                                 f'{hook.get("begin", 0)} < --stage1-epochs {epochs}')
        if _get(job['cfg'], 'train_cfg.max_epochs') <= epochs:
            raise ValueError(f'{job["config"]}: train_cfg.max_epochs must exceed '
                             f'--stage1-epochs {epochs}')
    cfg = copy.deepcopy(first['cfg'])
    cfg.custom_hooks = [h for h in cfg.get('custom_hooks', None) or [] if h.get('type') != HOOK]
    cfg.train_cfg.max_epochs = epochs
    cfg.default_hooks.checkpoint.save_best = None
    stage_dir = osp.join(work_dir, 'stage1')
    cfg.work_dir = stage_dir
    os.makedirs(stage_dir, exist_ok=True)
    cfg_path = osp.join(stage_dir, 'stage1.py')
    atomic_write(cfg_path, cfg.dump)
    print(f'[npl_ablation] supervised stage ({epochs} epochs) in {stage_dir}', flush=True)
    train_or_reuse(cfg_path, stage_dir, 'mIoU', DONE_FILE, resume,
                   env={'OMP_NUM_THREADS': str(threads), 'MKL_NUM_THREADS': str(threads)})
    ckpt = osp.abspath(osp.join(stage_dir, f'epoch_{epochs}.pth'))
    if not osp.isfile(ckpt):
        raise FileNotFoundError(f'{ckpt}: the supervised stage left no checkpoint')
    for job in jobs:
        job['cfg'].resume = True
        job['cfg'].load_from = ckpt
        atomic_write(job['cfg_path'], job['cfg'].dump)
    return ckpt


def format_table(rows: Sequence[dict]) -> str:
    """Markdown table: metrics in %, last-round pseudo labels with their precision."""
    head = ('| config | ' + ' | '.join(METRICS) + ' | best epoch | last round: positive '
            '(precision) | negative (precision) | train s |')
    lines = [head, '|' + '---|' * (len(METRICS) + 5)]

    def pct(v):
        return '-' if v is None else f'{100 * v:.1f}%'

    for r in rows:
        vals = ' | '.join(f'{100 * r["metrics"][k]:.1f}' for k in METRICS)
        last = r['rounds'][-1] if r['rounds'] else None
        pos = f'{last["positive"]} ({pct(last["positive_precision"])})' if last else '-'
        neg = f'{last["negative"]} ({pct(last["negative_precision"])})' if last else '-'
        lines.append(f'| {r["name"]} | {vals} | {r["best_epoch"]} | {pos} | {neg} | '
                     f'{r["seconds"]:.0f} |')
    return '\n'.join(lines)


def _run(job: dict, resume: bool, threads: int) -> dict:
    t0 = time.time()
    env = {'OMP_NUM_THREADS': str(threads), 'MKL_NUM_THREADS': str(threads)}
    _, _, reused = train_or_reuse(job['cfg_path'], job['dir'], 'mIoU', DONE_FILE, resume,
                                  env=env)
    ckpt = best_checkpoint(job['dir'])
    test_dir = osp.join(job['dir'], 'test')
    os.makedirs(test_dir, exist_ok=True)
    preds = osp.join(test_dir, 'preds.pkl')
    metrics = read_test_metrics(test_dir) if reused and osp.isfile(preds) else None
    if metrics is None:
        run_child(job['cfg_path'], test_dir, train_py=TEST_PY, env=env,
                  extra=[ckpt, '--out', preds])
        metrics = read_test_metrics(test_dir)
    missing = [k for k in METRICS if k not in metrics]
    if missing:
        raise ValueError(f'{job["config"]}: the test metrics have no {missing} (the test '
                         f'evaluator must be PatchSegMetric)')
    rounds = [] if job['truth'] is None else pseudo_label_precision(job['dir'], job['truth'])
    return dict(name=job['name'], config=job['config'], reused=reused, checkpoint=ckpt,
                best_epoch=int(BEST.search(ckpt).group(1)), seconds=time.time() - t0,
                work_dir=osp.abspath(job['dir']), preds=preds, rounds=rounds,
                metrics={k: metrics[k] for k in metrics if k in METRICS + ('patch_acc', )},
                scalars=newest_scalars(job['dir']))


def plot_rounds(rows: Sequence[dict], out: str) -> None:
    """Mean SAE of the bags and pseudo-label precision per round, one colour per config."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    for i, (r, name) in enumerate(zip(rows, _short_names([r['name'] for r in rows]))):
        path = osp.join(r['work_dir'], 'npl_rounds.json')
        if not osp.isfile(path):
            continue
        hist = read_json(path, 'round history')
        style = dict(color=f'C{i % 10}', marker='o', label=name)
        axes[0].plot([h['round'] for h in hist], [h['mean_sae'] for h in hist], **style)
        for ax, key in ((axes[1], 'positive_precision'), (axes[2], 'negative_precision')):
            pts = [(x['round'], x[key]) for x in r['rounds'] if x[key] is not None]
            if pts:
                ax.plot(*zip(*pts), **style)
    titles = ('mean SAE of the bags (eq. 2)', 'positive pseudo labels: precision',
              'negative pseudo labels: precision')
    for ax, title in zip(axes, titles):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel('round')
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc='lower center', ncol=max(1, len(labels)), fontsize=8,
               frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    atomic_write(out, lambda tmp: fig.savefig(tmp, dpi=110, format='png'))
    plt.close(fig)


def _short_names(names: Sequence[str]) -> List[str]:
    """Drop the prefix and suffix all names share (at '_' boundaries)."""
    if len(names) < 2:
        return list(names)
    parts = [n.split('_') for n in names]
    head = 0
    while all(len(p) > head + 1 and p[head] == parts[0][head] for p in parts):
        head += 1
    tail = 0
    while all(len(p) > head + tail + 1 and p[-1 - tail] == parts[0][-1 - tail] for p in parts):
        tail += 1
    return ['_'.join(p[head:len(p) - tail]) for p in parts]


def _titled(img: np.ndarray, title: str) -> np.ndarray:
    from PIL import Image, ImageDraw
    strip = Image.new('RGB', (img.shape[1], 16), 'white')
    ImageDraw.Draw(strip).text((3, 2), title, fill='black')
    return np.concatenate([np.asarray(strip), img], 0)


def draw_figure(rows: Sequence[dict], cfg, bag: str, out: str, columns: int = 3) -> None:
    """The slide ``bag`` of the test split, its ground truth and each config's stitched
    prediction (from tools/test.py --out), in a grid with a legend."""
    import pickle

    from PIL import Image, ImageDraw

    from projects.common.datasets import _palette
    from projects.common.io import read_image
    from projects.negative_pseudo_labels.bags import read_bag_json
    from projects.negative_pseudo_labels.metric import stitch, upsample_grid
    ds = cfg.test_dataloader.dataset
    root = ds.get('data_root', '')
    layout = read_bag_json(osp.join(root, ds.ann_file))
    found = [b for b in layout['bags'] if b['name'] == bag]
    if not found:
        raise ValueError(f'{osp.join(root, ds.ann_file)}: no bag named {bag!r}')
    info, classes = found[0], layout['metainfo']['classes']
    p, h, w = layout['metainfo']['patch_size'], info['height'], info['width']
    lut = np.full((256, 3), 255, np.uint8)
    lut[:len(classes)] = _palette(len(classes))
    tiles = [_titled(read_rgb_uint8(osp.join(root, info['img_path'])), bag)]
    mask = read_image(osp.join(root, info['mask_path']), channels=None)
    tiles.append(_titled(lut[mask], 'ground truth (white: ignored)'))
    for r, name in zip(rows, _short_names([r['name'] for r in rows])):
        with open(r['preds'], 'rb') as f:
            preds = [d for d in pickle.load(f) if d['bag_name'] == bag]
        grid = np.array([d['grid'] for d in preds])
        labels = np.array([int(np.asarray(d['pred_label'])) for d in preds])
        pred = upsample_grid(stitch(grid, labels, (h // p, w // p)), p, h, w)
        tiles.append(_titled(lut[pred], f'{name}: mIoU {100 * r["metrics"]["mIoU"]:.1f}'))
    blank = np.full_like(tiles[0], 255)
    tiles += [blank] * (-len(tiles) % columns)
    grid_rows = [np.concatenate([np.pad(t, ((0, 0), (0, 6), (0, 0)), constant_values=255)
                                 for t in tiles[i:i + columns]], 1)
                 for i in range(0, len(tiles), columns)]
    body = np.concatenate(grid_rows, 0)
    legend = Image.new('RGB', (body.shape[1], 20), 'white')
    draw = ImageDraw.Draw(legend)
    x = 4
    for c, name in enumerate(classes):
        draw.rectangle((x, 4, x + 12, 16), fill=tuple(int(v) for v in lut[c]), outline='black')
        draw.text((x + 16, 4), name, fill='black')
        x += 28 + 7 * len(name)
    write_image(out, np.concatenate([body, np.asarray(legend)], 0))


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('configs', nargs='+', help='configs to train and score')
    p.add_argument('--work-dir', required=True, help='one run folder per config inside')
    p.add_argument('--jobs', type=int, default=1, help='trainings at a time')
    p.add_argument('--threads', type=int, default=1, help='OMP threads per training')
    p.add_argument('--resume', action='store_true', help='reuse finished runs')
    p.add_argument('--stage1-epochs', type=int,
                   help='train the shared supervised stage once, for this many epochs')
    p.add_argument('--figure-bag', help='test bag whose stitched maps --figure stacks')
    p.add_argument('--figure', help='PNG path of the stacked test maps')
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='override settings of every config (e.g. randomness.seed=1)')
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> Dict[str, list]:
    args = parse_args(argv)
    if args.jobs < 1 or args.threads < 1:
        raise ValueError('--jobs and --threads must be >= 1')
    if bool(args.figure) != bool(args.figure_bag):
        raise ValueError('--figure and --figure-bag go together')
    jobs = prepare_children(args.configs, args.work_dir, args.cfg_options,
                            edit=lambda cfg, config: cfg.__setitem__('resume', False))
    for job in jobs:
        job['truth'] = _weak_truth(job['cfg'])
    if args.stage1_epochs is not None:
        share_stage1(jobs, args.stage1_epochs, args.work_dir, args.resume, args.threads)
    rows = run_jobs(jobs, lambda j: _run(j, args.resume, args.threads), args.jobs,
                    'npl_ablation', lambda row: f'test mIoU = {row["metrics"]["mIoU"]:.4f}')
    table = format_table(rows)
    print(table)
    write_table(args.work_dir, 'npl_ablation', table, rows)
    plot_rounds(rows, osp.join(args.work_dir, 'npl_rounds.png'))
    if args.figure:
        draw_figure(rows, jobs[0]['cfg'], args.figure_bag, args.figure)
        print(f'[npl_ablation] wrote {args.figure}', flush=True)
    print(f'[npl_ablation] wrote {osp.join(args.work_dir, "npl_ablation")}.{{json,md}} and '
          f'npl_rounds.png', flush=True)
    return dict(rows=rows)


if __name__ == '__main__':
    main()
