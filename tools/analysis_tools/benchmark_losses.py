"""Training-step time of one Faster R-CNN with stock cross-entropy, the PU loss and BDE.

DESIGN.md sect. 5: a speed figure is a ratio against a named peer measured in the same run.
Three detectors are built from the same (cross-entropy) config and the same initial
weights:

- ``stock``: the config as is (``RPNHead`` + ``StandardRoIHead``, ``CrossEntropyLoss``);
- ``pu``:    ``PURPNHead`` with ``PULoss(prior=--rpn-prior, use_sigmoid=True)`` and the RoI
             head's ``loss_cls`` replaced by ``PULoss(prior=--roi-prior)`` (Zhao et al.
             2021, eq. 12);
- ``bde``:   ``BDERPNHead(bde=dict())`` and ``BDERoIHead(bde=dict())`` (Li et al. 2020,
             our formula in projects/pu_detection/bde.py), default BDE settings.

A training step is what mmengine's ``OptimWrapper`` runs in ``BaseModel.train_step``:
data preprocessor, forward in ``loss`` mode, ``parse_losses``, backward, gradient clipping
and optimizer step (the config's ``optim_wrapper`` with lr = 0, so the weights never change
and every repetition repeats the same computation; the optimizer's own cost, momentum and
weight-decay arithmetic included, is still paid). Before every step the torch RNG is
re-seeded with ``--seed``, so the anchor / RoI samplers draw the same samples for every
model and repetition. The models run round-robin (stock, pu, bde, stock, ...) so that
drifts of the machine load hit all three alike; ``--warmup`` rounds are not timed.

The batch is synthetic and self-contained: ``--batch`` random uint8 images of
``--size`` x ``--size`` with ``--boxes`` ground-truth boxes each, sides uniform in
[6, 30] px (nuclei), random classes (seeded by ``--seed``).

    python tools/analysis_tools/benchmark_losses.py --iters 20 --out bench_losses.json

Prints, per model, the median and mean step time, and the ratios (of medians) pu/stock and
bde/stock against the targets 1.03 and 1.15.
"""
import argparse
import copy
import logging
import platform
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
from mmengine.config import Config, ConfigDict, DictAction
from mmengine.logging import MMLogger

import projects  # noqa: F401  (checkpoint-loading fix)
from projects.common.io import write_json
from projects.common.layout import track
from projects.common.runner_utils import load_config

DEFAULT_CONFIG = 'configs/pu_detection/faster-rcnn_r18-c32_fpn_ce_500i_synthetic-sparse30.py'
MODEL_NAMES = ('stock', 'pu', 'bde')
TARGETS = {'pu': 1.03, 'bde': 1.15}  # step time / stock step time (issue 3)
BOX_SIDE = (6.0, 30.0)  # nucleus box sides in px


def _plain(d) -> dict:
    """A ConfigDict (or dict) as a plain dict."""
    return d.to_dict() if hasattr(d, 'to_dict') else copy.deepcopy(dict(d))


def model_configs(model_cfg: dict, rpn_prior: float = 0.24,
                  roi_prior: float = 0.6) -> Dict[str, ConfigDict]:
    """The three model dicts: stock (as given), pu and bde (heads / losses replaced).

    The loss dicts are replaced whole (``_delete_`` semantics), never merged into the
    stock CrossEntropyLoss dicts.
    """
    for key in ('rpn_head', 'roi_head'):
        if not isinstance(model_cfg.get(key), dict):
            raise ValueError(f'config model has no {key}: benchmark_losses needs a two-stage '
                             f'detector (Faster R-CNN)')
    if not isinstance(model_cfg['roi_head'].get('bbox_head'), dict):
        raise ValueError('config model.roi_head has no (single) bbox_head dict')
    stock = copy.deepcopy(model_cfg)
    pu = copy.deepcopy(model_cfg)
    pu['rpn_head']['type'] = 'PURPNHead'
    pu['rpn_head']['loss_cls'] = dict(type='PULoss', prior=rpn_prior, use_sigmoid=True)
    pu['roi_head']['bbox_head']['loss_cls'] = dict(type='PULoss', prior=roi_prior,
                                                   use_sigmoid=False)
    bde = copy.deepcopy(model_cfg)
    bde['rpn_head']['type'] = 'BDERPNHead'
    bde['rpn_head']['bde'] = dict()
    bde['roi_head']['type'] = 'BDERoIHead'
    bde['roi_head']['bde'] = dict()
    return {n: ConfigDict(c) for n, c in (('stock', stock), ('pu', pu), ('bde', bde))}


