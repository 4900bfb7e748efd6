"""PULoss / pu_risk against values worked out by hand from Zhao et al. 2021, eq. (12)."""
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from projects.pu_detection import PULoss, nnpu_risk, pu_risk

T = torch.tensor


def _risk(h0, h1, pos, prior, **kw):
    return pu_risk(T(h0, dtype=torch.float64), T(h1, dtype=torch.float64), T(pos), prior,
                   **kw)


# P = {h0 = 1, 3 ; h1 = 0.2, 0.6}, U = {h0 = 2, 4}, pi = 0.25
MIXED = dict(h0=[1., 3., 2., 4.], h1=[0.2, 0.6, 9., 9.], pos=[True, True, False, False])


def test_pu_risk_clamps_negative_part():
    # P h0 = 4, 4 ; h1 = 0.2, 0.4 ; U h0 = 0.1 ; pi = 0.9, detection mode:
    # E_x[H(c,0)] = (4 + 4 + 0.1) / 3 = 2.7 ; pi * mean_P H(c,0) = 0.9 * 4 = 3.6
    # -> max(0, -0.9) = 0 ; plus pi * mean_P H(c,1) = 0.9 * 0.3 = 0.27
    risk = _risk([4., 4., 0.1], [0.2, 0.4, 5.], [True, True, False], 0.9)
    assert risk.item() == pytest.approx(0.27)
    # without the max: -0.9 + 0.27 = -0.63 (the unbiased risk of eq. 9 goes negative)
    risk = _risk([4., 4., 0.1], [0.2, 0.4, 5.], [True, True, False], 0.9, nonnegative=False)
    assert risk.item() == pytest.approx(-0.63)


def test_pu_risk_not_clamped_style_example():
    # STYLE.md: P h0 = 2, 2 (h1 = 0.1), U h0 = 0.5, pi = 0.5:
    # (2 + 2 + 0.5) / 3 = 1.5 ; - 0.5 * 2 = 0.5 ; + 0.5 * 0.1 = 0.05 -> 0.55
    risk = _risk([2., 2., 0.5], [0.1, 0.1, 7.], [True, True, False], 0.5)
    assert risk.item() == pytest.approx(0.55)


def test_detection_vs_classic_mode():
    # detection: E_x = (1 + 3 + 2 + 4) / 4 = 2.5 ; - 0.25 * (1 + 3) / 2 = 0.5 -> 2.0
    #            + 0.25 * (0.2 + 0.6) / 2 = 0.1 -> 2.1
    det = _risk(MIXED['h0'], MIXED['h1'], MIXED['pos'], 0.25, mode='detection')
    assert det.item() == pytest.approx(2.1)
    # classic: E_x = mean_U = (2 + 4) / 2 = 3 ; - 0.5 -> 2.5 ; + 0.1 -> 2.6
    cls = _risk(MIXED['h0'], MIXED['h1'], MIXED['pos'], 0.25, mode='classic')
    assert cls.item() == pytest.approx(2.6)


def test_no_positive_is_finite_and_plain_negative_ce():
    # P empty -> positive terms 0 ; risk = mean_U H(c,0) = (1 + 2 + 4) / 3 = 7 / 3
    for mode in ('detection', 'classic'):
        h0 = T([1., 2., 4.], requires_grad=True)
        risk = pu_risk(h0, T([0., 0., 0.]), T([False] * 3), 0.3, mode=mode)
        assert risk.item() == pytest.approx(7 / 3)
        risk.backward()
        # d/dh0_i of the mean of 3 values = 1/3 each, finite
        assert torch.allclose(h0.grad, torch.full((3, ), 1 / 3))


def test_classic_mode_without_unlabeled():
    # U empty -> mean_U = 0 ; max(0, 0 - 0.25 * 2) = 0 ; + 0.25 * 0.4 = 0.1
    assert _risk([1., 3.], [0.2, 0.6], [True, True], 0.25,
                 mode='classic').item() == pytest.approx(0.1)


def test_zero_weight_samples_are_excluded():
    # extra positive (h0=100, h1=50) and unlabeled (h0=7) with weight 0 change nothing:
    # the value stays the 2.1 of test_detection_vs_classic_mode (= dropping them)
    h0 = MIXED['h0'] + [100., 7.]
    h1 = MIXED['h1'] + [50., 0.]
    pos = MIXED['pos'] + [True, False]
    w = T([1., 1., 1., 1., 0., 0.], dtype=torch.float64)
    assert _risk(h0, h1, pos, 0.25, weight=w).item() == pytest.approx(2.1)
    assert _risk(h0, h1, pos, 0.25, mode='classic', weight=w).item() == pytest.approx(2.6)
    # all weights 0 -> 0 with a graph
    h = T([1., 2.], requires_grad=True)
    risk = pu_risk(h, h * 2, T([True, False]), 0.25, weight=T([0., 0.]))
    assert risk.item() == 0.0 and risk.requires_grad


