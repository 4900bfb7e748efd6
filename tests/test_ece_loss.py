"""Exclusive (focal) cross-entropy: hand-computed cases, schedules, and agreement with the
authors' package ``ece-loss`` 1.0.0 where the settings coincide."""
import math

import pytest
import torch

from projects.common.registry import MODELS
from projects.exclusive_ce.ece_loss import ExclusiveCrossEntropyLoss, anneal, exclusive_ce

LN = math.log


def _build(**kw) -> ExclusiveCrossEntropyLoss:
    loss = MODELS[0].build(dict(type='ExclusiveCrossEntropyLoss', **kw))
    assert isinstance(loss, ExclusiveCrossEntropyLoss)
    return loss


# ----------------------------------------------------------------------------- schedules
def test_schedules_by_hand():
    # Table 2: fixed rho; linear 0.75 * rho_t; sigmoid sigma(rho_linear); package form
    assert anneal('fixed', 0.75, progress=0.3) == 0.75
    assert anneal('linear', 0.75, progress=0.4) == pytest.approx(0.3)
    assert anneal('sigmoid', 0.75, progress=0.0) == pytest.approx(0.5)
    assert anneal('sigmoid', 0.75, progress=1.0) == pytest.approx(1 / (1 + math.exp(-0.75)))
    # package: sigmoid((epoch - 50) / 10) * 0.5 -> 0.25 at epoch 50, 0.5 sigma(1) at 60
    assert anneal('package_sigmoid', 0.5, epoch=50) == pytest.approx(0.25)
    assert anneal('package_sigmoid', 0.5, epoch=60) == pytest.approx(0.5 / (1 + math.exp(-1)))
    assert anneal('package_sigmoid', 0.5, epoch=-1e6) == 0.0
    # relative form: the package's 300-epoch constants as fractions of training;
    # at progress 0.5 = 150/300 the background rate is 0.5 * sigmoid(0) = 0.25, and at
    # progress 0.2 the threshold is 0.5 * sigmoid((0.2 - 1/6) * 30) = 0.5 * sigmoid(1)
    assert anneal('relative_sigmoid', 0.5, progress=0.5, center=0.5,
                  temperature=1 / 30) == pytest.approx(0.25)
    assert anneal('relative_sigmoid', 0.5, progress=0.2, center=1 / 6,
                  temperature=1 / 30) == pytest.approx(0.5 / (1 + math.exp(-1)))
    with pytest.raises(ValueError, match='schedule'):
        anneal('cosine', 0.5)


def test_loss_threshold_follows_progress():
    loss = _build(threshold=0.75, schedule='linear')
    assert loss.current_threshold() == 0.0  # before any push: progress 0
    loss.set_progress(epoch=3, progress=0.4)
    assert loss.current_threshold() == pytest.approx(0.3)
    pkg = _build(threshold=0.5, schedule='package_sigmoid', bg_sampling=0.5)
    pkg.set_epoch(150)
    assert pkg.current_threshold() == pytest.approx(0.5 / (1 + math.exp(-10)))
    assert pkg.current_sampling_rate() == pytest.approx(0.25)


# ------------------------------------------------------------------- softmax (mmdet RoI)
def _softmax_case():
    # one foreground class + background (index 1, mmdet's last column)
    # a: annotated (label 0), logits (ln 3, 0): p0 = 0.75 -> CE = -ln 0.75
    # b: unannotated, logits (0, 0): p_fg = 0.5 < 0.75 -> kept, CE = ln 2
    # c: unannotated, logits (ln 9, 0): p_fg = 0.9 >= 0.75 -> dropped
    scores = torch.tensor([[LN(3), 0.0], [0.0, 0.0], [LN(9), 0.0]], requires_grad=True)
    labels = torch.tensor([0, 1, 1])
    return scores, labels


def test_softmax_eq7_by_hand():
    scores, labels = _softmax_case()
    loss = _build(threshold=0.75, schedule='fixed')
    value = loss(scores, labels)
    assert value.item() == pytest.approx((-LN(0.75) + LN(2)) / 3)  # dropped term counts 0
    assert loss.last_kept_fraction.item() == pytest.approx(0.5)
    value.backward()
    assert torch.all(scores.grad[2] == 0)  # the excluded term sends no gradient
    assert torch.all(scores.grad[1] != 0)
    # avg_factor and per-sample weights as mmdet passes them
    w = torch.tensor([1.0, 2.0, 1.0])
    assert loss(scores, labels, w, avg_factor=4).item() == pytest.approx(
        (-LN(0.75) + 2 * LN(2)) / 4, rel=1e-6)
    assert loss(scores, labels, reduction_override='sum').item() == pytest.approx(
        -LN(0.75) + LN(2))


