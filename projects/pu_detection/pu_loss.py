"""Positive-unlabeled (PU) classification risk for detection heads.

Zhao, Z., Pang, F., Liu, Z., Ye, C., "Positive-unlabeled Learning for Cell Detection in
Histopathology Images with Incomplete Annotations", MICCAI 2021 (``papers/pu_detection``).

``pu_risk`` is the maths of eq. (12); ``PULoss`` adapts it to mmdet's ``loss_cls``
contract (RoI head softmax scores, RPN sigmoid scores).
"""
from numbers import Real
from typing import Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from projects.common.registry import MODELS, register

Prior = Union[float, Sequence[float]]
MODES = ('detection', 'classic')


def _check_prior(prior: Prior, where: str) -> Union[float, tuple]:
    """Validate a prior: a float in (0, 1), or per-class values in (0, 1) summing to < 1."""
    if isinstance(prior, Real) and not isinstance(prior, bool):
        if not 0.0 < float(prior) < 1.0:
            raise ValueError(f'{where}: prior must lie in (0, 1), got {prior}')
        return float(prior)
    if isinstance(prior, (list, tuple)) and len(prior) > 0 and all(
            isinstance(p, Real) and not isinstance(p, bool) for p in prior):
        values = tuple(float(p) for p in prior)
        if any(not 0.0 < p < 1.0 for p in values) or sum(values) >= 1.0:
            raise ValueError(f'{where}: per-class priors must each lie in (0, 1) and sum to '
                             f'less than 1, got {list(values)}')
        return values
    raise ValueError(f'{where}: prior must be a float or a non-empty sequence of floats '
                     f'(one per foreground class), got {prior!r}')


def _wmean(values: Tensor, w: Tensor) -> Tensor:
    """Weighted mean sum(w * v) / sum(w); 0 (with a graph) when sum(w) == 0."""
    total = w.sum()
    return (w * values).sum() / total.clamp(min=torch.finfo(values.dtype).tiny)


def pu_risk(h_neg: Tensor,
            h_pos: Tensor,
            is_pos: Tensor,
            prior: Prior,
            mode: str = 'detection',
            nonnegative: bool = True,
            weight: Optional[Tensor] = None) -> Tensor:
    """Positive-unlabeled classification risk, Zhao et al. 2021, eq. (12).

    L = max(0, E_x[H(c,0)] - pi * mean_P H(c,0)) + pi * mean_P H(c,1), eqs. (9), (11), (12).

    Args:
        h_neg / h_pos: (N,) per-sample losses H(c, 0) / H(c, 1) (H(c, 1) is only read
            for labelled positives).
        is_pos: (N,) bool marking labelled positives (P; the rest is unlabeled, U), or an
            integer tensor with the positive's class index 0..K-1 and -1 for unlabeled
            (required when ``prior`` is per class).
        prior: pi. A float: all positives form one class (the paper's binary risk). A
            sequence of K values pi_k: our multi-class generalisation of eq. (9),
            sum_k pi_k mean_{P_k} H(c,k) + max(0, E_x[H(c,0)] - sum_k pi_k mean_{P_k} H(c,0)).
        mode: 'detection' estimates E_x[H(c,0)] by the mean over P u U (eq. 10);
            'classic' by the mean over U only (the ablation of sect. 3.2).
        nonnegative: apply the max(0, .) of eq. (11); False gives the unbiased risk (9).
        weight: (N,) non-negative sample weights (mmdet's label_weights). Every mean is a
            weighted mean normalised by the summed weights of its own set, so 0-weight
            samples are excluded everywhere and binary weights normalise by real counts.

    Empty sets: a mean over an empty set is 0. With no positive the risk reduces to the
    (weighted) mean of H(c,0) over U, i.e. plain cross-entropy with every sample negative.
    With no sample at all the result is 0 with a graph attached.
    """
    if mode not in MODES:
        raise ValueError(f'pu_risk: mode must be one of {MODES}, got {mode!r}')
    prior = _check_prior(prior, 'pu_risk')
    if h_neg.dim() != 1 or h_pos.shape != h_neg.shape or is_pos.shape != h_neg.shape:
        raise ValueError(f'pu_risk: h_neg, h_pos and is_pos must all have shape (N,), got '
                         f'{tuple(h_neg.shape)}, {tuple(h_pos.shape)}, {tuple(is_pos.shape)}')
    if weight is None:
        weight = torch.ones_like(h_neg)
    else:
        if weight.shape != h_neg.shape:
            raise ValueError(f'pu_risk: weight must have shape {tuple(h_neg.shape)}, got '
                             f'{tuple(weight.shape)}')
        if bool((weight < 0).any()):
            raise ValueError('pu_risk: weight has negative entries')
        weight = weight.to(h_neg.dtype)

    # positive class index per sample: -1 = unlabeled
    if is_pos.dtype == torch.bool:
        pos_class = torch.where(is_pos, 0, -1)
    elif not torch.is_floating_point(is_pos):
        pos_class = is_pos.long()
    else:
        raise ValueError(f'pu_risk: is_pos must be bool or integer, got {is_pos.dtype}')
    if isinstance(prior, float):
        pos_class = torch.where(pos_class >= 0, 0, -1)
        priors = (prior, )
    else:
        priors = prior
        if bool(((pos_class < -1) | (pos_class >= len(priors))).any()):
            raise ValueError(f'pu_risk: with {len(priors)} per-class priors is_pos must hold '
                             f'class indices in [-1, {len(priors) - 1}]')

    if h_neg.numel() == 0 or not bool((weight > 0).any()):
        return (h_neg.sum() + h_pos.sum()) * 0.0

    unl = (pos_class < 0).to(h_neg.dtype)
    if mode == 'detection':
        e_x_neg = _wmean(h_neg, weight)  # eq. (10): P u U
    else:
        e_x_neg = _wmean(h_neg, weight * unl)  # classic PU: U only
    neg_part = e_x_neg
    pos_part = h_neg.new_zeros(())
    for k, pi_k in enumerate(priors):
        w_k = weight * (pos_class == k).to(h_neg.dtype)
        neg_part = neg_part - pi_k * _wmean(h_neg, w_k)
        pos_part = pos_part + pi_k * _wmean(h_pos, w_k)
    if nonnegative:
        neg_part = neg_part.clamp(min=0.0)  # eq. (11)
    return neg_part + pos_part


