"""Heads that give ``PULoss`` one whole batch per call.

The PU risk (eq. 12) is not a sum of per-sample terms: its means and the clamp of eq. (11)
must be taken once over the batch. mmdet's dense heads do not do that: ``AnchorHead``
(RPN, RetinaNet) and ``ATSSHead`` call ``loss_cls`` once per FPN level, each call with all
images of that level. ``PUHeadMixin`` makes any such head call it once:

1. during the head's own ``loss_by_feat`` the attribute ``loss_cls`` is shadowed by a
   recorder that stores every call's (scores, labels, weights) and returns a placeholder;
   targets, sampling, ``avg_factor`` and the regression losses stay mmdet's, untouched;
2. the PU loss is then called once on the concatenation of the recorded calls (level by
   level, each level image by image, as mmdet flattens them);
3. the placeholders in the head's loss dict (a list per level, or one tensor) are replaced
   by that single value. A head that transforms the placeholders (so they cannot be
   found) raises an error instead of silently training on zeros.

With any loss other than ``PULoss`` the mixin does nothing: the head is the stock head.
``PULoss`` itself finds the module that calls it (the caller frame whose ``self`` owns the
loss) and raises, naming the head, when a dense head calls it outside the mixin's single
call (``PULoss._check_caller``). Heads whose classification targets are (label, score)
pairs (GFL, TOOD, RTMDet: quality focal loss) are refused at class creation.

``PURoIHead`` passes the sampler's ground-truth flags to the RoI head's ``PULoss``: the
ground-truth boxes that ``add_gt_as_proposals`` adds to the proposals are left out of the
positive means (see :func:`~projects.pu_detection.pu_loss.pu_risk`).
"""
from contextlib import contextmanager
from typing import Iterator, List, Optional, Tuple

import torch
from mmdet.models.dense_heads import ATSSHead, FCOSHead, RetinaHead
from mmdet.models.roi_heads import StandardRoIHead
from mmdet.registry import MODELS
from torch import Tensor

from .pu_loss import UNSUPPORTED_HEADS, PULoss


class _LossCallRecorder:
    """Stands in for a head's ``loss_cls``: records each call, returns a placeholder."""

    def __init__(self, loss, head: str) -> None:
        self.loss = loss
        self.head = head
        self.calls: List[tuple] = []
        self.placeholders: List[Tensor] = []

    def __getattr__(self, name: str):  # use_sigmoid, custom_accuracy, ... of the loss
        return getattr(self.loss, name)

    def __call__(self, cls_score: Tensor, label: Tensor, weight: Optional[Tensor] = None,
                 avg_factor: Optional[float] = None,
                 reduction_override: Optional[str] = None, **kwargs) -> Tensor:
        if isinstance(label, (tuple, list)):
            raise ValueError(f'PULoss: {self.head} passes (label, score) targets (a quality '
                             f'focal loss head such as {UNSUPPORTED_HEADS}); not supported: '
                             'the PU risk needs hard labels')
        if kwargs:
            raise ValueError(f'{self.head}: loss_cls called with unexpected arguments '
                             f'{sorted(kwargs)}')
        if label.dim() != 1 or cls_score.dim() != 2 or cls_score.size(0) != label.numel():
            raise ValueError(f'{self.head}: loss_cls got scores {tuple(cls_score.shape)} and '
                             f'labels {tuple(label.shape)}; expected (n, C) and (n,)')
        self.calls.append((cls_score, label, weight, avg_factor, reduction_override))
        placeholder = cls_score.new_zeros(())
        self.placeholders.append(placeholder)
        return placeholder

    def merged(self) -> tuple:
        """(scores, labels, weights or None, avg_factor, reduction_override) of all calls."""
        if not self.calls:
            raise RuntimeError(f'{self.head}.loss_by_feat did not call loss_cls')
        scores, labels, weights, factors, reductions = zip(*self.calls)
        factors = {None if f is None else round(float(f), 6) for f in factors}
        if len(factors) > 1 or len(set(reductions)) > 1:
            raise ValueError(f'{self.head}: loss_cls calls differ in avg_factor {factors} or '
                             f'reduction_override {set(reductions)}; they cannot be merged')
        if all(w is None for w in weights):
            weight = None
        else:
            weight = torch.cat([
                s.new_ones(lab.shape) if w is None else w
                for s, lab, w in zip(scores, labels, weights)])
        return (torch.cat(scores), torch.cat(labels), weight, self.calls[0][3],
                reductions[0])

    def substitute(self, losses: dict, value: Tensor) -> dict:
        """``losses`` with the placeholder entry replaced by ``value`` (one key)."""
        ids = {id(p) for p in self.placeholders}
        found = []
        for key, entry in losses.items():
            items = entry if isinstance(entry, (list, tuple)) else [entry]
            hits = [isinstance(t, Tensor) and id(t) in ids for t in items]
            if any(hits):
                if not all(hits) or len(items) != len(ids):
                    raise RuntimeError(f'{self.head}: the loss entry {key!r} mixes '
                                       'loss_cls outputs with other values')
                found.append(key)
        if len(found) != 1:
            raise RuntimeError(f'{self.head}: cannot find the classification loss in the '
                               f'head\'s loss dict (keys {sorted(losses)}); PUHeadMixin '
                               'needs loss_by_feat to return the loss_cls outputs unchanged')
        out = dict(losses)
        out[found[0]] = value
        return out


