"""CellInfoWGAN: the 5:1:1 schedule, what each step updates, lambda2's effect on the
generator step, the logged losses, inference."""
import copy
import inspect

import pytest
import torch
import torch.nn.functional as F
from mmengine.optim import OptimWrapper, build_optim_wrapper

from projects.cell_gan import CellInfoWGAN, GANOptimWrapperConstructor, QNetwork
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
    # the G and Q steps' values: test_g_and_q_losses_logged_are_..., below


def _nll(logits, c):
    """-log softmax(logits)[c], averaged: written out instead of F.cross_entropy."""
    return -(logits.log_softmax(1)[torch.arange(len(c)), c]).mean()


@pytest.mark.parametrize('shared', [False, True])
def test_g_and_q_losses_logged_are_recomputed_on_the_same_noise(shared):
    # Every optimiser at lr 0: no weight moves, so replaying the RNG reproduces each step.
    # lambda2 = 2: the G step logs L_G and 2 * NLL, the Q step 2 * NLL on its own noise.
    model = _model(n_critic=1, lambda2=2.0, q_shares_trunk=shared)
    zero = dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.0))
    optim = build_optim_wrapper(model, dict(
        constructor='GANOptimWrapperConstructor', generator=zero, discriminator=zero,
        auxiliary=zero))
    torch.manual_seed(5)
    log = model.train_step(_batch(n=4), optim)
    torch.manual_seed(5)
    ref = copy.deepcopy(model)
    ref.sample(4)               # critic step's noise
    torch.rand(4)               # its gradient-penalty alpha

    def q_of(img):  # Q on D's pooled trunk (the authors' code) or on its own trunk
        return ref.auxiliary(ref.discriminator(img)[1]) if shared else ref.auxiliary(img)

    z, c = ref.sample(4)        # G step's noise
    fake = ref.generator(z, c)
    assert log['loss_g'].item() == pytest.approx(-ref.discriminator(fake)[0].mean().item(),
                                                 rel=1e-5)
    assert log['loss_g_q'].item() == pytest.approx(2 * _nll(q_of(fake), c).item(), rel=1e-5)
    z, c = ref.sample(4)        # Q step's noise
    logits = q_of(ref.generator(z, c))
    assert log['loss_q'].item() == pytest.approx(2 * _nll(logits, c).item(), rel=1e-5)
    acc = (logits.argmax(1) == c).float().mean()
    assert log['q_acc'].item() == pytest.approx(acc.item())


def _one_g_step(lambda2: float, shared: bool, g_optim: dict, **kw):
    """Build the seed-0 model, take one critic + G + Q iteration on fixed data and noise
    (the Q step updates Q alone), return (model before, model after)."""
    model = _model(n_critic=1, lambda2=lambda2, q_shares_trunk=shared, **kw)
    before = copy.deepcopy(model)
    optim = build_optim_wrapper(model, dict(
        constructor='GANOptimWrapperConstructor', generator=g_optim, discriminator=ADAM,
        auxiliary=dict(ADAM, modules=['auxiliary'])))
    torch.manual_seed(11)
    model.train_step(_batch(n=4), optim)
    return before, model


@pytest.mark.parametrize('shared', [False, True])
def test_lambda2_weights_the_q_loss_in_the_generator_step(shared):
    # Two models from the same state, data and noise, lambda2 = 1 and 2, G trained by SGD
    # (lr 0.1): G's step is -0.1 * grad_G (L_G + lambda2 L_Q), so the two G's differ by
    # -0.1 * grad_G L_Q, L_Q = NLL(Q(G(z, c)), c) on the G step's noise, with D as the
    # critic step left it and Q as initialised (the Q step runs after the G step).
    sgd = dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.1))
    g0, one = _one_g_step(1.0, shared, sgd)
    _, two = _one_g_step(2.0, shared, sgd)
    # the critic step does not involve lambda2: both critics are equal
    for p, q in zip(one.discriminator.parameters(), two.discriminator.parameters()):
        assert torch.equal(p, q)
    # replay the noise: critic (z, c), its penalty alpha, then the G step's (z, c)
    torch.manual_seed(11)
    g0.sample(4)
    torch.rand(4)
    z, c = g0.sample(4)
    g0.discriminator.load_state_dict(one.discriminator.state_dict())
    fake = g0.generator(z, c)
    d_fake, pooled = g0.discriminator(fake)
    nll = _nll(g0.auxiliary(pooled if shared else fake), c)
    params = list(g0.generator.parameters())
    grad_q = torch.autograd.grad(nll, params, retain_graph=True)
    grad_d = torch.autograd.grad(-d_fake.mean(), params)
    for p0, p1, p2, gq, gd in zip(params, one.generator.parameters(),
                                  two.generator.parameters(), grad_q, grad_d):
        torch.testing.assert_close(p2 - p1, -0.1 * gq, atol=1e-6, rtol=1e-4)
        torch.testing.assert_close(p1 - p0, -0.1 * (gd + gq), atol=1e-6, rtol=1e-4)
    # not vacuous: L_Q moves G by far more than the tolerance above
    assert max(float(g.abs().max()) for g in grad_q) > 1e-2
    # under Adam (the configs' optimiser) the two G's differ as well
    _, one = _one_g_step(1.0, shared, ADAM)
    _, two = _one_g_step(2.0, shared, ADAM)
    assert not all(torch.equal(p, q) for p, q in zip(one.generator.parameters(),
                                                     two.generator.parameters()))


