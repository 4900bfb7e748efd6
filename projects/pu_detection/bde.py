"""Box density energy (BDE) loss calibration, the baseline of Zhao et al. 2021 (Table 2).

Li, H., et al., "A Novel Loss Calibration Strategy for Object Detection Networks Training
on Sparsely Annotated Pathological Datasets", MICCAI 2020. The paper's equation is not
available here (DESIGN.md 4.1); we implement its stated idea with our own formula:
regressed boxes crowd onto real cells, so a background sample lying where confident
regressed boxes crowd more than elsewhere in the image is probably an unannotated cell
and its negative loss is down-weighted; background at or below the image's mean
crowding (isolated background included) keeps full weight; positives are unchanged.

Formula (per image):

- Samples b_i with labels and label weights: the anchors (RPN) or the sampled RoIs
  (RoI head). Calibrated samples C: the background-labelled samples with a non-zero label
  weight (RPN: the sampled negative anchors; RoI head: the sampled negative RoIs).
- Regressed boxes r_j: the head's own decoded box predictions, detached (no gradient),
  for all valid anchors (RPN) or all sampled RoIs (RoI head) of that image, with
  foreground scores s_j: sigmoid objectness (RPN; 1 - softmax background probability for a
  softmax RPN), 1 - softmax background probability (RoI head; class-specific regression
  uses the deltas of the most probable foreground class).
- Filters: drop r_j with s_j < min_score (default 0.05); drop r_j whose max IoU with the
  image's ground-truth boxes is >= gt_iou_thr (default 0.5): they found an annotated cell,
  which is no evidence of a missing annotation. An image without GT drops nothing here.
- Box density: D_i = sum_j s_j * area(b_i n r_j) / area(b_i), the score-weighted coverage
  of the sample box by regressed boxes; D_i = 0 when area(b_i) = 0 (no area, no
  coverage). The sample's own regressed box counts too (it is one of the r_j).
- Relative box density energy: the crowding that matters is relative to the rest of the
  image (at initialisation every anchor scores ~0.5 and the regressed boxes are the dense
  anchors themselves, so the absolute D is >> 1 everywhere). Baseline D_bar = mean of D_i
  over the calibrated samples i in C of the image; E_i = max(0, D_i / D_bar - 1).
- Weight: w_i = exp(-min(E_i / T, 80)) (temperature T > 0, default 1; T = inf gives
  w = 1); w_i = 1 for every sample when D_bar = 0. So a uniform density (e.g. at
  initialisation) gives w = 1 (plain cross-entropy), samples at or below the image's mean
  density keep full weight, and a sample at twice the mean gets exp(-1 / T). The cap at
  80 keeps w_i > 0 in float32 (exp(-80) = 1.8e-35), so that mmdet's count of weighted
  samples (``BBoxHead.loss`` uses ``sum(label_weights > 0)``) is unchanged.
- New label weight = old label weight * w_i for the samples in C. Positives and
  zero-weight samples are unchanged. ``avg_factor`` is unchanged: the weights calibrate
  the negative terms, they do not renormalise the loss (a down-weighted negative lowers
  the loss, it does not raise the share of the others).

Memory is linear in the number of boxes: D is computed in blocks of at most
``chunk_elems`` sample x regressed pairs (default 2**22), and only for the calibrated
samples (RPN: the ~256 sampled anchors per image), never an all-anchors x all-anchors
matrix. A sweep along x skips the pairs that cannot overlap (regressed boxes grouped by
width and sorted by x1), so the time grows with the number of overlapping pairs, not
with samples x regressed boxes; the result is the exact sum.
"""
import math
from numbers import Integral, Real
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from mmdet.models.dense_heads import RPNHead
from mmdet.models.roi_heads import StandardRoIHead
from mmdet.models.utils import images_to_levels, multi_apply
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmdet.structures.bbox import bbox2roi, bbox_overlaps, cat_boxes, get_box_tensor
from mmdet.utils import InstanceList, OptInstanceList
from torch import Tensor

