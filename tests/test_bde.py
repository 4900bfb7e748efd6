"""BDE baseline: box density energy, its weights, and the RPN / RoI heads that use them."""
import copy
import math
import os.path as osp

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config, ConfigDict
from mmengine.registry import DefaultScope
from mmengine.structures import InstanceData

from projects.pu_detection.bde import (BDERoIHead, BDERPNHead, bde_weights,
                                       box_density_energy, calibrate_label_weights,
                                       check_bde_cfg, relative_energy_weights)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
STRIDES = [4, 8, 16, 32, 64]
SIZES = [16, 8, 4, 2, 1]  # feature map sides of a 64x64 image at STRIDES
INF = float('inf')


# ----------------------------------------------------------------------------------------
# independent numpy references
def _density_np(b: np.ndarray, r: np.ndarray, s: np.ndarray) -> np.ndarray:
    """D_i = sum_j s_j * area(b_i n r_j) / area(b_i), a plain double loop in float64."""
    out = np.zeros(len(b))
    for i in range(len(b)):
        area = max(b[i, 2] - b[i, 0], 0.0) * max(b[i, 3] - b[i, 1], 0.0)
        if area == 0:
            continue
        total = 0.0
        for j in range(len(r)):
            iw = max(0.0, min(b[i, 2], r[j, 2]) - max(b[i, 0], r[j, 0]))
            ih = max(0.0, min(b[i, 3], r[j, 3]) - max(b[i, 1], r[j, 1]))
            total += s[j] * iw * ih
        out[i] = total / area
    return out


def _density_vec_np(b: np.ndarray, r: np.ndarray, s: np.ndarray) -> np.ndarray:
    """The same sum, one sample at a time (for the head tests with ~700 regressed boxes)."""
    out = np.zeros(len(b))
    for i in range(len(b)):
        area = max(b[i, 2] - b[i, 0], 0.0) * max(b[i, 3] - b[i, 1], 0.0)
        iw = np.clip(np.minimum(b[i, 2], r[:, 2]) - np.maximum(b[i, 0], r[:, 0]), 0, None)
        ih = np.clip(np.minimum(b[i, 3], r[:, 3]) - np.maximum(b[i, 1], r[:, 1]), 0, None)
        out[i] = (s * iw * ih).sum() / area if area > 0 else 0.0
    return out


def _iou_np(a: np.ndarray, g: np.ndarray) -> np.ndarray:
    """(len(a), len(g)) IoU matrix."""
    iw = np.clip(np.minimum(a[:, None, 2], g[None, :, 2]) -
                 np.maximum(a[:, None, 0], g[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, None, 3], g[None, :, 3]) -
                 np.maximum(a[:, None, 1], g[None, :, 1]), 0, None)
    inter = iw * ih
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_g = (g[:, 2] - g[:, 0]) * (g[:, 3] - g[:, 1])
    return inter / (area_a[:, None] + area_g[None, :] - inter)


def _relative_weights_np(d: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """exp(-min(max(0, D / mean(D) - 1) / T, 80)); ones when mean(D) = 0."""
    d_bar = d.mean() if len(d) else 0.0
    if d_bar == 0:
        return np.ones(len(d))
    return np.exp(-np.minimum(np.maximum(d / d_bar - 1, 0) / temperature, 80.0))


def _weights_np(b, r, s, gt, temperature=1.0, min_score=0.05, gt_iou_thr=0.5):
    """BDE weights of the samples b (which are also the baseline set)."""
    keep = s >= min_score
    if gt is not None and len(gt):
        keep &= _iou_np(r, gt).max(axis=1) < gt_iou_thr
    return _relative_weights_np(_density_vec_np(b, r[keep], s[keep]), temperature)


def _decode_np(anchors: np.ndarray, deltas: np.ndarray, stds) -> np.ndarray:
    """mmdet's DeltaXYWHBBoxCoder.decode (means 0, wh_ratio_clip 16/1000), written out."""
    d = deltas * np.asarray(stds)
    max_ratio = abs(math.log(16 / 1000))
    dw, dh = np.clip(d[:, 2], -max_ratio, max_ratio), np.clip(d[:, 3], -max_ratio, max_ratio)
    pw, ph = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    cx = (anchors[:, 0] + anchors[:, 2]) / 2 + d[:, 0] * pw
    cy = (anchors[:, 1] + anchors[:, 3]) / 2 + d[:, 1] * ph
    w, h = pw * np.exp(dw), ph * np.exp(dh)
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)


def _random_boxes(n: int, g: torch.Generator, size: float = 64.0) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=g) * size * 0.8
    wh = torch.rand(n, 2, generator=g) * size * 0.4 + 1.0
    return torch.cat([xy, xy + wh], dim=1)


