"""CellInfoWGAN: the 5:1:1 schedule, what each step updates, the logged losses, inference."""
import copy

import pytest
import torch
import torch.nn.functional as F
from mmengine.optim import OptimWrapper, build_optim_wrapper

from projects.cell_gan import CellInfoWGAN, GANOptimWrapperConstructor
from projects.cell_gan.losses import gradient_penalty

ADAM = dict(type='OptimWrapper', optimizer=dict(type='Adam', lr=1e-3, betas=(0.5, 0.9)))


def _model(**kw) -> CellInfoWGAN:
    torch.manual_seed(0)
    kw.setdefault('channels', 8)
    return CellInfoWGAN(z_dim=4, num_categories=3, **kw)


def _optim(model, aux_modules=('auxiliary', 'generator', 'discriminator')):
    cfg = dict(constructor='GANOptimWrapperConstructor', generator=ADAM, discriminator=ADAM,
               auxiliary=dict(ADAM, modules=list(aux_modules)))
    return build_optim_wrapper(model, copy.deepcopy(cfg))


def _batch(n=4, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return dict(inputs=[torch.randint(0, 256, (3, 32, 32), generator=gen, dtype=torch.uint8)
                        for _ in range(n)])


def _adam_steps(wrapper, params):
    """Adam's per-parameter step count for ``params`` (0 if never stepped)."""
    state = wrapper.optimizer.state
    return {int(state[p]['step']) if p in state else 0 for p in params}


def _snapshot(module):
    return [p.detach().clone() for p in module.parameters()]


def _changed(module, before):
    return [not torch.equal(p, b) for p, b in zip(module.parameters(), before)]


def test_schedule_five_critic_steps_per_generator_and_q_step():
    # 12 critic iterations with n_critic = 5: G and Q step after the 5th and the 10th, so
    # Adam has taken 12 steps on every D parameter and 2 on every G and Q parameter.
    model = _model(n_critic=5, q_shares_trunk=True)  # the authors' set-up
    optim = _optim(model)
    logs = [model.train_step(_batch(seed=i), optim) for i in range(12)]
    assert _adam_steps(optim['discriminator'], model.discriminator.parameters()) == {12}
    assert _adam_steps(optim['generator'], model.generator.parameters()) == {2}
    assert _adam_steps(optim['auxiliary'], model.auxiliary.parameters()) == {2}
    # the authors' Q step also moves G and D's trunk (its own Adam state), not the critic
    trunk = [p for n, p in model.discriminator.named_parameters() if not n.startswith('critic')]
    assert _adam_steps(optim['auxiliary'], trunk) == {2}
    assert _adam_steps(optim['auxiliary'], model.discriminator.critic.parameters()) == {0}
    assert int(model.critic_steps) == 12
    with_g = [i for i, log in enumerate(logs) if 'loss_g' in log]
    assert with_g == [4, 9] and all('loss_q' in logs[i] for i in with_g)


@pytest.mark.parametrize('shared', [True, False])
def test_each_step_moves_only_its_network(shared):
    model = _model(n_critic=2, q_shares_trunk=shared)
    optim = _optim(model, aux_modules=['auxiliary'])
    g0, d0, q0 = (_snapshot(m) for m in (model.generator, model.discriminator, model.auxiliary))
    model.train_step(_batch(), optim)  # critic step only
    # every D weight moves except the critic's bias: it cancels in E D(G) - E D(x) and
    # does not enter the gradient penalty, so its gradient is exactly 0
    names = [n for n, _ in model.discriminator.named_parameters()]
    moved = dict(zip(names, _changed(model.discriminator, d0)))
    assert moved.pop('critic.bias') is False and all(moved.values())
    assert not any(_changed(model.generator, g0)) and not any(_changed(model.auxiliary, q0))
    d1 = _snapshot(model.discriminator)
    model.train_step(_batch(seed=2), optim)  # critic, then G, then Q (head only here)
    assert sum(_changed(model.discriminator, d1)) == len(names) - 1  # its own critic step
    assert all(_changed(model.generator, g0)) and all(_changed(model.auxiliary, q0))
    # G's step left no gradient on D's critic layer (D's weights were frozen during it; the
    # Q step does not reach that layer)
    assert model.discriminator.critic.weight.grad is None


def test_logged_losses_match_recomputation_with_the_same_noise():
    # Replay the critic step on a copy of the model with the same RNG state: eq. (10)
    # with the same alpha, and V(D, G) = mean D(x) - mean D(G(z, c)).
    model = _model(n_critic=1)
    optim = _optim(model)
    data = _batch(n=6)
    ref = copy.deepcopy(model)
    torch.manual_seed(123)
    log = model.train_step(data, optim)
    torch.manual_seed(123)
    real = ref.data_preprocessor(data, True)['inputs']
    z, c = ref.sample(6)
    with torch.no_grad():
        fake = ref.generator(z, c)
    d_real, d_fake = ref.discriminator(real)[0], ref.discriminator(fake)[0]
    alpha = torch.rand(6)
    gp = gradient_penalty(lambda x: ref.discriminator(x)[0], real, fake, alpha=alpha)
    wdist = d_real.mean() - d_fake.mean()
    assert log['wdist'].item() == pytest.approx(wdist.item(), rel=1e-5)
    assert log['loss_gp'].item() == pytest.approx(gp.item(), rel=1e-5)
    assert log['loss_d'].item() == pytest.approx(-wdist.item() + 10 * gp.item(), rel=1e-5)
    assert log['loss_q'].item() > 0 and 0 <= log['q_acc'].item() <= 1


def test_q_loss_logged_is_cross_entropy_of_q_on_generated_cells():
    # Freeze D and G (lr 0) so the Q step's recomputation only depends on the noise.
    model = _model(n_critic=1)
    zero = dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.0))
    optim = build_optim_wrapper(model, dict(
        constructor='GANOptimWrapperConstructor', generator=zero, discriminator=zero,
        auxiliary=zero))
    torch.manual_seed(5)
    log = model.train_step(_batch(n=4), optim)
    torch.manual_seed(5)
    ref = copy.deepcopy(model)
    ref.data_preprocessor(_batch(n=4), True)
    ref.sample(4)               # critic step's noise
    torch.rand(4)               # its gradient-penalty alpha
    ref.sample(4)               # G step's noise
    z, c = ref.sample(4)        # Q step's noise
    logits = ref.auxiliary(ref.generator(z, c))  # Q: its own residual network
    # -log softmax(logits)[c], averaged: written out instead of F.cross_entropy
    nll = -(logits.log_softmax(1)[torch.arange(4), c]).mean()
    assert log['loss_q'].item() == pytest.approx(nll.item(), rel=1e-5)
    acc = (logits.argmax(1) == c).float().mean()
    assert log['q_acc'].item() == pytest.approx(acc.item())


