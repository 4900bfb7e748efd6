"""Positive-unlabeled (PU) classification risk for detection heads.

Zhao, Z., Pang, F., Liu, Z., Ye, C., "Positive-unlabeled Learning for Cell Detection in
Histopathology Images with Incomplete Annotations", MICCAI 2021 (``papers/pu_detection``).
Kiryo, R., Niu, G., du Plessis, M. C., Sugiyama, M., "Positive-Unlabeled Learning with
Non-Negative Risk Estimator", NeurIPS 2017 (the nnPU correction step, Algorithm 1).

``pu_risk`` is the maths of eq. (12) (with :func:`nnpu_risk` for Kiryo et al.'s step and
the per-batch prior of ``hidden_prior``); ``PULoss`` adapts it to mmdet's ``loss_cls``
contract (RoI head softmax scores, RPN / dense-head sigmoid scores). The risk is computed
from a few weighted sums (:func:`pu_sums`), so under DDP the sums are all-reduced and the
clamp is taken once per global batch.
"""
import sys
from contextlib import contextmanager
from numbers import Real
from typing import Dict, Iterator, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from projects.common.registry import MODELS, register

Prior = Union[float, Sequence[float]]
Nonnegative = Union[bool, str]
MODES = ('detection', 'classic')
NONNEGATIVE = (True, False, 'nnpu')
SURROGATES = ('ce', 'sigmoid', 'sigmoid-h0')
# layout of pu_sums: 6 batch sums, then 3 per positive group k
SUM_NAMES = ('w', 'w_h0', 'w_u', 'w_u_h0', 'w_l', 'w_l_h1')
GROUP_SUM_NAMES = ('w_p', 'w_p_h0', 'w_p_h1')
UNSUPPORTED_HEADS = 'GFLHead, TOODHead, RTMDetHead'


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


def _check_hidden_prior(hidden_prior: float, where: str) -> float:
    """pi_U: the share of hidden positives among the unlabeled samples, in [0, 1)."""
    if not isinstance(hidden_prior, Real) or isinstance(hidden_prior, bool) \
            or not 0.0 <= float(hidden_prior) < 1.0:
        raise ValueError(f'{where}: hidden_prior (pi_U, the share of hidden positives among '
                         f'the unlabeled samples) must be a float in [0, 1), got '
                         f'{hidden_prior!r}')
    return float(hidden_prior)


def _check_nonnegative(nonnegative: Nonnegative, beta: float, gamma: float,
                       where: str) -> Nonnegative:
    """Validate ``nonnegative`` (True | False | 'nnpu') and the nnPU constants."""
    if not (nonnegative is True or nonnegative is False or nonnegative == 'nnpu'):
        raise ValueError(f"{where}: nonnegative must be True (eq. 11 clamp), False (unbiased "
                         f"risk) or 'nnpu' (Kiryo et al. correction step), got "
                         f'{nonnegative!r}')
    for name, value in (('beta', beta), ('gamma', gamma)):
        if not isinstance(value, Real) or isinstance(value, bool):
            raise ValueError(f'{where}: {name} must be a number, got {value!r}')
    if not beta >= 0.0:
        raise ValueError(f'{where}: beta must be >= 0, got {beta}')
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f'{where}: gamma must lie in [0, 1] (Kiryo et al.), got {gamma}')
    if nonnegative != 'nnpu' and (beta != 0.0 or gamma != 1.0):
        raise ValueError(f"{where}: beta={beta} / gamma={gamma} only apply to "
                         f"nonnegative='nnpu', got nonnegative={nonnegative!r}")
    return nonnegative


def nnpu_risk(neg_part: Tensor, pos_part: Tensor, beta: float = 0.0,
              gamma: float = 1.0) -> Tensor:
    """Non-negative PU with its correction step: Kiryo et al. 2017, Algorithm 1.

    If neg_part >= -beta the result is pos_part + neg_part (gradient descent on the
    unbiased risk). Otherwise its value is pos_part - beta (the risk with the negative
    part clamped at -beta, as Kiryo et al.'s code reports it; with beta = 0 the clamp of
    eq. 11) while its gradient is that of -gamma * neg_part: gradient ascent on the
    negative part alone, the step discounted by gamma.
    """
    if bool(neg_part.detach() >= -beta):
        return pos_part + neg_part
    ascent = -gamma * neg_part
    return (pos_part - beta).detach() + (ascent - ascent.detach())


