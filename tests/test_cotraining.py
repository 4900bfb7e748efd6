"""Co-training maths (Qu et al. eqs. (3)-(9)) and the CoTrainingSegmentor's bookkeeping:
hand-computed values, and the segmentor's losses re-derived from its own nets."""
import math
import os.path as osp
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.logging import MessageHub
from mmengine.structures import PixelData
from mmseg.structures import SegDataSample

from projects.point_supervision import (CoTrainingSegmentor, binary_kl, ema_update,
                                        ema_weights, grad_norm_shares, loss_weights, masked_ce,
                                        pseudo_label, split_halves)

sys.path.insert(0, osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'tools',
                            'analysis_tools'))
import draw_point_supervision as dps  # noqa: E402

TINY = dict(
    backbone=dict(type='ResUNet', in_channels=1,
                  encoder=dict(type='ResNet', depth=18, base_channels=8, stem_channels=8,
                               out_indices=(0, 1, 2, 3)),
                  decoder_channels=(32, 16, 16, 8, 8), stem_channels=(8, 8)),
    colorization_head=dict(type='ColorizationHead', base_channels=4, num_stages=2))


def test_loss_weights_follow_the_cumulative_schedule():
    # alpha = eta (N/Nmax)^2, beta = eps (1 - N/Nmax)^2
    assert loss_weights(0.0) == (0.0, pytest.approx(0.1))
    assert loss_weights(0.5) == (pytest.approx(0.25), pytest.approx(0.025))
    assert loss_weights(1.0, eta=2.0, eps=0.3) == (pytest.approx(2.0), pytest.approx(0.0))
    with pytest.raises(ValueError, match='progress'):
        loss_weights(1.5)


def test_ema_update_by_hand():
    first = ema_update(None, np.array([0.2, 0.8]), 0.1)
    assert first.tolist() == pytest.approx([0.2, 0.8])
    # 0.1 * [1, 0] + 0.9 * [0.2, 0.8] = [0.28, 0.72]
    assert ema_update(first, np.array([1.0, 0.0]), 0.1).tolist() == pytest.approx([0.28, 0.72])
    with pytest.raises(ValueError, match='shape'):
        ema_update(first, np.zeros(3), 0.1)
    with pytest.raises(ValueError, match='EMA weight'):
        ema_update(first, first, 0.0)


def test_ema_weights_by_hand():
    # the old CPU setting, 3 refreshes with a = 0.1: 0.81 y_1 + 0.09 y_2 + 0.1 y_3
    assert ema_weights(3, 0.1).tolist() == pytest.approx([0.81, 0.09, 0.1])
    # the configs' a = 0.5: the newest counts 1/2, the one before 1/4, ...
    assert ema_weights(4, 0.5).tolist() == pytest.approx([0.125, 0.125, 0.25, 0.5])
    assert ema_weights(1, 0.3).tolist() == [1.0]
    # the weights are what repeated ema_update does to four predictions
    ys = [np.array([v], np.float32) for v in (0.2, 0.9, 0.4, 0.6)]
    p = None
    for y in ys:
        p = ema_update(p, y, 0.5)
    # 0.125 * 0.2 + 0.125 * 0.9 + 0.25 * 0.4 + 0.5 * 0.6 = 0.5375
    assert p.item() == pytest.approx(0.5375, rel=1e-6)
    assert float(ema_weights(4, 0.5) @ np.array([0.2, 0.9, 0.4, 0.6])) == pytest.approx(0.5375)
    with pytest.raises(ValueError, match='num_refreshes'):
        ema_weights(0, 0.5)


