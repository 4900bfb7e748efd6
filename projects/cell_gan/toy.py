"""A toy set of balanced, well separated cell clusters, and a plain training loop over
:meth:`CellInfoWGAN.train_step`: the check that argmax Q *can* find the classes when the
classes are the salient discrete factor of the data (issue 17, item 11).

``toy_disks`` draws grey disks of three sizes (radius 4, 8 and 12 px at 32 px; same
intensity) on a light background, one kind in three, with jittered centre, radius,
intensity and pixel noise. k-means on the pixels separates the kinds exactly; a Q that
clusters them must have learnt size from generated cells alone.
"""
import time
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from .metrics import cluster_scores

__all__ = ['TOY_RADII', 'toy_disks', 'q_clusters', 'train_toy', 'toy_purity']

#: disk radius of each kind at 32 px (scaled with the crop size)
TOY_RADII = (4.0, 8.0, 12.0)


def toy_disks(num: int, seed: int, size: int = 32, levels: Tuple[int, ...] = (80, 80, 80),
              background: int = 235) -> Tuple[np.ndarray, np.ndarray]:
    """``num`` grey crops (num, size, size, 3) uint8 and their kinds (num,) = i % 3.

    Kind k: a disk of radius TOY_RADII[k] * size / 32 (+- 0.7 px), grey level
    ``levels[k]`` (+- 10), centre within 1.5 px of the crop centre, on ``background`` with
    Gaussian pixel noise (sd 3)."""
    if num < 1 or size < 8 or len(levels) != len(TOY_RADII):
        raise ValueError(f'toy_disks: need num >= 1, size >= 8 and {len(TOY_RADII)} levels, '
                         f'got num={num}, size={size}, levels={levels}')
    rng = np.random.default_rng(seed)
    kinds = np.arange(num) % len(TOY_RADII)
    yy, xx = np.mgrid[:size, :size]
    out = np.empty((num, size, size, 3), np.uint8)
    for i, k in enumerate(kinds):
        cy, cx = size / 2 - 0.5 + rng.uniform(-1.5, 1.5, 2)
        r = TOY_RADII[k] * size / 32 + rng.uniform(-0.7, 0.7)
        img = np.full((size, size), float(background))
        img[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = levels[k] + rng.uniform(-10, 10)
        img += rng.normal(0, 3, img.shape)
        out[i] = np.clip(img, 0, 255).round()[..., None]
    return out, kinds.astype(np.int64)


def _inputs(crops: np.ndarray) -> List[torch.Tensor]:
    """RGB uint8 (N, H, W, 3) -> the loader's BGR (3, H, W) uint8 tensors."""
    return list(torch.from_numpy(np.ascontiguousarray(crops[..., ::-1])).permute(0, 3, 1, 2))


@torch.no_grad()
def q_clusters(model, crops: np.ndarray, batch: int = 256) -> np.ndarray:
    """argmax Q of RGB uint8 crops through the model's data preprocessor (eval mode)."""
    was_training = model.training
    model.eval()
    try:
        out = []
        for s in range(0, len(crops), batch):
            x = model.data_preprocessor(dict(inputs=_inputs(crops[s:s + batch])), False)
            out.append(model.q_logits(x['inputs']).argmax(1).cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(out)


def train_toy(model, optim_wrapper, crops: np.ndarray, generator_steps: int, batch: int,
              seed: int = 0, eval_every: int = 0,
              evaluate: Optional[Callable[[], Dict[str, float]]] = None) -> List[dict]:
    """Run ``model.train_step`` on random batches of ``crops`` (RGB uint8) until the model
    has taken ``generator_steps`` generator steps (n_critic critic steps each). Every
    ``eval_every`` generator steps (and at the end) ``evaluate()`` is called; returns one
    dict per evaluation: generator step, seconds so far, the last logged losses and what
    ``evaluate`` returned."""
    gen = torch.Generator().manual_seed(seed)
    x = _inputs(crops)
    history, last, t0 = [], {}, time.perf_counter()
    target = int(model.critic_steps) + generator_steps * model.n_critic
    while int(model.critic_steps) < target:
        idx = torch.randint(len(x), (batch, ), generator=gen).tolist()
        log = model.train_step(dict(inputs=[x[i] for i in idx]), optim_wrapper)
        last.update({k: float(v) for k, v in log.items()})
        if 'loss_g' in log:
            step = (int(model.critic_steps) - target) // model.n_critic + generator_steps
            if evaluate is not None and ((eval_every and step % eval_every == 0)
                                         or step == generator_steps):
                row = dict(generator_step=step, seconds=time.perf_counter() - t0, **last)
                row.update(evaluate())
                history.append(row)
    return history


def toy_purity(model, crops: np.ndarray, kinds: np.ndarray) -> Dict[str, float]:
    """Purity / entropy / F-score of argmax Q on toy crops of known kinds."""
    s = cluster_scores(q_clusters(model, crops), kinds)
    return dict(purity=s['purity'], entropy=s['entropy'], f_score=s['f_score'])
