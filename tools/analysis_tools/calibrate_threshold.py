"""Calibrated score threshold of a detector trained on incomplete labels (Elkan & Noto 2008).

A detector trained with cross-entropy on sparse annotations scores about c x p(cell | x),
c = the labelling frequency (the share of cells that are annotated), so its fixed 0.5
threshold misses cells. Elkan & Noto (KDD 2008) estimate c as the mean score of the
labelled examples of a validation set (their e1) and threshold at 0.5 c, which recovers
the fully supervised decision. This tool

1. runs ``tools/test.py CONFIG CHECKPOINT --out`` on the config's validation split, with
   its incomplete labels (``--split``), and the model's own score threshold set to 0 so
   that every detection is dumped (``--cfg-options`` may set it back);
2. estimates c = the mean, over all annotated cells of that split, of the highest score
   of a detection whose box centre lies within ``--radius`` px of the cell (0 if none;
   ``projects.common.calibration``);
3. prints c and the threshold 0.5 c and writes them atomically to JSON (``--out``);
   ``--apply`` prints the ``--cfg-options`` that make ``tools/test.py`` use it.

    python tools/analysis_tools/calibrate_threshold.py \\
        configs/pu_detection/faster-rcnn_r18-c32_fpn_ce_500i_synthetic-sparse30.py \\
        work_dirs/ce/iter_500.pth --out work_dirs/ce/threshold.json --apply

``--preds PKL`` reuses predictions already dumped on that split (the checkpoint is then
not needed). The radius defaults to the split's CellDetectionMetric ``radius``.
"""
import argparse
import copy
import inspect
import os
import os.path as osp
import sys
from typing import List, Optional, Tuple

import numpy as np
from mmengine.config import DictAction

import projects  # noqa: F401  (registers MMHisto components, torch.load fix)
from projects.common.calibration import (calibrated_threshold, labelled_cell_scores,
                                         labelling_frequency)
from projects.common.child_runs import TEST_PY, run_child
from projects.common.io import atomic_write, write_json
from projects.common.metrics import CellDetectionMetric
from projects.common.runner_utils import load_config

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from score_sweep import load_predictions  # noqa: E402

TAG = '[calibrate_threshold]'
CELL_METRICS = ('CellDetectionMetric', 'WholeImageDetectionMetric')
SPLITS = ('val', 'test')


def _type_name(entry) -> str:
    return str(entry.get('type', '')).split('.')[-1] if isinstance(entry, dict) else ''


def cell_metrics(evaluator) -> List[Tuple[Optional[int], dict]]:
    """``(index, metric)`` of each CellDetectionMetric of an evaluator config: index None
    for a single metric, its position in a list otherwise."""
    if isinstance(evaluator, dict):
        return [(None, evaluator)] if _type_name(evaluator) in CELL_METRICS else []
    if isinstance(evaluator, (list, tuple)):
        return [(i, e) for i, e in enumerate(evaluator) if _type_name(e) in CELL_METRICS]
    return []


def default_radius(cfg, split: str, source: str) -> float:
    """The ``radius`` of the split's CellDetectionMetric (its class default if unset)."""
    found = cell_metrics(cfg.get(f'{split}_evaluator', None))
    if not found:
        raise ValueError(f'{source}: {split}_evaluator has no CellDetectionMetric to take the '
                         'matching radius from; pass --radius')
    default = inspect.signature(CellDetectionMetric).parameters['radius'].default
    return float(found[0][1].get('radius', default))


def model_score_key(cfg) -> Optional[str]:
    """The dotted key of the model's test score threshold: ``model.test_cfg.rcnn.score_thr``
    (two-stage), ``model.test_cfg.score_thr`` (one-stage), or None if the config has neither."""
    test_cfg = cfg.model.get('test_cfg', None) or {}
    if isinstance(test_cfg.get('rcnn', None), dict) and 'score_thr' in test_cfg['rcnn']:
        return 'model.test_cfg.rcnn.score_thr'
    if 'score_thr' in test_cfg:
        return 'model.test_cfg.score_thr'
    return None


def apply_options(cfg, threshold: float) -> List[str]:
    """The ``--cfg-options`` that make ``tools/test.py`` use ``threshold``: the model's test
    score threshold and the ``score_thr`` of every CellDetectionMetric of test_evaluator."""
    value = f'{threshold:.6g}'
    opts = []
    key = model_score_key(cfg)
    if key is not None:
        opts.append(f'{key}={value}')
    for i, _ in cell_metrics(cfg.get('test_evaluator', None)):
        opts.append(f'test_evaluator.{"" if i is None else f"{i}."}score_thr={value}')
    return opts


def split_config(config: str, split: str, cfg_options: Optional[dict]):
    """The config to dump predictions of ``split`` with tools/test.py: its dataloader and
    evaluator become the test ones, the model's score threshold 0 (before ``cfg_options``
    are merged, so that they can set it)."""
    cfg = load_config(config)
    key = model_score_key(cfg)
    if key is not None:
        cfg.merge_from_dict({key: 0.0})
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    for what in ('dataloader', 'evaluator'):
        if cfg.get(f'{split}_{what}', None) is None:
            raise ValueError(f'{config}: no {split}_{what}: cannot predict the {split} split')
        cfg[f'test_{what}'] = copy.deepcopy(cfg[f'{split}_{what}'])
    return cfg


