"""Exclusive (focal) cross-entropy: hand-computed cases, schedules and their argument
names, the warm-up, and agreement with the authors' package ``ece-loss`` 1.0.0 where the
settings coincide."""
import math
import warnings

import pytest
import torch

from projects.common.registry import MODELS
from projects.exclusive_ce.ece_loss import (DEFAULT_WARMUP, ExclusiveCrossEntropyLoss, anneal,
                                            exclusive_ce)

LN = math.log


def _build(**kw) -> ExclusiveCrossEntropyLoss:
    loss = MODELS[0].build(dict(type='ExclusiveCrossEntropyLoss', **kw))
    assert isinstance(loss, ExclusiveCrossEntropyLoss)
    return loss


def _literal(**kw) -> ExclusiveCrossEntropyLoss:
    """The paper's loss as written: exclusion from the first step (``warmup=0``)."""
    return _build(warmup=0.0, **kw)


@pytest.fixture
def ece_pkg():
    """The reference package (the test extra installs ece-loss 1.0.0)."""
    return pytest.importorskip('ece_loss', reason='the test extra installs ece-loss 1.0.0')


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
    loss = _build(max_threshold=0.75, schedule='linear')
    assert loss.current_threshold() == 0.0  # before any push: progress 0
    loss.set_progress(epoch=3, progress=0.4)
    assert loss.current_threshold() == pytest.approx(0.3)
    pkg = _literal(max_threshold=0.5, schedule='package_sigmoid', bg_sampling=0.5)
    pkg.set_epoch(150)
    assert pkg.current_threshold() == pytest.approx(0.5 / (1 + math.exp(-10)))
    assert pkg.current_sampling_rate() == pytest.approx(0.25)


# ------------------------------------------------- one argument name per schedule constant
def test_each_schedule_has_its_own_constant():
    # fixed: rho = threshold; linear: max_threshold * progress (0.6 * 0.5 = 0.3);
    # sigmoid: sigmoid(slope * progress) = sigmoid(2 * 0.5) = 0.731059; package form:
    # max_threshold * sigmoid((epoch - 50) / 10) = 0.5 * sigmoid(0) = 0.25 at epoch 50
    cases = [(dict(schedule='fixed', threshold=0.6), 0.6),
             (dict(schedule='linear', max_threshold=0.6), 0.3),
             (dict(schedule='sigmoid', slope=2.0), 1 / (1 + math.exp(-1.0))),
             (dict(schedule='package_sigmoid', max_threshold=0.5), 0.25),
             (dict(schedule='relative_sigmoid', max_threshold=0.5, center=0.5,
                   temperature=0.1), 0.25)]
    for kw, rho in cases:
        loss = _build(**kw)
        loss.set_progress(epoch=50, progress=0.5)
        assert loss.current_threshold() == pytest.approx(rho), kw
    # unset: 0.75 (Table 2) in the schedule's own slot, the others None
    default = _build()
    assert (default.threshold, default.max_threshold, default.slope) == (None, None, 0.75)
    fixed = _build(schedule='fixed')
    assert (fixed.threshold, fixed.max_threshold, fixed.slope) == (0.75, None, None)


@pytest.mark.parametrize('schedule,name', [('linear', 'max_threshold'), ('sigmoid', 'slope'),
                                           ('package_sigmoid', 'max_threshold'),
                                           ('relative_sigmoid', 'max_threshold')])
def test_old_threshold_name_warns_and_maps_to_the_same_values(schedule, name):
    with pytest.warns(DeprecationWarning, match=f'deprecated.*write {name}=0.6'):
        old = _build(schedule=schedule, threshold=0.6, center=0.3, temperature=0.2)
    new = _build(schedule=schedule, **{name: 0.6}, center=0.3, temperature=0.2)
    assert getattr(old, name) == 0.6 and old.threshold is None
    for epoch, progress in ((0, 0.0), (40, 0.25), (55, 0.7), (300, 1.0)):
        old.set_progress(epoch, progress)
        new.set_progress(epoch, progress)
        assert old.current_threshold() == new.current_threshold()
        assert old.current_threshold() == anneal(schedule, 0.6, epoch, progress, 0.3, 0.2)


def test_threshold_of_the_fixed_schedule_is_not_deprecated():
    with warnings.catch_warnings():
        warnings.simplefilter('error', DeprecationWarning)
        loss = _build(schedule='fixed', threshold=0.3)
    assert loss.current_threshold() == 0.3