# ----------------------------------------------------------------------------------------
# box_density_energy / bde_weights
def test_density_and_weight_hand_values():
    # sample [0,0,10,10] (area 100); r1 = [5,0,15,10] score 0.5 covers 5x10 = 50 -> 0.25;
    # r2 = [0,0,5,5] score 0.8 covers 25 -> 0.2; D = 0.45. [20,20,30,30] touches neither
    # -> 0. [3,3,3,8] has no area -> defined as 0.
    b = torch.tensor([[0., 0., 10., 10.], [20., 20., 30., 30.], [3., 3., 3., 8.]])
    r = torch.tensor([[5., 0., 15., 10.], [0., 0., 5., 5.]])
    s = torch.tensor([0.5, 0.8])
    assert box_density_energy(b[:1], r[:1], s[:1]).tolist() == pytest.approx([0.25])
    assert box_density_energy(b, r, s).tolist() == pytest.approx([0.45, 0.0, 0.0])
    # D_bar = 0.15 -> E = (3 - 1, 0, 0): the crowded sample is down-weighted, the two
    # others (below the mean) keep full weight
    w = bde_weights(b, r, s)
    assert w.tolist() == pytest.approx([math.exp(-2.0), 1.0, 1.0])
    # temperature 2: exp(-2 / 2)
    assert bde_weights(b, r, s, temperature=2.0).tolist() == pytest.approx(
        [math.exp(-1.0), 1.0, 1.0])
    assert bde_weights(b, r, s, temperature=INF).tolist() == [1.0, 1.0, 1.0]
    # a sample alone is its own baseline: E = 0
    assert bde_weights(b[:1], r, s).tolist() == [1.0]


def test_relative_energy_hand_values():
    # three background samples with D = 0, 0.25, 0.5 -> D_bar = 0.25 -> E = 0, 0, 1.
    # b0 isolated, b1 = [5,0,15,10] half-covered by r = [0,0,10,10] (score 0.5) -> 0.25,
    # b2 = [0,0,10,10] fully covered -> 0.5
    b = torch.tensor([[20., 20., 30., 30.], [5., 0., 15., 10.], [0., 0., 10., 10.]])
    r, s = torch.tensor([[0., 0., 10., 10.]]), torch.tensor([0.5])
    assert box_density_energy(b, r, s).tolist() == pytest.approx([0.0, 0.25, 0.5])
    assert bde_weights(b, r, s).tolist() == pytest.approx([1.0, 1.0, math.exp(-1.0)])
    assert relative_energy_weights(torch.tensor([0.0, 0.25, 0.5])).tolist() == \
        pytest.approx([1.0, 1.0, math.exp(-1.0)])
    # twice the mean -> exp(-1 / T); four times -> exp(-3 / T)
    assert relative_energy_weights(torch.tensor([0.0, 0.0, 0.5, 0.5]), 0.5).tolist() == \
        pytest.approx([1.0, 1.0, math.exp(-2.0), math.exp(-2.0)])
    assert relative_energy_weights(torch.tensor([0.0, 0.0, 0.0, 1.0])).tolist() == \
        pytest.approx([1.0, 1.0, 1.0, math.exp(-3.0)])
    # relative: multiplying every score by the same factor does not change the weights
    # (the absolute density does change)
    r2 = torch.tensor([[0., 0., 10., 10.], [20., 20., 25., 30.]])
    s2 = torch.tensor([0.5, 0.9])
    w = bde_weights(b, r2, s2)
    assert torch.allclose(bde_weights(b, r2, s2 * 0.1, min_score=0.0), w, rtol=1e-6)
    assert not torch.allclose(box_density_energy(b, r2, s2 * 0.1),
                              box_density_energy(b, r2, s2))
    # D = (0.45, 0.25, 0.5): D_bar = 0.4 -> E = (0.125, 0, 0.25)
    assert w.tolist() == pytest.approx([math.exp(-0.125), 1.0, math.exp(-0.25)])


def test_uniform_or_zero_density_gives_ones():
    # the same configuration translated three times: D = 0.25 for every sample, E = 0
    b = torch.tensor([[0., 0., 10., 10.], [100., 0., 110., 10.], [200., 0., 210., 10.]])
    r = b + torch.tensor([5., 0., 5., 0.])
    d = box_density_energy(b, r, torch.full((3, ), 0.5))
    assert d.tolist() == pytest.approx([0.25] * 3)
    assert bde_weights(b, r, torch.full((3, ), 0.5)).tolist() == [1.0, 1.0, 1.0]
    # exactly 1 also for a float32 value that is not a power of two
    for n in (3, 7, 256):
        assert relative_energy_weights(torch.full((n, ), 0.1)).tolist() == [1.0] * n
        assert relative_energy_weights(torch.full((n, ), 131.7)).tolist() == [1.0] * n
    # D_bar = 0: no regressed box at all, no overlap, or only zero-area samples
    assert bde_weights(b, r[:0], torch.ones(0)).tolist() == [1.0, 1.0, 1.0]
    assert bde_weights(b, r + 50.0, torch.ones(3)).tolist() == [1.0, 1.0, 1.0]
    flat = torch.tensor([[0., 0., 0., 10.], [5., 5., 8., 5.]])
    assert bde_weights(flat, b, torch.ones(3)).tolist() == [1.0, 1.0]
    assert relative_energy_weights(torch.zeros(4)).tolist() == [1.0] * 4
    assert relative_energy_weights(torch.zeros(0)).numel() == 0