def test_weight_two_equals_duplicating_the_sample():
    # weighted means normalise by summed weights: weight 2 on the last unlabeled sample
    # == that sample twice. Duplicated: E_x = (1 + 3 + 2 + 4 + 4) / 5 = 2.8 ; - 0.5 ; + 0.1
    # -> 2.4
    w = T([1., 1., 1., 2.], dtype=torch.float64)
    weighted = _risk(MIXED['h0'], MIXED['h1'], MIXED['pos'], 0.25, weight=w)
    dup = _risk(MIXED['h0'] + [4.], MIXED['h1'] + [9.], MIXED['pos'] + [False], 0.25)
    assert weighted.item() == pytest.approx(2.4)
    assert dup.item() == pytest.approx(2.4)


def _binary_logits_softmax():
    # softmax scores (N, C+1) with C=1: column 0 = mitosis, column 1 = background.
    # logits = log(probabilities): softmax returns the probabilities exactly
    probs = T([[0.8, 0.2], [0.5, 0.5], [0.1, 0.9]], dtype=torch.float64)
    return probs.log(), T([0, 1, 1])


# hand value shared by the softmax and sigmoid C=1 forms (same probabilities):
# H(c,1) of the positive = -ln 0.8 ; H(c,0) = -ln 0.2, -ln 0.5, -ln 0.9 ; pi = 0.1
# E_x = (ln 5 + ln 2 + ln(10/9)) / 3 = ln(100/9) / 3 = 0.802650
# - 0.1 * ln 5 = 0.160944 -> 0.641706 ; + 0.1 * (-ln 0.8) = 0.022314 -> 0.664019
BINARY_HAND = 0.664019


def test_softmax_form_hand_cross_entropies():
    logits, labels = _binary_logits_softmax()
    loss = PULoss(prior=0.1)(logits, labels)
    assert loss.item() == pytest.approx(BINARY_HAND, abs=1e-6)
    # loss_weight scales; avg_factor is ignored (the risk normalises by its own counts)
    loss2 = PULoss(prior=0.1, loss_weight=2.0)(logits, labels, avg_factor=256.)
    assert loss2.item() == pytest.approx(2 * BINARY_HAND, abs=1e-6)


def test_sigmoid_form_rpn_hand_bce():
    # RPN: scores (N, 1), label 0 = object, 1 = background. logit = ln(p / (1 - p)):
    # p = 0.8 -> ln 4 ; 0.5 -> 0 ; 0.1 -> ln(1/9) ; BCE(x,1) = -ln p, BCE(x,0) = -ln(1-p)
    logits = T([[math.log(4.)], [0.], [math.log(1 / 9)]], dtype=torch.float64)
    loss = PULoss(prior=0.1, use_sigmoid=True)(logits, T([0, 1, 1]), T([1., 1., 1.]))
    assert loss.item() == pytest.approx(BINARY_HAND, abs=1e-6)


def test_sigmoid_form_two_classes_uses_one_hot_bce_sum():
    # C = 2, p = sigmoid(logits) = (0.8, 0.1), label 1: one-hot target (0, 1)
    # H(c,1) = -ln(1 - 0.8) - ln 0.1 = ln 50 ; H(c,0) = -ln 0.2 - ln 0.9 = ln(50/9)
    logits = T([[math.log(4.), math.log(1 / 9)]], dtype=torch.float64)
    h_neg, h_pos, c = PULoss(prior=0.1, use_sigmoid=True).per_sample_losses(logits, T([1]))
    assert c == 2
    assert h_pos.item() == pytest.approx(math.log(50))
    assert h_neg.item() == pytest.approx(math.log(50 / 9))


