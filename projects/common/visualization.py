"""Pictures of cell detections: predictions over the image, beside the ground truth."""
from typing import Optional

import numpy as np


def draw_cell_detections(image: np.ndarray, pred_boxes: np.ndarray, pred_scores: np.ndarray,
                         gt_points: Optional[np.ndarray] = None, score_thr: float = 0.5,
                         out_file: Optional[str] = None, title: str = '',
                         dpi: int = 100) -> np.ndarray:
    """Draw the image (left) and predicted boxes + ground-truth points over it (right).

    image: RGB uint8 (H, W, 3); pred_boxes: (N, 4) xyxy; pred_scores: (N,); gt_points:
    (M, 2) xy. Boxes with score < ``score_thr`` are not drawn. Returns the rendered RGB
    picture and writes it to ``out_file`` (PNG, atomically) when given.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from .io import write_image

    h, w = image.shape[:2]
    scale = max(1.0, 400 / max(h, w))
    fig, axes = plt.subplots(1, 2, figsize=(2 * w * scale / dpi + 0.4, h * scale / dpi + 0.6),
                             dpi=dpi)
    keep = np.asarray(pred_scores) >= score_thr
    boxes = np.asarray(pred_boxes).reshape(-1, 4)[keep]
    for ax in axes:
        ax.imshow(image, extent=(0, w, h, 0))  # pixel c spans [c, c+1): data_layout.md
        ax.set_axis_off()
    axes[0].set_title('image', fontsize=9)
    for x0, y0, x1, y1 in boxes:
        axes[1].add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=0.8,
                                    edgecolor='#00e5ff'))
    n_gt = 0
    if gt_points is not None and len(gt_points):
        pts = np.asarray(gt_points).reshape(-1, 2)
        n_gt = len(pts)
        axes[1].plot(pts[:, 0], pts[:, 1], '+', color='#ffea00', ms=5, mew=1.0)
    axes[1].set_title(f'{len(boxes)} predictions (score >= {score_thr}, cyan) / '
                      f'{n_gt} ground-truth points (yellow)', fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    if out_file is not None:
        write_image(out_file, rgb)
    return rgb