def test_grad_norm_shares_by_hand():
    # w1 = (1, 2), w2 = (3,):
    # L1 = 3 w1[0] + 4 w2[0]          -> grad (3, 0 | 4)        -> norm 5
    # L2 = 3 w1[1]^2 / 2 + 8 w2[0]    -> grad (0, 3 w1[1] = 6 | 8) -> norm 10
    # L3 = 0 * sum(w2) (a zero term)  -> norm 0;  L4 = a constant -> norm 0
    # shares: 5 / 15, 10 / 15, 0, 0
    w1 = torch.tensor([1.0, 2.0], requires_grad=True)
    w2 = torch.tensor([3.0], requires_grad=True)
    terms = dict(l1=3 * w1[0] + 4 * w2[0], l2=1.5 * w1[1]**2 + 8 * w2[0], l3=0 * w2.sum(),
                 l4=torch.tensor(2.0))
    norms, shares = grad_norm_shares(terms, [w1, w2])
    assert norms == pytest.approx(dict(l1=5.0, l2=10.0, l3=0.0, l4=0.0))
    assert shares == pytest.approx(dict(l1=1 / 3, l2=2 / 3, l3=0.0, l4=0.0))
    # the graph is kept: the sum still back-propagates, and nothing was accumulated before
    assert w1.grad is None
    (terms['l1'] + terms['l2']).backward()
    assert w1.grad.tolist() == [3.0, 6.0] and w2.grad.tolist() == [12.0]
    # only the given parameters count: on w2 alone the norms are 4 and 8
    w3 = torch.tensor([3.0], requires_grad=True)
    norms, shares = grad_norm_shares(dict(a=4 * w3[0] + w1.sum(), b=8 * w3[0]), [w3])
    assert norms == pytest.approx(dict(a=4.0, b=8.0)) and shares['a'] == pytest.approx(1 / 3)


def test_pseudo_label_takes_cluster_then_ema():
    cluster = torch.tensor([0, 1, 255, 255])
    ema = torch.tensor([0.9, 0.1, 0.3, float('nan')])
    target, valid = pseudo_label(cluster, ema)
    assert target.tolist() == pytest.approx([0.0, 1.0, 0.3, 0.0])
    assert valid.tolist() == [True, True, True, False]
    target, valid = pseudo_label(cluster, None)
    assert valid.tolist() == [True, True, False, False]


def test_binary_kl_by_hand():
    # logits (0, 0) -> y = 0.5 everywhere
    logits = torch.zeros(1, 2, 1, 3)
    target = torch.tensor([[[0.3, 1.0, 0.7]]])
    valid = torch.tensor([[[True, True, False]]])
    kl_03 = 0.3 * math.log(0.3 / 0.5) + 0.7 * math.log(0.7 / 0.5)
    expected = (kl_03 + math.log(2.0)) / 2
    assert binary_kl(target, logits, valid).item() == pytest.approx(expected, rel=1e-6)
    # p == y gives 0; no valid pixel gives 0, not NaN
    y = torch.tensor([[[[0.2]], [[0.8]]]]).log()
    assert binary_kl(torch.tensor([[[0.8]]]), y, torch.ones(1, 1, 1, dtype=bool)).item() == \
        pytest.approx(0.0, abs=1e-6)
    assert binary_kl(target, logits, torch.zeros_like(valid)).item() == 0.0


def test_masked_ce_by_hand():
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 0.0]]]])  # pixel 0: p1 = 1/(1+e^2)
    label = torch.tensor([[[1, 255]]])
    expected = -math.log(1 / (1 + math.e**2))
    assert masked_ce(logits, label).item() == pytest.approx(expected, rel=1e-6)
    assert masked_ce(logits, torch.full_like(label, 255)).item() == 0.0


def test_split_halves_is_disjoint_equal_and_seeded():
    paths = [f'img_{i}.png' for i in range(7)]
    halves = split_halves(paths, seed=3)
    assert sorted(halves) == sorted(paths)
    assert sorted(np.bincount(list(halves.values()))) == [3, 4]
    assert split_halves(list(reversed(paths)), seed=3) == halves
    assert split_halves(paths, seed=4) != halves or len(paths) < 3


def _sample(path: str, size: int, rng: np.random.Generator, rot: int = 0) -> SegDataSample:
    s = SegDataSample(metainfo=dict(img_path=path, img_shape=(size, size),
                                    src_shape=(size, size)))
    vor = rng.choice([0, 1, 255], size=(1, size, size), p=[0.2, 0.1, 0.7])
    clu = rng.choice([0, 1, 255], size=(1, size, size), p=[0.4, 0.3, 0.3])
    index = np.rot90(np.arange(size * size).reshape(size, size), rot).copy()
    s.gt_voronoi = PixelData(data=torch.from_numpy(vor))
    s.gt_cluster = PixelData(data=torch.from_numpy(clu))
    s.gt_src_index = PixelData(data=torch.from_numpy(index)[None])
    s.gt_color = PixelData(data=torch.from_numpy(rng.random((3, size, size))).float())
    return s