@pytest.mark.parametrize('chunk_elems', [1, 5, 53, 200, 2**22])
def test_density_matches_brute_force_for_any_chunking(chunk_elems):
    # chunk 1 and 5 (< N = 53) split the regressed boxes too; 53 and 200 split the samples
    g = torch.Generator().manual_seed(0)
    b = _random_boxes(37, g).double()
    b[3, 2] = b[3, 0]  # one zero-width sample -> 0
    r = _random_boxes(53, g).double()
    r[5, 2:] = r[5, :2] - 2.0  # one degenerate regressed box (x2 < x1): covers nothing
    s = torch.rand(53, generator=g, dtype=torch.float64)
    expected = _density_np(b.numpy(), r.numpy(), s.numpy())
    got = box_density_energy(b, r, s, chunk_elems=chunk_elems)
    assert got.dtype == torch.float64
    assert np.allclose(got.numpy(), expected, rtol=1e-12, atol=1e-12)
    assert got[3].item() == 0.0
    assert (expected > 0).sum() > 20  # the random boxes overlap: a non-trivial comparison


@pytest.mark.parametrize('chunk_elems', [7, 2**22])
def test_density_sweep_is_exact_on_spread_boxes_of_many_widths(chunk_elems):
    # boxes over 512 px, widths 1..300 px (log-uniform): the x sweep skips most pairs,
    # wide boxes must still be found from far away
    g = torch.Generator().manual_seed(5)

    def boxes(n):
        xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * 512
        wh = torch.exp(torch.rand(n, 2, generator=g, dtype=torch.float64) * math.log(300))
        return torch.cat([xy - wh / 2, xy + wh / 2], dim=1)

    b, r = boxes(60), boxes(400)
    s = torch.rand(400, generator=g, dtype=torch.float64)
    expected = _density_np(b.numpy(), r.numpy(), s.numpy())
    got = box_density_energy(b, r, s, chunk_elems=chunk_elems)
    assert np.allclose(got.numpy(), expected, rtol=1e-12, atol=1e-12)
    assert (expected > 0).all() and (expected < expected.max() / 10).any()