@pytest.mark.parametrize('kw,word', [
    (dict(schedule='fixed', slope=0.5), 'slope is the constant of schedule'),
    (dict(schedule='fixed', max_threshold=0.5), 'max_threshold is the constant'),
    (dict(schedule='sigmoid', max_threshold=0.5), 'max_threshold is the constant'),
    (dict(schedule='linear', slope=0.5), 'slope is the constant'),
    (dict(schedule='sigmoid', threshold=0.5, slope=0.5), 'threshold and slope both given'),
    (dict(schedule='linear', threshold=0.5, max_threshold=0.5),
     'threshold and max_threshold both given'),
])
def test_a_constant_of_another_schedule_is_an_error(kw, word):
    with pytest.raises(ValueError, match=word):
        _build(**kw)


# ----------------------------------------------------------------------------- warm-up
def test_warmup_keeps_every_term_then_excludes():
    # the softmax case below, default schedule sigmoid(0.75 progress) after the warm-up
    # (first 10% of training). During it nothing is dropped: plain CE
    # (-ln 0.75 + ln 2 + ln 10) / 3 (c: p_bg = 0.1 -> -ln 0.1). At progress 0.1 the
    # threshold is sigmoid(0.075) = 0.51874: b (p_fg 0.5) kept, c (0.9) dropped.
    assert DEFAULT_WARMUP == 0.1
    scores, labels = _softmax_case()
    loss = _build()
    for progress in (0.0, 0.05, 0.0999):
        loss.set_progress(epoch=0, progress=progress)
        assert loss.in_warmup()
        assert loss(scores, labels).item() == pytest.approx((-LN(0.75) + LN(2) + LN(10)) / 3)
        assert loss.last_kept_fraction.item() == 1.0
    loss.set_progress(epoch=0, progress=0.1)
    assert not loss.in_warmup()
    assert loss.current_threshold() == pytest.approx(1 / (1 + math.exp(-0.075)))
    assert loss(scores, labels).item() == pytest.approx((-LN(0.75) + LN(2)) / 3)
    assert loss.last_kept_fraction.item() == 0.5
    # background sampling (rate 0: drop every unannotated term) waits for the warm-up too
    never = _build(bg_sampling=0.0, bg_schedule='fixed')
    never.set_progress(epoch=0, progress=0.05)
    assert never(scores, labels).item() == pytest.approx((-LN(0.75) + LN(2) + LN(10)) / 3)
    never.set_progress(epoch=0, progress=0.1)
    assert never(scores, labels).item() == pytest.approx(-LN(0.75) / 3)


def test_warmup_arguments_and_missing_progress():
    for bad in (-0.1, 1.5, True, '0.1'):
        with pytest.raises(ValueError, match='warmup'):
            _build(warmup=bad)
    scores, labels = _softmax_case()
    loss = _build()
    with pytest.warns(UserWarning, match='stays in its warm-up'):
        loss(scores, labels)
    with pytest.warns(UserWarning, match='set_epoch does not move the training progress'):
        _build().set_epoch(100)
    # warmup=1: cross-entropy in every iteration (the hook's last one is at (n - 1) / n)
    always = _build(warmup=1.0)
    always.set_progress(epoch=0, progress=299 / 300)
    assert always(scores, labels).item() == pytest.approx((-LN(0.75) + LN(2) + LN(10)) / 3)


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
    loss = _literal(threshold=0.75, schedule='fixed')
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
    loss = _literal(threshold=0.75, schedule='fixed', use_focal=True, alpha=0.25,
                    gamma=2.0)
    # a stays plain CE; b: u(1 - p) = alpha p^gamma (-ln(1 - p)) = 0.25 * 0.5^2 * ln 2
    expected = (-LN(0.75) + 0.25 * 0.25 * LN(2)) / 3
    assert loss(scores, labels).item() == pytest.approx(expected)


def test_threshold_one_is_cross_entropy():
    torch.manual_seed(0)
    scores, labels = torch.randn(50, 4), torch.randint(0, 4, (50, ))
    ece = _literal(threshold=1.0 + 1e-9, schedule='fixed')
    ce = torch.nn.functional.cross_entropy(scores, labels)
    assert ece(scores, labels).item() == pytest.approx(ce.item(), rel=1e-6)


def test_margin_confidence_by_hand():
    # background = 2; margins: (2.0 - 0.5) = 1.5 >= 1 -> dropped; 0.3 - 0.1 = 0.2 -> kept
    scores = torch.tensor([[2.0, 0.5, 0.0], [0.3, 0.0, 0.1]])
    labels = torch.tensor([2, 2])
    loss = _literal(confidence='margin', threshold=1.0, schedule='fixed', reduction='none')
    out = loss(scores, labels)
    kept_ce = -torch.log_softmax(scores[1], 0)[2]
    assert out[0].item() == 0.0
    assert out[1].item() == pytest.approx(kept_ce.item())