def test_per_class_prior_two_classes():
    # pu_risk: class 0: h0 = 2, h1 = 0.5 ; class 1: h0 = 4, 2, h1 = 1, 0.2 ; U: h0 = 1, 1, 1
    # pi = (0.2, 0.1): E_x = (2 + 4 + 2 + 1 + 1 + 1) / 6 = 11/6 = 1.833333
    # - (0.2 * 2 + 0.1 * 3) = 0.7 -> 1.133333 ; + 0.2 * 0.5 + 0.1 * 0.6 = 0.16 -> 1.293333
    h0 = [2., 4., 2., 1., 1., 1.]
    h1 = [0.5, 1., 0.2, 0., 0., 0.]
    per_class = _risk(h0, h1, [0, 1, 1, -1, -1, -1], (0.2, 0.1))
    assert per_class.item() == pytest.approx(1.133333 + 0.16, abs=1e-6)
    # pooled pi = 0.3: 11/6 - 0.3 * 8/3 = 1.033333 ; + 0.3 * (1.7 / 3) = 0.17 -> 1.203333
    pooled = _risk(h0, h1, [0, 1, 1, -1, -1, -1], 0.3)
    assert pooled.item() == pytest.approx(1.203333, abs=1e-6)

    # PULoss softmax with C = 2 (channels cls0, cls1, bg), logits = log(probabilities):
    # s1 label 0 probs (.5,.25,.25): H(c,1) = ln 2, H(c,0) = ln 4
    # s2 label 1 probs (.25,.5,.25): H(c,1) = ln 2, H(c,0) = ln 4
    # s3, s4 background probs (.25,.25,.5), (.5,.25,.25): H(c,0) = ln 2, ln 4
    # E_x = (2 + 2 + 1 + 2) ln2 / 4 = 1.75 ln2 ; - (0.2 + 0.1) * 2 ln2 -> 1.15 ln2
    # + (0.2 + 0.1) ln2 -> 1.45 ln2 = 1.005063
    probs = T([[.5, .25, .25], [.25, .5, .25], [.25, .25, .5], [.5, .25, .25]],
              dtype=torch.float64)
    loss = PULoss(prior=[0.2, 0.1])(probs.log(), T([0, 1, 2, 2]))
    assert loss.item() == pytest.approx(1.45 * math.log(2), abs=1e-6)
    with pytest.raises(ValueError, match='2 foreground classes'):
        PULoss(prior=[0.1, 0.1, 0.1])(probs.log(), T([0, 1, 2, 2]))


def test_registry_builds_in_mmdet_and_mmseg():
    from mmdet.registry import MODELS as DET
    from mmseg.registry import MODELS as SEG
    logits, labels = _binary_logits_softmax()
    for reg in (DET, SEG):
        loss = reg.build(dict(type='PULoss', prior=0.1))
        assert isinstance(loss, PULoss)
        assert loss(logits, labels).item() == pytest.approx(BINARY_HAND, abs=1e-6)
    assert DET.build(dict(type='PULoss', prior=0.04)).prior == 0.04


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match='reduction'):
        PULoss(prior=0.04, reduction='none')
    logits, labels = _binary_logits_softmax()
    with pytest.raises(ValueError, match='reduction'):
        PULoss(prior=0.04)(logits, labels, reduction_override='none')
    with pytest.raises(ValueError, match='prior'):
        PULoss(prior=1.5)
    with pytest.raises(ValueError, match='sum to'):
        PULoss(prior=[0.6, 0.5])
    with pytest.raises(ValueError, match='mode'):
        PULoss(prior=0.04, mode='nnpu')
    with pytest.raises(ValueError, match='exclusive'):
        PULoss(prior=0.04, hidden_prior=0.3)
    with pytest.raises(ValueError, match='give prior'):
        PULoss()
    with pytest.raises(ValueError, match="hidden_prior needs mode='detection'"):
        PULoss(hidden_prior=0.3, mode='classic')
    with pytest.raises(ValueError, match='hidden_prior'):
        PULoss(hidden_prior=1.0)
    with pytest.raises(ValueError, match='nonnegative must be'):
        PULoss(prior=0.04, nonnegative='nnPU')
    with pytest.raises(ValueError, match="only apply to nonnegative='nnpu'"):
        PULoss(prior=0.04, beta=0.1)
    with pytest.raises(ValueError, match='gamma'):
        PULoss(prior=0.04, nonnegative='nnpu', gamma=2.0)
    with pytest.raises(ValueError, match='needs hidden_prior'):
        PULoss(prior=0.04, hidden_prior_warmup_iters=10)
    with pytest.raises(ValueError, match='labels must lie'):
        PULoss(prior=0.04)(logits, T([0, 1, 2]))


# the clamped batch of test_pu_risk_clamps_negative_part: P h0 = 4, 4 ; h1 = 0.2, 0.4 ;
# U h0 = 0.1 ; pi = 0.9, detection mode. Negative part
#   neg = (h0_1 + h0_2 + h0_3) / 3 - 0.9 * (h0_1 + h0_2) / 2 = 2.7 - 3.6 = -0.9
#   d neg / d h0 = 1/3 - 0.45 = -0.116667 on P, 1/3 on U ; d neg / d h1 = 0
# positive part pos = 0.9 * (h1_1 + h1_2) / 2 = 0.27 ; d pos / d h1 = 0.45 on P, 0 on U
CLAMPED = dict(h0=[4., 4., 0.1], h1=[0.2, 0.4, 5.], pos=[True, True, False], prior=0.9)
D_NEG_D_H0 = [1 / 3 - 0.45, 1 / 3 - 0.45, 1 / 3]
D_POS_D_H1 = [0.45, 0.45, 0.]


