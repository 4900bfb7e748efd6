"""Draw a trained detector's predictions over one image of a config's data set.

    python tools/analysis_tools/draw_detections.py CONFIG CHECKPOINT --split test \
        --index 0 --out predictions.png
"""
import argparse

import numpy as np
import torch
from mmengine.config import DictAction
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint

import projects  # noqa: F401
from projects.common.io import read_image
from projects.common.metrics import match_points
from projects.common.runner_utils import load_config
from projects.common.visualization import draw_cell_detections


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Draw detections over a data-set image')
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--split', choices=['train', 'val', 'test'], default='test',
                        help='which dataloader of the config to take the image from')
    parser.add_argument('--index', type=int, default=0, help='index of the image in the split')
    parser.add_argument('--score-thr', type=float, default=0.5)
    parser.add_argument('--radius', type=float, default=None,
                        help='matching radius for the F1 in the title (default: the '
                        "config's CellDetectionMetric radius, else 12)")
    parser.add_argument('--out', required=True, help='output PNG')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    cfg = load_config(args.config, args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    from mmdet.registry import DATASETS, MODELS
    dataset = DATASETS.build(cfg[f'{args.split}_dataloader'].dataset)
    if not 0 <= args.index < len(dataset):
        raise IndexError(f'--index {args.index}: the {args.split} set has {len(dataset)} images')
    model = MODELS.build(cfg.model)
    load_checkpoint(model, args.checkpoint, map_location='cpu')
    model.eval()
    data = dataset[args.index]
    with torch.no_grad():
        sample = model.test_step(dict(inputs=[data['inputs']],
                                      data_samples=[data['data_samples']]))[0]
    pred = sample.pred_instances
    gt_points = sample.metainfo.get('gt_points', None)
    if gt_points is None:
        b = sample.gt_instances.bboxes
        b = b.tensor if hasattr(b, 'tensor') else b
        gt_points = ((b[:, :2] + b[:, 2:]) / 2).numpy()
    radius = args.radius
    if radius is None:
        evaluator = cfg.get(f'{args.split}_evaluator', cfg.get('test_evaluator', {}))
        radius = evaluator.get('radius', 12.0) if isinstance(evaluator, dict) else 12.0
    boxes = pred.bboxes.numpy()
    scores = pred.scores.numpy()
    keep = scores >= args.score_thr
    centres = (boxes[keep, :2] + boxes[keep, 2:]) / 2
    tp, fp, fn = match_points(np.asarray(gt_points), centres, radius)
    f1 = 2 * tp / max(2 * tp + fp + fn, 1)
    image = read_image(sample.img_path)
    title = (f'{sample.img_path.split("/")[-1]}: TP {tp}, FP {fp}, FN {fn}, '
             f'F1 {f1:.3f} (radius {radius:g} px)')
    draw_cell_detections(image, boxes, scores, gt_points, args.score_thr, args.out, title)
    print(f'[mmhisto] {title}')
    print(f'[mmhisto] wrote {args.out}')


if __name__ == '__main__':
    main()
