"""PULoss / pu_risk against values worked out by hand from Zhao et al. 2021, eq. (12)."""
import math

import pytest
import torch

from projects.pu_detection import PULoss, pu_risk

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
    with pytest.raises(ValueError, match='labels must lie'):
        PULoss(prior=0.04)(logits, T([0, 1, 2]))


def test_gradients_finite_and_zero_through_clamped_part():
    # clamped case of test_pu_risk_clamps_negative_part: dL/dh0 = 0 everywhere,
    # dL/dh1 = pi / Np = 0.9 / 2 = 0.45 for positives, 0 for unlabeled
    h0 = T([4., 4., 0.1], requires_grad=True)
    h1 = T([0.2, 0.4, 5.], requires_grad=True)
    pu_risk(h0, h1, T([True, True, False]), 0.9).backward()
    assert torch.equal(h0.grad, torch.zeros(3))
    assert torch.allclose(h1.grad, T([0.45, 0.45, 0.]))
    # not clamped (MIXED, detection, pi = 0.25): dL/dh0 = 1/4 - 0.25/2 = 0.125 on P,
    # 1/4 = 0.25 on U
    h0 = T(MIXED['h0'], requires_grad=True)
    pu_risk(h0, T(MIXED['h1']), T(MIXED['pos']), 0.25).backward()
    assert torch.allclose(h0.grad, T([0.125, 0.125, 0.25, 0.25]))
    # through the softmax form: finite gradients on the logits
    logits, labels = _binary_logits_softmax()
    logits.requires_grad_(True)
    PULoss(prior=0.1)(logits, labels).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_faster_rcnn_bbox_head_uses_pu_loss():
    import mmdet.models  # noqa: F401  (registers the heads)
    import torch.nn.functional as F
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