def _grads(nonnegative, batch=CLAMPED, **kw):
    h0 = T(batch['h0'], dtype=torch.float64, requires_grad=True)
    h1 = T(batch['h1'], dtype=torch.float64, requires_grad=True)
    risk = pu_risk(h0, h1, T(batch['pos']), batch.get('prior'), nonnegative=nonnegative,
                   **kw)
    risk.backward()
    return risk.item(), h0.grad.tolist(), h1.grad.tolist()


def _negative_part_autograd(batch=CLAMPED):
    """d/dh0 of E_x[H(c,0)] - pi * mean_P H(c,0), written out and differentiated by autograd."""
    h0 = T(batch['h0'], dtype=torch.float64, requires_grad=True)
    pos = T(batch['pos'])
    (h0.mean() - batch['prior'] * h0[pos].mean()).backward()
    return h0.grad


def test_each_nonnegative_mode_value_and_gradient():
    # True (eq. 11, the paper): value pos + max(0, neg) = 0.27 ; the clamp stops every
    # gradient of the negative part: dL/dh0 = 0, dL/dh1 = d pos / d h1
    value, g0, g1 = _grads(True)
    assert value == pytest.approx(0.27)
    assert g0 == [0., 0., 0.] and g1 == pytest.approx(D_POS_D_H1)
    # False (eq. 9, unbiased): value -0.9 + 0.27 = -0.63 ; gradients of neg + pos
    value, g0, g1 = _grads(False)
    assert value == pytest.approx(-0.63)
    assert g0 == pytest.approx(D_NEG_D_H0) and g1 == pytest.approx(D_POS_D_H1)
    # 'nnpu' (Kiryo et al. Alg. 1, beta 0, gamma 1): neg = -0.9 < -beta, so the value is
    # the clamped 0.27 and the gradient is that of -1 * neg alone: +0.116667 on P h0,
    # -1/3 on U h0, nothing on h1
    value, g0, g1 = _grads('nnpu')
    assert value == pytest.approx(0.27)
    assert g0 == pytest.approx([-d for d in D_NEG_D_H0]) and g1 == [0., 0., 0.]
    assert torch.allclose(T(g0, dtype=torch.float64), -_negative_part_autograd())
    # gamma 0.5 halves the ascent step: gradient of -0.5 * neg
    value, g0, g1 = _grads('nnpu', gamma=0.5)
    assert value == pytest.approx(0.27)
    assert torch.allclose(T(g0, dtype=torch.float64), -0.5 * _negative_part_autograd())
    # beta 0.5: -0.9 < -0.5 still corrects; the value is pos - beta = 0.27 - 0.5 = -0.23
    value, g0, _ = _grads('nnpu', beta=0.5)
    assert value == pytest.approx(-0.23)
    assert g0 == pytest.approx([-d for d in D_NEG_D_H0])
    # beta 1.0: -0.9 >= -1, so nnPU descends on the unbiased risk (the False case)
    assert _grads('nnpu', beta=1.0) == _grads(False)


def test_modes_agree_when_the_negative_part_is_positive():
    # MIXED, detection, pi = 0.25: neg = 2.5 - 0.5 = 2.0 > 0, value 2.1 in every mode;
    # dL/dh0 = 1/4 - 0.25/2 = 0.125 on P, 1/4 = 0.25 on U
    batch = dict(MIXED, prior=0.25)
    for mode in (True, False, 'nnpu'):
        value, g0, _ = _grads(mode, batch)
        assert value == pytest.approx(2.1)
        assert g0 == pytest.approx([0.125, 0.125, 0.25, 0.25])


def test_nnpu_risk_function():
    # neg = -2 with d neg / dx = 3 (neg = 3x - 5 at x = 1), pos = 0.5 with d pos / dx = 1
    x = T(1.0, dtype=torch.float64, requires_grad=True)
    out = nnpu_risk(3 * x - 5, x - 0.5, beta=0.0, gamma=0.25)
    out.backward()
    assert out.item() == pytest.approx(0.5)  # pos + max(0, neg)
    assert x.grad.item() == pytest.approx(-0.25 * 3)  # ascent: d(-gamma * neg)/dx
    x = T(2.0, dtype=torch.float64, requires_grad=True)  # neg = 1 >= 0: plain descent
    out = nnpu_risk(3 * x - 5, x - 0.5)
    out.backward()
    assert out.item() == pytest.approx(2.5) and x.grad.item() == pytest.approx(4.0)