@register(MODELS)
class PULoss(nn.Module):
    """Drop-in ``loss_cls`` for mmdet heads implementing :func:`pu_risk` (eq. 12).

    Positives are samples labelled with a foreground class; unlabeled ones are those
    labelled background. H(c, y) is the per-sample loss the stock cross-entropy would
    give for label y:

    - softmax (``use_sigmoid=False``, RoI head): scores (N, C+1), background = C;
      H(c, k) = -log softmax(c)_k, H(c, 0) = -log softmax(c)_C.
    - sigmoid (``use_sigmoid=True``, RPN): scores (N, C), label C = background;
      H(c, k) = sum_j BCE(c_j, onehot_k(j)), H(c, 0) = sum_j BCE(c_j, 0). For C = 1
      (mmdet's RPN) this is BCE(c, 1) / BCE(c, 0); for C > 1 a positive of class k is
      also a negative of the other classes, exactly as mmdet's sigmoid cross-entropy.

    Args:
        prior: pi, a float (all foreground classes pooled: the paper's binary risk) or
            one value per foreground class (see :func:`pu_risk`).
        mode: 'detection' (eq. 10) or 'classic' (unlabeled-only estimate).
        nonnegative: the max(0, .) of eq. (11).
        use_sigmoid: sigmoid (RPN) or softmax (RoI head) scores.
        loss_weight: multiplies the risk.
        reduction: only 'mean'. A risk is a single mean over the batch; a per-sample
            ('none') or summed value is not defined, so other values raise ValueError.

    ``avg_factor`` is accepted and ignored: the risk normalises every mean by the
    (weighted) number of samples of its own set (P, U or P u U).
    The clamp is applied once per call: the caller must pass the whole batch at once.
    """

    # same contract as mmdet's CrossEntropyLoss: the head adds the background channel,
    # applies softmax/sigmoid itself and computes the accuracy itself.
    custom_cls_channels = False
    custom_activation = False
    custom_accuracy = False

    def __init__(self,
                 prior: Prior,
                 mode: str = 'detection',
                 nonnegative: bool = True,
                 use_sigmoid: bool = False,
                 loss_weight: float = 1.0,
                 reduction: str = 'mean') -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f'PULoss: mode must be one of {MODES}, got {mode!r}')
        self._check_reduction(reduction)
        self.prior = _check_prior(prior, 'PULoss')
        self.mode = mode
        self.nonnegative = bool(nonnegative)
        self.use_sigmoid = bool(use_sigmoid)
        self.loss_weight = float(loss_weight)
        self.reduction = reduction

    @staticmethod
    def _check_reduction(reduction: Optional[str]) -> None:
        if reduction not in (None, 'mean'):
            raise ValueError(f"PULoss: reduction must be 'mean' (the PU risk is one mean "
                             f'over the batch, not a per-sample or summed loss), got '
                             f'{reduction!r}')

    def extra_repr(self) -> str:
        return (f'prior={self.prior}, mode={self.mode!r}, nonnegative={self.nonnegative}, '
                f'use_sigmoid={self.use_sigmoid}, loss_weight={self.loss_weight}')

    def per_sample_losses(self, cls_score: Tensor, label: Tensor) -> tuple:
        """Return (h_neg, h_pos, num_classes) for mmdet-style scores and labels."""
        if cls_score.dim() != 2:
            raise ValueError(f'PULoss: cls_score must have shape (N, C), got '
                             f'{tuple(cls_score.shape)}')
        if label.shape != cls_score.shape[:1]:
            raise ValueError(f'PULoss: label must have shape ({cls_score.shape[0]},), got '
                             f'{tuple(label.shape)}')
        num_classes = cls_score.shape[1] if self.use_sigmoid else cls_score.shape[1] - 1
        if num_classes < 1:
            raise ValueError(f'PULoss: cls_score with {cls_score.shape[1]} channels has no '
                             f'foreground class (use_sigmoid={self.use_sigmoid})')
        label = label.long()
        if label.numel() and bool(((label < 0) | (label > num_classes)).any()):
            raise ValueError(f'PULoss: labels must lie in [0, {num_classes}] '
                             f'({num_classes} = background), got min {int(label.min())} '
                             f'max {int(label.max())}')
        if self.use_sigmoid:
            target = F.one_hot(label, num_classes + 1)[:, :num_classes].to(cls_score.dtype)
            h_pos = F.binary_cross_entropy_with_logits(
                cls_score, target, reduction='none').sum(dim=1)
            h_neg = F.softplus(cls_score).sum(dim=1)  # BCE(c, 0) = log(1 + e^c)
        else:
            logp = F.log_softmax(cls_score, dim=1)
            h_pos = -logp.gather(1, label[:, None]).squeeze(1)
            h_neg = -logp[:, num_classes]
        return h_neg, h_pos, num_classes

    def forward(self,
                cls_score: Tensor,
                label: Tensor,
                weight: Optional[Tensor] = None,
                avg_factor: Optional[float] = None,
                reduction_override: Optional[str] = None) -> Tensor:
        """PU risk of a batch; ``avg_factor`` is ignored (see the class docstring)."""
        self._check_reduction(reduction_override)
        h_neg, h_pos, num_classes = self.per_sample_losses(cls_score, label)
        if weight is not None:
            if weight.dim() == 2 and weight.shape[1] == 1:
                weight = weight[:, 0]
            if weight.shape != h_neg.shape:
                raise ValueError(f'PULoss: weight must have shape ({h_neg.shape[0]},), got '
                                 f'{tuple(weight.shape)}')
            weight = weight.to(cls_score.dtype)
        if h_neg.numel() == 0 or (weight is not None and not bool((weight > 0).any())):
            return cls_score.sum() * 0.0
        label = label.long()
        if isinstance(self.prior, float):
            is_pos = label < num_classes
        else:
            if len(self.prior) != num_classes:
                raise ValueError(f'PULoss: {len(self.prior)} per-class priors given but the '
                                 f'scores have {num_classes} foreground classes')
            is_pos = torch.where(label < num_classes, label, -1)
        risk = pu_risk(h_neg, h_pos, is_pos, self.prior, mode=self.mode,
                       nonnegative=self.nonnegative, weight=weight)
        return self.loss_weight * risk
