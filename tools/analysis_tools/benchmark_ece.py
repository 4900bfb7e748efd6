"""Training-step time with exclusive cross-entropy / with stock cross-entropy (issue 4).

DESIGN.md sect. 5: a speed figure is a ratio against a named peer measured in the same run.
Two tasks, each a pair (or, with ``--focal``, a triple) of models built from one config
with the same initial weights (the stock model's ``state_dict``, ``strict=True``):

- ``seg``: the mmseg U-Net of ``--seg-config`` (stock ``CrossEntropyLoss`` as
  ``loss_decode`` of the decode and the auxiliary FCN heads) against the same U-Net with
  both ``loss_decode`` replaced whole by ``ExclusiveCrossEntropyLoss(background_label=0,
  loss_weight=<the stock one>)`` (Panteli et al. 2021, eq. 7; ``focal_ece``: eq. 8,
  ``use_focal=True``);
- ``det``: the YOLLO detector of ``--det-config`` (``YOLLOHead``, mmdet
  ``CrossEntropyLoss(use_sigmoid=True)``) against the same detector with
  ``loss_cls=ExclusiveCrossEntropyLoss(use_sigmoid=True, loss_weight=<stock>)``.

Every ``ExclusiveCrossEntropyLoss`` is put at ``--progress`` (default 0.5, mid-training)
and ``--epoch`` of the schedule with ``set_progress`` (what ``ExclusivityScheduleHook`` does
before each iteration), so its threshold is the mid-training one. The exclusion is a mask
on terms that are all computed anyway, so the step's cost does not depend on how many
terms it drops; the share kept in the timed steps is reported (``kept``) all the same.

A training step is the one of ``benchmark_losses.train_step``: data preprocessor, forward
in ``loss`` mode, ``parse_losses``, backward and optimizer step through mmengine's
``OptimWrapper`` (the config's ``optim_wrapper`` with lr = 0: weights never change, every
repetition is the same computation), the torch RNG re-seeded with ``--seed`` before each
step (same dropout masks for every model). Within a task the models run round-robin
(stock, ece, stock, ...) so that drifts of the machine load hit them alike; ``--warmup``
rounds are not timed. The tasks run one after the other.

The batches are synthetic and self-contained (seeded by ``--seed``): ``--batch`` random
uint8 images of ``--size`` x ``--size``; seg: a label map of ``--objects`` random disks
(label 1, radius uniform in [3, 15] px) on background 0 (the U-Net's
``data_preprocessor.size`` is set to ``--size``); det: ``--objects`` random boxes per image
(``benchmark_losses.synthetic_batch``, classes from the config's ``num_classes``).

    python tools/analysis_tools/benchmark_ece.py --iters 20 --out bench_ece.json

Prints, per task and model, the median and mean step time and the ratio of medians
ece/stock against the target 1.03.
"""
import argparse
import copy
import logging
import os.path as osp
import platform
import statistics
import sys
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from mmengine.config import Config, ConfigDict, DictAction
from mmengine.logging import MMLogger
from mmengine.registry import DefaultScope

import projects  # noqa: F401  (checkpoint-loading fix)
from projects.common.io import write_json
from projects.common.runner_utils import config_scope, load_config

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from benchmark_losses import (BOX_SIDE, check_int, make_optim_wrapper,  # noqa: E402
                              summarise, synthetic_batch, time_round_robin)

SEG_CONFIG = 'configs/exclusive_ce/unet-s5-d16-c16_fcn_ce_300i_synthetic-sparse30-128x128.py'
DET_CONFIG = 'configs/exclusive_ce/yollo_r18-c32_ce_300i_synthetic-sparse30.py'
TASKS = ('seg', 'det')
TARGET = 1.03  # ece step time / stock step time (issue 4)
STOCK_LOSSES = ('CrossEntropyLoss', 'mmseg.CrossEntropyLoss', 'mmdet.CrossEntropyLoss')
LOSS_ATTRS = ('loss_decode', 'loss_cls')  # the classification losses that are replaced


def model_names(focal: bool = False) -> tuple:
    """The models of each task, in round-robin order."""
    return ('stock', 'ece', 'focal_ece') if focal else ('stock', 'ece')