def test_losses_use_each_net_on_its_half_only():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = CoTrainingSegmentor(**TINY)
    model.train()
    samples = [_sample(f'im{i}.png', 64, rng, rot=i) for i in range(3)]
    model.halves = {'im0.png': 1, 'im1.png': 0, 'im2.png': 1}
    store = rng.random((64, 64)).astype(np.float16)
    model.pseudo_store = {'im2.png': store}
    x = torch.randn(3, 1, 64, 64)
    hub = MessageHub.get_current_instance()
    hub.update_info('iter', 50)
    hub.update_info('max_iters', 100)
    try:
        torch.manual_seed(1)
        losses = model.loss(x, samples)
    finally:
        hub.update_info('iter', None)
        hub.update_info('max_iters', None)
    alpha, beta = loss_weights(0.5)
    assert losses['alpha'].item() == pytest.approx(alpha)
    assert losses['beta'].item() == pytest.approx(beta)

    # net a sees sample 1 only; net b samples 0 and 2 (BN in train mode: same batches)
    torch.manual_seed(1)
    logits_a = model.nets[0](x[[1]])
    logits_b = model.nets[1](x[[0, 2]])
    vor_b = torch.cat([samples[0].gt_voronoi.data, samples[2].gt_voronoi.data])
    clu_b = torch.cat([samples[0].gt_cluster.data, samples[2].gt_cluster.data])
    assert losses['loss_vor_a'].item() == pytest.approx(
        masked_ce(logits_a, samples[1].gt_voronoi.data).item(), rel=1e-5)
    assert losses['loss_vor_b'].item() == pytest.approx(masked_ce(logits_b, vor_b).item(),
                                                        rel=1e-5)
    assert losses['loss_clu_b'].item() == pytest.approx(masked_ce(logits_b, clu_b).item(),
                                                        rel=1e-5)
    # co-training: sample 2's EMA map, rotated like its crop; sample 0 has no stored map
    ema = torch.full((2, 64, 64), float('nan'))
    ema[1] = torch.from_numpy(np.rot90(store.astype(np.float32), 2).copy())
    target, valid = pseudo_label(clu_b, ema)
    assert losses['loss_cot_b'].item() == pytest.approx(
        alpha * binary_kl(target, logits_b, valid).item(), rel=1e-4)
    # net a's only image has no pseudo label yet: zero co-training loss
    assert losses['loss_cot_a'].item() == 0.0
    color_a = model.nets[0].colorizer(torch.softmax(logits_a, 1)[:, 1:2])
    expected = ((color_a - samples[1].gt_color.data[None])**2).sum(1).mean()
    assert losses['loss_color_a'].item() == pytest.approx(beta * expected.item(), rel=1e-4)


def _segmenter_norm(model, k: int, term) -> float:
    grads = torch.autograd.grad(term, model.nets[k].segmenter_parameters(), retain_graph=True,
                                allow_unused=True)
    return math.sqrt(sum(float(g.double().pow(2).sum()) for g in grads if g is not None))


def _at_iteration(model, x, samples, it: int, max_iters: int = 100) -> dict:
    hub = MessageHub.get_current_instance()
    hub.update_info('iter', it)
    hub.update_info('max_iters', max_iters)
    try:
        return model.loss(x, samples)
    finally:
        hub.update_info('iter', None)
        hub.update_info('max_iters', None)


def _one_net_case(**kw):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = CoTrainingSegmentor(**TINY, use_cotraining=False, **kw)
    model.train()
    samples = [_sample(f'im{i}.png', 64, rng) for i in range(2)]
    model.halves = {'im0.png': 0, 'im1.png': 0}
    return model, samples, torch.randn(2, 1, 64, 64)


def test_segmentor_logs_gradient_shares_every_k_iterations():
    model, samples, x = _one_net_case(grad_share_interval=5)
    losses = _at_iteration(model, x, samples, 0)
    # re-derived from the returned terms: norms of the weighted terms on net a's ResUNet +
    # classifier (the colouriser's parameters do not count), shares of their sum
    norms = {t: _segmenter_norm(model, 0, losses[f'loss_{t}_a']) for t in ('vor', 'clu', 'color')}
    total = sum(norms.values())
    for t in ('vor', 'clu', 'color'):
        assert losses[f'gshare_{t}_a'].item() == pytest.approx(norms[t] / total, rel=1e-5)
    assert 'gshare_cot_a' not in losses and not any(k.endswith('_b') and 'gshare' in k
                                                    for k in losses)
    # iteration 3: no new measurement, the latest shares are logged again
    again = _at_iteration(model, x, samples, 3)
    assert again['gshare_color_a'].item() == losses['gshare_color_a'].item()
    # iteration 5: measured again (beta = 0.1 * 0.95^2 now)
    later = _at_iteration(model, x, samples, 5)
    norm_color = _segmenter_norm(model, 0, later['loss_color_a'])
    norm_seg = sum(_segmenter_norm(model, 0, later[f'loss_{t}_a']) for t in ('vor', 'clu'))
    assert later['gshare_color_a'].item() == pytest.approx(norm_color / (norm_color + norm_seg),
                                                           rel=1e-5)


