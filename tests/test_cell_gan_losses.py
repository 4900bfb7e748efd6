"""WGAN-GP / InfoGAN losses (Hu et al. 2018, eqs. 10-12) on hand-checkable critics."""
import math

import pytest
import torch

from projects.cell_gan.losses import (critic_loss, generator_loss, gradient_penalty, q_loss,
                                      sample_latent)


def test_gradient_penalty_of_a_linear_critic_is_norm_minus_one_squared():
    # D(x) = <w, x>: the gradient is w at every x_hat, ||w|| = 3 -> (3 - 1)^2 = 4
    w = torch.tensor([2.0, 1.0, 2.0, 0.0]).reshape(1, 1, 2, 2)
    real, fake = torch.randn(5, 1, 2, 2), torch.randn(5, 1, 2, 2)
    gp = gradient_penalty(lambda x: (x * w).flatten(1).sum(1), real, fake)
    assert gp.item() == pytest.approx(4.0)


def test_gradient_penalty_of_a_quadratic_critic_at_known_interpolates():
    # D(x) = ||x||^2 / 2: the gradient is x_hat itself; alpha = (1, 0, 0.5)
    real = torch.tensor([[3.0, 4.0], [0.0, 0.0], [2.0, 0.0]])
    fake = torch.tensor([[9.0, 9.0], [0.0, 2.0], [0.0, 2.0]])
    # x_hat = (3, 4) -> norm 5 -> 16 ; (0, 2) -> 2 -> 1 ; (1, 1) -> sqrt 2 -> (sqrt2 - 1)^2
    expected = (16 + 1 + (math.sqrt(2) - 1) ** 2) / 3
    gp = gradient_penalty(lambda x: 0.5 * (x ** 2).sum(1), real, fake,
                          alpha=torch.tensor([1.0, 0.0, 0.5]))
    assert gp.item() == pytest.approx(expected)


def test_gradient_penalty_trains_the_critic_not_the_generator():
    critic = torch.nn.Linear(3, 1)
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([[3.0, 0.0, 4.0]]))  # ||w|| = 5
    fake = torch.randn(4, 3, requires_grad=True)
    gp = gradient_penalty(lambda x: critic(x).squeeze(1), torch.randn(4, 3), fake)
    gp.backward()
    # d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w|| = 2 * 4 * w / 5
    assert torch.allclose(critic.weight.grad, 1.6 * critic.weight.detach())
    assert fake.grad is None


def test_critic_generator_and_q_losses_by_hand():
    d_real, d_fake = torch.tensor([1.0, 3.0]), torch.tensor([-1.0, 0.0])
    # eq. (10): mean(fake) - mean(real) + 10 * 0.25 = -0.5 - 2 + 2.5 = 0
    assert critic_loss(d_real, d_fake, torch.tensor(0.25)).item() == pytest.approx(0.0)
    assert generator_loss(d_fake).item() == pytest.approx(0.5)  # eq. (11)
    # eq. (12): Q = softmax([ln 3, 0]) -> Q(c=0) = 0.75 ; Q(c=1) = 0.25; lambda2 = 2
    logits = torch.tensor([[math.log(3.0), 0.0], [math.log(3.0), 0.0]])
    loss = q_loss(logits, torch.tensor([0, 1]), lambda2=2.0)
    assert loss.item() == pytest.approx(2.0 * -(math.log(0.75) + math.log(0.25)) / 2)


def test_sample_latent_is_seeded_and_checked():
    g = torch.Generator().manual_seed(0)
    z, c = sample_latent(64, 32, 5, generator=g)
    assert z.shape == (64, 32) and c.dtype == torch.long and 0 <= int(c.min()) <= int(c.max()) < 5
    z2, c2 = sample_latent(64, 32, 5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(z, z2) and torch.equal(c, c2)
    with pytest.raises(ValueError, match='num_categories=0'):
        sample_latent(4, 8, 0)
    with pytest.raises(ValueError, match='differ in shape'):
        gradient_penalty(lambda x: x.sum(1), torch.zeros(2, 3), torch.zeros(3, 3))