def test_density_has_no_gradient_and_float32_matches():
    g = torch.Generator().manual_seed(1)
    b = _random_boxes(20, g)
    r = _random_boxes(30, g).requires_grad_(True)
    s = torch.rand(30, generator=g).requires_grad_(True)
    d = box_density_energy(b, r, s, chunk_elems=7)
    assert not d.requires_grad
    expected = _density_np(b.double().numpy(), r.detach().double().numpy(),
                           s.detach().double().numpy())
    assert np.allclose(d.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_min_score_filter():
    # b0 = [0,0,10,10] half-covered by r1 = [5,0,15,10] (score 0.5) -> 0.25;
    # b1 = [20,0,30,10] fully covered by r2 = itself with score 0.04 < 0.05: dropped.
    # D = (0.25, 0) -> D_bar = 0.125 -> E = (1, 0)
    b = torch.tensor([[0., 0., 10., 10.], [20., 0., 30., 10.]])
    r = torch.tensor([[5., 0., 15., 10.], [20., 0., 30., 10.]])
    s = torch.tensor([0.5, 0.04])
    assert bde_weights(b, r, s).tolist() == pytest.approx([math.exp(-1.0), 1.0])
    # r2 kept with min_score 0.01: D = (0.25, 0.04), D_bar = 0.145
    kept = [math.exp(-(0.25 / 0.145 - 1.0)), 1.0]
    assert bde_weights(b, r, s, min_score=0.01).tolist() == pytest.approx(kept)
    # a score exactly at min_score is kept (only s < min_score is dropped)
    assert bde_weights(b, r, s, min_score=0.04).tolist() == pytest.approx(kept)


def test_gt_iou_filter():
    # GT [5,0,15,10]: r1 equals it (IoU 1) -> dropped; r2 = [0,0,10,10] (score 0.8) has
    # IoU 50 / 150 = 1/3 < 0.5 -> kept; r3 = [20,0,30,10] (score 0.4) misses the GT.
    # D = (0.8, 0.4, 0) for b0 = [0,0,10,10], b1 = [20,0,30,10], b2 isolated
    # -> D_bar = 0.4 -> E = (1, 0, 0)
    b = torch.tensor([[0., 0., 10., 10.], [20., 0., 30., 10.], [50., 50., 60., 60.]])
    r = torch.tensor([[5., 0., 15., 10.], [0., 0., 10., 10.], [20., 0., 30., 10.]])
    s = torch.tensor([0.5, 0.8, 0.4])
    gt = torch.tensor([[5., 0., 15., 10.]])
    assert bde_weights(b, r, s, gt_boxes=gt).tolist() == pytest.approx(
        [math.exp(-1.0), 1.0, 1.0])
    # threshold 1/3 drops r2 too (IoU >= thr is dropped): D = (0, 0.4, 0), E = (0, 2, 0)
    assert bde_weights(b, r, s, gt_boxes=gt, gt_iou_thr=1 / 3 - 1e-6).tolist() == \
        pytest.approx([1.0, math.exp(-2.0), 1.0])
    # no GT (None or empty): nothing dropped, D = (0.25 + 0.8, 0.4, 0), D_bar = 1.45 / 3
    for none in (None, torch.zeros(0, 4)):
        assert bde_weights(b, r, s, gt_boxes=none).tolist() == pytest.approx(
            [math.exp(-(3.15 / 1.45 - 1.0)), 1.0, 1.0])


def test_weights_on_random_boxes_match_numpy_with_filters():
    g = torch.Generator().manual_seed(2)
    b, r = _random_boxes(25, g).double(), _random_boxes(60, g).double()
    s = torch.rand(60, generator=g, dtype=torch.float64) * 0.3
    gt = torch.cat([r[:4] + 0.5, _random_boxes(2, g).double()])  # 4 regressed boxes hit GT
    expected = _weights_np(b.numpy(), r.numpy(), s.numpy(), gt.numpy(), temperature=0.7,
                           min_score=0.1, gt_iou_thr=0.6)
    got = bde_weights(b, r, s, gt, temperature=0.7, min_score=0.1, gt_iou_thr=0.6,
                      chunk_elems=3)
    assert np.allclose(got.numpy(), expected, rtol=1e-10)
    without_filters = _weights_np(b.numpy(), r.numpy(), s.numpy(), None, 0.7, 0.0)
    assert not np.allclose(expected, without_filters)  # the filters mattered


def test_weight_stays_positive_for_huge_energy():
    # 200 samples, only the first covered (10 full covers, score 1): D = (10, 0, ..., 0),
    # D_bar = 10 / 200 -> E_0 = 199; exp(-199) underflows in float32, the cap keeps
    # w = exp(-80) > 0 (mmdet counts weighted samples by label_weight > 0)
    b = torch.tensor([[20. * i, 0., 20. * i + 10., 10.] for i in range(200)])
    w = bde_weights(b, b[:1].repeat(10, 1), torch.ones(10))
    assert w[0].item() == pytest.approx(math.exp(-80.0), rel=1e-5) and w[0].item() > 0
    assert w[1:].tolist() == [1.0] * 199
    # a tiny temperature hits the cap too, still > 0 and never NaN
    w = relative_energy_weights(torch.tensor([0.0, 1.0]), temperature=1e-30)
    assert w.tolist() == pytest.approx([1.0, math.exp(-80.0)], rel=1e-5) and w[1] > 0


@pytest.mark.parametrize('kwargs, match', [
    (dict(temperature=0.0), 'temperature'), (dict(temperature=-1.0), 'temperature'),
    (dict(temperature=float('nan')), 'temperature'), (dict(min_score=1.5), 'min_score'),
    (dict(gt_iou_thr=0.0), 'gt_iou_thr'), (dict(chunk_elems=0), 'chunk_elems')])
def test_bad_parameters_raise(kwargs, match):
    b = torch.tensor([[0., 0., 10., 10.]])
    with pytest.raises(ValueError, match=match):
        bde_weights(b, b, torch.ones(1), **kwargs)


def test_bad_inputs_raise():
    b = torch.tensor([[0., 0., 10., 10.]])
    with pytest.raises(ValueError, match='sample_boxes'):
        box_density_energy(torch.zeros(3), b, torch.ones(1))
    with pytest.raises(ValueError, match='reg_scores'):
        box_density_energy(b, b, torch.ones(2))
    with pytest.raises(ValueError, match='reg_scores must lie in'):
        box_density_energy(b, b, torch.tensor([1.5]))
    with pytest.raises(ValueError, match='non-finite'):
        box_density_energy(b, torch.tensor([[0., 0., float('nan'), 1.]]), torch.ones(1))
    with pytest.raises(ValueError, match='unknown key'):
        check_bde_cfg(dict(temprature=1.0), 'BDERPNHead.bde')
    for bad in (torch.tensor([0.5, -0.1]), torch.tensor([float('nan')]),
                torch.tensor([float('inf')])):
        with pytest.raises(ValueError, match='density must be finite and >= 0'):
            relative_energy_weights(bad)
    with pytest.raises(ValueError, match='1-D'):
        relative_energy_weights(torch.zeros(2, 2))
    with pytest.raises(ValueError, match='temperature'):
        relative_energy_weights(torch.ones(2), temperature=0.0)


def test_calibrate_label_weights_touches_only_weighted_background():
    # labels: 0 = foreground, 1 = background (RPN convention). Samples 0-3 are
    # [0,0,10,10] (D = 0.25 from one regressed box [5,0,15,10] with score 0.5), sample 4
    # is isolated (D = 0). The calibrated set = {1, 3, 4} (background, weight > 0):
    # D_bar = 0.5 / 3 -> E = 0.5 for samples 1 and 3, 0 for sample 4. (Counting the
    # positive 0 or the zero-weight 2 in the baseline would give other values.)
    labels = torch.tensor([0, 1, 1, 1, 1])
    weights = torch.tensor([1.0, 1.0, 0.0, 2.0, 1.0])
    boxes = torch.tensor([[0., 0., 10., 10.]] * 4 + [[50., 50., 60., 60.]])
    out = calibrate_label_weights(labels, weights, 1, boxes, torch.tensor([[5., 0., 15., 10.]]),
                                  torch.tensor([0.5]))
    w = math.exp(-0.5)
    assert out.tolist() == pytest.approx([1.0, w, 0.0, 2.0 * w, 1.0])
    assert weights.tolist() == [1.0, 1.0, 0.0, 2.0, 1.0]  # input not modified


# ----------------------------------------------------------------------------------------
# BDERPNHead
def _rpn_head(type_: str, **extra):
    from mmdet.registry import MODELS
    train_cfg = dict(
        assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.7, neg_iou_thr=0.3,
                      min_pos_iou=0.3, match_low_quality=True, ignore_iof_thr=-1),
        sampler=dict(type='RandomSampler', num=256, pos_fraction=0.5, neg_pos_ub=-1,
                     add_gt_as_proposals=False),
        allowed_border=-1, pos_weight=-1, debug=False)
    with DefaultScope.overwrite_default_scope('mmdet'):
        return MODELS.build(dict(
            type=type_, in_channels=4, feat_channels=4,
            anchor_generator=dict(type='AnchorGenerator', scales=[4], ratios=[1.0],
                                  strides=STRIDES),
            bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0] * 4,
                            target_stds=[1.0] * 4),
            loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0),
            loss_bbox=dict(type='L1Loss', loss_weight=1.0), train_cfg=train_cfg, **extra))