def test_color_warmup_trains_the_colouriser_only():
    model, samples, x = _one_net_case(color_warmup_iters=10)
    net = model.nets[0]
    # iteration 9 (warm-up): L_color reaches the colouriser but not the segmenter
    # (max_iters 0: N / Nmax = 0, beta = eps = 0.1 at both iterations)
    warm = _at_iteration(model, x, samples, 9, max_iters=0)
    seg = torch.autograd.grad(warm['loss_color_a'], net.segmenter_parameters(),
                              allow_unused=True, retain_graph=True)
    assert all(g is None for g in seg)
    col_warm = torch.autograd.grad(warm['loss_color_a'], list(net.colorizer.parameters()))
    # iteration 10 (after): the same loss and colouriser gradient, and the segmenter's
    # gradient is that of 0.1 * L_color(C(S(x))) written out here
    after = _at_iteration(model, x, samples, 10, max_iters=0)
    assert after['loss_color_a'].item() == pytest.approx(warm['loss_color_a'].item(), rel=1e-6)
    col_after = torch.autograd.grad(after['loss_color_a'], list(net.colorizer.parameters()),
                                    retain_graph=True)
    for a, b in zip(col_warm, col_after):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-9)
    seg = torch.autograd.grad(after['loss_color_a'], net.segmenter_parameters())
    prob = torch.softmax(net(x), dim=1)[:, 1:2]
    target = torch.stack([s.gt_color.data for s in samples])
    by_hand = 0.1 * ((net.colorizer(prob) - target)**2).sum(1).mean()
    assert by_hand.item() == pytest.approx(after['loss_color_a'].item(), rel=1e-5)
    ref = torch.autograd.grad(by_hand, net.segmenter_parameters())
    for a, b in zip(seg, ref):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-9)
    assert sum(float(g.abs().sum()) for g in ref) > 1e-6  # the comparison is not 0 == 0


def test_color_share_normalises_the_colour_gradient():
    # color_share s = 0.25 at iteration 0 (measured): beta = s / (1 - s) * (norm_vor +
    # norm_clu) / ||grad L_color||, so the colour term holds exactly s of the norms
    model, samples, x = _one_net_case(grad_share_interval=50, color_share=0.25)
    losses = _at_iteration(model, x, samples, 0)
    assert losses['gshare_color_a'].item() == pytest.approx(0.25, rel=1e-6)
    beta = losses['beta_a'].item()
    assert losses['beta'].item() == pytest.approx(beta)
    raw = losses['loss_color_a'] / beta  # L_color
    others = sum(_segmenter_norm(model, 0, losses[f'loss_{t}_a']) for t in ('vor', 'clu'))
    assert beta == pytest.approx(1 / 3 * others / _segmenter_norm(model, 0, raw), rel=1e-5)
    assert model.color_scale[0].item() == pytest.approx(beta, rel=1e-6)
    assert math.isnan(model.color_scale[1].item())  # net b had no sample: no scale yet
    # iteration 30 of 100 is no measurement: the scale is kept and fades with the paper's
    # schedule, beta = scale * (1 - 0.3)^2; the logged share is still the last measured
    mid = _at_iteration(model, x, samples, 30)
    assert mid['beta_a'].item() == pytest.approx(beta * 0.49, rel=1e-6)
    assert mid['gshare_color_a'].item() == pytest.approx(0.25, rel=1e-6)
    # iteration 50 measures the share under the weight in force, scale * (1 - 0.5)^2: with
    # the same nets and data the norms are unchanged, so colour / others = 1/3 * 1/4 = 1/12
    # -> share (1/12) / (1 + 1/12) = 1/13; the new scale equals the old one
    half = _at_iteration(model, x, samples, 50)
    assert half['gshare_color_a'].item() == pytest.approx(1 / 13, rel=1e-5)
    assert half['beta_a'].item() == pytest.approx(beta * 0.25, rel=1e-5)
    with pytest.raises(ValueError, match='color_share needs grad_share_interval'):
        CoTrainingSegmentor(**TINY, color_share=0.2)
    # the ablation rows without a colouriser inherit the option: it does nothing there
    model_c = CoTrainingSegmentor(**dict(TINY, colorization_head=None), color_share=0.2,
                                  grad_share_interval=1)
    assert model_c.color_share is None and 'color_scale' not in model_c.state_dict()
    with pytest.raises(ValueError, match=r'color_share must lie in \(0, 1\)'):
        CoTrainingSegmentor(**TINY, color_share=1.0, grad_share_interval=1)


