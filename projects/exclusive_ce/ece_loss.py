"""Exclusive (focal) cross-entropy, Panteli et al., ICCV 2021, eqs. (7)-(8).

Unannotated samples (the background label: detection cells/anchors without a box,
background pixels in segmentation) are weak negatives. Eq. (7) keeps such a term only
while the prediction is not confident, ``delta(p_i < rho)``, with the threshold ``rho``
annealed over training; eq. (8) re-weights the kept unannotated terms by the focal factor
``u(q) = -alpha (1 - q)^gamma log q`` at ``q = 1 - p_i``. Annotated terms are plain
cross-entropy. By default the exclusion starts after a warm-up (``warmup``: the first 10%
of training keep every term): at a uniform start a softmax head's confidence
``1 - p(bg)`` is ``(K - 1) / K``, at or above the sigmoid schedule's starting threshold
0.5, and the literal loss would drop every unannotated term from step 0 on, for good.

:func:`exclusive_ce` is the maths on tensors; :class:`ExclusiveCrossEntropyLoss` adapts it
to mmdet's ``loss_cls`` and mmseg's ``loss_decode`` contracts. The options also cover the
authors' package ``ece-loss`` 1.0.0 (top-2 logit margin or raw logit as the confidence,
``sigmoid((epoch - 50) / 10) * 0.5`` threshold, random background sampling with its own
schedule) so that its settings can be reproduced.
"""
import logging
import math
import warnings
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from mmdet.models.losses.utils import weight_reduce_loss
from mmengine.logging import print_log
from torch import Tensor, nn

from projects.common.registry import MODELS, register

SCHEDULES = ('fixed', 'linear', 'sigmoid', 'package_sigmoid', 'relative_sigmoid')
# the argument that holds each schedule's constant (what :func:`anneal` calls ``value``)
SCHEDULE_ARGS: Dict[str, str] = {
    'fixed': 'threshold', 'linear': 'max_threshold', 'sigmoid': 'slope',
    'package_sigmoid': 'max_threshold', 'relative_sigmoid': 'max_threshold'}
DEFAULT_SCHEDULE_VALUE = 0.75  # Table 2: rho = 0.75 (fixed), 0.75 rho_t, sigma(0.75 rho_t)
DEFAULT_WARMUP = 0.1  # share of training without exclusion (see ExclusiveCrossEntropyLoss)
CONFIDENCES = ('probability', 'max_foreground', 'margin', 'logit')
# 1 - exp(-ce) is clamped here before the focal power: (.)^gamma with gamma < 1 has an
# infinite derivative at 0, and autograd would turn inf * 0 into NaN for a term whose
# cross-entropy underflows to 0. The value changes by less than 1e-12**gamma * ce.
_FOCAL_EPS = 1e-12


def anneal(schedule: str, value: float, epoch: float = 0.0, progress: float = 0.0,
           center: float = 50.0, temperature: float = 10.0) -> float:
    """The exclusivity threshold (or sampling rate) at a point of training.

    ``progress`` is the trained fraction in [0, 1], ``epoch`` the (possibly fractional)
    epoch. ``value`` is what :class:`ExclusiveCrossEntropyLoss` calls ``threshold``
    ('fixed'), ``max_threshold`` ('linear', 'package_sigmoid', 'relative_sigmoid') or
    ``slope`` ('sigmoid'). Panteli et al. 2021, Table 2: 'fixed' ``value``; 'linear'
    ``value * progress`` (``rho = 0.75 rho_t, rho_t: 0 -> 1``); 'sigmoid'
    ``sigmoid(value * progress)`` (``rho = sigma(rho_linear)``, read literally: it moves
    from 0.5 to sigma(value)). 'package_sigmoid' is the ``ece-loss`` package's
    ``sigmoid((epoch - center) / temperature) * value``; 'relative_sigmoid' is the same
    form over the trained fraction, ``sigmoid((progress - center) / temperature) * value``
    (the package's constants for its 300-epoch runs become center 50/300 and 150/300,
    temperature 10/300: the package's schedule rescaled to any length of training).
    """
    if schedule == 'fixed':
        return float(value)
    if schedule == 'linear':
        return float(value) * float(progress)
    if schedule == 'sigmoid':
        return 1.0 / (1.0 + math.exp(-float(value) * float(progress)))
    if schedule in ('package_sigmoid', 'relative_sigmoid'):
        t = float(epoch) if schedule == 'package_sigmoid' else float(progress)
        z = (t - center) / temperature
        return float(value) / (1.0 + math.exp(-z)) if z > -700 else 0.0
    raise ValueError(f'anneal: schedule must be one of {SCHEDULES}, got {schedule!r}')