from .pu_heads import PUHeadMixin, join_empty_call, pu_sample_flags
from .pu_rpn_head import anchor_targets

MAX_EXPONENT = 80.0
DEFAULT_CHUNK_ELEMS = 2**22
SWEEP_BLOCK = 16  # samples per block of the x sweep in box_density_energy
BDE_DEFAULTS = dict(temperature=1.0, min_score=0.05, gt_iou_thr=0.5,
                    chunk_elems=DEFAULT_CHUNK_ELEMS)


def check_bde_cfg(cfg: Optional[dict], where: str = 'bde') -> dict:
    """Validate a ``bde=dict(...)`` config; return it completed with the defaults.

    Keys: temperature (> 0, may be inf), min_score (in [0, 1]), gt_iou_thr (in (0, 1]),
    chunk_elems (int >= 1).
    """
    cfg = dict(cfg or {})
    unknown = sorted(set(cfg) - set(BDE_DEFAULTS))
    if unknown:
        raise ValueError(f'{where}: unknown key(s) {unknown}; allowed: {sorted(BDE_DEFAULTS)}')
    out = dict(BDE_DEFAULTS, **cfg)
    t = out['temperature']
    if not isinstance(t, Real) or isinstance(t, bool) or math.isnan(t) or not t > 0:
        raise ValueError(f'{where}: temperature must be a number > 0 (inf allowed), got {t!r}')
    s = out['min_score']
    if not isinstance(s, Real) or isinstance(s, bool) or not 0.0 <= s <= 1.0:
        raise ValueError(f'{where}: min_score must lie in [0, 1], got {s!r}')
    g = out['gt_iou_thr']
    if not isinstance(g, Real) or isinstance(g, bool) or not 0.0 < g <= 1.0:
        raise ValueError(f'{where}: gt_iou_thr must lie in (0, 1], got {g!r}')
    c = out['chunk_elems']
    if not isinstance(c, Integral) or isinstance(c, bool) or c < 1:
        raise ValueError(f'{where}: chunk_elems must be an int >= 1, got {c!r}')
    out.update(temperature=float(t), min_score=float(s), gt_iou_thr=float(g),
               chunk_elems=int(c))
    return out


def _check_boxes(boxes: Tensor, name: str) -> None:
    if not isinstance(boxes, Tensor) or boxes.dim() != 2 or boxes.size(-1) != 4:
        shape = tuple(boxes.shape) if isinstance(boxes, Tensor) else type(boxes).__name__
        raise ValueError(f'{name} must be a (n, 4) tensor of x1, y1, x2, y2, got {shape}')
    if not bool(torch.isfinite(boxes).all()):
        raise ValueError(f'{name} contains non-finite coordinates')


def box_density_energy(sample_boxes: Tensor,
                       reg_boxes: Tensor,
                       reg_scores: Tensor,
                       chunk_elems: int = DEFAULT_CHUNK_ELEMS) -> Tensor:
    """D_i = sum_j s_j * area(b_i n r_j) / area(b_i); D_i = 0 where area(b_i) = 0.

    Args:
        sample_boxes: (M, 4) boxes b_i (x1, y1, x2, y2).
        reg_boxes: (N, 4) regressed boxes r_j.
        reg_scores: (N,) foreground scores s_j in [0, 1].
        chunk_elems: at most this many (i, j) pairs are held at once (blocks over i, and
            over j when N alone exceeds it): memory O(M + N + chunk_elems).

    Returns:
        (M,) tensor, no gradient.
    """
    _check_boxes(sample_boxes, 'box_density_energy: sample_boxes')
    _check_boxes(reg_boxes, 'box_density_energy: reg_boxes')
    if not isinstance(reg_scores, Tensor) or reg_scores.shape != (reg_boxes.size(0), ):
        shape = tuple(reg_scores.shape) if isinstance(reg_scores, Tensor) else reg_scores
        raise ValueError(f'box_density_energy: reg_scores must have shape '
                         f'({reg_boxes.size(0)},) (one per regressed box), got {shape}')
    if reg_scores.numel() and not bool(((reg_scores >= 0) & (reg_scores <= 1)).all()):
        raise ValueError('box_density_energy: reg_scores must lie in [0, 1] '
                         '(non-finite or out-of-range values found)')
    if not isinstance(chunk_elems, Integral) or isinstance(chunk_elems, bool) \
            or chunk_elems < 1:
        raise ValueError(f'box_density_energy: chunk_elems must be an int >= 1, '
                         f'got {chunk_elems!r}')
    dtype = sample_boxes.dtype if sample_boxes.is_floating_point() else torch.float32
    with torch.no_grad():
        b = sample_boxes.detach().to(dtype)
        r = reg_boxes.detach().to(device=b.device, dtype=dtype)
        s = reg_scores.detach().to(device=b.device, dtype=dtype)
        num_s, num_r = b.size(0), r.size(0)
        cover = b.new_zeros(num_s)
        if num_s and num_r:
            cover = _x_sweep_coverage(b, r, s, chunk_elems)
        area = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
        return torch.where(area > 0, cover / area.clamp(min=torch.finfo(dtype).tiny),
                           torch.zeros_like(cover))