def nonnegative_risk(neg_part: Tensor, pos_part: Tensor, nonnegative: Nonnegative = True,
                     beta: float = 0.0, gamma: float = 1.0) -> Tensor:
    """pos + max(0, neg) (True, eq. 11), pos + neg (False, eq. 9) or :func:`nnpu_risk`."""
    if nonnegative == 'nnpu':
        return nnpu_risk(neg_part, pos_part, beta, gamma)
    if nonnegative:
        return pos_part + neg_part.clamp(min=0.0)
    return pos_part + neg_part


def _foreground_one_hot(label: Tensor, num_classes: int, dtype: torch.dtype) -> Tensor:
    """(N, C) one-hot targets of sigmoid heads; label C (background) is all zeros."""
    return F.one_hot(label, num_classes + 1)[:, :num_classes].to(dtype)


def cross_entropies(cls_score: Tensor, label: Tensor, num_classes: int,
                    use_sigmoid: bool) -> Tuple[Tensor, Tensor]:
    """(H(c, 0), H(c, y)) with H the cross-entropy of Zhao et al. eq. (3), as mmdet's
    ``CrossEntropyLoss`` computes it (softmax or sigmoid scores; see :class:`PULoss`)."""
    if use_sigmoid:
        target = _foreground_one_hot(label, num_classes, cls_score.dtype)
        h_pos = F.binary_cross_entropy_with_logits(
            cls_score, target, reduction='none').sum(dim=1)
        return F.softplus(cls_score).sum(dim=1), h_pos  # BCE(c, 0) = log(1 + e^c)
    logp = F.log_softmax(cls_score, dim=1)
    return -logp[:, num_classes], -logp.gather(1, label[:, None]).squeeze(1)


def sigmoid_losses(cls_score: Tensor, label: Tensor, num_classes: int,
                   use_sigmoid: bool) -> Tuple[Tensor, Tensor]:
    """Kiryo et al.'s bounded sigmoid loss l(z, y) = sigmoid(-y z) (their experiments), (H0, Hy).

    Softmax scores (N, C+1): H(c, k) = 1 - softmax(c)_k, H(c, 0) = 1 - softmax(c)_C; with
    one foreground class this is sigmoid(-y z) on the margin z = c_fg - c_bg. Sigmoid
    scores (N, C): H(c, k) = sum_j sigmoid(-y_j c_j) with y_j = +1 for j = k, else -1,
    and H(c, 0) = sum_j sigmoid(c_j). Each term lies in [0, 1], so the ascent of the nnPU
    step cannot run off (its gradient vanishes as a sample saturates).
    """
    if use_sigmoid:
        prob = torch.sigmoid(cls_score)
        target = _foreground_one_hot(label, num_classes, cls_score.dtype)
        h_pos = (target * (1.0 - prob) + (1.0 - target) * prob).sum(dim=1)
        return prob.sum(dim=1), h_pos
    prob = F.softmax(cls_score, dim=1)
    return 1.0 - prob[:, num_classes], 1.0 - prob.gather(1, label[:, None]).squeeze(1)


def _pos_class(is_pos: Tensor, prior: Optional[Prior]) -> Tuple[Tensor, int]:
    """(class index per sample, -1 = unlabeled; number of positive groups)."""
    if is_pos.dtype == torch.bool:
        pos_class = torch.where(is_pos, 0, -1)
    elif not torch.is_floating_point(is_pos):
        pos_class = is_pos.long()
    else:
        raise ValueError(f'pu_risk: is_pos must be bool or integer, got {is_pos.dtype}')
    if prior is None or isinstance(prior, float):  # pooled: one group
        return torch.where(pos_class >= 0, 0, -1), 1
    if bool(((pos_class < -1) | (pos_class >= len(prior))).any()):
        raise ValueError(f'pu_risk: with {len(prior)} per-class priors is_pos must hold '
                         f'class indices in [-1, {len(prior) - 1}]')
    return pos_class, len(prior)