def _rpn_inputs():
    """Two 64x64 images (16 px cells in image 0, none in image 1), random head outputs."""
    metas = [dict(img_shape=(64, 64), pad_shape=(64, 64), scale_factor=(1.0, 1.0))] * 2
    gts = [InstanceData(bboxes=torch.tensor([[8., 8., 24., 24.], [36., 30., 52., 46.]]),
                        labels=torch.tensor([0, 0])),
           InstanceData(bboxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long))]
    g = torch.Generator().manual_seed(3)
    scores = [(torch.randn(2, 1, s, s, generator=g) * 2 - 2).requires_grad_(True)
              for s in SIZES]
    preds = [(torch.randn(2, 4, s, s, generator=g) * 0.3).requires_grad_(True) for s in SIZES]
    return scores, preds, gts, metas


@pytest.mark.parametrize('bde', [dict(temperature=INF), dict(min_score=1.0)],
                         ids=['temperature_inf', 'no_regressed_box'])
def test_bde_rpn_head_equals_stock_when_bde_is_off(bde):
    ours, stock = _rpn_head('BDERPNHead', bde=bde), _rpn_head('RPNHead')
    assert isinstance(ours, BDERPNHead)
    scores, preds, gts, metas = _rpn_inputs()
    torch.manual_seed(7)  # RandomSampler draws from the global generator
    a = ours.loss_by_feat(scores, preds, gts, metas)
    torch.manual_seed(7)
    b = stock.loss_by_feat(scores, preds, gts, metas)
    assert len(a['loss_rpn_cls']) == len(b['loss_rpn_cls']) == 5
    for key in ('loss_rpn_cls', 'loss_rpn_bbox'):
        for x, y in zip(a[key], b[key]):
            assert torch.equal(x, y), key
    assert sum(b['loss_rpn_cls']).item() > 0.1
    assert a['rpn_bde_w'].item() == 1.0


