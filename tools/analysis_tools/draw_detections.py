"""Draw trained detectors' predictions over one image of a config's data set.

One detector, or several side by side on the same image (``--compare``), each at its own
score threshold (a number or the JSON of ``calibrate_threshold.py --out``):

    python tools/analysis_tools/draw_detections.py CONFIG CHECKPOINT --split test \\
        --index 0 --out predictions.png
    python tools/analysis_tools/draw_detections.py CE_CONFIG CE.pth --name stock \\
        --compare calibrated-CE CE_CONFIG CE.pth calibration.json \\
        --compare PU PU_CONFIG PU.pth 0.5 --index 5 --out side_by_side.png
"""
import argparse
from typing import List, Optional

import numpy as np
import torch
from mmengine.config import DictAction
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint

import projects  # noqa: F401
from projects.common.calibration import read_threshold
from projects.common.io import read_image
from projects.common.metrics import match_points
from projects.common.runner_utils import load_config
from projects.common.visualization import draw_cell_detections


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Draw detections over a data-set image')
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--split', choices=['train', 'val', 'test'], default='test',
                        help='which dataloader of the config to take the image from')
    parser.add_argument('--index', type=int, default=0, help='index of the image in the split')
    parser.add_argument('--score-thr', default='0.5',
                        help='a number or a calibrate_threshold.py JSON (default 0.5)')
    parser.add_argument('--name', default='', help='the detector\'s name in its panel title')
    parser.add_argument('--compare', nargs=4, action='append', default=[],
                        metavar=('NAME', 'CONFIG', 'CHECKPOINT', 'THR'),
                        help='another detector drawn beside the first on the same image '
                        '(THR: a number or a calibrate_threshold.py JSON); repeatable')
    parser.add_argument('--radius', type=float, default=None,
                        help='matching radius for the F1 in the titles (default: the '
                        "config's CellDetectionMetric radius, else 12)")
    parser.add_argument('--out', required=True, help='output PNG')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='applied to every detector\'s config')
    return parser.parse_args(argv)


def predict(config: str, checkpoint: str, split: str, index: int, cfg_options=None):
    """(config, data sample with pred_instances) of ``checkpoint`` on image ``index``."""
    cfg = load_config(config, cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    from mmdet.registry import DATASETS, MODELS
    dataset = DATASETS.build(cfg[f'{split}_dataloader'].dataset)
    if not 0 <= index < len(dataset):
        raise IndexError(f'{config}: --index {index}, but its {split} set has '
                         f'{len(dataset)} images')
    model = MODELS.build(cfg.model)
    load_checkpoint(model, checkpoint, map_location='cpu')
    model.eval()
    data = dataset[index]
    with torch.no_grad():
        sample = model.test_step(dict(inputs=[data['inputs']],
                                      data_samples=[data['data_samples']]))[0]
    return cfg, sample


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    detectors = [(args.name, args.config, args.checkpoint, args.score_thr)] + args.compare
    # thresholds first: a bad THR fails before any model runs
    thresholds = [read_threshold(thr, f'{name or config}: threshold')
                  for name, config, _, thr in detectors]
    runs = {}  # (config, checkpoint) -> (cfg, sample): calibrated CE reuses the stock run
    for _, config, checkpoint, _ in detectors:
        if (config, checkpoint) not in runs:
            runs[config, checkpoint] = predict(config, checkpoint, args.split, args.index,
                                               args.cfg_options)
    cfg, first = runs[args.config, args.checkpoint]
    gt_points = first.metainfo.get('gt_points', None)
    if gt_points is None:
        b = first.gt_instances.bboxes
        b = b.tensor if hasattr(b, 'tensor') else b
        gt_points = ((b[:, :2] + b[:, 2:]) / 2).numpy()
    gt_points = np.asarray(gt_points)
    radius = args.radius
    if radius is None:
        evaluator = cfg.get(f'{args.split}_evaluator', cfg.get('test_evaluator', {}))
        radius = evaluator.get('radius', 12.0) if isinstance(evaluator, dict) else 12.0
    image_name = first.img_path.split('/')[-1]
    panels = []
    for (name, config, checkpoint, _), score_thr in zip(detectors, thresholds):
        sample = runs[config, checkpoint][1]
        if sample.img_path != first.img_path:
            raise ValueError(f'{config}: image {args.index} of its {args.split} set is '
                             f'{sample.img_path}, not {first.img_path} (the first '
                             'detector\'s): the detectors must share the data set')
        boxes = sample.pred_instances.bboxes.numpy()
        scores = sample.pred_instances.scores.numpy()
        keep = scores >= score_thr
        centres = (boxes[keep, :2] + boxes[keep, 2:]) / 2
        tp, fp, fn = match_points(gt_points, centres, radius)
        f1 = 2 * tp / max(2 * tp + fp + fn, 1)
        label = f'{name} ' if name else ''
        print(f'[mmhisto] {label}{image_name}: TP {tp}, FP {fp}, FN {fn}, F1 {f1:.3f} '
              f'(score >= {score_thr:.3g}, radius {radius:g} px)')
        panels.append(dict(boxes=boxes, scores=scores, score_thr=score_thr,
                           name=f'{label}F1 {f1:.3f}'))
    title = f'{image_name}, point matching within {radius:g} px'
    draw_cell_detections(read_image(first.img_path), panels, gt_points, args.out, title)
    print(f'[mmhisto] wrote {args.out}')


if __name__ == '__main__':
    main()