def test_max_foreground_confidence_by_hand():
    # 3 foreground classes + background (index 3), logits (ln 2, ln 2, ln 2, ln 3):
    # p = (2, 2, 2, 3) / 9. 'probability': 1 - p_bg = 6/9 = 0.667 >= 0.6 -> dropped;
    # 'max_foreground': max p_fg = 2/9 = 0.222 < 0.6 -> kept, CE = -ln(3/9) = ln 3.
    # Row 2, logits (ln 8, 0, 0, 0): p = (8, 1, 1, 1) / 11, max p_fg = 0.727 -> dropped.
    scores = torch.tensor([[LN(2), LN(2), LN(2), LN(3)], [LN(8), 0.0, 0.0, 0.0]])
    labels = torch.tensor([3, 3])
    paper = _literal(threshold=0.6, schedule='fixed', reduction='none')
    top = _literal(threshold=0.6, schedule='fixed', reduction='none',
                   confidence='max_foreground')
    assert paper(scores, labels).tolist() == [0.0, 0.0]
    assert top(scores, labels).tolist() == pytest.approx([LN(3), 0.0])
    # one foreground class: the same as 'probability' (1 - p_bg = p_fg)
    x, y = torch.randn(40, 2), torch.randint(0, 2, (40, ))
    assert torch.equal(exclusive_ce(x, y, 0.55, confidence='max_foreground')[1],
                       exclusive_ce(x, y, 0.55)[1])


# ------------------------------------------------------------------- sigmoid (mmdet RPN)
def test_sigmoid_elementwise_by_hand():
    # two foreground columns, label 2 = background (mmdet sigmoid convention)
    # row 0: annotated class 1 -> plain BCE: col 0 target 0 at logit 0 (ln 2),
    #        col 1 target 1 at logit ln 4 (sigma = 0.8 -> -ln 0.8)
    # row 1: unannotated: col 0 sigma 0.5 < 0.75 kept (ln 2); col 1 sigma 0.8 dropped
    scores = torch.tensor([[0.0, LN(4)], [0.0, LN(4)]])
    labels = torch.tensor([1, 2])
    loss = _literal(use_sigmoid=True, threshold=0.75, schedule='fixed', reduction='none')
    out = loss(scores, labels)
    expected = torch.tensor([[LN(2), -LN(0.8)], [LN(2), 0.0]])
    assert torch.allclose(out, expected, atol=1e-6)
    # mean is over the 4 elements, like mmdet's sigmoid cross-entropy
    loss.reduction = 'mean'
    assert loss(scores, labels).item() == pytest.approx(expected.sum().item() / 4, rel=1e-6)
    # 'logit' confidence (the package's binary-with-logits): raw logit ln 4 = 1.386 < 1.5
    raw = _literal(use_sigmoid=True, confidence='logit', threshold=1.5, schedule='fixed',
                   reduction='none')
    assert raw(scores, labels)[1, 1].item() == pytest.approx(-LN(1 - 0.8))


def test_focal_gradient_finite_when_confident():
    # a confidently-background unannotated term: its CE underflows to 0 in float32
    scores = torch.tensor([[-200.0, 200.0]], requires_grad=True)
    loss = _literal(use_focal=True, threshold=0.75, schedule='fixed')
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
    loss = _literal(background_label=0, threshold=0.75, schedule='fixed',
                    avg_non_ignore=True)
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
        _literal()(torch.zeros(2, 3), torch.tensor([0, 5]))
    with pytest.raises(ValueError, match='do not match'):
        _literal()(torch.zeros(2, 3), torch.tensor([0, 1, 2]))


def test_background_sampling_rate_zero_and_one():
    scores, labels = _softmax_case()
    never = _literal(threshold=0.75, schedule='fixed', bg_sampling=0.0, bg_schedule='fixed')
    assert never(scores, labels).item() == pytest.approx(-LN(0.75) / 3)
    always = _literal(threshold=0.75, schedule='fixed', bg_sampling=1.0,
                      bg_schedule='fixed')
    assert always(scores, labels).item() == pytest.approx((-LN(0.75) + LN(2)) / 3)


# ------------------------------------------------------------ agreement with ece-loss 1.0
def _package_margin_share(x, y, epoch):
    """Share of label-0 terms the package keeps: top-2 logit gap <= 0.5 sigmoid((e-50)/10)."""
    top2 = x.topk(2, dim=1).values
    rho = 0.5 / (1 + math.exp(-(epoch - 50) / 10))
    unannotated = y == 0
    return float(((top2[:, 0] - top2[:, 1] <= rho) & unannotated).sum() / unannotated.sum())


