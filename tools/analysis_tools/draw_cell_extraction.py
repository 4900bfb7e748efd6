"""Draw the cell-extraction pipeline of Hu et al. 2018 (their Fig. 6) on one image.

    python tools/analysis_tools/draw_cell_extraction.py IMAGE --out extraction.png \
        [--target TARGET_IMAGE | --target-stats paper] [--threshold 120 --min-size 200 \
        --opening 7] [--crop 0,0,400,400] [--num-crops 24]

Panels: the (cropped) input, the Reinhard-normalised image, the hematoxylin intensity
image I_H, the mask I_H < threshold, the instances after clean-up (outlines on the image),
and the first ``--num-crops`` 32x32 'seg' crops.
"""
import argparse
import os.path as osp
import sys
from typing import Optional, Tuple

import numpy as np

from projects.common.io import atomic_write, read_rgb_uint8


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('image', help='an H&E image (PNG / JPEG / TIFF)')
    parser.add_argument('--out', required=True, help='output PNG')
    parser.add_argument('--target', help='Reinhard target image')
    parser.add_argument('--target-stats', help='"paper" or six numbers (l-alpha-beta '
                        'means then stds); default: no normalisation')
    parser.add_argument('--threshold', type=float, default=120)
    parser.add_argument('--min-size', type=int, default=200)
    parser.add_argument('--opening', type=int, default=7)
    parser.add_argument('--crop', help='x,y,w,h of the region to show (default: all)')
    parser.add_argument('--num-crops', type=int, default=24)
    return parser.parse_args()


def _region(text: Optional[str], shape: Tuple[int, int], path: str) -> Tuple[slice, slice]:
    if not text:
        return slice(None), slice(None)
    try:
        x, y, w, h = (int(v) for v in text.split(','))
    except ValueError as err:
        raise SystemExit(f'--crop: expected x,y,w,h integers, got {text!r}') from err
    if w < 1 or h < 1 or x < 0 or y < 0 or x + w > shape[1] or y + h > shape[0]:
        raise SystemExit(f'--crop {text}: outside {path} ({shape[1]}x{shape[0]} px)')
    return slice(y, y + h), slice(x, x + w)


def main() -> None:
    args = parse_args()
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from skimage.segmentation import find_boundaries

    from projects.cell_gan.extraction import (extract_cells, hematoxylin_intensity,
                                              macenko_matrix)
    from projects.cell_gan.hooks import sample_grid
    sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..'))
    from extract_cells import target_stats_from_args  # tools/extract_cells.py

    rgb = read_rgb_uint8(args.image)
    rows, cols = _region(args.crop, rgb.shape[:2], args.image)
    rgb = np.ascontiguousarray(rgb[rows, cols])
    stats = target_stats_from_args(args.target, args.target_stats)
    out = extract_cells(rgb, stats, threshold=args.threshold, min_size=args.min_size,
                        opening=args.opening, modes='seg')
    norm, inst = out['normalized'], out['inst_map']
    h_int = hematoxylin_intensity(norm, macenko_matrix(norm))
    crops = out['crops']['seg'][:max(args.num_crops, 0)]
    outline = norm.copy()
    outline[find_boundaries(inst, mode='inner')] = (0, 255, 0)

    fig, axes = plt.subplots(2, 3, figsize=(12, 8.4))
    panels = [(rgb, '(a) input'),
              (norm, '(b) Reinhard-normalised' if stats is not None
               else '(b) not normalised (no --target given)'),
              (h_int, '(c) hematoxylin intensity $I_H$ (Macenko)'),
              (h_int < args.threshold, f'(d) $I_H$ < {args.threshold:g}'),
              (outline, f'(e) {int(inst.max())} nuclei after clean-up')]
    for ax, (img, title) in zip(axes.flat, panels):
        ax.imshow(img, cmap='gray' if img.ndim == 2 else None)
        ax.set_title(title, fontsize=10)
    if len(crops):
        n_cols = min(8, len(crops))
        n_rows = -(-len(crops) // n_cols)
        pad = np.full((n_rows * n_cols - len(crops), *crops.shape[1:]), 255, np.uint8)
        grid = sample_grid(np.concatenate([crops, pad]), n_rows, n_cols)
        axes.flat[5].imshow(grid)
    axes.flat[5].set_title(f'(f) 32x32 crops ({len(out["info"])} in all)', fontsize=10)
    for ax in axes.flat:
        ax.set_axis_off()
    fig.tight_layout()
    atomic_write(args.out, lambda tmp: fig.savefig(tmp, dpi=100, format='png'))
    plt.close(fig)
    print(f'{args.image}: {int(inst.max())} nuclei, {len(out["info"])} crops -> {args.out}')


if __name__ == '__main__':
    main()