def pu_sums(h_neg: Tensor,
            h_pos: Tensor,
            is_pos: Tensor,
            prior: Optional[Prior] = None,
            weight: Optional[Tensor] = None,
            gt_proposal: Optional[Tensor] = None) -> Tensor:
    """The weighted sums the risk is made of (all-reduced under DDP before the clamp).

    Returns a vector: ``SUM_NAMES`` (w: all samples, u: unlabeled, l: labelled
    positives) then ``GROUP_SUM_NAMES`` for each positive group k (one group for a float
    or no prior, K for per-class priors). The group sums leave out the samples flagged in
    ``gt_proposal`` (arguments: see :func:`pu_risk`).
    """
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
    pos_class, groups = _pos_class(is_pos, prior)
    labelled = pos_class >= 0
    if gt_proposal is None:
        gt_proposal = torch.zeros_like(labelled)
    else:
        if gt_proposal.shape != h_neg.shape or gt_proposal.dtype != torch.bool:
            raise ValueError(f'pu_risk: gt_proposal must be a bool tensor of shape '
                             f'{tuple(h_neg.shape)}, got {gt_proposal.dtype} '
                             f'{tuple(gt_proposal.shape)}')
        if bool((gt_proposal & ~labelled).any()):
            raise ValueError('pu_risk: gt_proposal flags unlabeled samples; ground-truth '
                             'boxes added as proposals are always labelled positives')

    def wsum(mask: Optional[Tensor], h: Optional[Tensor]) -> Tensor:
        w = weight if mask is None else torch.where(mask, weight, 0.0)
        if h is None:
            return w.sum()
        # where(): a non-finite h of an excluded sample must not leak into the sum
        return torch.where(w > 0, w * h, 0.0).sum()

    unl = ~labelled
    rows = [wsum(None, None), wsum(None, h_neg), wsum(unl, None), wsum(unl, h_neg),
            wsum(labelled, None), wsum(labelled, h_pos)]
    for k in range(groups):
        in_k = (pos_class == k) & ~gt_proposal
        rows += [wsum(in_k, None), wsum(in_k, h_neg), wsum(in_k, h_pos)]
    return torch.stack(rows)


def pu_risk_from_sums(sums: Tensor,
                      prior: Optional[Prior] = None,
                      mode: str = 'detection',
                      nonnegative: Nonnegative = True,
                      beta: float = 0.0,
                      gamma: float = 1.0,
                      hidden_prior: Optional[float] = None) -> Tuple[Tensor, Dict[str, Tensor]]:
    """(risk, diagnostics) from :func:`pu_sums`; see :func:`pu_risk` for the formulas.

    Diagnostics (detached scalars): ``neg_part`` (before the clamp), ``prior`` (pi, or
    the per-batch pi_b with ``hidden_prior``), ``labelled_share`` (rho_L).
    """
    if (prior is None) == (hidden_prior is None):
        raise ValueError('pu_risk: give exactly one of prior (fixed pi) and hidden_prior '
                         f'(pi_U), got prior={prior!r}, hidden_prior={hidden_prior!r}')
    groups = 1 if prior is None or isinstance(prior, float) else len(prior)
    if sums.shape != (len(SUM_NAMES) + len(GROUP_SUM_NAMES) * groups, ):
        raise ValueError(f'pu_risk: {tuple(sums.shape)} sums for {groups} positive groups')
    tiny = torch.finfo(sums.dtype).tiny

    def mean(num: Tensor, den: Tensor) -> Tensor:  # 0 for an empty set
        return num / den.clamp(min=tiny)

    w, w_h0, w_u, w_u_h0, w_l, w_l_h1 = sums[:len(SUM_NAMES)]
    group = sums[len(SUM_NAMES):].reshape(groups, len(GROUP_SUM_NAMES))
    rho = mean(w_l, w).detach()
    if not bool(w > 0):
        zero = sums.sum() * 0.0
        return zero, dict(neg_part=zero.detach(), prior=zero.detach(), labelled_share=rho)
    if hidden_prior is None:
        priors = (prior, ) if isinstance(prior, float) else tuple(prior)
        # eq. (10): E_x[H(c,0)] over P u U; classic PU: over U only
        neg = mean(w_h0, w) if mode == 'detection' else mean(w_u_h0, w_u)
        pos = sums.new_zeros(())
        for (w_p, w_p_h0, w_p_h1), pi_k in zip(group, priors):
            neg = neg - pi_k * mean(w_p_h0, w_p)
            pos = pos + pi_k * mean(w_p_h1, w_p)
        pi = sums.new_tensor(sum(priors))
    else:
        # L = rho_L E_L H1 + (1 - rho_L) [pi_U E_P H1 + max(0, E_U H0 - pi_U E_P H0)]
        w_p, w_p_h0, w_p_h1 = group[0]
        pos = rho * mean(w_l_h1, w_l) + (1.0 - rho) * hidden_prior * mean(w_p_h1, w_p)
        neg = (1.0 - rho) * (mean(w_u_h0, w_u) - hidden_prior * mean(w_p_h0, w_p))
        pi = rho + (1.0 - rho) * hidden_prior
    risk = nonnegative_risk(neg, pos, nonnegative, beta, gamma)
    return risk, dict(neg_part=neg.detach(), prior=pi.detach(), labelled_share=rho)