def build_models(cfg: Config, rpn_prior: float = 0.24, roi_prior: float = 0.6,
                 seed: int = 0) -> Dict[str, torch.nn.Module]:
    """Build stock / pu / bde under the mmdet scope, all with the stock model's initial
    weights (``load_state_dict(strict=True)``: the heads differ only in their losses)."""
    from mmengine.registry import init_default_scope
    init_default_scope(cfg.get('default_scope', 'mmdet') or 'mmdet')
    import projects.pu_detection  # noqa: F401  (PULoss, PURPNHead, BDE heads)
    from mmdet.registry import MODELS
    cfgs = model_configs(_plain(cfg.model), rpn_prior, roi_prior)
    torch.manual_seed(seed)
    models = {}
    for name in MODEL_NAMES:
        models[name] = MODELS.build(cfgs[name])
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)  # init_weights logs every parameter at INFO
    try:
        models['stock'].init_weights()
    finally:
        logger.setLevel(level)
    state = models['stock'].state_dict()
    for name in ('pu', 'bde'):
        models[name].load_state_dict(state, strict=True)
    for model in models.values():
        model.train()
    return models


def loss_types(model: torch.nn.Module) -> Dict[str, str]:
    """Class names of the RPN head, its loss_cls, the RoI head and the bbox head's loss_cls."""
    return dict(rpn_head=type(model.rpn_head).__name__,
                rpn_loss_cls=type(model.rpn_head.loss_cls).__name__,
                roi_head=type(model.roi_head).__name__,
                roi_loss_cls=type(model.roi_head.bbox_head.loss_cls).__name__)


def synthetic_batch(size: int, batch: int, boxes: int, num_classes: int,
                    seed: int = 0) -> dict:
    """``batch`` random uint8 RGB images (3, size, size) with ``boxes`` GT boxes each.

    Box sides are uniform in [6, 30] px (clipped to the image), positions uniform inside
    the image, classes uniform in [0, num_classes).
    """
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    rng = np.random.default_rng(seed)
    inputs, samples = [], []
    for _ in range(batch):
        img = rng.integers(0, 256, size=(3, size, size), dtype=np.uint8)
        side = rng.uniform(*BOX_SIDE, size=(boxes, 2)).clip(max=size - 1)
        x1 = rng.uniform(0, size - side[:, 0])
        y1 = rng.uniform(0, size - side[:, 1])
        bboxes = np.stack([x1, y1, x1 + side[:, 0], y1 + side[:, 1]], 1).astype(np.float32)
        labels = rng.integers(0, num_classes, size=boxes)
        sample = DetDataSample(metainfo=dict(img_shape=(size, size), ori_shape=(size, size),
                                             pad_shape=(size, size), scale_factor=(1.0, 1.0),
                                             img_id=len(samples)))
        sample.gt_instances = InstanceData(bboxes=torch.from_numpy(bboxes),
                                           labels=torch.from_numpy(labels).long())
        inputs.append(torch.from_numpy(img))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def make_optim_wrapper(model: torch.nn.Module, cfg: Config):
    """The config's optim_wrapper (default SGD) with lr = 0: weights never change."""
    from mmengine.optim import build_optim_wrapper
    ow = copy.deepcopy(cfg.get('optim_wrapper', None) or dict(
        type='OptimWrapper', optimizer=dict(type='SGD', lr=0.0, momentum=0.9)))
    ow = _plain(ow)
    if ow.get('type', 'OptimWrapper') != 'OptimWrapper':
        raise ValueError(f'optim_wrapper type {ow["type"]!r}: benchmark_losses supports one '
                         'optimizer (OptimWrapper)')
    ow['optimizer'] = dict(ow['optimizer'], lr=0.0)
    return build_optim_wrapper(model, ow)


