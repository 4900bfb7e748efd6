"""Draw one image of a point-supervision config: the image, its Voronoi and cluster labels
(Qu et al. Fig. 1 (e, f)), and a trained model's prediction against the full mask (Fig. 3
colours: yellow true positive, red false positive, green false negative).

    python tools/analysis_tools/draw_point_supervision.py CONFIG CHECKPOINT --split test \\
        --index 0 --out point_supervision.png
"""
import argparse
import os.path as osp
from typing import List, Optional

import numpy as np
import torch
from mmengine.config import DictAction
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint

import projects  # noqa: F401
from projects.common.instances import box_centres, instance_geometry
from projects.common.io import read_image, read_instance_map
from projects.common.runner_utils import load_config
from projects.point_supervision.labels import cluster_label, voronoi_label

# label maps: background red, nucleus green, ignored black (the paper's Fig. 1 colours)
LABEL_COLOURS = {0: (200, 40, 40), 1: (40, 200, 40), 255: (0, 0, 0)}


def colour_label(label: np.ndarray) -> np.ndarray:
    out = np.zeros(label.shape + (3, ), np.uint8)
    for value, rgb in LABEL_COLOURS.items():
        out[label == value] = rgb
    return out


def colour_errors(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Yellow TP, red FP, green FN, black TN (Qu et al. Fig. 3)."""
    out = np.zeros(gt.shape + (3, ), np.uint8)
    out[gt & pred] = (230, 200, 0)
    out[~gt & pred] = (220, 30, 30)
    out[gt & ~pred] = (30, 180, 30)
    return out


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('config')
    p.add_argument('checkpoint')
    p.add_argument('--split', choices=['train', 'val', 'test'], default='test')
    p.add_argument('--index', type=int, default=0, help='image index in the split')
    p.add_argument('--out', required=True, help='output PNG')
    p.add_argument('--cfg-options', nargs='+', action=DictAction)
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> str:
    args = parse_args(argv)
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    cfg = load_config(args.config, args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    from mmseg.registry import DATASETS, MODELS
    ds_cfg = cfg[f'{args.split}_dataloader'].dataset
    ds_cfg.pipeline = cfg.test_pipeline
    dataset = DATASETS.build(ds_cfg)
    if not 0 <= args.index < len(dataset):
        raise IndexError(f'--index {args.index}: the {args.split} set has {len(dataset)} images')
    info = dataset.get_data_info(args.index)
    model = MODELS.build(cfg.model)
    load_checkpoint(model, args.checkpoint, map_location='cpu')
    model.eval()
    data = dataset[args.index]
    with torch.no_grad():
        sample = model.test_step(dict(inputs=[data['inputs']],
                                      data_samples=[data['data_samples']]))[0]
    pred = sample.pred_sem_seg.data[0].numpy() == 1
    rgb = read_image(info['img_path'])
    inst = read_instance_map(info['inst_map_path'])
    _, _, boxes = instance_geometry(inst, source=info['inst_map_path'])
    points = box_centres(boxes)
    vor = voronoi_label(points, inst.shape)
    clu = cluster_label(rgb, points, voronoi=vor)
    h_img = data['inputs'][0].numpy()
    panels = [(rgb, 'image'), (h_img, 'network input (H-component)'),
              (colour_label(vor), 'Voronoi label'), (colour_label(clu), 'cluster label'),
              (colour_errors(inst > 0, pred), 'prediction vs full mask')]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4.3))
    for ax, (img, title) in zip(axes, panels):
        ax.imshow(img, cmap='gray' if img.ndim == 2 else None, interpolation='nearest')
        ax.set_title(title, fontsize=10)
        ax.axis('off')
    fig.suptitle(f'{osp.basename(info["img_path"])} ({args.split}); labels from instance box '
                 f'centres; yellow TP, red FP, green FN', fontsize=10)
    fig.tight_layout()
    fig.savefig(args.out, dpi=90)
    print(f'[draw_point_supervision] wrote {args.out}')
    return args.out


if __name__ == '__main__':
    main()