def _plain(d) -> dict:
    """A ConfigDict (or dict) as a plain, independent dict."""
    return d.to_dict() if hasattr(d, 'to_dict') else copy.deepcopy(dict(d))


def _ece_dict(stock: dict, where: str, extra: dict) -> dict:
    """The ECE dict that replaces the stock cross-entropy dict ``stock`` (at ``where``)."""
    if not isinstance(stock, dict):
        raise ValueError(f'{where}: expected one loss dict, got {type(stock).__name__} '
                         '(a list of losses is not supported)')
    if stock.get('type') not in STOCK_LOSSES:
        raise ValueError(f'{where}: the stock config must use CrossEntropyLoss, got '
                         f'{stock.get("type")!r}')
    if stock.get('class_weight') is not None:
        raise ValueError(f'{where}: class_weight is not supported by '
                         'ExclusiveCrossEntropyLoss')
    ece = dict(type='ExclusiveCrossEntropyLoss', loss_weight=stock.get('loss_weight', 1.0))
    if stock.get('avg_non_ignore'):
        ece['avg_non_ignore'] = True
    ece.update(extra)
    return ece


def seg_model_configs(model_cfg: dict, focal: bool = False, size: Optional[int] = None,
                      ece_options: Optional[dict] = None) -> Dict[str, ConfigDict]:
    """stock (as given) / ece / focal_ece model dicts of an mmseg EncoderDecoder.

    Every head's (decode head, auxiliary head or heads) ``loss_decode`` is replaced whole
    by ``ExclusiveCrossEntropyLoss(background_label=0, loss_weight=<stock>)`` plus
    ``ece_options``. ``size`` sets ``data_preprocessor.size`` of all models.
    """
    model_cfg = _plain(model_cfg)
    if not isinstance(model_cfg.get('decode_head'), dict):
        raise ValueError('seg config: model has no decode_head dict (benchmark_ece needs an '
                         'mmseg EncoderDecoder)')
    if size is not None and isinstance(model_cfg.get('data_preprocessor'), dict):
        model_cfg['data_preprocessor']['size'] = (size, size)
    out = {'stock': ConfigDict(model_cfg)}
    for name in model_names(focal)[1:]:
        extra = dict(background_label=0, use_focal=name == 'focal_ece', **(ece_options or {}))
        cfg = copy.deepcopy(model_cfg)
        aux = cfg.get('auxiliary_head')
        heads = [('decode_head', cfg['decode_head'])]
        if isinstance(aux, dict):
            heads.append(('auxiliary_head', aux))
        elif isinstance(aux, (list, tuple)):
            heads += [(f'auxiliary_head[{i}]', h) for i, h in enumerate(aux)]
        for where, head in heads:
            head['loss_decode'] = _ece_dict(head.get('loss_decode'),
                                            f'seg config model.{where}.loss_decode', extra)
        out[name] = ConfigDict(cfg)
    return out


def det_model_configs(model_cfg: dict, focal: bool = False,
                      ece_options: Optional[dict] = None) -> Dict[str, ConfigDict]:
    """stock (as given) / ece / focal_ece model dicts of a detector whose ``bbox_head``
    has a ``loss_cls``; it is replaced whole by ``ExclusiveCrossEntropyLoss(use_sigmoid=
    <stock>, loss_weight=<stock>)`` plus ``ece_options``."""
    model_cfg = _plain(model_cfg)
    if not isinstance(model_cfg.get('bbox_head'), dict):
        raise ValueError('det config: model has no bbox_head dict (benchmark_ece needs a '
                         'single-stage detector such as YOLLO)')
    out = {'stock': ConfigDict(model_cfg)}
    for name in model_names(focal)[1:]:
        cfg = copy.deepcopy(model_cfg)
        stock = cfg['bbox_head'].get('loss_cls')
        extra = dict(use_sigmoid=bool(isinstance(stock, dict) and stock.get('use_sigmoid')),
                     use_focal=name == 'focal_ece', **(ece_options or {}))
        cfg['bbox_head']['loss_cls'] = _ece_dict(stock, 'det config model.bbox_head.loss_cls',
                                                 extra)
        out[name] = ConfigDict(cfg)
    return out