def train_step(model, optim_wrapper, batch: dict, seed: int) -> tuple:
    """One timed training step; returns (seconds, log_vars as floats).

    The batch is deep-copied before the clock starts (the preprocessor writes metainfo).
    """
    data = dict(inputs=list(batch['inputs']),
                data_samples=copy.deepcopy(batch['data_samples']))
    torch.manual_seed(seed)
    start = time.perf_counter()
    with optim_wrapper.optim_context(model):
        data = model.data_preprocessor(data, True)
        losses = model(**data, mode='loss')
    loss, log_vars = model.parse_losses(losses)
    optim_wrapper.update_params(loss)
    seconds = time.perf_counter() - start
    if not torch.isfinite(loss):
        raise ValueError(f'non-finite training loss {float(loss)} ({dict(log_vars)})')
    return seconds, {k: float(v.detach()) if isinstance(v, torch.Tensor) else float(v)
                     for k, v in log_vars.items()}


def check_int(name: str, value, low: int) -> None:
    """A CLI count must be an integer >= ``low`` (ValueError naming the option)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f'{name} must be an integer >= {low}, got {value!r}')


def time_round_robin(models: Dict[str, torch.nn.Module], wrappers: dict, data: dict,
                     seed: int, warmup: int, iters: int, progress: bool = True,
                     after_step: Optional[Callable[[str], None]] = None) -> tuple:
    """Training steps of every model in turn (``models`` order), ``warmup`` untimed rounds
    then ``iters`` timed ones; ``after_step(name)`` runs after each timed step. Returns
    ``(times, losses, log_keys)``: per model the step times (s), the total losses and the
    sorted log keys of its last step."""
    times: Dict[str, List[float]] = {n: [] for n in models}
    losses: Dict[str, List[float]] = {n: [] for n in models}
    log_keys: Dict[str, List[str]] = {}
    for rep in track(range(warmup + iters), progress):
        for name, model in models.items():
            sec, log_vars = train_step(model, wrappers[name], data, seed)
            log_keys[name] = sorted(log_vars)
            if rep >= warmup:
                times[name].append(sec)
                losses[name].append(log_vars['loss'])
                if after_step is not None:
                    after_step(name)
    return times, losses, log_keys


def summarise(times: Dict[str, List[float]], targets: Dict[str, float],
              reference: str = 'stock') -> dict:
    """Median / mean per model, and for every model of ``targets`` the ratio of medians
    model / ``reference`` with ``passed = ratio <= target``."""
    stats = {n: dict(median_s=statistics.median(t), mean_s=statistics.fmean(t))
             for n, t in times.items()}
    ref = stats[reference]['median_s']
    ratios = {}
    for name, target in targets.items():
        ratio = stats[name]['median_s'] / ref
        ratios[name] = dict(ratio=ratio, target=target, passed=bool(ratio <= target))
    return dict(stats=stats, ratios=ratios)


def run_benchmark(cfg: Config, size: int = 256, batch: int = 2, iters: int = 20,
                  warmup: int = 3, threads: int = 1, seed: int = 0, boxes: int = 8,
                  rpn_prior: float = 0.24, roi_prior: float = 0.6,
                  progress: bool = True) -> dict:
    """Interleaved timing of stock / pu / bde; returns the JSON-able result."""
    for name, value, low in (('--size', size, 32), ('--batch', batch, 1), ('--iters', iters, 1),
                             ('--warmup', warmup, 0), ('--threads', threads, 1),
                             ('--boxes', boxes, 1)):
        check_int(name, value, low)
    torch.set_num_threads(threads)
    models = build_models(cfg, rpn_prior, roi_prior, seed)
    num_classes = int(models['stock'].roi_head.bbox_head.num_classes)
    data = synthetic_batch(size, batch, boxes, num_classes, seed)
    wrappers = {n: make_optim_wrapper(m, cfg) for n, m in models.items()}
    times, losses, log_keys = time_round_robin({n: models[n] for n in MODEL_NAMES}, wrappers,
                                               data, seed, warmup, iters, progress)
    summary = summarise(times, TARGETS)
    out = dict(config=cfg.filename, size=size, batch=batch, iters=iters, warmup=warmup,
               threads=threads, seed=seed, boxes=boxes, rpn_prior=rpn_prior,
               roi_prior=roi_prior, torch=torch.__version__, machine=platform.machine(),
               models={}, ratios={})
    for name in MODEL_NAMES:
        out['models'][name] = dict(loss_types(models[name]), log_keys=log_keys[name],
                                   times_s=times[name], losses=losses[name],
                                   **summary['stats'][name])
    out['ratios'] = summary['ratios']
    return out


def format_table(res: dict) -> str:
    """The printed table: per model heads/losses, median and mean ms, ratio, target."""
    lines = [f'{"model":<6} {"rpn_head / loss_cls":<30} {"roi_head / loss_cls":<34} '
             f'{"median ms":>10} {"mean ms":>9} {"ratio":>7} {"target":>7}  status']
    for name in MODEL_NAMES:
        m = res['models'][name]
        r = res['ratios'].get(name)
        ratio = f'{r["ratio"]:.3f}' if r else '1.000'
        target = f'{r["target"]:.2f}' if r else '-'
        status = ('PASS' if r['passed'] else 'OVER TARGET') if r else 'reference'
        lines.append(f'{name:<6} {m["rpn_head"] + " / " + m["rpn_loss_cls"]:<30} '
                     f'{m["roi_head"] + " / " + m["roi_loss_cls"]:<34} '
                     f'{1e3 * m["median_s"]:>10.1f} {1e3 * m["mean_s"]:>9.1f} {ratio:>7} '
                     f'{target:>7}  {status}')
    return '\n'.join(lines)


def parse_args(argv: Optional[list] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Training-step time of the same Faster R-CNN with stock CrossEntropyLoss, '
        'PULoss (PURPNHead) and BDE (BDERPNHead / BDERoIHead), interleaved in one run; '
        'prints median / mean times and the ratios pu/stock, bde/stock')
    parser.add_argument('--config', default=DEFAULT_CONFIG,
                        help='the stock (cross-entropy) Faster R-CNN config')
    parser.add_argument('--size', type=int, default=256, help='image side in px')
    parser.add_argument('--batch', type=int, default=2, help='images per step')
    parser.add_argument('--boxes', type=int, default=8, help='GT boxes per image')
    parser.add_argument('--iters', type=int, default=20, help='timed steps per model')
    parser.add_argument('--warmup', type=int, default=3, help='untimed steps per model')
    parser.add_argument('--threads', type=int, default=1, help='torch.set_num_threads')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--rpn-prior', type=float, default=0.24, help='PU prior of the RPN')
    parser.add_argument('--roi-prior', type=float, default=0.6, help='PU prior of the RoI head')
    parser.add_argument('--out', help='write the result as JSON')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, e.g. model.backbone.base_channels=8')
    return parser.parse_args(argv)


def main(argv: Optional[list] = None) -> int:
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    print(f'benchmark_losses: {args.config}, {args.batch} x {args.size}x{args.size} images, '
          f'{args.boxes} boxes each, {args.warmup} warm-up + {args.iters} timed steps per '
          f'model, round-robin stock/pu/bde, {args.threads} thread(s), lr = 0')
    res = run_benchmark(cfg, args.size, args.batch, args.iters, args.warmup, args.threads,
                        args.seed, args.boxes, args.rpn_prior, args.roi_prior,
                        progress=not args.no_progress)
    print(format_table(res))
    if args.out:
        write_json(args.out, res)
        print(f'wrote {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