def _x_sweep_coverage(b: Tensor, r: Tensor, s: Tensor, chunk_elems: int) -> Tensor:
    """sum_j s_j * area(b_i n r_j) for every i, touching only pairs that may overlap.

    Regressed boxes are grouped by width (powers of two) and sorted by x1 within a group;
    samples are sorted by x1 and taken SWEEP_BLOCK at a time. A box of a group with
    maximal width W can overlap a block only if its x1 lies in [min x1 - W, max x2] of the
    block: a contiguous slice of the group (1 px margin for rounding; boxes of the slice
    that do not overlap add exactly 0). At most ``chunk_elems`` pairs are held at once.
    """
    width = (r[:, 2] - r[:, 0]).clamp(min=0)
    group_of = torch.floor(torch.log2(width.clamp(min=1.0))).long()
    groups = []
    for k in torch.unique(group_of).tolist():
        sel = (group_of == k).nonzero(as_tuple=True)[0]
        order = torch.argsort(r[sel, 0])
        rk = r[sel[order]]
        groups.append((rk, s[sel[order]], rk[:, 0].contiguous(),
                       float(width[sel].max()) + 1.0))
    rows = min(SWEEP_BLOCK, chunk_elems)
    cols = max(1, chunk_elems // rows)
    cover = b.new_zeros(b.size(0))
    s_order = torch.argsort(b[:, 0])
    for r0 in range(0, b.size(0), rows):
        idx = s_order[r0:r0 + rows]
        bb = b[idx]
        lo, hi = float(bb[:, 0].min()), float(bb[:, 2].max()) + 1.0
        acc = bb.new_zeros(bb.size(0))
        for rk, sk, x1k, max_w in groups:
            bounds = torch.tensor([lo - max_w, hi], dtype=x1k.dtype, device=x1k.device)
            start, end = torch.searchsorted(x1k, bounds).tolist()
            for c0 in range(start, end, cols):
                c1 = min(c0 + cols, end)
                rr, ss = rk[c0:c1], sk[c0:c1]
                iw = (torch.minimum(bb[:, None, 2], rr[None, :, 2]) -
                      torch.maximum(bb[:, None, 0], rr[None, :, 0])).clamp_(min=0)
                ih = (torch.minimum(bb[:, None, 3], rr[None, :, 3]) -
                      torch.maximum(bb[:, None, 1], rr[None, :, 1])).clamp_(min=0)
                acc += iw.mul_(ih) @ ss
        cover[idx] = acc
    return cover


def _max_iou(boxes: Tensor, gt_boxes: Tensor, chunk_elems: int) -> Tensor:
    """Max IoU of each box with any GT box, in blocks of at most chunk_elems pairs."""
    rows = max(1, chunk_elems // max(1, gt_boxes.size(0)))
    return torch.cat([bbox_overlaps(boxes[i:i + rows], gt_boxes).max(dim=1).values
                      for i in range(0, boxes.size(0), rows)])


def relative_energy_weights(density: Tensor, temperature: float = 1.0) -> Tensor:
    """w_i = exp(-min(E_i / T, 80)), E_i = max(0, D_i / D_bar - 1), D_bar = mean_i D_i.

    Args:
        density: (M,) box densities D_i >= 0 of the calibrated samples of one image (they
            are also the baseline set).
        temperature: T > 0; inf gives w = 1.

    Returns:
        (M,) weights in (0, 1]; all ones when D_bar = 0, T = inf or M <= 1.
    """
    if not isinstance(density, Tensor) or density.dim() != 1:
        raise ValueError(f'relative_energy_weights: density must be a 1-D tensor, got '
                         f'{getattr(density, "shape", type(density).__name__)}')
    if density.numel() and not bool((torch.isfinite(density) & (density >= 0)).all()):
        raise ValueError('relative_energy_weights: density must be finite and >= 0')
    t = check_bde_cfg(dict(temperature=temperature), 'relative_energy_weights')['temperature']
    with torch.no_grad():
        d = density.detach()
        ones = torch.ones_like(d, dtype=d.dtype if d.is_floating_point() else torch.float32)
        if d.numel() == 0 or math.isinf(t):
            return ones
        # mean in float64 (on the CPU: some devices lack float64), so that a uniform
        # density gives D_i / D_bar = 1 exactly, hence w = 1 exactly
        d_bar = float(d.to('cpu', torch.float64).mean())
        if d_bar <= 0.0:
            return ones
        d = d.to(ones.dtype)
        # D_i = 0 -> E_i = 0 explicitly (0 / D_bar is 0 anyway unless D_bar underflows)
        energy = torch.where(d > 0, (d / d_bar - 1.0).clamp(min=0.0), torch.zeros_like(d))
        return torch.exp(-(energy / t).clamp(max=MAX_EXPONENT))


def bde_weights(sample_boxes: Tensor,
                reg_boxes: Tensor,
                reg_scores: Tensor,
                gt_boxes: Optional[Tensor] = None,
                temperature: float = 1.0,
                min_score: float = 0.05,
                gt_iou_thr: float = 0.5,
                chunk_elems: int = DEFAULT_CHUNK_ELEMS) -> Tensor:
    """BDE weights of the calibrated samples of one image (module docstring).

    D_i (:func:`box_density_energy`) after the min_score and GT-IoU filters, then
    :func:`relative_energy_weights`: the samples passed together are the baseline set,
    so a sample's weight depends on the other samples of the call.

    Args:
        sample_boxes: (M, 4) the calibrated samples b_i of one image.
        reg_boxes, reg_scores: (N, 4) regressed boxes and (N,) foreground scores.
        gt_boxes: (G, 4) ground truth of the image, or None / empty (no GT filter).
        temperature, min_score, gt_iou_thr, chunk_elems: see :func:`check_bde_cfg`.

    Returns:
        (M,) weights in (0, 1], no gradient.
    """
    cfg = check_bde_cfg(dict(temperature=temperature, min_score=min_score,
                             gt_iou_thr=gt_iou_thr, chunk_elems=chunk_elems), 'bde_weights')
    _check_boxes(reg_boxes, 'bde_weights: reg_boxes')
    if not isinstance(reg_scores, Tensor) or reg_scores.shape != (reg_boxes.size(0), ):
        raise ValueError(f'bde_weights: reg_scores must have shape ({reg_boxes.size(0)},), '
                         f'got {getattr(reg_scores, "shape", reg_scores)}')
    with torch.no_grad():
        keep = reg_scores.detach() >= cfg['min_score']
        if gt_boxes is not None and gt_boxes.numel() > 0 and bool(keep.any()):
            _check_boxes(gt_boxes, 'bde_weights: gt_boxes')
            idx = keep.nonzero(as_tuple=True)[0]
            gt = gt_boxes.detach().to(device=reg_boxes.device, dtype=reg_boxes.dtype)
            iou = _max_iou(reg_boxes.detach()[idx], gt, cfg['chunk_elems'])
            keep[idx[iou >= cfg['gt_iou_thr']]] = False
        density = box_density_energy(sample_boxes, reg_boxes[keep], reg_scores[keep],
                                     cfg['chunk_elems'])
        return relative_energy_weights(density, cfg['temperature'])


def calibrate_label_weights(labels: Tensor, label_weights: Tensor, bg_label: int,
                            sample_boxes: Tensor, reg_boxes: Tensor, reg_scores: Tensor,
                            gt_boxes: Optional[Tensor] = None, **bde) -> Tensor:
    """Label weights of one image with BDE applied to weighted background samples.

    labels / label_weights: (M,); sample_boxes: (M, 4); ``bde``: the keys of
    :func:`check_bde_cfg`. The calibrated set C = {label == bg_label and weight > 0} is
    both re-weighted and the baseline of the relative energy (D_bar = mean over C).
    Returns new (M,) label weights (no gradient): old * w_i on C, old elsewhere.
    """
    if not labels.shape == label_weights.shape == (sample_boxes.size(0), ):
        raise ValueError(f'calibrate_label_weights: labels {tuple(labels.shape)}, '
                         f'label_weights {tuple(label_weights.shape)} and sample_boxes '
                         f'{tuple(sample_boxes.shape)} do not describe the same samples')
    with torch.no_grad():
        calib = (labels == bg_label) & (label_weights > 0)
        out = label_weights.detach().clone()
        if bool(calib.any()):
            w = bde_weights(sample_boxes[calib], reg_boxes, reg_scores, gt_boxes, **bde)
            out[calib] = out[calib] * w.to(out.dtype)
        return out


def _mean_calibrated_weight(old: List[Tensor], new: List[Tensor], labels: List[Tensor],
                            bg_label: int) -> Tensor:
    """Mean ratio new / old over the calibrated samples (1 when there is none): a log value."""
    ratios = [n[(lab == bg_label) & (o > 0)] / o[(lab == bg_label) & (o > 0)]
              for o, n, lab in zip(old, new, labels)]
    ratios = torch.cat(ratios) if ratios else torch.ones(0)
    return ratios.mean() if ratios.numel() else torch.ones((), device=ratios.device)


class _BDERPNHeadBase(RPNHead):
    """The BDE logic of :class:`BDERPNHead` (below it, ``PUHeadMixin`` wraps it)."""

    def __init__(self, *args, bde: Optional[dict] = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.bde = check_bde_cfg(bde, 'BDERPNHead.bde')

    def _fg_scores(self, logits: Tensor) -> Tensor:
        """Foreground score per anchor from (n, cls_out_channels) logits."""
        if self.use_sigmoid_cls:
            return logits.sigmoid().max(dim=-1).values
        return 1.0 - F.softmax(logits, dim=-1)[:, -1]

    def loss_by_feat(self,
                     cls_scores: List[Tensor],
                     bbox_preds: List[Tensor],
                     batch_gt_instances: InstanceList,
                     batch_img_metas: List[dict],
                     batch_gt_instances_ignore: OptInstanceList = None) -> dict:
        """Stock RPN losses with BDE-calibrated label weights (module docstring)."""
        (anchor_list, valid_flag_list, (labels_list, label_weights_list, bbox_targets_list,
                                        bbox_weights_list, avg_factor)) = anchor_targets(
            self, cls_scores, batch_gt_instances, batch_img_metas, batch_gt_instances_ignore)

        num_level_anchors = [anchors.size(0) for anchors in anchor_list[0]]
        concat_anchors = [get_box_tensor(cat_boxes(a)) for a in anchor_list]
        num_imgs = len(batch_img_metas)
        bg_label = self.num_classes
        old_w, new_w, img_labels = [], [], []
        with torch.no_grad():
            for i in range(num_imgs):
                # levels concatenated in the order of the flattened targets: (H, W, A)
                logits = torch.cat([s[i].detach().permute(1, 2, 0).reshape(
                    -1, self.cls_out_channels) for s in cls_scores])
                deltas = torch.cat([p[i].detach().permute(1, 2, 0).reshape(
                    -1, self.bbox_coder.encode_size) for p in bbox_preds])
                valid = torch.cat(valid_flag_list[i])
                anchors = concat_anchors[i]
                reg = get_box_tensor(self.bbox_coder.decode(anchors[valid], deltas[valid]))
                scores = self._fg_scores(logits[valid])
                labels = torch.cat([lab[i] for lab in labels_list])
                weights = torch.cat([w[i] for w in label_weights_list])
                gt = get_box_tensor(batch_gt_instances[i].bboxes)
                new = calibrate_label_weights(labels, weights, bg_label, anchors, reg,
                                              scores, gt, **self.bde)
                old_w.append(weights)
                new_w.append(new)
                img_labels.append(labels)
            label_weights_list = images_to_levels(new_w, num_level_anchors)

        all_anchor_list = images_to_levels(concat_anchors, num_level_anchors)
        losses_cls, losses_bbox = multi_apply(
            self.loss_by_feat_single, cls_scores, bbox_preds, all_anchor_list, labels_list,
            label_weights_list, bbox_targets_list, bbox_weights_list, avg_factor=avg_factor)
        return dict(loss_rpn_cls=losses_cls, loss_rpn_bbox=losses_bbox,
                    rpn_bde_w=_mean_calibrated_weight(old_w, new_w, img_labels, bg_label))


@MODELS.register_module()
class BDERPNHead(PUHeadMixin, _BDERPNHeadBase):
    """``RPNHead`` whose background anchors are down-weighted by relative BDE.

    Args:
        bde (dict): temperature (1.0), min_score (0.05), gt_iou_thr (0.5), chunk_elems
            (2**22); see the module docstring for the formula.
        Other arguments: mmdet's ``RPNHead``.

    Targets, sampling, ``avg_factor`` and the per-level losses are mmdet's
    (``AnchorHead.loss_by_feat``); only the label weights of the sampled background
    anchors change: w_i = exp(-max(0, D_i / D_bar - 1) / T), D_bar = mean density of the
    image's sampled background anchors. With ``temperature=float('inf')``, when no
    regressed box survives the filters, or when all sampled background anchors of an image
    have the same density, the losses equal the stock head's. Also returns ``rpn_bde_w``,
    the mean BDE weight of the calibrated anchors: no 'loss' in its name, so mmengine logs
    it and does not optimise it.

    With ``loss_cls=dict(type='PULoss', ...)`` the calibrated classification inputs of all
    levels and images go to the loss in one call (``PUHeadMixin``): one clamp per batch.
    """


@MODELS.register_module()
class BDERoIHead(StandardRoIHead):
    """``StandardRoIHead`` whose background RoIs are down-weighted by relative BDE.

    Args:
        bde (dict): temperature (1.0), min_score (0.05), gt_iou_thr (0.5), chunk_elems
            (2**22); see the module docstring for the formula.
        Other arguments: mmdet's ``StandardRoIHead``.

    ``loss`` remembers the images' GT boxes (for the gt_iou_thr filter); ``bbox_loss``
    is mmdet's with calibrated label weights. Regressed boxes: the bbox head's decoded
    predictions for the sampled RoIs of the image, scores 1 - p(background). Weights:
    w_i = exp(-max(0, D_i / D_bar - 1) / T), D_bar = mean density of the image's sampled
    background RoIs. Also
    returns ``bde_w``, the mean BDE weight of the calibrated RoIs (logged, not optimised).
    A ``PULoss`` gets the ground-truth-proposal flags, as in ``PURoIHead``.
    """

    def __init__(self, *args, bde: Optional[dict] = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.bde = check_bde_cfg(bde, 'BDERoIHead.bde')
        self._bde_gt: Optional[List[Tensor]] = None

    def loss(self, x: Tuple[Tensor], rpn_results_list: InstanceList,
             batch_data_samples: List[DetDataSample]) -> dict:
        """mmdet's ``StandardRoIHead.loss``, remembering the GT boxes for ``bbox_loss``."""
        self._bde_gt = [get_box_tensor(s.gt_instances.bboxes) for s in batch_data_samples]
        try:
            return super().loss(x, rpn_results_list, batch_data_samples)
        finally:
            self._bde_gt = None

    def _regressed(self, cls_score: Tensor, bbox_pred: Tensor,
                   rois: Tensor) -> Tuple[Tensor, Tensor]:
        """Decoded boxes (n, 4) and foreground scores (n,) of the RoIs, detached."""
        head = self.bbox_head
        num_classes = head.num_classes
        if head.custom_activation:
            probs = head.loss_cls.get_activation(cls_score)
        else:
            if cls_score.size(-1) != num_classes + 1:
                raise ValueError(f'BDERoIHead: expected softmax scores with '
                                 f'{num_classes + 1} columns (background last), got '
                                 f'{cls_score.size(-1)}')
            probs = F.softmax(cls_score, dim=-1)
        scores = (1.0 - probs[:, num_classes]).clamp(0.0, 1.0)
        n = bbox_pred.size(0)
        if head.reg_class_agnostic:
            deltas = bbox_pred.view(n, -1)
        else:
            best = probs[:, :num_classes].argmax(dim=1)
            deltas = bbox_pred.view(n, num_classes, -1)[torch.arange(n, device=best.device),
                                                        best]
        boxes = get_box_tensor(head.bbox_coder.decode(rois[:, 1:], deltas))
        return boxes, scores

    def bbox_loss(self, x: Tuple[Tensor], sampling_results: list) -> dict:
        """mmdet's ``StandardRoIHead.bbox_loss`` with BDE-calibrated label weights."""
        if self._bde_gt is None:
            raise RuntimeError('BDERoIHead.bbox_loss needs the GT boxes that '
                               'BDERoIHead.loss stores: call loss(), not bbox_loss() directly')
        if len(self._bde_gt) != len(sampling_results):
            raise ValueError(f'BDERoIHead: {len(sampling_results)} sampling results for '
                             f'{len(self._bde_gt)} images')
        rois = bbox2roi([res.priors for res in sampling_results])
        bbox_results = self._bbox_forward(x, rois)
        cls_score, bbox_pred = bbox_results['cls_score'], bbox_results['bbox_pred']
        labels, label_weights, bbox_targets, bbox_weights = self.bbox_head.get_targets(
            sampling_results, self.train_cfg, concat=True)
        bg_label = self.bbox_head.num_classes
        counts = [res.priors.size(0) for res in sampling_results]
        with torch.no_grad():
            reg, scores = self._regressed(cls_score.detach(), bbox_pred.detach(), rois)
            old_w, new_w, img_labels = [], [], []
            for i, (lab, lw, sb, rb, sc) in enumerate(zip(
                    labels.split(counts), label_weights.split(counts),
                    rois[:, 1:].split(counts), reg.split(counts), scores.split(counts))):
                new_w.append(calibrate_label_weights(lab, lw, bg_label, sb, rb, sc,
                                                     self._bde_gt[i], **self.bde))
                old_w.append(lw)
                img_labels.append(lab)
            new_label_weights = torch.cat(new_w) if new_w else label_weights
        targets = (labels, new_label_weights, bbox_targets, bbox_weights)
        with pu_sample_flags(self.bbox_head.loss_cls, sampling_results) as pu:
            losses = self.bbox_head.loss(cls_score, bbox_pred, rois, *targets)
            join_empty_call(pu, cls_score, losses)
        losses['bde_w'] = _mean_calibrated_weight(old_w, new_w, img_labels, bg_label)
        bbox_results.update(loss_bbox=losses, bbox_targets=targets)
        return bbox_results