@pytest.mark.parametrize('epoch', [40, 55, 200])
def test_agrees_with_package_multiclass(ece_pkg, epoch):
    """Package ExclusiveCrossEntropyLoss (label 0 unannotated, top-2 margin, focal 0.2/0.1,
    sigmoid((epoch - 50) / 10) * 0.5) vs ours with the same settings, sampling off."""
    torch.manual_seed(epoch)
    x = torch.randn(4, 3, 8, 8) * 0.4
    y = torch.randint(0, 3, (4, 8, 8))
    ref = ece_pkg.ExclusiveCrossEntropyLoss(
        background_sampling_annealing=lambda e, t: 1.0)  # uniform [0, 1) <= 1: keep all
    expected = ref(x, y, epoch)
    ours = _literal(background_label=0, confidence='margin', max_threshold=0.5,
                    schedule='package_sigmoid', use_focal=True, reduction='none')
    ours.set_epoch(epoch)
    got = ours(x, y)
    assert torch.allclose(got, expected, atol=1e-6)
    share = _package_margin_share(x, y, epoch)
    assert 0 < share < 1  # the threshold really splits the set at these epochs
    assert ours.last_kept_fraction.item() == pytest.approx(share, rel=1e-6)


def test_agrees_with_package_sampling_same_seed(ece_pkg):
    """With background sampling on, the same seed draws the same uniforms in both."""
    x = torch.randn(2, 3, 6, 6)
    y = torch.randint(0, 3, (2, 6, 6))
    ref = ece_pkg.ExclusiveCrossEntropyLoss()
    ours = _literal(background_label=0, confidence='margin', max_threshold=0.5,
                    schedule='package_sigmoid', use_focal=True, bg_sampling=0.5,
                    reduction='none')
    ours.set_epoch(160)
    torch.manual_seed(1)
    expected = ref(x, y, 160)
    torch.manual_seed(1)
    got = ours(x, y)
    assert torch.allclose(got, expected, atol=1e-6)


def test_agrees_with_package_binary_logits(ece_pkg):
    """Package BECEWithLogitsLoss (label 0 unannotated, raw logit as confidence) vs ours
    with one sigmoid column (mmseg out_channels=1: background 0, nucleus 1)."""
    torch.manual_seed(3)
    x = torch.randn(200)
    y = torch.randint(0, 2, (200, ))
    ref = ece_pkg.BECEWithLogitsLoss(background_sampling_annealing=lambda e, t: 1.0)
    ref.set_unannotated_mapping(ref.zeroth_label_as_unannotated)
    expected = ref(x, y.float(), 70)
    ours = _literal(use_sigmoid=True, background_label=0, confidence='logit',
                    max_threshold=0.5, schedule='package_sigmoid', use_focal=True,
                    reduction='none')
    ours.set_epoch(70)
    got = ours(x[:, None], y)[:, 0]
    assert torch.allclose(got, expected, atol=1e-6)


@pytest.mark.parametrize('use_sigmoid', [True, False])
def test_probability_confidence_agrees_with_package_bce(ece_pkg, use_sigmoid):
    """The paper's confidence (the foreground probability) with one foreground class is the
    package's BECELoss on probabilities (its confidence is the input itself), at a fixed
    threshold 0.6 without focal weights; softmax over (foreground, background) logits
    gives p = sigmoid(l_fg - l_bg) and CE = BCE(p, target)."""
    torch.manual_seed(4)
    x = torch.randn(300) * 2
    y = torch.randint(0, 2, (300, ))  # 0 unannotated, 1 nucleus
    ref = ece_pkg.BECELoss(exclusivity_threshold=0.6,
                           exclusivity_threshold_annealing=lambda e, t: t,
                           background_sampling_annealing=lambda e, t: 1.0,
                           focal_loss_parameters=(1.0, 0.0))
    ref.set_unannotated_mapping(ref.zeroth_label_as_unannotated)
    expected = ref(x.sigmoid(), y.float(), 0)
    ours = _literal(use_sigmoid=use_sigmoid, background_label=0, threshold=0.6,
                    schedule='fixed', reduction='none')
    if use_sigmoid:
        got = ours(x[:, None], y)[:, 0]
    else:  # columns (background, nucleus)
        got = ours(torch.stack([torch.zeros_like(x), x], 1), y)
    assert torch.allclose(got, expected, atol=1e-5)
    dropped = (y == 0) & (x.sigmoid() >= 0.6)
    assert int(dropped.sum()) > 0 and bool((got[dropped] == 0).all())


def test_plain_function_matches_module():
    torch.manual_seed(5)
    x, y = torch.randn(30, 3), torch.randint(0, 3, (30, ))
    loss, kept, unannotated = exclusive_ce(x, y, 0.6)
    assert torch.equal(kept, unannotated & (1 - x.softmax(1)[:, 2] < 0.6))
    module = _literal(threshold=0.6, schedule='fixed', reduction='none')
    assert torch.allclose(module(x, y), loss)