def test_softmax_eq8_focal_only_on_unannotated():
    scores, labels = _softmax_case()
    loss = _build(threshold=0.75, schedule='fixed', use_focal=True, alpha=0.25, gamma=2.0)
    # a stays plain CE; b: u(1 - p) = alpha p^gamma (-ln(1 - p)) = 0.25 * 0.5^2 * ln 2
    expected = (-LN(0.75) + 0.25 * 0.25 * LN(2)) / 3
    assert loss(scores, labels).item() == pytest.approx(expected)


def test_threshold_one_is_cross_entropy():
    torch.manual_seed(0)
    scores, labels = torch.randn(50, 4), torch.randint(0, 4, (50, ))
    ece = _build(threshold=1.0 + 1e-9, schedule='fixed')
    ce = torch.nn.functional.cross_entropy(scores, labels)
    assert ece(scores, labels).item() == pytest.approx(ce.item(), rel=1e-6)


def test_margin_confidence_by_hand():
    # background = 2; margins: (2.0 - 0.5) = 1.5 >= 1 -> dropped; 0.3 - 0.1 = 0.2 -> kept
    scores = torch.tensor([[2.0, 0.5, 0.0], [0.3, 0.0, 0.1]])
    labels = torch.tensor([2, 2])
    loss = _build(confidence='margin', threshold=1.0, schedule='fixed', reduction='none')
    out = loss(scores, labels)
    kept_ce = -torch.log_softmax(scores[1], 0)[2]
    assert out[0].item() == 0.0
    assert out[1].item() == pytest.approx(kept_ce.item())


# ------------------------------------------------------------------- sigmoid (mmdet RPN)
def test_sigmoid_elementwise_by_hand():
    # two foreground columns, label 2 = background (mmdet sigmoid convention)
    # row 0: annotated class 1 -> plain BCE: col 0 target 0 at logit 0 (ln 2),
    #        col 1 target 1 at logit ln 4 (sigma = 0.8 -> -ln 0.8)
    # row 1: unannotated: col 0 sigma 0.5 < 0.75 kept (ln 2); col 1 sigma 0.8 dropped
    scores = torch.tensor([[0.0, LN(4)], [0.0, LN(4)]])
    labels = torch.tensor([1, 2])
    loss = _build(use_sigmoid=True, threshold=0.75, schedule='fixed', reduction='none')
    out = loss(scores, labels)
    expected = torch.tensor([[LN(2), -LN(0.8)], [LN(2), 0.0]])
    assert torch.allclose(out, expected, atol=1e-6)
    # mean is over the 4 elements, like mmdet's sigmoid cross-entropy
    loss.reduction = 'mean'
    assert loss(scores, labels).item() == pytest.approx(expected.sum().item() / 4, rel=1e-6)
    # 'logit' confidence (the package's binary-with-logits): raw logit ln 4 = 1.386 < 1.5
    raw = _build(use_sigmoid=True, confidence='logit', threshold=1.5, schedule='fixed',
                 reduction='none')
    assert raw(scores, labels)[1, 1].item() == pytest.approx(-LN(1 - 0.8))


def test_focal_gradient_finite_when_confident():
    # a confidently-background unannotated term: its CE underflows to 0 in float32
    scores = torch.tensor([[-200.0, 200.0]], requires_grad=True)
    loss = _build(use_focal=True, threshold=0.75, schedule='fixed')
    out = loss(scores, torch.tensor([1]))
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(scores.grad).all()


# ----------------------------------------------------------------------- mmseg contract
def test_segmentation_ignore_and_avg_non_ignore():
    # 1 image, 2 classes (0 = background), 1 x 3 pixels: annotated nucleus, background
    # (p_fg = 0.5, kept), ignored (255)
    logits = torch.zeros(1, 2, 1, 3)
    logits[0, 1, 0, 0] = LN(3)  # nucleus pixel: p1 = 0.75
    label = torch.tensor([[[1, 0, 255]]])
    loss = _build(background_label=0, threshold=0.75, schedule='fixed', avg_non_ignore=True)
    value = loss(logits, label, weight=None, ignore_index=255)
    assert value.item() == pytest.approx((-LN(0.75) + LN(2)) / 2)  # 2 non-ignored pixels
    loss.avg_non_ignore = False
    assert loss(logits, label, ignore_index=255).item() == pytest.approx(
        (-LN(0.75) + LN(2)) / 3)
    assert loss.loss_name == 'loss_ece'


def test_segmentation_needs_background_label():
    loss = _build()
    with pytest.raises(ValueError, match='background_label'):
        loss(torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long), ignore_index=255)