def test_pu_loss_nnpu_gradient_on_logits_matches_autograd_of_negative_part():
    # softmax RoI form, 2 positives and 3 unlabeled, pi = 0.9: confident positives (high
    # H(c,0) = log(1 + e^3), log(1 + e^2)) and confident background (low H(c,0)) make the
    # negative part (1.134 - 0.9 * 2.59 = -1.2) negative
    logits = T([[3., 0.], [2., 0.], [0., 2.], [0., 3.], [0., 1.]], dtype=torch.float64)
    labels = T([0, 0, 1, 1, 1])
    logits.requires_grad_(True)
    loss = PULoss(prior=0.9, nonnegative='nnpu', gamma=0.5)(logits, labels)
    loss.backward()
    # independent reference: H(c,0) = -log softmax(c)_bg written with logsumexp
    ref_logits = logits.detach().clone().requires_grad_(True)
    h0 = torch.logsumexp(ref_logits, dim=1) - ref_logits[:, 1]
    neg = h0.mean() - 0.9 * h0[:2].mean()
    h1 = torch.logsumexp(ref_logits, dim=1) - ref_logits[:, 0]
    assert neg.item() < 0
    (-0.5 * neg).backward()
    assert torch.allclose(logits.grad, ref_logits.grad)
    assert loss.item() == pytest.approx(0.9 * h1[:2].mean().item())  # clamped value


def test_gradients_finite_through_softmax_form():
    logits, labels = _binary_logits_softmax()
    for mode in (True, False, 'nnpu'):
        x = logits.clone().requires_grad_(True)
        PULoss(prior=0.1, nonnegative=mode)(x, labels).backward()
        # BINARY_HAND: neg = 0.641706 > 0, so every mode descends on the same risk
        assert torch.isfinite(x.grad).all()
        if mode is True:
            first = x.grad.clone()
        else:
            assert torch.allclose(x.grad, first)


# hidden prior: MIXED with pi_U = 0.25. rho_L = 2 / 4 = 0.5 ; E_L H1 = E_P H1 = 0.4 ;
# E_P H0 = 2 ; E_U H0 = 3.
# L = 0.5 * 0.4 + 0.5 * [0.25 * 0.4 + max(0, 3 - 0.25 * 2)] = 0.2 + 0.5 * 2.6 = 1.5
# = eq. (12) with pi_b = 0.5 + 0.5 * 0.25 = 0.625: 2.5 - 0.625 * 2 + 0.625 * 0.4 = 1.5
def test_hidden_prior_hand_value_is_eq12_with_the_batch_prior():
    assert _risk(MIXED['h0'], MIXED['h1'], MIXED['pos'], None,
                 hidden_prior=0.25).item() == pytest.approx(1.5)
    assert _risk(MIXED['h0'], MIXED['h1'], MIXED['pos'], 0.625).item() == pytest.approx(1.5)
    # hidden_prior = 0: (0.2 + 0.6 + 2 + 4) / 4 = 1.7, the mean cross-entropy
    assert _risk(MIXED['h0'], MIXED['h1'], MIXED['pos'], None,
                 hidden_prior=0.0).item() == pytest.approx(1.7)


def test_gt_proposals_leave_the_positive_means():
    # MIXED with the first positive (h0 = 1, h1 = 0.2) a ground-truth box added as proposal
    gt = T([True, False, False, False])
    # hidden prior 0.25: rho_L = 0.5 and E_L H1 = 0.4 keep it ; E_P over the other
    # positive: H1 = 0.6, H0 = 3 -> 0.2 + 0.5 * [0.25 * 0.6 + max(0, 3 - 0.75)] = 1.4
    assert _risk(MIXED['h0'], MIXED['h1'], MIXED['pos'], None, hidden_prior=0.25,
                 gt_proposal=gt).item() == pytest.approx(1.4)
    # fixed pi 0.25, detection: E_x over all four = 2.5 ; - 0.25 * 3 ; + 0.25 * 0.6 -> 1.9
    assert _risk(MIXED['h0'], MIXED['h1'], MIXED['pos'], 0.25,
                 gt_proposal=gt).item() == pytest.approx(1.9)
    # classic: E_U = 3 ; - 0.75 ; + 0.15 -> 2.4
    assert _risk(MIXED['h0'], MIXED['h1'], MIXED['pos'], 0.25, mode='classic',
                 gt_proposal=gt).item() == pytest.approx(2.4)
    with pytest.raises(ValueError, match='flags unlabeled'):
        _risk(MIXED['h0'], MIXED['h1'], MIXED['pos'], 0.25, gt_proposal=T([0, 0, 1, 0]) > 0)