def test_predict_is_argmax_q_and_features_are_maxpooled_blocks():
    model = _model(channels=4).eval()
    x = torch.randn(3, 3, 32, 32)
    out = model(x, mode='predict')
    # Q's own residual trunk: D's blocks play no part
    logits = model.auxiliary.fc(model.auxiliary.trunk(x)[0])
    assert [int(s.pred_label) for s in out] == logits.argmax(1).tolist()
    assert torch.allclose(out[0].pred_score, logits[0].softmax(0))
    # blocks: 16x16, 8x8, 8x8, 8x8 -> 4x4 windows of 4 and 2 pixels, 4 channels each
    feats = model.extract_features(x)
    assert feats.shape == (3, 4 * 4 * 16)
    h, pieces = x, []
    for block in model.discriminator.trunk.blocks:
        h = block(h)
        k = h.shape[-1] // 4
        pieces.append(F.max_pool2d(h, k).flatten(1))
    assert torch.allclose(feats, torch.cat(pieces, 1))


def test_generate_grid_is_uint8_rgb_of_eval_generator():
    model = _model()
    z, c = torch.randn(2, 4), torch.tensor([0, 2])
    img = model.generate(z, c)
    model.generator.eval()
    ref = ((model.generator(z, c) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    assert img.dtype == torch.uint8 and torch.equal(img, ref)


def test_bad_configuration_and_optimiser_errors():
    with pytest.raises(ValueError, match='num_categories'):
        CellInfoWGAN(num_categories=1)
    with pytest.raises(ValueError, match='img_size'):
        CellInfoWGAN(img_size=24)
    model = _model()
    plain = OptimWrapper(torch.optim.Adam(model.parameters()))
    with pytest.raises(TypeError, match='OptimWrapperDict'):
        model.train_step(_batch(), plain)
    with pytest.raises(ValueError, match=r"\['critic_head'\]"):
        GANOptimWrapperConstructor(dict(auxiliary=dict(ADAM, modules=['critic_head'])))(model)
    with pytest.raises(ValueError, match=r'expected \(B, 3, 32, 32\)'):
        model.train_step(dict(inputs=[torch.zeros(3, 16, 16, dtype=torch.uint8)] * 2),
                         _optim(model))
    with pytest.raises(ValueError, match='mode'):
        model(torch.zeros(1, 3, 32, 32), mode='loss')