class PUHeadMixin:
    """Mixin for mmdet dense heads: ``loss_cls`` (a ``PULoss``) called once per batch.

    ``class PURetinaHead(PUHeadMixin, RetinaHead)``: see the module docstring. The loss
    entry of the head (e.g. ``loss_cls``, ``loss_rpn_cls``) becomes one scalar instead of a
    list per level; mmengine's ``parse_losses`` sums both alike. With another loss the head
    is the stock head.
    """

    _pu_single_call = False

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        from mmdet.models.dense_heads import GFLHead, RTMDetHead, TOODHead
        if issubclass(cls, (GFLHead, TOODHead, RTMDetHead)):
            raise TypeError(f'PUHeadMixin: {cls.__name__} has (label, score) classification '
                            f'targets (quality focal loss, {UNSUPPORTED_HEADS}); not '
                            'supported: the PU risk needs hard labels')

    def loss_by_feat(self, *args, **kwargs) -> dict:
        """The head's ``loss_by_feat`` with one ``loss_cls`` call over all levels/images."""
        loss = self.loss_cls
        if not isinstance(loss, PULoss):
            return super().loss_by_feat(*args, **kwargs)
        recorder = _LossCallRecorder(loss, type(self).__name__)
        self.__dict__['loss_cls'] = recorder  # shadows the registered submodule
        try:
            losses = super().loss_by_feat(*args, **kwargs)
        finally:
            del self.__dict__['loss_cls']
        scores, labels, weight, avg_factor, reduction = recorder.merged()
        self._pu_single_call = True
        try:
            value = loss(scores, labels, weight, avg_factor=avg_factor,
                         reduction_override=reduction)
        finally:
            del self._pu_single_call  # back to the class default (False)
        return recorder.substitute(losses, value)


@MODELS.register_module()
class PURetinaHead(PUHeadMixin, RetinaHead):
    """mmdet's ``RetinaHead`` with one ``PULoss`` call per batch (:class:`PUHeadMixin`)."""


@MODELS.register_module()
class PUATSSHead(PUHeadMixin, ATSSHead):
    """mmdet's ``ATSSHead`` with one ``PULoss`` call per batch (:class:`PUHeadMixin`)."""


@MODELS.register_module()
class PUFCOSHead(PUHeadMixin, FCOSHead):
    """mmdet's ``FCOSHead`` with one ``PULoss`` call per batch (:class:`PUHeadMixin`).

    The stock head already calls ``loss_cls`` once; the mixin marks the call as a whole
    batch (``PULoss`` refuses dense heads without it) and checks that it stays one.
    """


def gt_proposal_flags(sampling_results: list) -> Tensor:
    """(N,) bool over the sampled RoIs of all images, in the order of
    ``BBoxHead.get_targets(concat=True)`` (per image: positives, then negatives): True for
    the ground-truth boxes the sampler added as proposals (``pos_is_gt``)."""
    flags = []
    for res in sampling_results:
        flags.append(res.pos_is_gt.bool())
        flags.append(res.pos_is_gt.new_zeros(len(res.neg_inds), dtype=torch.bool))
    if not flags:
        return torch.zeros(0, dtype=torch.bool)
    return torch.cat(flags)


@contextmanager
def pu_sample_flags(loss, sampling_results: list) -> Iterator[Optional[PULoss]]:
    """Within the block a ``PULoss`` gets the ground-truth-proposal flags of
    ``sampling_results``; any other loss is left alone (yields None)."""
    if not isinstance(loss, PULoss):
        yield None
        return
    with loss.sample_flags(gt_proposal_flags(sampling_results)) as pu:
        yield pu


def join_empty_call(loss: Optional[PULoss], cls_score: Optional[Tensor],
                    losses: dict) -> None:
    """mmdet's ``BBoxHead.loss`` skips ``loss_cls`` when there is no RoI. Under DDP every
    rank must join the all-reduce of ``PULoss``: call it on the empty batch (value 0)."""
    if loss is None or loss._calls_in_context or cls_score is None:
        return
    losses['loss_cls'] = loss(cls_score, cls_score.new_zeros(cls_score.size(0),
                                                              dtype=torch.long))


@MODELS.register_module()
class PURoIHead(StandardRoIHead):
    """``StandardRoIHead`` whose ``PULoss`` leaves the added ground-truth boxes out of the
    positive means.

    mmdet's RoI sampler (``add_gt_as_proposals=True``) adds every ground-truth box to the
    proposals; these are always positives, perfectly aligned, and not a sample of the
    proposals the sampler draws, hence not of the hidden cells either. Their flags
    (``SamplingResult.pos_is_gt``) go to the loss (:meth:`PULoss.sample_flags`): they stay
    in the batch means (E_x, rho_L, E_L) and are left out of mean_P / E_P. With any other
    loss this is the stock head.
    """

    def bbox_loss(self, x: Tuple[Tensor], sampling_results: list) -> dict:
        """mmdet's ``bbox_loss`` with the ground-truth-proposal flags given to ``PULoss``."""
        with pu_sample_flags(self.bbox_head.loss_cls, sampling_results) as pu:
            bbox_results = super().bbox_loss(x, sampling_results)
            join_empty_call(pu, bbox_results.get('cls_score'), bbox_results['loss_bbox'])
        return bbox_results