def test_full_supervision_and_switches():
    rng = np.random.default_rng(1)
    model = CoTrainingSegmentor(**dict(TINY, colorization_head=None), supervision='full')
    s = _sample('a.png', 64, rng)
    s.gt_sem_seg = PixelData(data=torch.from_numpy(rng.integers(0, 2, (1, 64, 64))))
    model.halves = {'a.png': 0}
    losses = model.loss(torch.randn(1, 1, 64, 64), [s])
    assert set(k for k in losses if k.startswith('loss')) == {'loss_full_a', 'loss_idle_b'}
    assert losses['loss_idle_b'].item() == 0.0
    vor_only = CoTrainingSegmentor(**dict(TINY, colorization_head=None), use_cluster=False,
                                   use_cotraining=False)
    vor_only.halves = {'a.png': 1}
    keys = set(k for k in vor_only.loss(torch.randn(1, 1, 64, 64), [s]) if k.startswith('loss'))
    assert keys == {'loss_vor_b', 'loss_idle_a'}
    with pytest.raises(KeyError, match='EMAPseudoLabelHook'):
        CoTrainingSegmentor(**TINY).loss(torch.randn(1, 1, 64, 64), [s])
    with pytest.raises(ValueError, match='use_voronoi'):
        CoTrainingSegmentor(**TINY, use_voronoi=False, use_cluster=False)


class _Pointwise(nn.Module):
    """A 1x1 'network': logits depend on the pixel only, so windows cannot change them."""

    def __init__(self, w: float) -> None:
        super().__init__()
        self.w = w

    def forward(self, x):
        return torch.cat([x * 0, x * self.w], dim=1)


def test_sliding_window_averages_windows_and_nets():
    model = CoTrainingSegmentor(**dict(TINY, colorization_head=None),
                                test_cfg=dict(crop_size=64, overlap=24, postprocess=False))
    model.nets[0] = _Pointwise(1.0)
    model.nets[1] = _Pointwise(-2.0)
    x = torch.randn(1, 1, 100, 130)
    probs = model.predict_probs(x)
    p_a = torch.sigmoid(x)
    p_b = torch.sigmoid(-2 * x)
    assert torch.allclose(probs[:, 1:2], (p_a + p_b) / 2, atol=1e-6)
    assert torch.allclose(model.predict_probs(x, nets=[1])[:, 1:2], p_b, atol=1e-6)
    model.test_cfg['mode'] = 'whole'
    assert torch.allclose(model.predict_probs(x)[:, 1:2], (p_a + p_b) / 2, atol=1e-6)


def test_predict_postprocesses_small_objects_and_holes():
    model = CoTrainingSegmentor(**dict(TINY, colorization_head=None),
                                test_cfg=dict(mode='whole', min_size=20))
    model.nets[0] = _Pointwise(1.0)
    model.nets[1] = _Pointwise(1.0)
    x = -torch.ones(1, 1, 40, 40)
    x[..., 2:12, 2:12] = 1.0   # 100 px nucleus with a one-pixel hole
    x[..., 6, 6] = -1.0
    x[..., 30:33, 30:33] = 1.0  # 9 px speck: removed
    sample = SegDataSample(metainfo=dict(img_shape=(40, 40)))
    pred = model.predict(x, [sample])[0].pred_sem_seg.data[0]
    expected = torch.zeros(40, 40, dtype=torch.long)
    expected[2:12, 2:12] = 1
    assert torch.equal(pred, expected)


def test_draw_colours_follow_the_papers_figures():
    gt = np.array([[True, True, False, False]])
    pred = np.array([[True, False, True, False]])
    out = dps.colour_errors(gt, pred)
    # TP yellow, FN green, FP red, TN black
    assert out[0].tolist() == [[230, 200, 0], [30, 180, 30], [220, 30, 30], [0, 0, 0]]
    lab = dps.colour_label(np.array([[0, 1, 255]], np.uint8))
    assert lab[0].tolist() == [[200, 40, 40], [40, 200, 40], [0, 0, 0]]