def _g_update(lambda2: float, fixed: bool) -> torch.Tensor:
    """G's total change over one critic + G + Q iteration under the configs' set-up (Adam;
    the Q step moves Q and G): with lambda2 L_Q in the G step (``fixed``) or, as before
    issue 17, L_Q only in the Q step."""
    model = _model(n_critic=1, lambda2=lambda2, q_loss_in_generator_step=fixed)
    g0 = _snapshot(model.generator)
    optim = _optim(model, aux_modules=['auxiliary', 'generator'])
    torch.manual_seed(11)
    log = model.train_step(_batch(n=4), optim)
    assert ('loss_g_q' in log) is fixed
    return torch.cat([(p.detach() - b).flatten()
                      for p, b in zip(model.generator.parameters(), g0)])


def test_lambda2_was_a_no_op_with_the_q_loss_in_the_q_step_only():
    # Before issue 17 lambda2 scaled only the Q step's loss, and Adam divides a constant
    # factor out of its step: lambda2 = 1 and 10 move G alike. The 3% that differ (measured)
    # are Adam's eps (1e-8) acting on gradients of that size (conv biases before a batch
    # norm, whose exact gradient is 0). With lambda2 in the G step, G's update changes by
    # 83% (measured).
    for fixed, low, high in ((False, 0.0, 0.05), (True, 0.5, 2.0)):
        one, ten = _g_update(1.0, fixed), _g_update(10.0, fixed)
        change = float((ten - one).norm() / one.norm())
        assert low <= change <= high, (fixed, change)


def test_generator_step_moves_g_only_and_leaves_no_gradient_on_d_and_q():
    model = _model(n_critic=1)
    optim = _optim(model, aux_modules=['auxiliary'])
    d0, q0 = _snapshot(model.discriminator), _snapshot(model.auxiliary)
    g0 = _snapshot(model.generator)
    log = model._generator_step(4, optim['generator'])
    assert set(log) == {'loss_g', 'loss_g_q'}
    assert all(_changed(model.generator, g0))
    assert not any(_changed(model.discriminator, d0)) and not any(_changed(model.auxiliary, q0))
    assert all(p.grad is None for p in model.discriminator.parameters())
    assert all(p.grad is None for p in model.auxiliary.parameters())
    # the flags are restored: the next critic / Q step trains D / Q
    assert all(p.requires_grad for p in model.parameters())


def test_q_network_and_model_agree_on_the_default_trunk():
    # one default: Q has its own residual trunk unless told to share D's
    q_default = inspect.signature(QNetwork).parameters['shared_trunk'].default
    model_default = inspect.signature(CellInfoWGAN).parameters['q_shares_trunk'].default
    assert q_default is False and model_default is False
    assert QNetwork(channels=4, num_categories=3).trunk is not None
    assert _model().auxiliary.trunk is not None


def test_predict_is_argmax_q_and_features_are_maxpooled_blocks():
    model = _model(channels=4).eval()
    x = torch.randn(3, 3, 32, 32)
    out = model(x, mode='predict')
    # Q's own residual trunk: D's blocks play no part
    pooled = model.auxiliary.trunk(x)[0]
    logits = model.auxiliary.fc(pooled)
    assert [int(s.pred_label) for s in out] == logits.argmax(1).tolist()
    assert torch.allclose(out[0].pred_score, logits[0].softmax(0))
    # Q's features: the input of its linear head (its pooled trunk; D's when shared)
    assert torch.equal(model.q_features(x), pooled)
    shared = _model(channels=4, q_shares_trunk=True).eval()
    assert torch.equal(shared.q_features(x), shared.discriminator(x)[1])
    assert torch.allclose(shared.q_logits(x), shared.auxiliary.fc(shared.discriminator(x)[1]))
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