def _focal(ce: Tensor, alpha: float, gamma: float) -> Tensor:
    """Eq. (8)'s ``u(1 - p) = -alpha p^gamma log(1 - p)`` written through the term's own
    cross-entropy ``ce = -log(1 - p)`` (so ``p = 1 - exp(-ce)``)."""
    p = (-torch.expm1(-ce)).clamp(min=_FOCAL_EPS)
    return alpha * p.pow(gamma) * ce


def exclusive_ce(cls_score: Tensor, label: Tensor, threshold: float,
                 use_sigmoid: bool = False, background_label: Optional[int] = None,
                 confidence: str = 'probability', use_focal: bool = False,
                 alpha: float = 0.2, gamma: float = 0.1, sampling_rate: Optional[float] = None,
                 ignore_index: int = -100) -> Tuple[Tensor, Tensor, Tensor]:
    """Element-wise exclusive cross-entropy, eq. (7) (eq. (8) with ``use_focal``).

    Args:
        cls_score: logits (N, K, *) with the classes on dim 1.
        label: (N, *) integer labels; ``ignore_index`` marks ignored samples (loss 0).
        threshold: the current exclusivity threshold ``rho``; an unannotated term is kept
            while its confidence is below it.
        use_sigmoid: False: softmax over K classes, background = ``background_label``
            (default K - 1, mmdet's convention). True: K independent sigmoid columns for
            the foreground classes; ``background_label`` (default K) is the label without
            a column and the other labels map to the columns in order.
        confidence: 'probability' (the paper): foreground probability, ``1 - p(bg)``
            (softmax) or each column's sigmoid; 'max_foreground': the largest foreground
            class probability (softmax; = 'probability' with one foreground class or
            sigmoid columns); 'margin' (package, softmax only): gap between the top-2
            logits; 'logit' (package, sigmoid only): the raw logit. ``threshold=inf``
            keeps every term (the warm-up).
        use_focal, alpha, gamma: eq. (8) on the unannotated terms only.
        sampling_rate: if set, each unannotated term is also kept only with this
            probability (the package's background sampling, uniform draws).

    Returns:
        ``(loss, kept, unannotated)``: the unreduced loss, (N, *) for softmax and
        (N, K, *) for sigmoid; the boolean masks of the unannotated terms that were kept
        and of all unannotated terms (same shape).
    """
    if cls_score.dim() < 2 or cls_score.shape[0] != label.shape[0] \
            or cls_score.shape[2:] != label.shape[1:]:
        raise ValueError(f'exclusive_ce: cls_score {tuple(cls_score.shape)} and label '
                         f'{tuple(label.shape)} do not match ((N, K, *) and (N, *))')
    if confidence not in CONFIDENCES:
        raise ValueError(f'exclusive_ce: confidence must be one of {CONFIDENCES}, '
                         f'got {confidence!r}')
    k = cls_score.shape[1]
    label = label.long()
    valid = label != ignore_index
    if use_sigmoid:
        if confidence == 'margin':
            raise ValueError("exclusive_ce: confidence='margin' needs softmax scores "
                             '(use_sigmoid=False)')
        bg = k if background_label is None else int(background_label)
        if not 0 <= bg <= k:
            raise ValueError(f'exclusive_ce: background_label {bg} outside 0..{k} for {k} '
                             'sigmoid columns')
        unannotated = (label == bg) & valid
        column = torch.where(label > bg, label - 1, label)
        target = torch.zeros_like(cls_score)
        fg = valid & ~unannotated
        if fg.any() and (column[fg].min() < 0 or column[fg].max() >= k):
            raise ValueError(f'exclusive_ce: labels must lie in 0..{k} (sigmoid, '
                             f'{k} columns) or be ignore_index={ignore_index}')
        target.scatter_(1, column.clamp(0, k - 1).unsqueeze(1), fg.unsqueeze(1).to(target))
        ce = F.binary_cross_entropy_with_logits(cls_score, target, reduction='none')
        ce = ce * valid.unsqueeze(1)
        unannotated = unannotated.unsqueeze(1).expand_as(ce)
        conf = cls_score if confidence == 'logit' else cls_score.sigmoid()
    else:
        if confidence == 'logit':
            raise ValueError("exclusive_ce: confidence='logit' needs sigmoid scores "
                             '(use_sigmoid=True)')
        bg = k - 1 if background_label is None else int(background_label)
        if not 0 <= bg < k:
            raise ValueError(f'exclusive_ce: background_label {bg} outside 0..{k - 1} for '
                             f'{k} softmax classes')
        if valid.any() and (label[valid].min() < 0 or label[valid].max() >= k):
            raise ValueError(f'exclusive_ce: labels must lie in 0..{k - 1} or be '
                             f'ignore_index={ignore_index}')
        unannotated = (label == bg) & valid
        ce = F.cross_entropy(cls_score, label.masked_fill(~valid, bg), reduction='none')
        ce = ce * valid
        if confidence == 'margin':
            top2 = cls_score.detach().topk(2, dim=1).values
            conf = top2[:, 0] - top2[:, 1]
        elif confidence == 'max_foreground':
            prob = cls_score.detach().softmax(dim=1)
            conf = prob.index_fill(1, prob.new_tensor([bg], dtype=torch.long), 0.0).amax(1)
        else:
            conf = 1.0 - cls_score.detach().softmax(dim=1).select(1, bg)
    kept = unannotated & (conf.detach() < threshold)
    if sampling_rate is not None:
        kept = kept & (torch.rand(kept.shape, device=kept.device) < sampling_rate)
    weak = _focal(ce, alpha, gamma) if use_focal else ce
    loss = torch.where(unannotated, weak * kept, ce)
    return loss, kept, unannotated