def dump_predictions(config: str, checkpoint: str, split: str, work_dir: str,
                     cfg_options: Optional[dict]) -> str:
    """Run tools/test.py on ``split``; returns the predictions pickle in ``work_dir``."""
    if not osp.isfile(checkpoint):
        raise FileNotFoundError(f'{checkpoint}: checkpoint file not found')
    cfg = split_config(config, split, cfg_options)
    os.makedirs(work_dir, exist_ok=True)
    cfg.work_dir = work_dir
    cfg_path = osp.join(work_dir, f'{osp.splitext(osp.basename(config))[0]}_{split}.py')
    atomic_write(cfg_path, cfg.dump)
    preds = osp.join(work_dir, f'{split}_preds.pkl')
    if osp.exists(preds):
        os.remove(preds)  # never read a stale dump
    print(f'{TAG} tools/test.py on the {split} split -> {preds} (logs in {work_dir})',
          flush=True)
    run_child(cfg_path, work_dir, train_py=TEST_PY, extra=[checkpoint, '--out', preds])
    if not osp.isfile(preds):
        raise FileNotFoundError(f'{preds}: tools/test.py wrote no predictions')
    return preds


def calibrate(preds: str, radius: float, base: float = 0.5) -> dict:
    """c, the threshold ``base * c`` and counts from a ``tools/test.py --out`` pickle."""
    images = load_predictions(preds)
    cells = []
    for im in images:
        try:
            cells.append(labelled_cell_scores(im['gt'], im['pred'], im['scores'], radius))
        except ValueError as err:
            raise ValueError(f'{preds}: image {im["name"]}: {err}') from err
    cells = np.concatenate(cells)
    c = labelling_frequency(images, radius, source=preds)
    try:
        threshold = calibrated_threshold(c, base)
    except ValueError as err:
        raise ValueError(f'{preds}: {err}') from err
    return dict(c=c, base=base, threshold=threshold, radius=radius, images=len(images),
                cells=int(cells.size), undetected=int(np.count_nonzero(cells == 0)),
                median_cell_score=float(np.median(cells)))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description='Estimate the labelling frequency c (mean detector score of the annotated '
        'validation cells, Elkan & Noto 2008) and the calibrated threshold 0.5 c')
    p.add_argument('config', help='the detector config')
    p.add_argument('checkpoint', nargs='?', help='the trained checkpoint (not needed with '
                   '--preds)')
    p.add_argument('--split', choices=SPLITS, default='val',
                   help='the split whose (incomplete) annotations estimate c (default val)')
    p.add_argument('--radius', type=float, help='px between a detection centre and an '
                   "annotated cell (default: the split's CellDetectionMetric radius)")
    p.add_argument('--base', type=float, default=0.5, help='threshold = base x c (0.5)')
    p.add_argument('--preds', help='predictions already dumped on the split by tools/test.py '
                   '--out (all scores kept); skips running tools/test.py')
    p.add_argument('--out', help='JSON with c and the threshold (default: '
                   'WORK_DIR/calibration.json)')
    p.add_argument('--work-dir', help='folder for the predictions and logs (default: '
                   'work_dirs/<config name>/calibration)')
    p.add_argument('--apply', action='store_true',
                   help='print the --cfg-options that make tools/test.py use the threshold')
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='override config settings for the prediction run')
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.radius is not None and not (np.isfinite(args.radius) and args.radius >= 0):
        raise ValueError(f'--radius must be a finite number >= 0, got {args.radius}')
    if args.checkpoint is None and args.preds is None:
        raise ValueError('give a CHECKPOINT (to run tools/test.py) or --preds PKL')
    cfg = load_config(args.config, args.cfg_options)
    stem = osp.splitext(osp.basename(args.config))[0]
    work_dir = args.work_dir or osp.join('work_dirs', stem, 'calibration')
    radius = args.radius if args.radius is not None else \
        default_radius(cfg, args.split, args.config)
    preds = args.preds or dump_predictions(args.config, args.checkpoint, args.split, work_dir,
                                           args.cfg_options)
    result = calibrate(preds, radius, args.base)
    options = apply_options(cfg, result['threshold'])
    result.update(config=args.config, checkpoint=args.checkpoint, split=args.split,
                  predictions=preds, cfg_options=options,
                  estimator='c = mean over annotated cells of the highest score of a '
                  'detection centred within radius px (0 if none); threshold = base * c '
                  '(Elkan & Noto 2008, e1)')
    print(f'{TAG} {result["images"]} images, {result["cells"]} annotated cells, '
          f'{result["undetected"]} without a detection within {radius:g} px')
    print(f'c = {result["c"]:.4f} (mean score of the annotated {args.split} cells)')
    print(f'threshold = {args.base:g} c = {result["threshold"]:.4f}')
    out = args.out or osp.join(work_dir, 'calibration.json')
    write_json(out, result)
    print(f'{TAG} wrote {out}')
    if args.apply:
        if model_score_key(cfg) is None:
            print(f'{TAG} note: {args.config} has no model.test_cfg(.rcnn).score_thr; '
                  'filter the detections at the threshold yourself')
        print(f'python tools/test.py {args.config} {args.checkpoint or "CHECKPOINT"} '
              '--cfg-options ' + ' '.join(options))
        print(f'(tools/infer_slide.py: --score-thr {result["threshold"]:.6g})')
    return result


if __name__ == '__main__':
    main()
    sys.exit(0)