def test_hidden_prior_nnpu_acts_on_the_bracketed_negative_part():
    # P h0 = 4, 4 ; h1 = 0.2, 0.4 ; U h0 = 0.1, 0.1 ; pi_U = 0.9: rho_L = 0.5,
    # bracket X = E_U H0 - 0.9 E_P H0 = 0.1 - 3.6 = -3.5 < 0
    # clamped value: 0.5 * 0.3 + 0.5 * (0.9 * 0.3 + 0) = 0.15 + 0.135 = 0.285
    # nnPU gradient = -(1 - rho_L) dX: on P h0 -0.5 * (-0.9 / 2) = 0.225, on U h0
    # -0.5 * (1 / 2) = -0.25 ; no gradient on h1
    batch = dict(h0=[4., 4., 0.1, 0.1], h1=[0.2, 0.4, 7., 7.], pos=[True, True, False, False])
    value, g0, g1 = _grads(True, batch, hidden_prior=0.9)
    assert value == pytest.approx(0.285) and g0 == [0.] * 4
    assert g1 == pytest.approx([0.5 * 0.5 + 0.5 * 0.9 * 0.5] * 2 + [0., 0.])
    value, g0, g1 = _grads('nnpu', batch, hidden_prior=0.9)
    assert value == pytest.approx(0.285)
    assert g0 == pytest.approx([0.225, 0.225, -0.25, -0.25]) and g1 == [0.] * 4


def _mmdet_ce(**kw):
    from mmdet.registry import MODELS
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmdet'):
        return MODELS.build(dict(type='CrossEntropyLoss', **kw))


@pytest.mark.parametrize('use_sigmoid,num_classes', [(False, 1), (False, 3), (True, 1),
                                                      (True, 2)])
def test_zero_hidden_prior_equals_mmdet_cross_entropy(use_sigmoid, num_classes):
    # PULoss(hidden_prior=0) = sum_i w_i H(c_i, y_i) / sum_i w_i, mmdet's CrossEntropyLoss
    # with avg_factor = the summed weights. mmdet's heads pass: BBoxHead (RoI, softmax)
    # avg_factor = #(w > 0); AnchorHead with a sampler (RPN, sigmoid) #pos + #neg sampled:
    # the same number for 0/1 weights (checked below), and sum(w) in general (fractional).
    g = torch.Generator().manual_seed(0)
    n = 9
    channels = num_classes if use_sigmoid else num_classes + 1
    logits = torch.randn(n, channels, generator=g, dtype=torch.float64) * 2
    labels = torch.randint(0, num_classes + 1, (n, ), generator=g)
    labels[:2] = torch.tensor([0, num_classes])  # at least one positive and one background
    binary = torch.ones(n, dtype=torch.float64)
    binary[-1] = 0.0  # an ignored sample
    fractional = torch.rand(n, generator=g, dtype=torch.float64)
    ce = _mmdet_ce(use_sigmoid=use_sigmoid)
    pu = PULoss(hidden_prior=0.0, use_sigmoid=use_sigmoid)
    for weight, avg_factor in ((binary, float((binary > 0).sum())),
                               (fractional, float(fractional.sum()))):
        a = logits.clone().requires_grad_(True)
        b = logits.clone().requires_grad_(True)
        ours = pu(a, labels, weight)
        ref = ce(b, labels, weight, avg_factor=avg_factor)
        assert ours.item() == pytest.approx(ref.item(), rel=1e-6)  # mmdet: float32 weights
        ours.backward()
        ref.backward()
        assert torch.allclose(a.grad, b.grad)
    # ground-truth-proposal flags change no batch mean: still cross-entropy
    with pu.sample_flags((labels < num_classes) & (torch.arange(n) % 2 == 0)):
        flagged = pu(logits, labels, binary)
    assert flagged.item() == pytest.approx(
        ce(logits, labels, binary, avg_factor=float((binary > 0).sum())).item(), rel=1e-6)