def test_bad_arguments():
    for kw, word in ((dict(schedule='cos'), 'schedule'), (dict(confidence='entropy'),
                                                           'confidence'),
                     (dict(confidence='margin', use_sigmoid=True), 'margin'),
                     (dict(confidence='logit'), 'logit'), (dict(bg_sampling=1.5),
                                                           'bg_sampling'),
                     (dict(loss_name='ece'), 'loss_name')):
        with pytest.raises(ValueError, match=word):
            _build(**kw)
    with pytest.raises(ValueError, match='labels must lie'):
        _build()(torch.zeros(2, 3), torch.tensor([0, 5]))
    with pytest.raises(ValueError, match='do not match'):
        _build()(torch.zeros(2, 3), torch.tensor([0, 1, 2]))


def test_background_sampling_rate_zero_and_one():
    scores, labels = _softmax_case()
    never = _build(threshold=0.75, schedule='fixed', bg_sampling=0.0, bg_schedule='fixed')
    assert never(scores, labels).item() == pytest.approx(-LN(0.75) / 3)
    always = _build(threshold=0.75, schedule='fixed', bg_sampling=1.0, bg_schedule='fixed')
    assert always(scores, labels).item() == pytest.approx((-LN(0.75) + LN(2)) / 3)


# ------------------------------------------------------------ agreement with ece-loss 1.0
ece_pkg = pytest.importorskip('ece_loss', reason='the test extra installs ece-loss 1.0.0')


@pytest.mark.parametrize('epoch', [40, 55, 200])
def test_agrees_with_package_multiclass(epoch):
    """Package ExclusiveCrossEntropyLoss (label 0 unannotated, top-2 margin, focal 0.2/0.1,
    sigmoid((epoch - 50) / 10) * 0.5) vs ours with the same settings, sampling off."""
    torch.manual_seed(epoch)
    x = torch.randn(4, 3, 8, 8) * 0.4
    y = torch.randint(0, 3, (4, 8, 8))
    ref = ece_pkg.ExclusiveCrossEntropyLoss(
        background_sampling_annealing=lambda e, t: 1.0)  # uniform [0, 1) <= 1: keep all
    expected = ref(x, y, epoch)
    ours = _build(background_label=0, confidence='margin', threshold=0.5,
                  schedule='package_sigmoid', use_focal=True, reduction='none')
    ours.set_epoch(epoch)
    got = ours(x, y)
    assert torch.allclose(got, expected, atol=1e-6)
    assert 0 < ours.last_kept_fraction.item() < 1  # the threshold really splits the set


def test_agrees_with_package_sampling_same_seed():
    """With background sampling on, the same seed draws the same uniforms in both."""
    x = torch.randn(2, 3, 6, 6)
    y = torch.randint(0, 3, (2, 6, 6))
    ref = ece_pkg.ExclusiveCrossEntropyLoss()
    ours = _build(background_label=0, confidence='margin', threshold=0.5,
                  schedule='package_sigmoid', use_focal=True, bg_sampling=0.5,
                  reduction='none')
    ours.set_epoch(160)
    torch.manual_seed(1)
    expected = ref(x, y, 160)
    torch.manual_seed(1)
    got = ours(x, y)
    assert torch.allclose(got, expected, atol=1e-6)


def test_agrees_with_package_binary_logits():
    """Package BECEWithLogitsLoss (label 0 unannotated, raw logit as confidence) vs ours
    with one sigmoid column (mmseg out_channels=1: background 0, nucleus 1)."""
    torch.manual_seed(3)
    x = torch.randn(200)
    y = torch.randint(0, 2, (200, ))
    ref = ece_pkg.BECEWithLogitsLoss(background_sampling_annealing=lambda e, t: 1.0)
    ref.set_unannotated_mapping(ref.zeroth_label_as_unannotated)
    expected = ref(x, y.float(), 70)
    ours = _build(use_sigmoid=True, background_label=0, confidence='logit', threshold=0.5,
                  schedule='package_sigmoid', use_focal=True, reduction='none')
    ours.set_epoch(70)
    got = ours(x[:, None], y)[:, 0]
    assert torch.allclose(got, expected, atol=1e-6)


def test_plain_function_matches_module():
    torch.manual_seed(5)
    x, y = torch.randn(30, 3), torch.randint(0, 3, (30, ))
    loss, kept, unannotated = exclusive_ce(x, y, 0.6)
    assert torch.equal(kept, unannotated & (1 - x.softmax(1)[:, 2] < 0.6))
    module = _build(threshold=0.6, schedule='fixed', reduction='none')
    assert torch.allclose(module(x, y), loss)