def test_bde_rpn_head_matches_independent_computation():
    temperature = 0.25
    ours = _rpn_head('BDERPNHead', bde=dict(temperature=temperature))
    stock = _rpn_head('RPNHead')
    scores, preds, gts, metas = _rpn_inputs()
    torch.manual_seed(7)
    a = ours.loss_by_feat(scores, preds, gts, metas)
    torch.manual_seed(7)
    b = stock.loss_by_feat(scores, preds, gts, metas)
    # the same targets, drawn with the same seed
    torch.manual_seed(7)
    anchors, valid = stock.get_anchors([torch.Size([s, s]) for s in SIZES], metas,
                                      device='cpu')
    labels, weights, _, _, avg_factor = stock.get_targets(anchors, valid, gts, metas)

    total, all_w = 0.0, []
    for i in range(2):
        anc = torch.cat(anchors[i]).double().numpy()
        logit = torch.cat([s[i].detach().permute(1, 2, 0).reshape(-1) for s in scores])
        delta = torch.cat([p[i].detach().permute(1, 2, 0).reshape(-1, 4) for p in preds])
        logit, delta = logit.double().numpy(), delta.double().numpy()
        lab = torch.cat([x[i] for x in labels]).numpy()
        lw = torch.cat([x[i] for x in weights]).double().numpy()
        reg = _decode_np(anc, delta, [1.0] * 4)
        sc = 1 / (1 + np.exp(-logit))
        gt = gts[i].bboxes.double().numpy()
        w = np.ones(len(lab))
        calib = (lab == 1) & (lw > 0)
        w[calib] = _weights_np(anc[calib], reg, sc, gt, temperature=temperature)
        all_w.append(w[calib])
        # BCE with logits: label 0 = foreground (target 1), 1 = background (target 0)
        target = (lab == 0).astype(float)
        bce = np.logaddexp(0, logit) - target * logit
        total += (lw * w * bce).sum()
    expected = total / avg_factor
    got = sum(a['loss_rpn_cls']).item()
    assert got == pytest.approx(expected, rel=1e-5)
    all_w = np.concatenate(all_w)
    assert a['rpn_bde_w'].item() == pytest.approx(all_w.mean(), rel=1e-5)
    # the weights are informative (spread, neither all 1 nor all 0) and lower the loss
    assert all_w.min() < 0.2 and all_w.max() > 0.7
    assert got < sum(b['loss_rpn_cls']).item() - 1e-3
    for x, y in zip(a['loss_rpn_bbox'], b['loss_rpn_bbox']):
        assert torch.equal(x, y)
    # gradients flow to the scores; the weights are constants (no gradient through BDE)
    sum(a['loss_rpn_cls']).backward()
    assert all(bool(s.grad.abs().sum() > 0) for s in scores)
    assert all(p.grad is None for p in preds)


# ----------------------------------------------------------------------------------------
# BDERoIHead
def _roi_head(type_: str, **extra):
    from mmdet.registry import MODELS
    cfg = dict(
        type=type_,
        bbox_roi_extractor=dict(
            type='SingleRoIExtractor',
            roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=0),
            out_channels=8, featmap_strides=[4, 8, 16, 32]),
        bbox_head=dict(
            type='Shared2FCBBoxHead', in_channels=8, fc_out_channels=16, roi_feat_size=7,
            num_classes=2,
            bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0] * 4,
                            target_stds=[0.1, 0.1, 0.2, 0.2]),
            reg_class_agnostic=False,
            loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
            loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
        train_cfg=ConfigDict(
            assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.5,
                          min_pos_iou=0.5, match_low_quality=False, ignore_iof_thr=-1),
            sampler=dict(type='RandomSampler', num=32, pos_fraction=0.25, neg_pos_ub=-1,
                         add_gt_as_proposals=True),
            pos_weight=-1, debug=False),
        **extra)
    with DefaultScope.overwrite_default_scope('mmdet'):
        return MODELS.build(cfg)