_MEANINGS = {'threshold': 'threshold', 'max_threshold': 'maximum (the value it tends to)',
             'slope': 'slope (rho = sigmoid(slope * progress))'}


def schedule_constants(schedule: str, threshold: Optional[float] = None,
                       max_threshold: Optional[float] = None, slope: Optional[float] = None,
                       owner: str = 'ExclusiveCrossEntropyLoss') -> Dict[str, Optional[float]]:
    """``{'threshold', 'max_threshold', 'slope'}`` with only ``schedule``'s own constant set
    (:data:`SCHEDULE_ARGS`; :data:`DEFAULT_SCHEDULE_VALUE` if not given).

    ``threshold`` given to a schedule whose constant is a maximum or a slope is the old
    spelling of that constant: it is mapped to it with a DeprecationWarning. A constant of
    another schedule, or both spellings at once, is a ValueError naming the argument.
    """
    if schedule not in SCHEDULE_ARGS:
        raise ValueError(f'{owner}: schedule must be one of {SCHEDULES}, got {schedule!r}')
    own = SCHEDULE_ARGS[schedule]
    values = dict(threshold=threshold, max_threshold=max_threshold, slope=slope)
    for arg in ('max_threshold', 'slope'):
        if values[arg] is not None and arg != own:
            users = tuple(s for s, a in SCHEDULE_ARGS.items() if a == arg)
            raise ValueError(f'{owner}: {arg} is the constant of schedule {users}, not of '
                             f'schedule={schedule!r}, whose constant is {own}')
    if threshold is not None and own != 'threshold':
        if values[own] is not None:
            raise ValueError(f'{owner}: threshold and {own} both given for schedule='
                             f'{schedule!r}; give {own} only (threshold is its old name)')
        msg = (f'{owner}: threshold={threshold} with schedule={schedule!r} is deprecated: '
               f'it is the schedule\'s {_MEANINGS[own]}; write {own}={threshold}')
        warnings.warn(msg, DeprecationWarning, stacklevel=3)
        print_log(msg, logger='current', level=logging.WARNING)
        values[own], values['threshold'] = threshold, None
    if values[own] is None:
        values[own] = DEFAULT_SCHEDULE_VALUE
    values[own] = float(values[own])
    return values