def build_models(cfg: Config, task: str, focal: bool = False, size: Optional[int] = None,
                 ece_options: Optional[dict] = None, seed: int = 0,
                 epoch: float = 100.0, progress: float = 0.5) -> Dict[str, torch.nn.Module]:
    """Build the task's models under the config's scope (call inside that scope), all
    with the stock model's initial weights, in train mode, every ECE loss at
    (``epoch``, ``progress``)."""
    import projects.exclusive_ce  # noqa: F401  (ExclusiveCrossEntropyLoss, YOLLO)
    from projects.exclusive_ce.hooks import ece_losses
    if task == 'seg':
        from mmseg.registry import MODELS
        cfgs = seg_model_configs(cfg.model, focal, size, ece_options)
    elif task == 'det':
        from mmdet.registry import MODELS
        cfgs = det_model_configs(cfg.model, focal, ece_options)
    else:
        raise ValueError(f'--tasks: expected some of {TASKS}, got {task!r}')
    torch.manual_seed(seed)
    models = {name: MODELS.build(c) for name, c in cfgs.items()}
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)  # init_weights logs every parameter at INFO
    try:
        models['stock'].init_weights()
    finally:
        logger.setLevel(level)
    state = models['stock'].state_dict()
    for name, model in models.items():
        if name != 'stock':
            model.load_state_dict(state, strict=True)
            if not ece_losses(model):
                raise ValueError(f'{task}: model {name!r} has no ExclusiveCrossEntropyLoss')
            for loss in ece_losses(model):
                loss.set_progress(epoch, progress)
        model.train()
    return models


def loss_types(model: torch.nn.Module) -> Dict[str, str]:
    """Class name of every replaced classification loss, by module path
    (``decode_head.loss_decode``, ``auxiliary_head.loss_decode``, ``bbox_head.loss_cls``);
    ``+focal`` marks an ECE loss with ``use_focal``."""
    out = {}
    for path, module in model.named_modules():
        if path.split('.')[-1] in LOSS_ATTRS:
            name = type(module).__name__
            out[path] = name + ('+focal' if getattr(module, 'use_focal', False) else '')
    return out


def seg_synthetic_batch(size: int, batch: int, disks: int, seed: int = 0) -> dict:
    """``batch`` random uint8 RGB images (3, size, size), each with a label map of
    ``disks`` random disks (label 1; radius uniform in [3, 15] px = half the nucleus box
    sides of benchmark_losses, centre uniform in the image) on background 0."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    inputs, samples = [], []
    for _ in range(batch):
        img = rng.integers(0, 256, size=(3, size, size), dtype=np.uint8)
        label = np.zeros((size, size), np.int64)
        radius = rng.uniform(*BOX_SIDE, size=disks) / 2.0
        centre = rng.uniform(0, size, size=(disks, 2))
        for r, (cx, cy) in zip(radius, centre):
            label[(xx - cx) ** 2 + (yy - cy) ** 2 <= r * r] = 1
        sample = SegDataSample(metainfo=dict(img_shape=(size, size), ori_shape=(size, size)))
        sample.gt_sem_seg = PixelData(data=torch.from_numpy(label)[None])
        inputs.append(torch.from_numpy(img))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def make_batch(task: str, model: torch.nn.Module, size: int, batch: int, objects: int,
               seed: int = 0) -> dict:
    """The task's synthetic batch (det: classes from ``model.bbox_head.num_classes``)."""
    if task == 'seg':
        return seg_synthetic_batch(size, batch, objects, seed)
    return synthetic_batch(size, batch, objects, int(model.bbox_head.num_classes), seed)