def _roi_inputs():
    """Features of two 64x64 images, 40 random proposals each, GT in image 0 only."""
    from mmdet.structures import DetDataSample
    g = torch.Generator().manual_seed(4)
    x = tuple(torch.randn(2, 8, 64 // s, 64 // s, generator=g) for s in (4, 8, 16, 32))
    samples, proposals = [], []
    for i, boxes in enumerate(([[8., 8., 24., 24.], [36., 30., 52., 46.]], [])):
        s = DetDataSample(metainfo=dict(img_shape=(64, 64), ori_shape=(64, 64),
                                        scale_factor=(1.0, 1.0)))
        s.gt_instances = InstanceData(
            bboxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            labels=torch.tensor([0, 1][:len(boxes)], dtype=torch.long))
        samples.append(s)
        props = _random_boxes(40, g)
        if boxes:  # a few proposals near the GT, so that there are positives
            props[:4] = torch.tensor(boxes).repeat(2, 1) + torch.randn(4, 4, generator=g)
        proposals.append(InstanceData(bboxes=props, scores=torch.rand(40, generator=g)))
    return x, proposals, samples


def _roi_loss(head, x, proposals, samples, seed=11):
    torch.manual_seed(seed)  # RandomSampler draws from the global generator
    # StandardRoIHead.loss renames (pops) the proposals' bboxes: give each call a copy
    return head.loss(x, copy.deepcopy(proposals), samples)


def test_bde_roi_head_equals_stock_with_infinite_temperature():
    stock = _roi_head('StandardRoIHead')
    ours = _roi_head('BDERoIHead', bde=dict(temperature=INF))
    ours.load_state_dict(stock.state_dict())
    x, proposals, samples = _roi_inputs()
    a, b = _roi_loss(ours, x, proposals, samples), _roi_loss(stock, x, proposals, samples)
    for key in ('loss_cls', 'loss_bbox', 'acc'):
        assert torch.equal(a[key], b[key]), key
    assert b['loss_cls'].item() > 0.1 and b['loss_bbox'].item() > 0
    assert a['bde_w'].item() == 1.0


def test_bde_roi_head_matches_independent_computation():
    stock = _roi_head('StandardRoIHead')
    ours = _roi_head('BDERoIHead', bde=dict(temperature=0.25))
    assert isinstance(ours, BDERoIHead)
    ours.load_state_dict(stock.state_dict())
    x, proposals, samples = _roi_inputs()
    captured = {}
    original = ours.bbox_loss

    def spy(feats, sampling_results):
        out = original(feats, sampling_results)
        captured.update(out, sampling_results=sampling_results)
        return out

    ours.bbox_loss = spy
    a = _roi_loss(ours, x, proposals, samples)
    b = _roi_loss(stock, x, proposals, samples)
    assert ours._bde_gt is None  # the remembered GT does not outlive the call

    cls = captured['cls_score'].detach().double().numpy()
    pred = captured['bbox_pred'].detach().double().numpy()
    rois = torch.cat([torch.cat([torch.full((len(r.priors), 1), float(i)), r.priors], 1)
                      for i, r in enumerate(captured['sampling_results'])]).double().numpy()
    labels, new_lw = captured['bbox_targets'][0].numpy(), captured['bbox_targets'][1]
    assert not new_lw.requires_grad
    new_lw = new_lw.double().numpy()
    prob = np.exp(cls - cls.max(1, keepdims=True))
    prob /= prob.sum(1, keepdims=True)
    fg = 1 - prob[:, 2]
    best = prob[:, :2].argmax(1)
    deltas = pred.reshape(-1, 2, 4)[np.arange(len(best)), best]
    reg = _decode_np(rois[:, 1:], deltas, [0.1, 0.1, 0.2, 0.2])
    expected_lw = np.ones(len(labels))  # stock label weights: 1 for every sampled RoI
    calibrated = []
    for i in range(2):
        m = rois[:, 0] == i
        bg = m & (labels == 2)
        gt = samples[i].gt_instances.bboxes.double().numpy()
        expected_lw[bg] = _weights_np(rois[bg, 1:], reg[m], fg[m], gt, temperature=0.25)
        calibrated.append(expected_lw[bg])
    assert np.allclose(new_lw, expected_lw, rtol=1e-5)
    calibrated = np.concatenate(calibrated)
    assert a['bde_w'].item() == pytest.approx(calibrated.mean(), rel=1e-5)
    assert calibrated.min() < 0.3 and calibrated.max() > 0.6  # informative, spread weights

    # loss_cls = sum(w * CE) / (number of weighted RoIs), avg_factor unchanged
    ce = -np.log(prob[np.arange(len(labels)), labels])
    expected = (expected_lw * ce).sum() / len(labels)
    assert a['loss_cls'].item() == pytest.approx(expected, rel=1e-5)
    # the stock head (same sampled RoIs, weight 1 everywhere): a larger loss
    assert b['loss_cls'].item() == pytest.approx(ce.mean(), rel=1e-5)
    assert a['loss_cls'].item() < b['loss_cls'].item() - 1e-3
    assert torch.equal(a['loss_bbox'], b['loss_bbox'])


def test_bde_roi_head_bbox_loss_needs_loss():
    head = _roi_head('BDERoIHead', bde=dict())
    with pytest.raises(RuntimeError, match='call loss'):
        head.bbox_loss(None, [])


def test_bad_bde_config_raises_when_building():
    with pytest.raises(ValueError, match='BDERoIHead.bde: temperature'):
        _roi_head('BDERoIHead', bde=dict(temperature=0))
    with pytest.raises(ValueError, match='BDERPNHead.bde: min_score'):
        _rpn_head('BDERPNHead', bde=dict(min_score=-0.1))


# ----------------------------------------------------------------------------------------
def test_tiny_bde_faster_rcnn_trains_one_step():
    """Smoke test: Faster R-CNN with BDERPNHead + BDERoIHead: finite losses, backward."""
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'baselines',
                                   'faster-rcnn_r18-c32_fpn_2k_synthetic.py'))
    bde = dict(temperature=1.0, min_score=0.05, gt_iou_thr=0.5)
    cfg.merge_from_dict(dict(
        custom_imports=dict(imports=['projects.pu_detection'], allow_failed_imports=False),
        model=dict(
            backbone=dict(base_channels=8),
            neck=dict(in_channels=[8, 16, 32, 64], out_channels=16),
            rpn_head=dict(type='BDERPNHead', bde=bde, in_channels=16, feat_channels=16),
            roi_head=dict(type='BDERoIHead', bde=bde,
                          bbox_roi_extractor=dict(out_channels=16),
                          bbox_head=dict(in_channels=16, fc_out_channels=32)),
            train_cfg=dict(rpn=dict(sampler=dict(num=64)), rcnn=dict(sampler=dict(num=64))))))
    samples = []
    for boxes, labels in (([[10., 10., 26., 24.], [30., 34., 44., 50.]], [0, 3]), ([], [])):
        s = DetDataSample(metainfo=dict(img_shape=(64, 64), ori_shape=(64, 64),
                                        scale_factor=(1.0, 1.0)))
        s.gt_instances = InstanceData(
            bboxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            labels=torch.tensor(labels, dtype=torch.long))
        samples.append(s)
    g = torch.Generator().manual_seed(0)
    inputs = [torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8, generator=g)
              for _ in range(2)]
    with DefaultScope.overwrite_default_scope('mmdet'):
        torch.manual_seed(0)
        model = MODELS.build(cfg.model)
        model.init_weights()
        model.train()
        assert isinstance(model.rpn_head, BDERPNHead)
        assert isinstance(model.roi_head, BDERoIHead)
        data = model.data_preprocessor(dict(inputs=inputs, data_samples=samples), True)
        losses = model(**data, mode='loss')
    total = 0.0
    for name, value in losses.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        assert all(bool(torch.isfinite(v).all()) for v in values), name
        if 'loss' in name:
            total = total + sum(v.sum() for v in values)
    for key in ('rpn_bde_w', 'bde_w'):
        assert 0.0 < losses[key].item() <= 1.0
    assert float(total.detach()) > 0
    total.backward()
    assert model.rpn_head.rpn_cls.weight.grad is not None
    assert model.roi_head.bbox_head.fc_cls.weight.grad is not None


