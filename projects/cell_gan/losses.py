"""WGAN-GP + InfoGAN losses of Hu et al. 2018 (eqs. 10-12), as plain functions.

Critic D, generator G, auxiliary network Q; z ~ N(0, I), c ~ Cat(K) (one-hot input):

* eq. (10): L_D = E[D(G(z, c))] - E[D(x)] + lambda1 E[(||grad D(x_hat)||_2 - 1)^2], x_hat
  uniform on the segments between real and generated samples (WGAN-GP; lambda1 = 10);
* eq. (11): L_G = -E[D(G(z, c))];
* eq. (12): L_Q = -lambda2 E[log Q(c | G(z, c))] (lambda2 = 1).
"""
from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ['gradient_penalty', 'critic_loss', 'generator_loss', 'q_loss', 'sample_latent']


def gradient_penalty(critic: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor,
                     alpha: Optional[Tensor] = None) -> Tensor:
    """E[(||grad_x D(x_hat)||_2 - 1)^2] with x_hat = alpha real + (1 - alpha) fake, eq. (10).

    ``alpha`` (B,) defaults to U(0, 1) per sample. The graph is kept (create_graph) so the
    penalty trains the critic. ``fake`` is detached: the penalty is the critic's term.
    """
    if real.shape != fake.shape:
        raise ValueError(f'gradient_penalty: real {tuple(real.shape)} and fake '
                         f'{tuple(fake.shape)} differ in shape')
    if alpha is None:
        alpha = torch.rand(real.shape[0], device=real.device, dtype=real.dtype)
    alpha = alpha.reshape(-1, *([1] * (real.dim() - 1)))
    x_hat = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    out = critic(x_hat)
    (grad, ) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()


def critic_loss(d_real: Tensor, d_fake: Tensor, penalty: Tensor,
                lambda1: float = 10.0) -> Tensor:
    """Eq. (10): E[D(G(z, c))] - E[D(x)] + lambda1 * penalty."""
    return d_fake.mean() - d_real.mean() + lambda1 * penalty


def generator_loss(d_fake: Tensor) -> Tensor:
    """Eq. (11): -E[D(G(z, c))]."""
    return -d_fake.mean()


def q_loss(q_logits: Tensor, c: Tensor, lambda2: float = 1.0) -> Tensor:
    """Eq. (12): -lambda2 E[log Q(c | G(z, c))], Q a softmax over the K categories."""
    return lambda2 * F.cross_entropy(q_logits, c)


def sample_latent(batch: int, z_dim: int, num_categories: int,
                  generator: Optional[torch.Generator] = None,
                  device: Optional[torch.device] = None) -> Tuple[Tensor, Tensor]:
    """z ~ N(0, I) (batch, z_dim) and c ~ uniform categorical (batch,) long."""
    if batch < 1 or z_dim < 1 or num_categories < 1:
        raise ValueError(f'sample_latent: batch={batch}, z_dim={z_dim}, '
                         f'num_categories={num_categories} must all be >= 1')
    z = torch.randn(batch, z_dim, generator=generator, device=device)
    c = torch.randint(num_categories, (batch, ), generator=generator, device=device)
    return z, c