def test_hidden_prior_warmup_ramps_from_cross_entropy():
    # pi_U(t) = 0.5 * min(1, t / 10): t = 0 -> 0 (cross-entropy), 5 -> 0.25, >= 10 -> 0.5;
    # the loss at each t equals pu_risk with that pi_U on the same H values
    logits = torch.tensor([[0.3, -0.2], [1.0, 0.5], [-0.4, 0.8], [0.1, 0.9]],
                          dtype=torch.float64)
    labels = T([0, 0, 1, 1])
    loss = PULoss(hidden_prior=0.5, hidden_prior_warmup_iters=10)
    h0, h1, _ = loss.per_sample_losses(logits, labels)
    with pytest.raises(RuntimeError, match='PULossHook'):
        loss(logits, labels)  # a training call without a pushed iteration
    for it, pi_u in ((0, 0.0), (5, 0.25), (10, 0.5), (40, 0.5)):
        loss.set_iter(it)
        assert loss.current_hidden_prior() == pytest.approx(pi_u)
        ref = pu_risk(h0, h1, labels == 0, None, hidden_prior=pi_u)
        assert loss(logits, labels).item() == pytest.approx(ref.item())
    loss.set_iter(0)
    ce = F.cross_entropy(logits, labels).item()
    assert loss(logits, labels).item() == pytest.approx(ce)
    assert loss.set_iter(5) is None and loss(logits, labels).item() != pytest.approx(ce)
    # evaluation (no training step) needs no iteration: the ramp's start
    assert PULoss(hidden_prior=0.5, hidden_prior_warmup_iters=10).eval()(
        logits, labels).item() == pytest.approx(ce)


# Kiryo et al.'s sigmoid loss on the same probabilities as BINARY_HAND (p_fg = 0.8 | 0.5 | 0.1):
# H(c,1) of the positive = 1 - 0.8 ; H(c,0) = p_fg = 0.8, 0.5, 0.1 ; pi = 0.1
# E_x = 1.4 / 3 = 0.466667 ; - 0.1 * 0.8 -> 0.386667 ; + 0.1 * 0.2 -> 0.406667
SIGMOID_HAND = 0.406667


def test_sigmoid_surrogate_hand_values_softmax_and_sigmoid_forms():
    logits, labels = _binary_logits_softmax()
    assert PULoss(prior=0.1, surrogate='sigmoid')(logits, labels).item() == pytest.approx(
        SIGMOID_HAND, abs=1e-6)
    rpn_logits = (logits[:, 0] - logits[:, 1])[:, None]  # the margin: same p_fg
    assert PULoss(prior=0.1, use_sigmoid=True, surrogate='sigmoid')(
        rpn_logits, labels).item() == pytest.approx(SIGMOID_HAND, abs=1e-6)
    # C = 2 sigmoid, p = (0.8, 0.1), label 1: H(c,1) = 0.8 + (1 - 0.1), H(c,0) = 0.8 + 0.1
    two = T([[math.log(4.), math.log(1 / 9)]], dtype=torch.float64)
    h0, h1, _ = PULoss(prior=0.1, use_sigmoid=True, surrogate='sigmoid').per_sample_losses(
        two, T([1]))
    assert (h0.item(), h1.item()) == pytest.approx((0.9, 1.7))
    # C = 2 softmax, p = (0.2, 0.3, 0.5), label 1: H(c,1) = 0.7, H(c,0) = 1 - 0.5
    three = T([[0.2, 0.3, 0.5]], dtype=torch.float64).log()
    h0, h1, _ = PULoss(prior=0.1, surrogate='sigmoid').per_sample_losses(three, T([1]))
    assert (h0.item(), h1.item()) == pytest.approx((0.5, 0.7))
    # sigmoid-h0: the same H(c,0), cross-entropy for the positive: 0.386667 + 0.1 * ln 1.25
    assert PULoss(prior=0.1, surrogate='sigmoid-h0')(logits, labels).item() == \
        pytest.approx(0.386667 + 0.1 * math.log(1.25), abs=1e-6)
    # hidden_prior = 0: the mean sigmoid loss of the labels, (0.2 + 0.5 + 0.1) / 3
    assert PULoss(hidden_prior=0.0, surrogate='sigmoid')(logits, labels).item() == \
        pytest.approx(0.8 / 3)
    with pytest.raises(ValueError, match='surrogate'):
        PULoss(prior=0.1, surrogate='mae')


def test_sigmoid_surrogate_saturates_where_cross_entropy_keeps_pushing():
    # unbiased risk, a positive at margin 0 and an unlabeled sample at margin 10: the
    # gradient on its foreground logit is (1/2) dH(c,0)/dm = sigmoid(10) / 2 with CE,
    # sigmoid(10) sigmoid(-10) / 2 with the sigmoid loss as H(c,0) ('sigmoid', 'sigmoid-h0')
    s10 = 1 / (1 + math.exp(-10))
    for surrogate, expected in (('ce', s10 / 2), ('sigmoid', s10 * (1 - s10) / 2),
                                ('sigmoid-h0', s10 * (1 - s10) / 2)):
        logits = T([[0., 0.], [10., 0.]], dtype=torch.float64, requires_grad=True)
        PULoss(prior=0.5, nonnegative=False, surrogate=surrogate)(logits, T([0, 1])).backward()
        assert logits.grad[1, 0].item() == pytest.approx(expected, rel=1e-9)