def test_bde_config_keeps_negatives_at_initialisation():
    """Right after init_weights() every anchor scores ~0.5 and the regressed boxes are the
    dense anchors (absolute density ~100): the relative energy must not switch the
    negatives off (the absolute exp(-D) gave rpn_bde_w ~ 1e-22 here)."""
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'pu_detection',
                                   'faster-rcnn_r18-c32_fpn_bde_500i_synthetic-sparse30.py'))
    samples = []
    for boxes, labels in (([[40., 40., 60., 58.], [120., 100., 140., 124.],
                            [200., 30., 216., 46.]], [0, 1, 3]),
                          ([[10., 150., 30., 170.]], [2])):
        s = DetDataSample(metainfo=dict(img_shape=(256, 256), ori_shape=(256, 256),
                                        scale_factor=(1.0, 1.0)))
        s.gt_instances = InstanceData(bboxes=torch.tensor(boxes),
                                      labels=torch.tensor(labels, dtype=torch.long))
        samples.append(s)
    g = torch.Generator().manual_seed(0)
    inputs = [torch.randint(0, 256, (3, 256, 256), dtype=torch.uint8, generator=g)
              for _ in range(2)]
    with DefaultScope.overwrite_default_scope('mmdet'):
        torch.manual_seed(0)
        model = MODELS.build(cfg.model)
        model.init_weights()
        model.train()
        assert isinstance(model.rpn_head, BDERPNHead)
        assert isinstance(model.roi_head, BDERoIHead)
        assert model.rpn_head.bde['temperature'] == 1.0
        data = model.data_preprocessor(dict(inputs=inputs, data_samples=samples), True)
        with torch.no_grad():
            losses = model(**data, mode='loss')
    for key in ('rpn_bde_w', 'bde_w'):
        assert 0.5 < losses[key].item() <= 1.0, (key, losses[key].item())