def run_task(task: str, cfg: Config, size: int = 128, batch: int = 2, iters: int = 20,
             warmup: int = 3, seed: int = 0, objects: int = 8, focal: bool = False,
             epoch: float = 100.0, progress: float = 0.5,
             ece_options: Optional[dict] = None, progress_bar: bool = True) -> dict:
    """Interleaved timing of the task's models; returns its JSON-able result."""
    from projects.exclusive_ce.hooks import ece_losses
    names = model_names(focal)
    with DefaultScope.overwrite_default_scope(config_scope(cfg)):
        models = build_models(cfg, task, focal, size, ece_options, seed, epoch, progress)
        data = make_batch(task, models['stock'], size, batch, objects, seed)
        wrappers = {n: make_optim_wrapper(m, cfg) for n, m in models.items()}
        kept: Dict[str, List[float]] = {n: [] for n in names}

        def record_kept(name: str) -> None:
            shares = [float(m.last_kept_fraction) for m in ece_losses(models[name])]
            if shares:
                kept[name].append(statistics.fmean(shares))

        times, losses, log_keys = time_round_robin({n: models[n] for n in names}, wrappers,
                                                   data, seed, warmup, iters, progress_bar,
                                                   record_kept)
    summary = summarise(times, {n: TARGET for n in names if n != 'stock'})
    out = dict(config=cfg.filename, models={}, ratios=summary['ratios'])
    for name in names:
        eces = ece_losses(models[name])
        out['models'][name] = dict(
            losses_cls=loss_types(models[name]), log_keys=log_keys[name],
            times_s=times[name], losses=losses[name], **summary['stats'][name],
            threshold=eces[0].current_threshold() if eces else None,
            kept=statistics.fmean(kept[name]) if kept[name] else None)
    return out


def run_benchmark(cfgs: Dict[str, Config], size: int = 128, batch: int = 2, iters: int = 20,
                  warmup: int = 3, threads: int = 1, seed: int = 0, objects: int = 8,
                  focal: bool = False, epoch: float = 100.0, progress: float = 0.5,
                  ece_options: Optional[dict] = None, progress_bar: bool = True) -> dict:
    """Run every task of ``cfgs`` (task -> config) in turn; the JSON-able result."""
    for name, value, low in (('--size', size, 32), ('--batch', batch, 1),
                             ('--iters', iters, 1), ('--warmup', warmup, 0),
                             ('--threads', threads, 1), ('--objects', objects, 1)):
        check_int(name, value, low)
    if size % 32:
        raise ValueError(f'--size must be a multiple of 32 (U-Net S5-D16, detector padding),'
                         f' got {size}')
    if not 0.0 <= progress <= 1.0:
        raise ValueError(f'--progress must lie in [0, 1], got {progress}')
    if not cfgs or set(cfgs) - set(TASKS):
        raise ValueError(f'--tasks: expected some of {TASKS}, got {list(cfgs)}')
    torch.set_num_threads(threads)
    out = dict(size=size, batch=batch, iters=iters, warmup=warmup,
               threads=torch.get_num_threads(), seed=seed, objects=objects, focal=focal,
               epoch=epoch, progress=progress, ece_options=dict(ece_options or {}),
               torch=torch.__version__, machine=platform.machine(),
               platform=platform.platform(), tasks={})
    for task, cfg in cfgs.items():
        out['tasks'][task] = run_task(task, cfg, size, batch, iters, warmup, seed, objects,
                                      focal, epoch, progress, ece_options, progress_bar)
    return out