@register(MODELS)
class ExclusiveCrossEntropyLoss(nn.Module):
    """Exclusive (focal) cross-entropy as an mmdet ``loss_cls`` / mmseg ``loss_decode``.

    Panteli et al. 2021, eq. (7); eq. (8) with ``use_focal=True``. See
    :func:`exclusive_ce` for the maths and :func:`anneal` for the schedules; the threshold
    and sampling rate follow the training progress pushed by ``ExclusivityScheduleHook``
    (:meth:`set_progress`; :meth:`set_epoch` as in the ``ece-loss`` package). Before any
    push the loss is at epoch 0, progress 0.

    Args:
        use_sigmoid: sigmoid columns for the foreground classes (mmdet's RPN / sigmoid
            heads, mmseg's ``out_channels=1``) instead of softmax.
        use_focal, alpha, gamma: focal re-weighting of the unannotated terms, eq. (8)
            (defaults: the package's alpha 0.2, gamma 0.1).
        confidence: 'probability' | 'max_foreground' | 'margin' | 'logit'
            (:func:`exclusive_ce`).
        schedule: how the exclusivity threshold ``rho`` moves (:func:`anneal`; default the
            paper's sigmoid schedule). Its constant has one name per meaning:
            ``threshold`` ('fixed': rho itself), ``max_threshold`` ('linear',
            'package_sigmoid', 'relative_sigmoid': the value rho tends to) or ``slope``
            ('sigmoid': rho = sigmoid(slope * progress)); 0.75 if not given (Table 2).
            ``threshold`` with another schedule still works, as that schedule's constant,
            with a DeprecationWarning.
        center, temperature: of 'package_sigmoid' (epochs) / 'relative_sigmoid' (progress).
        warmup: share of training (progress in [0, 1]) during which every unannotated term
            is kept: no exclusion and no background sampling (cross-entropy; with
            ``use_focal`` the focal weights still apply). Default 0.1 (30 iterations of
            the 300-iteration configs): at a uniform start a softmax head's ``1 - p(bg)``
            is (K - 1) / K >= 0.5, the starting threshold, and the loss would drop every
            unannotated term from step 0 on, for good (0% kept with mmdet's and mmseg's
            stock heads for K >= 3). ``warmup=0`` is the literal paper (and the
            ``ece-loss`` package's timing). Needs the progress pushed by the hook.
        bg_sampling, bg_schedule, bg_center, bg_temperature: optional random sampling of
            unannotated terms (the package: 0.5, 'package_sigmoid', 150, 10);
            ``bg_sampling`` is the constant of ``bg_schedule`` (:func:`anneal`).
        background_label: the unannotated label. None: the last softmax class (mmdet
            softmax heads) or the column-less label K (mmdet sigmoid heads). mmseg
            configs must set it (usually 0): an mmseg call without it is an error.
        ignore_index: default ignored label (mmseg passes its own at every call).
        avg_non_ignore: mmseg's option: a mean over the non-ignored samples only.
        reduction, loss_weight, loss_name: as mmdet / mmseg losses.

    Excluded terms count as zeros in the mean (the paper's "learning rate dynamically set
    to zero"): the denominator is the one of plain cross-entropy.
    """

    def __init__(self, use_sigmoid: bool = False, use_focal: bool = False,
                 alpha: float = 0.2, gamma: float = 0.1, confidence: str = 'probability',
                 threshold: Optional[float] = None, schedule: str = 'sigmoid',
                 center: float = 50.0, temperature: float = 10.0,
                 bg_sampling: Optional[float] = None, bg_schedule: str = 'package_sigmoid',
                 bg_center: float = 150.0, bg_temperature: float = 10.0,
                 background_label: Optional[int] = None, ignore_index: int = -100,
                 avg_non_ignore: bool = False, reduction: str = 'mean',
                 loss_weight: float = 1.0, loss_name: str = 'loss_ece',
                 max_threshold: Optional[float] = None, slope: Optional[float] = None,
                 warmup: float = DEFAULT_WARMUP) -> None:
        super().__init__()
        name = type(self).__name__
        for arg, value, allowed in (('schedule', schedule, SCHEDULES),
                                    ('bg_schedule', bg_schedule, SCHEDULES),
                                    ('confidence', confidence, CONFIDENCES),
                                    ('reduction', reduction, ('none', 'mean', 'sum'))):
            if value not in allowed:
                raise ValueError(f'{name}: {arg} must be one of {allowed}, got {value!r}')
        if confidence == 'margin' and use_sigmoid:
            raise ValueError(f"{name}: confidence='margin' needs use_sigmoid=False")
        if confidence == 'logit' and not use_sigmoid:
            raise ValueError(f"{name}: confidence='logit' needs use_sigmoid=True")
        if temperature <= 0 or bg_temperature <= 0:
            raise ValueError(f'{name}: temperature and bg_temperature must be > 0')
        if bg_sampling is not None and not 0 <= bg_sampling <= 1:
            raise ValueError(f'{name}: bg_sampling must lie in [0, 1], got {bg_sampling}')
        if alpha <= 0 or gamma < 0:
            raise ValueError(f'{name}: focal alpha must be > 0 and gamma >= 0, got '
                             f'{alpha}, {gamma}')
        if isinstance(warmup, bool) or not isinstance(warmup, (int, float)) \
                or not 0.0 <= warmup <= 1.0:
            raise ValueError(f'{name}: warmup must be a share of training in [0, 1], got '
                             f'{warmup!r}')
        if not loss_name.startswith('loss_'):
            raise ValueError(f'{name}: loss_name must start with "loss_" (mmengine only '
                             f'back-propagates such keys), got {loss_name!r}')
        constants = schedule_constants(schedule, threshold, max_threshold, slope, name)
        self.use_sigmoid = use_sigmoid
        self.use_focal = use_focal
        self.alpha, self.gamma = float(alpha), float(gamma)
        self.confidence = confidence
        self.schedule = schedule
        self.threshold: Optional[float] = constants['threshold']
        self.max_threshold: Optional[float] = constants['max_threshold']
        self.slope: Optional[float] = constants['slope']
        self.center, self.temperature = float(center), float(temperature)
        self.warmup = float(warmup)
        self.bg_sampling, self.bg_schedule = bg_sampling, bg_schedule
        self.bg_center, self.bg_temperature = float(bg_center), float(bg_temperature)
        self.background_label = background_label
        self.ignore_index = ignore_index
        self.avg_non_ignore = avg_non_ignore
        self.reduction = reduction
        self.loss_weight = loss_weight
        self._loss_name = loss_name
        self.epoch = 0.0
        self.progress = 0.0
        self.last_kept_fraction: Optional[Tensor] = None
        self._progress_pushed = False
        self._warned = set()

    @property
    def loss_name(self) -> str:
        """Key of this loss in mmseg's loss dict."""
        return self._loss_name

    def set_progress(self, epoch: float, progress: float) -> None:
        """Training position: ``epoch`` (fractional in iteration loops) and ``progress``
        (trained fraction of the schedule, in [0, 1])."""
        self.epoch = float(epoch)
        self.progress = min(max(float(progress), 0.0), 1.0)
        self._progress_pushed = True

    def set_epoch(self, epoch: float) -> None:
        """The ``ece-loss`` package's interface: only the epoch (the progress, which ends
        the warm-up, does not move)."""
        self.epoch = float(epoch)
        if self.warmup > 0 and not self._progress_pushed:
            self._warn_once('set_epoch', 'set_epoch does not move the training progress, '
                            f'so the warm-up (warmup={self.warmup}) never ends: use '
                            'set_progress (ExclusivityScheduleHook) or warmup=0')

    def current_threshold(self) -> float:
        """The exclusivity threshold ``rho`` of the schedule at the current position (during
        the warm-up the loss uses none: see :meth:`in_warmup`)."""
        return anneal(self.schedule, getattr(self, SCHEDULE_ARGS[self.schedule]), self.epoch,
                      self.progress, self.center, self.temperature)

    def in_warmup(self) -> bool:
        """True while ``progress < warmup``: no unannotated term is excluded or sampled."""
        return self.progress < self.warmup

    def current_sampling_rate(self) -> Optional[float]:
        """The background sampling rate at the current position (None: no sampling)."""
        if self.bg_sampling is None:
            return None
        return anneal(self.bg_schedule, self.bg_sampling, self.epoch, self.progress,
                      self.bg_center, self.bg_temperature)

    def forward(self, cls_score: Tensor, label: Tensor, weight: Optional[Tensor] = None,
                avg_factor: Optional[float] = None, reduction_override: Optional[str] = None,
                ignore_index: Optional[int] = None, **kwargs) -> Tensor:
        """mmdet: ``(N, K)`` scores and ``(N,)`` labels with per-sample ``weight``;
        mmseg: ``(N, K, H, W)`` logits and ``(N, H, W)`` labels, ``ignore_index`` given.
        """
        if ignore_index is not None and self.background_label is None:
            raise ValueError(
                f'{type(self).__name__}: called by an mmseg decode head (ignore_index given) '
                'but background_label is not set; set it in the config (usually 0, the '
                'background class) so that unannotated pixels are the right ones')
        reduction = reduction_override or self.reduction
        if reduction not in ('none', 'mean', 'sum'):
            raise ValueError(f'{type(self).__name__}: unknown reduction {reduction!r}')
        if self.training and self.warmup > 0 and not self._progress_pushed:
            self._warn_once('no_progress', 'called in training before any training position '
                            'was pushed: it stays in its warm-up (no exclusion) until '
                            'ExclusivityScheduleHook (or set_progress) moves the progress')
        ignore = self.ignore_index if ignore_index is None else ignore_index
        warm = self.in_warmup()
        loss, kept, unannotated = exclusive_ce(
            cls_score, label, math.inf if warm else self.current_threshold(),
            use_sigmoid=self.use_sigmoid, background_label=self.background_label,
            confidence=self.confidence, use_focal=self.use_focal, alpha=self.alpha,
            gamma=self.gamma, sampling_rate=None if warm else self.current_sampling_rate(),
            ignore_index=ignore)
        self._record_kept(kept, unannotated)
        if weight is not None:
            weight = weight.float()
            if self.use_sigmoid and weight.dim() == loss.dim() - 1:
                weight = weight.unsqueeze(1)  # per-sample weight over the columns
            if weight.dim() < loss.dim():
                weight = weight.reshape(weight.shape + (1, ) * (loss.dim() - weight.dim()))
        if avg_factor is None and reduction == 'mean' and self.avg_non_ignore:
            avg_factor = (label != ignore).sum().item() * (loss.shape[1]
                                                          if self.use_sigmoid else 1)
        loss = weight_reduce_loss(loss, weight, reduction, avg_factor)
        return self.loss_weight * loss

    def _record_kept(self, kept: Tensor, unannotated: Tensor) -> None:
        """Share of the unannotated terms kept in the last call (logged by the hook)."""
        with torch.no_grad():
            self.last_kept_fraction = kept.sum() / unannotated.sum().clamp(min=1)

    def _warn_once(self, key: str, message: str) -> None:
        """A UserWarning (and a log line) the first time ``key`` happens."""
        if key in self._warned:
            return
        self._warned.add(key)
        message = f'{type(self).__name__}: {message}'
        warnings.warn(message, UserWarning, stacklevel=3)
        print_log(message, logger='current', level=logging.WARNING)