def test_sigmoid_surrogate_nnpu_gradient_matches_autograd_of_negative_part():
    # the batch of the CE test above: H(c,0) = sigmoid(margin) gives E_x H0 = 0.4538 and
    # pi E_P H0 = 0.8250, negative part -0.371: the ascent step acts
    logits = T([[3., 0.], [2., 0.], [0., 2.], [0., 3.], [0., 1.]], dtype=torch.float64,
               requires_grad=True)
    labels = T([0, 0, 1, 1, 1])
    PULoss(prior=0.9, nonnegative='nnpu', gamma=0.5, surrogate='sigmoid')(
        logits, labels).backward()
    ref_logits = logits.detach().clone().requires_grad_(True)
    h0 = torch.sigmoid(ref_logits[:, 0] - ref_logits[:, 1])
    neg = h0.mean() - 0.9 * h0[:2].mean()
    assert neg.item() == pytest.approx(-0.371, abs=1e-3)
    (-0.5 * neg).backward()
    assert torch.allclose(logits.grad, ref_logits.grad)


def test_pu_loss_hook_pushes_the_iteration_and_logs():
    from mmengine.logging import MessageHub
    from projects.pu_detection import PULossHook

    class Head(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.loss_cls = PULoss(hidden_prior=0.5, hidden_prior_warmup_iters=4)

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rpn_head = Head()

    model = Model()
    runner = SimpleNamespace(model=model, iter=2,
                             message_hub=MessageHub.get_instance('test_pu_loss_hook'))
    hook = PULossHook()
    hook.before_train(runner)
    hook.before_train_iter(runner, 0)
    assert model.rpn_head.loss_cls.iteration == 2
    assert model.rpn_head.loss_cls.current_hidden_prior() == pytest.approx(0.25)
    logits, labels = _binary_logits_softmax()  # 1 labelled positive of 3: rho_L = 1/3
    model.rpn_head.loss_cls(logits, labels)
    hook.after_train_iter(runner, 0)
    # pi_b = 1/3 + 2/3 * 0.25 = 0.5
    assert runner.message_hub.get_scalar('train/pu_rpn_head_prior').current() == \
        pytest.approx(0.5)
    assert 'train/pu_rpn_head_neg' in runner.message_hub.log_scalars
    with pytest.raises(ValueError, match='no PULoss'):
        PULossHook().before_train(SimpleNamespace(model=torch.nn.Linear(1, 1)))


def test_faster_rcnn_bbox_head_uses_pu_loss():
    import mmdet.models  # noqa: F401  (registers the heads)
    from mmdet.registry import MODELS
    torch.manual_seed(0)
    head = MODELS.build(
        dict(type='Shared2FCBBoxHead', in_channels=4, fc_out_channels=8, roi_feat_size=2,
             num_classes=1,
             bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0., 0., 0., 0.],
                             target_stds=[0.1, 0.1, 0.2, 0.2]),
             reg_class_agnostic=False,
             loss_cls=dict(type='PULoss', prior=0.04),
             loss_bbox=dict(type='L1Loss', loss_weight=1.0)))
    assert isinstance(head.loss_cls, PULoss) and head.fc_cls.out_features == 2
    # 5 sampled RoIs: 2 positives (label 0), 2 background, 1 ignored (weight 0)
    cls_score, bbox_pred = head(torch.randn(5, 4, 2, 2))
    rois = T([[0, 0, 0, 10, 10]] * 5, dtype=torch.float32)
    labels = T([0, 0, 1, 1, 1])
    label_weights = T([1., 1., 1., 1., 0.])
    bbox_targets = torch.zeros(5, 4)
    bbox_weights = torch.zeros(5, 4)
    bbox_weights[:2] = 1
    losses = head.loss(cls_score, bbox_pred, rois, labels, label_weights, bbox_targets,
                       bbox_weights)
    # reference: eq. (12) on the 4 non-ignored samples with explicit cross-entropies
    logp = F.log_softmax(cls_score[:4], dim=1)
    ref = pu_risk(-logp[:, 1], -logp[:, 0], T([True, True, False, False]), 0.04)
    assert torch.isfinite(losses['loss_cls'])
    assert losses['loss_cls'].item() == pytest.approx(ref.item(), rel=1e-6)
    losses['loss_cls'].backward()
    assert all(torch.isfinite(p.grad).all() for p in head.fc_cls.parameters())