def format_table(res: dict) -> str:
    """The printed table: per task and model the losses, median / mean ms, ratio, target,
    the threshold and the share of unannotated terms kept."""
    lines = [f'{"task":<4} {"model":<9} {"classification losses":<34} {"median ms":>10} '
             f'{"mean ms":>9} {"ratio":>7} {"target":>7} {"thr":>6} {"kept":>6}  status']
    for task, t in res['tasks'].items():
        for name, m in t['models'].items():
            kinds = sorted(set(m['losses_cls'].values()))
            losses = f'{"/".join(kinds)} x{len(m["losses_cls"])}'
            r = t['ratios'].get(name)
            ratio = f'{r["ratio"]:.3f}' if r else '1.000'
            target = f'{r["target"]:.2f}' if r else '-'
            status = ('PASS' if r['passed'] else 'OVER TARGET') if r else 'reference'
            thr = f'{m["threshold"]:.3f}' if m['threshold'] is not None else '-'
            kept = f'{m["kept"]:.3f}' if m['kept'] is not None else '-'
            lines.append(f'{task:<4} {name:<9} {losses:<34} {1e3 * m["median_s"]:>10.1f} '
                         f'{1e3 * m["mean_s"]:>9.1f} {ratio:>7} {target:>7} {thr:>6} '
                         f'{kept:>6}  {status}')
    return '\n'.join(lines)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Training-step time of the same U-Net and the same YOLLO detector with '
        'stock CrossEntropyLoss and with ExclusiveCrossEntropyLoss (Panteli et al. 2021), '
        'interleaved in one run; prints median / mean times and the ratio ece/stock')
    parser.add_argument('--tasks', nargs='+', choices=TASKS, default=list(TASKS),
                        help='seg: U-Net, det: YOLLO')
    parser.add_argument('--seg-config', default=SEG_CONFIG,
                        help='the stock (cross-entropy) U-Net config')
    parser.add_argument('--det-config', default=DET_CONFIG,
                        help='the stock (cross-entropy) YOLLO config')
    parser.add_argument('--size', type=int, default=128, help='image side in px')
    parser.add_argument('--batch', type=int, default=2, help='images per step')
    parser.add_argument('--objects', type=int, default=8,
                        help='disks (seg) / GT boxes (det) per image')
    parser.add_argument('--iters', type=int, default=20, help='timed steps per model')
    parser.add_argument('--warmup', type=int, default=3, help='untimed steps per model')
    parser.add_argument('--threads', type=int, default=1, help='torch.set_num_threads')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--focal', action='store_true',
                        help='also time focal ECE (use_focal=True, eq. 8)')
    parser.add_argument('--progress', type=float, default=0.5,
                        help='training progress pushed into every ECE loss (set_progress)')
    parser.add_argument('--epoch', type=float, default=100.0,
                        help='epoch pushed into every ECE loss (read only by the ece-loss '
                        "package's 'package_sigmoid' schedules; default between their "
                        'centres 50 and 150)')
    parser.add_argument('--ece-options', nargs='+', action=DictAction,
                        help='extra ExclusiveCrossEntropyLoss arguments, e.g. threshold=0.5 '
                        'schedule=fixed')
    parser.add_argument('--out', help='write the result as JSON')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of both configs')
    parser.add_argument('--seg-cfg-options', nargs='+', action=DictAction,
                        help='override U-Net config settings, e.g. '
                        'model.backbone.base_channels=8')
    parser.add_argument('--det-cfg-options', nargs='+', action=DictAction,
                        help='override YOLLO config settings, e.g. '
                        'model.backbone.base_channels=8')
    return parser.parse_args(argv)


def load_configs(args: argparse.Namespace) -> Dict[str, Config]:
    """task -> config with ``--cfg-options`` then the task's own options merged."""
    cfgs = {}
    for task in dict.fromkeys(args.tasks):
        options = dict(args.cfg_options or {})
        options.update(getattr(args, f'{task}_cfg_options') or {})
        cfgs[task] = load_config(getattr(args, f'{task}_config'), options)
    return cfgs


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    cfgs = load_configs(args)
    check_int('--threads', args.threads, 1)
    torch.set_num_threads(args.threads)
    print(f'benchmark_ece: {", ".join(f"{t}: {c.filename}" for t, c in cfgs.items())}; '
          f'{args.batch} x {args.size}x{args.size} images, {args.objects} objects each, '
          f'{args.warmup} warm-up + {args.iters} timed steps per model, round-robin '
          f'{"/".join(model_names(args.focal))}, ECE at progress {args.progress} '
          f'(epoch {args.epoch}), lr = 0; torch {torch.__version__}, '
          f'{torch.get_num_threads()} thread(s), {platform.platform()}')
    res = run_benchmark(cfgs, args.size, args.batch, args.iters, args.warmup, args.threads,
                        args.seed, args.objects, args.focal, args.epoch, args.progress,
                        args.ece_options, progress_bar=not args.no_progress)
    print(format_table(res))
    if args.out:
        write_json(args.out, res)
        print(f'wrote {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
