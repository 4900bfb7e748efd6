"""Training pictures of the cell GAN: the sample grid of Fig. 5 and the curves of Fig. 9(a)."""
import os.path as osp
from typing import Dict, Sequence

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from projects.common.io import atomic_write, write_image
from projects.common.registry import HOOKS, register

__all__ = ['sample_grid', 'CellGANSampleHook']

GENERATOR_KEYS = ('loss_g', 'loss_g_q', 'loss_q', 'q_acc')  # logged after G / Q steps only


def sample_grid(images: np.ndarray, rows: int, cols: int, border: int = 2,
                fill: int = 255) -> np.ndarray:
    """Tile ``rows * cols`` images (N, H, W, 3) row-major into one picture with borders."""
    n, h, w, ch = images.shape
    if n != rows * cols:
        raise ValueError(f'sample_grid: {n} images do not fill {rows} x {cols}')
    out = np.full((rows * (h + border) + border, cols * (w + border) + border, ch), fill,
                  dtype=images.dtype)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        y, x = border + r * (h + border), border + c * (w + border)
        out[y:y + h, x:x + w] = img
    return out


@register(HOOKS)
class CellGANSampleHook(Hook):
    """Every ``interval`` iterations (and at the end) save, under
    ``<work_dir>/<timestamp>/vis_data/``:

    * ``samples/iter_<k>.png``: G(z, c) for ``num_rows`` fixed z (rows) and every value of
      the categorical code c (columns), as in the paper's Figs. 3(b) and 5 (G in eval mode,
      z drawn once from ``seed`` so grids of different iterations compare);
    * ``learning_curves.png``: V(D, G) of eq. (8) (``wdist``) and L_Q of eq. (12)
      (``loss_q``), as in Fig. 9(a), from the runner's logged scalars (restored on resume):
      V(D, G) per critic iteration, L_Q per generator iteration.
    """

    priority = 'LOW'

    def __init__(self, interval: int = 500, num_rows: int = 8, seed: int = 0,
                 curve_keys: Sequence[str] = ('wdist', 'loss_q')):
        if interval < 1 or num_rows < 1:
            raise ValueError(f'CellGANSampleHook: interval={interval} and num_rows={num_rows} '
                             'must be >= 1')
        self.interval, self.num_rows, self.seed = interval, num_rows, seed
        self.curve_keys = tuple(curve_keys)

    def _model(self, runner):
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        if not hasattr(model, 'generate'):
            raise TypeError(f'CellGANSampleHook needs a CellInfoWGAN, got {type(model).__name__}')
        return model

    def latent_grid(self, model) -> tuple:
        """(z, c) of the grid: row r repeats z_r across the K columns c = 0..K-1."""
        gen = torch.Generator().manual_seed(self.seed)
        z = torch.randn(self.num_rows, model.z_dim, generator=gen)
        k = model.num_categories
        return z.repeat_interleave(k, dim=0), torch.arange(k).repeat(self.num_rows)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if self.every_n_train_iters(runner, self.interval) or self.is_last_train_iter(runner):
            self.save(runner)

    def save(self, runner) -> None:
        if runner.rank != 0:
            return
        model = self._model(runner)
        z, c = self.latent_grid(model)
        imgs = model.generate(z, c).permute(0, 2, 3, 1).cpu().numpy()
        grid = sample_grid(imgs, self.num_rows, model.num_categories)
        out_dir = osp.join(runner.log_dir, 'vis_data')
        write_image(osp.join(out_dir, 'samples', f'iter_{runner.iter + 1:06d}.png'), grid)
        curves = self.curves(runner)
        if curves:
            self.plot_curves(curves, osp.join(out_dir, 'learning_curves.png'))

    def curves(self, runner) -> Dict[str, np.ndarray]:
        """Logged values of ``curve_keys`` (one per generator iteration for G/Q keys)."""
        out = {}
        for key in self.curve_keys:
            buf = runner.message_hub.log_scalars.get(f'train/{key}')
            if buf is not None and len(buf.data[0]):
                out[key] = np.asarray(buf.data[0], dtype=float)
        return out

    @staticmethod
    def plot_curves(curves: Dict[str, np.ndarray], path: str) -> None:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
        labels = dict(wdist='V(D, G), eq. (8)', loss_q='$L_Q$, eq. (12)')
        fig, axes = plt.subplots(1, len(curves), figsize=(4.5 * len(curves), 3.2),
                                 squeeze=False)
        for ax, (key, values) in zip(axes[0], curves.items()):
            ax.plot(np.arange(1, len(values) + 1), values, lw=0.6, alpha=0.5)
            if len(values) >= 20:  # running mean over 5% of the run
                w = max(len(values) // 20, 2)
                ax.plot(np.arange(w, len(values) + 1),
                        np.convolve(values, np.ones(w) / w, mode='valid'), lw=1.5)
            ax.set_title(labels.get(key, key))
            # G / Q values are logged once per generator iteration, the others per critic one
            ax.set_xlabel('generator iteration' if key in GENERATOR_KEYS else 'critic iteration')
        fig.tight_layout()
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format='png'))
        plt.close(fig)
