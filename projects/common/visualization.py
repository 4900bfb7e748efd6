"""Pictures of cell detections: predictions over the image, beside the ground truth."""
from typing import Optional, Sequence

import numpy as np


def draw_cell_detections(image: np.ndarray, panels: Sequence[dict],
                         gt_points: Optional[np.ndarray] = None, out_file: Optional[str] = None,
                         title: str = '', dpi: int = 100) -> np.ndarray:
    """Draw the image (left), then one panel per detector: its boxes + the GT points over it.

    image: RGB uint8 (H, W, 3); ``panels``: dicts with ``boxes`` (N, 4) xyxy, ``scores``
    (N,), ``score_thr`` (boxes below it are not drawn) and optional ``name``; gt_points:
    (M, 2) xy, drawn on every panel. Returns the rendered RGB picture and writes it to
    ``out_file`` (PNG, atomically) when given.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from .io import write_image

    if not panels:
        raise ValueError('draw_cell_detections: no detector panel to draw')
    h, w = image.shape[:2]
    scale = max(1.0, 400 / max(h, w))
    n = 1 + len(panels)
    fig, axes = plt.subplots(1, n, figsize=(n * w * scale / dpi + 0.4, h * scale / dpi + 0.9),
                             dpi=dpi)
    for ax in axes:
        ax.imshow(image, extent=(0, w, h, 0))  # pixel c spans [c, c+1): data_layout.md
        ax.set_axis_off()
    axes[0].set_title(title or 'image', fontsize=8)
    pts = np.zeros((0, 2)) if gt_points is None else np.asarray(gt_points).reshape(-1, 2)
    for ax, panel in zip(axes[1:], panels):
        thr = panel['score_thr']
        keep = np.asarray(panel['scores']) >= thr
        boxes = np.asarray(panel['boxes']).reshape(-1, 4)[keep]
        for x0, y0, x1, y1 in boxes:
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=0.8,
                                   edgecolor='#00e5ff'))
        if len(pts):
            ax.plot(pts[:, 0], pts[:, 1], '+', color='#ffea00', ms=5, mew=1.0)
        name = f"{panel['name']}\n" if panel.get('name') else ''
        ax.set_title(f'{name}{len(boxes)} boxes with score >= {thr:.3g} (cyan),\n'
                     f'{len(pts)} annotated cells (yellow)', fontsize=8)
    fig.tight_layout()
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    if out_file is not None:
        write_image(out_file, rgb)
    return rgb