def pu_risk(h_neg: Tensor,
            h_pos: Tensor,
            is_pos: Tensor,
            prior: Optional[Prior],
            mode: str = 'detection',
            nonnegative: Nonnegative = True,
            weight: Optional[Tensor] = None,
            *,
            beta: float = 0.0,
            gamma: float = 1.0,
            hidden_prior: Optional[float] = None,
            gt_proposal: Optional[Tensor] = None) -> Tensor:
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
            None with ``hidden_prior``.
        mode: 'detection' estimates E_x[H(c,0)] by the mean over P u U (eq. 10);
            'classic' by the mean over U only (the ablation of sect. 3.2).
        nonnegative: True: the max(0, .) of eq. (11); False: the unbiased risk (9);
            'nnpu': Kiryo et al.'s correction step (:func:`nnpu_risk`, with beta, gamma).
        weight: (N,) non-negative sample weights (mmdet's label_weights). Every mean is a
            weighted mean normalised by the summed weights of its own set, so 0-weight
            samples are excluded everywhere and binary weights normalise by real counts.
        hidden_prior: pi_U, the share of hidden positives among the unlabeled samples
            (instead of ``prior``; detection mode only). The prior of the batch is then
            pi_b = rho_L + (1 - rho_L) pi_U with rho_L the weighted share of labelled
            positives, and the risk is
            L = rho_L E_L H(c,1)
                + (1 - rho_L) [pi_U E_P H(c,1) + max(0, E_U H(c,0) - pi_U E_P H(c,0))]
            (the nonnegative mode applies to (1 - rho_L) x the bracketed negative part; it
            is eq. 12 with pi = pi_b). hidden_prior = 0 is the weighted mean
            cross-entropy. Positive classes are pooled.
        gt_proposal: (N,) bool marking labelled positives that are ground-truth boxes
            mmdet added as proposals. They are left out of the positive means (mean_P,
            E_P: they are not a sample of the positives the sampler draws, hence of the
            hidden cells) and stay in the batch means (E_x, E_L, rho_L).

    Empty sets: a mean over an empty set is 0. With no positive the risk reduces to the
    (weighted) mean of H(c,0) over U, i.e. plain cross-entropy with every sample negative.
    With no sample at all the result is 0 with a graph attached.
    """
    if mode not in MODES:
        raise ValueError(f'pu_risk: mode must be one of {MODES}, got {mode!r}')
    nonnegative = _check_nonnegative(nonnegative, beta, gamma, 'pu_risk')
    if hidden_prior is not None:
        if prior is not None:
            raise ValueError('pu_risk: give prior (fixed pi) or hidden_prior (pi_U), not both')
        if mode != 'detection':
            raise ValueError("pu_risk: hidden_prior needs mode='detection' (classic mode "
                             "takes prior = the hidden share of U)")
        hidden_prior = _check_hidden_prior(hidden_prior, 'pu_risk')
    else:
        if prior is None:
            raise ValueError('pu_risk: give prior (fixed pi) or hidden_prior (pi_U)')
        prior = _check_prior(prior, 'pu_risk')
    sums = pu_sums(h_neg, h_pos, is_pos, prior, weight, gt_proposal)
    return pu_risk_from_sums(sums, prior, mode, nonnegative, beta, gamma, hidden_prior)[0]


def _all_reduce_sums(sums: Tensor) -> Tuple[Tensor, int]:
    """(global sums with the gradient of the local ones, world size); no-op on one rank."""
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return sums, 1
    total = sums.detach().clone()
    dist.all_reduce(total)
    return sums + (total - sums.detach()), dist.get_world_size()


def _owner(loss: nn.Module, max_depth: int = 12) -> Optional[nn.Module]:
    """The module that called ``loss``: the nearest caller frame whose ``self`` holds
    ``loss`` as a direct child (e.g. the head whose ``loss_cls`` it is); None if none."""
    frame = sys._getframe(2)
    for _ in range(max_depth):
        if frame is None:
            return None
        obj = frame.f_locals.get('self')
        if isinstance(obj, nn.Module) and obj is not loss and any(
                child is loss for child in obj._modules.values()):
            return obj
        frame = frame.f_back
    return None


@register(MODELS)
class PULoss(nn.Module):
    """Drop-in ``loss_cls`` for mmdet heads implementing :func:`pu_risk` (eq. 12).

    Positives are samples labelled with a foreground class; unlabeled ones are those
    labelled background. H(c, y) is (with the default ``surrogate='ce'``) the per-sample
    loss the stock cross-entropy would give for label y:

    - softmax (``use_sigmoid=False``, RoI head): scores (N, C+1), background = C;
      H(c, k) = -log softmax(c)_k, H(c, 0) = -log softmax(c)_C.
    - sigmoid (``use_sigmoid=True``, RPN and one-stage heads): scores (N, C), label C =
      background; H(c, k) = sum_j BCE(c_j, onehot_k(j)), H(c, 0) = sum_j BCE(c_j, 0). For
      C = 1 (mmdet's RPN) this is BCE(c, 1) / BCE(c, 0); for C > 1 a positive of class k
      is also a negative of the other classes, exactly as mmdet's sigmoid cross-entropy.

    Args:
        prior: pi, a float (all foreground classes pooled: the paper's binary risk) or
            one value per foreground class (see :func:`pu_risk`).
        mode: 'detection' (eq. 10) or 'classic' (unlabeled-only estimate).
        nonnegative: True: the max(0, .) of eq. (11), the paper's literal form; False:
            the unbiased risk; 'nnpu': Kiryo et al.'s correction step (:func:`nnpu_risk`).
        use_sigmoid: sigmoid (RPN, one-stage heads) or softmax (RoI head) scores.
        loss_weight: multiplies the risk.
        reduction: only 'mean'. A risk is a single mean over the batch; a per-sample
            ('none') or summed value is not defined, so other values raise ValueError.
        beta, gamma: the constants of the 'nnpu' step (Kiryo et al.: 0 and 1).
        hidden_prior: pi_U instead of ``prior``: the per-batch prior
            pi_b = rho_L + (1 - rho_L) pi_U (:func:`pu_risk`); 0 is the plain supervised
            loss (cross-entropy with ``surrogate='ce'``).
        surrogate: H, the per-sample loss: 'ce' (cross-entropy, the paper's choice),
            'sigmoid' (Kiryo et al.'s bounded sigmoid loss, :func:`sigmoid_losses`) or
            'sigmoid-h0' (the sigmoid loss for H(c, 0), which the nnPU step ascends, and
            cross-entropy for the labelled class H(c, k)).
        hidden_prior_warmup_iters: ramp pi_U linearly from 0 at iteration 0 to its value
            at this iteration (the plain supervised loss as warm-up: cross-entropy with
            ``surrogate='ce'``). The iteration is pushed by
            ``PULossHook`` (a training call without it is an error).
        sync_ddp: under DDP (training, with gradients) all-reduce the sums of
            :func:`pu_sums` before the clamp, so there is one clamp per global batch. Every
            rank then computes the same risk; the gradient of the local sums is scaled by
            the world size so that DDP's averaging gives the gradient of that risk.

    ``avg_factor`` is accepted and ignored: the risk normalises every mean by the
    (weighted) number of samples of its own set (P, U or P u U). After each call
    ``last_stats`` holds the negative part before the clamp, the prior used (pi or pi_b)
    and rho_L, detached (``PULossHook`` logs them).
    The clamp is applied once per call: the caller must pass the whole batch at once.
    Dense heads (RPN, RetinaNet, ATSS, FCOS) call ``loss_cls`` per FPN level or use their
    own flattening: use them through ``PUHeadMixin`` (PURPNHead, PURetinaHead, PUATSSHead,
    PUFCOSHead); a call from any other dense head raises ValueError naming it. Heads with
    (label, score) targets (GFL, TOOD, RTMDet) are not supported.
    """

    # same contract as mmdet's CrossEntropyLoss: the head adds the background channel,
    # applies softmax/sigmoid itself and computes the accuracy itself.
    custom_cls_channels = False
    custom_activation = False
    custom_accuracy = False

    def __init__(self,
                 prior: Optional[Prior] = None,
                 mode: str = 'detection',
                 nonnegative: Nonnegative = True,
                 use_sigmoid: bool = False,
                 loss_weight: float = 1.0,
                 reduction: str = 'mean',
                 beta: float = 0.0,
                 gamma: float = 1.0,
                 hidden_prior: Optional[float] = None,
                 hidden_prior_warmup_iters: int = 0,
                 sync_ddp: bool = True,
                 surrogate: str = 'ce') -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f'PULoss: mode must be one of {MODES}, got {mode!r}')
        self._check_reduction(reduction)
        if surrogate not in SURROGATES:
            raise ValueError(f'PULoss: surrogate must be one of {SURROGATES} (the per-sample '
                             f'loss H), got {surrogate!r}')
        if prior is not None and hidden_prior is not None:
            raise ValueError(f'PULoss: prior={prior!r} (a fixed pi) and hidden_prior='
                             f'{hidden_prior!r} (pi_U, giving a per-batch pi) are exclusive: '
                             'give one')
        if prior is None and hidden_prior is None:
            raise ValueError('PULoss: give prior (a fixed pi, the paper) or hidden_prior '
                             '(pi_U, a per-batch pi)')
        if hidden_prior is not None and mode != 'detection':
            raise ValueError("PULoss: hidden_prior needs mode='detection'; classic mode takes "
                             'prior = the hidden share of the unlabeled samples')
        if not isinstance(hidden_prior_warmup_iters, int) or isinstance(
                hidden_prior_warmup_iters, bool) or hidden_prior_warmup_iters < 0:
            raise ValueError(f'PULoss: hidden_prior_warmup_iters must be an int >= 0, got '
                             f'{hidden_prior_warmup_iters!r}')
        if hidden_prior_warmup_iters and hidden_prior is None:
            raise ValueError('PULoss: hidden_prior_warmup_iters ramps hidden_prior; it needs '
                             'hidden_prior, not prior')
        self.prior = None if prior is None else _check_prior(prior, 'PULoss')
        self.hidden_prior = (None if hidden_prior is None else
                             _check_hidden_prior(hidden_prior, 'PULoss'))
        self.hidden_prior_warmup_iters = hidden_prior_warmup_iters
        self.mode = mode
        self.nonnegative = _check_nonnegative(nonnegative, beta, gamma, 'PULoss')
        self.beta, self.gamma = float(beta), float(gamma)
        self.use_sigmoid = bool(use_sigmoid)
        self.loss_weight = float(loss_weight)
        self.reduction = reduction
        self.sync_ddp = bool(sync_ddp)
        self.surrogate = surrogate
        self.iteration: Optional[int] = None
        self.last_stats: Optional[Dict[str, Tensor]] = None
        self._gt_proposal: Optional[Tensor] = None
        self._calls_in_context = 0

    @staticmethod
    def _check_reduction(reduction: Optional[str]) -> None:
        if reduction not in (None, 'mean'):
            raise ValueError(f"PULoss: reduction must be 'mean' (the PU risk is one mean "
                             f'over the batch, not a per-sample or summed loss), got '
                             f'{reduction!r}')

    def extra_repr(self) -> str:
        prior = (f'prior={self.prior}' if self.hidden_prior is None else
                 f'hidden_prior={self.hidden_prior}, '
                 f'hidden_prior_warmup_iters={self.hidden_prior_warmup_iters}')
        nn_ = (f', beta={self.beta}, gamma={self.gamma}' if self.nonnegative == 'nnpu'
               else '')
        return (f'{prior}, mode={self.mode!r}, nonnegative={self.nonnegative!r}{nn_}, '
                f'use_sigmoid={self.use_sigmoid}, loss_weight={self.loss_weight}, '
                f'surrogate={self.surrogate!r}')

    def set_iter(self, iteration: int) -> None:
        """Training position (``PULossHook`` pushes ``runner.iter`` before each step)."""
        self.iteration = int(iteration)

    def current_hidden_prior(self) -> Optional[float]:
        """pi_U at the current iteration (the warm-up ramp); None with a fixed prior."""
        if self.hidden_prior is None:
            return None
        if self.hidden_prior_warmup_iters == 0:
            return self.hidden_prior
        it = 0 if self.iteration is None else self.iteration
        return self.hidden_prior * min(1.0, it / self.hidden_prior_warmup_iters)

    @contextmanager
    def sample_flags(self, gt_proposal: Tensor) -> Iterator['PULoss']:
        """Within the block, calls get ``gt_proposal`` (see :func:`pu_risk`); used by
        ``PURoIHead``. ``self._calls_in_context`` counts the calls made in the block."""
        if self._gt_proposal is not None:
            raise RuntimeError('PULoss.sample_flags: already inside a sample_flags block')
        self._gt_proposal, self._calls_in_context = gt_proposal, 0
        try:
            yield self
        finally:
            self._gt_proposal = None

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
        losses = sigmoid_losses if self.surrogate == 'sigmoid' else cross_entropies
        h_neg, h_pos = losses(cls_score, label, num_classes, self.use_sigmoid)
        if self.surrogate == 'sigmoid-h0':
            h_neg = sigmoid_losses(cls_score, label, num_classes, self.use_sigmoid)[0]
        return h_neg, h_pos, num_classes

    def _check_caller(self, label) -> None:
        """Errors for callers that cannot give one batch of hard labels (class docstring)."""
        owner = _owner(self)
        name = type(owner).__name__ if owner is not None else 'the caller'
        if isinstance(label, (tuple, list)):
            raise ValueError(f'PULoss: {name} passes (label, score) targets (a quality focal '
                             f'loss head such as {UNSUPPORTED_HEADS}); not supported: the PU '
                             'risk needs hard labels')
        if owner is None or getattr(owner, '_pu_single_call', False):
            return
        from mmdet.models.dense_heads.base_dense_head import BaseDenseHead
        if isinstance(owner, BaseDenseHead):
            raise ValueError(
                f'PULoss: {name} calls loss_cls per FPN level (or with its own flattening), '
                'which would take the clamp of eq. 11 per call, a different estimator. Use a '
                'head with PUHeadMixin (one call over all levels and images): PURPNHead, '
                f'PURetinaHead, PUATSSHead, PUFCOSHead, or class PU{name}(PUHeadMixin, {name})')

    def _should_sync(self) -> bool:
        return self.sync_ddp and self.training and torch.is_grad_enabled()

    def forward(self,
                cls_score: Tensor,
                label: Tensor,
                weight: Optional[Tensor] = None,
                avg_factor: Optional[float] = None,
                reduction_override: Optional[str] = None) -> Tensor:
        """PU risk of a batch; ``avg_factor`` is ignored (see the class docstring)."""
        self._check_reduction(reduction_override)
        self._check_caller(label)
        if self.hidden_prior_warmup_iters and self.iteration is None and self.training \
                and torch.is_grad_enabled():
            raise RuntimeError(
                f'PULoss(hidden_prior_warmup_iters={self.hidden_prior_warmup_iters}) needs '
                "the training iteration: add dict(type='PULossHook') to custom_hooks (or call "
                'set_iter before each step)')
        h_neg, h_pos, num_classes = self.per_sample_losses(cls_score, label)
        if weight is not None:
            if weight.dim() == 2 and weight.shape[1] == 1:
                weight = weight[:, 0]
            if weight.shape != h_neg.shape:
                raise ValueError(f'PULoss: weight must have shape ({h_neg.shape[0]},), got '
                                 f'{tuple(weight.shape)}')
            weight = weight.to(cls_score.dtype)
        label = label.long()
        if self.prior is None or isinstance(self.prior, float):
            is_pos = label < num_classes
        else:
            if len(self.prior) != num_classes:
                raise ValueError(f'PULoss: {len(self.prior)} per-class priors given but the '
                                 f'scores have {num_classes} foreground classes')
            is_pos = torch.where(label < num_classes, label, -1)
        gt_proposal = self._gt_proposal
        if gt_proposal is not None:
            self._calls_in_context += 1
            if gt_proposal.shape != label.shape:
                raise ValueError(f'PULoss: {gt_proposal.numel()} ground-truth-proposal flags '
                                 f'for {label.numel()} samples')
            gt_proposal = gt_proposal.to(label.device)
        sums = pu_sums(h_neg, h_pos, is_pos, self.prior, weight, gt_proposal)
        world = 1
        if self._should_sync():
            sums, world = _all_reduce_sums(sums)
        risk, self.last_stats = pu_risk_from_sums(
            sums, self.prior, self.mode, self.nonnegative, self.beta, self.gamma,
            self.current_hidden_prior())
        if world > 1:  # DDP averages gradients: each rank contributes its share of the sum
            risk = risk.detach() + world * (risk - risk.detach())
        return self.loss_weight * risk
