"""RPN head whose classification loss is computed once over the whole batch.

mmdet's ``AnchorHead.loss_by_feat`` (inherited by ``RPNHead``) calls ``loss_cls`` once per
FPN level. For a loss that is a sum of per-sample terms normalised by a shared
``avg_factor`` (cross-entropy, focal loss) the sum over levels equals one call on all
samples. For the non-negative PU risk of Zhao et al. 2021, eq. (12), it does not: the
max(0, .) of eq. (11) and every mean of eq. (12) would be taken per level, a different
(and wrong) estimator. ``PURPNHead`` concatenates the sampled anchors of every level and
every image of the batch and calls ``loss_cls`` once.
"""
from typing import List

import torch
from mmdet.models.dense_heads import RPNHead
from mmdet.models.utils import images_to_levels, multi_apply
from mmdet.registry import MODELS
from mmdet.structures.bbox import cat_boxes, get_box_tensor
from mmdet.utils import InstanceList, OptInstanceList
from torch import Tensor


def anchor_targets(head: RPNHead, cls_scores: List[Tensor], batch_gt_instances: InstanceList,
                   batch_img_metas: List[dict],
                   batch_gt_instances_ignore: OptInstanceList = None) -> tuple:
    """The first half of mmdet's ``AnchorHead.loss_by_feat``: anchors and sampled targets.

    Returns ``(anchor_list, valid_flag_list, (labels, label_weights, bbox_targets,
    bbox_weights, avg_factor))`` as ``get_anchors`` / ``get_targets`` give them; ValueError
    naming the head when the number of feature levels is not the anchor generator's.
    """
    featmap_sizes = [featmap.size()[-2:] for featmap in cls_scores]
    if len(featmap_sizes) != head.prior_generator.num_levels:
        raise ValueError(f'{type(head).__name__}: got {len(featmap_sizes)} feature levels, '
                         f'the anchor generator has {head.prior_generator.num_levels}')
    anchor_list, valid_flag_list = head.get_anchors(
        featmap_sizes, batch_img_metas, device=cls_scores[0].device)
    targets = head.get_targets(anchor_list, valid_flag_list, batch_gt_instances,
                               batch_img_metas,
                               batch_gt_instances_ignore=batch_gt_instances_ignore)
    return anchor_list, valid_flag_list, targets[:5]


@MODELS.register_module()
class PURPNHead(RPNHead):
    """``RPNHead`` with one ``loss_cls`` call over all levels and images of the batch.

    Same arguments as mmdet's ``RPNHead``. Intended for ``loss_cls=dict(type='PULoss',
    use_sigmoid=True, prior=...)``; with any loss that is a per-sample sum divided by
    ``avg_factor`` (e.g. ``CrossEntropyLoss``) it is numerically the stock head, so it is
    a safe drop-in.

    Output of :meth:`loss_by_feat`: ``dict(loss_rpn_cls=Tensor, loss_rpn_bbox=[Tensor per
    level])``. Unlike mmdet (a list per level), ``loss_rpn_cls`` is a single scalar: there is
    only one classification loss. mmengine's ``parse_losses`` sums lists and tensors alike,
    so the logged total and the gradient are unaffected; the stock head's per-level list
    sums to the same value (when the loss is not a PU risk).
    """

    def _loss_bbox_single(self, bbox_pred: Tensor, anchors: Tensor, bbox_targets: Tensor,
                          bbox_weights: Tensor, avg_factor: float) -> tuple:
        """Regression loss of one level, exactly as ``AnchorHead.loss_by_feat_single``."""
        target_dim = bbox_targets.size(-1)
        bbox_targets = bbox_targets.reshape(-1, target_dim)
        bbox_weights = bbox_weights.reshape(-1, target_dim)
        bbox_pred = bbox_pred.permute(0, 2, 3, 1).reshape(-1, self.bbox_coder.encode_size)
        if self.reg_decoded_bbox:
            anchors = anchors.reshape(-1, anchors.size(-1))
            bbox_pred = get_box_tensor(self.bbox_coder.decode(anchors, bbox_pred))
        loss_bbox = self.loss_bbox(bbox_pred, bbox_targets, bbox_weights,
                                   avg_factor=avg_factor)
        return (loss_bbox, )

    def flatten_cls(self, cls_scores: List[Tensor], labels_list: List[Tensor],
                    label_weights_list: List[Tensor]) -> tuple:
        """Concatenate per-level scores (N, A*C, H, W) and targets (N, H*W*A) of all images.

        Returns (scores (M, C), labels (M,), label_weights (M,)), level by level, each
        level image by image (the flattening of ``AnchorHead.loss_by_feat_single``).
        """
        if not len(cls_scores) == len(labels_list) == len(label_weights_list):
            raise ValueError(f'PURPNHead: {len(cls_scores)} score levels but '
                             f'{len(labels_list)} label and {len(label_weights_list)} '
                             f'label-weight levels')
        scores, labels, weights = [], [], []
        for lvl, (score, label, weight) in enumerate(
                zip(cls_scores, labels_list, label_weights_list)):
            score = score.permute(0, 2, 3, 1).reshape(-1, self.cls_out_channels)
            label = label.reshape(-1)
            weight = weight.reshape(-1)
            if not score.size(0) == label.numel() == weight.numel():
                raise ValueError(f'PURPNHead: level {lvl} has {score.size(0)} scores but '
                                 f'{label.numel()} labels and {weight.numel()} weights')
            scores.append(score)
            labels.append(label)
            weights.append(weight)
        return torch.cat(scores), torch.cat(labels), torch.cat(weights)

    def loss_by_feat(self,
                     cls_scores: List[Tensor],
                     bbox_preds: List[Tensor],
                     batch_gt_instances: InstanceList,
                     batch_img_metas: List[dict],
                     batch_gt_instances_ignore: OptInstanceList = None) -> dict:
        """RPN losses: one ``loss_cls`` call for the batch, regression per level.

        Targets, sampling and ``avg_factor`` are mmdet's (``get_anchors``/``get_targets``).
        """
        (anchor_list, _, (labels_list, label_weights_list, bbox_targets_list,
                          bbox_weights_list, avg_factor)) = anchor_targets(
            self, cls_scores, batch_gt_instances, batch_img_metas, batch_gt_instances_ignore)

        # classification: all levels and images at once (one clamp for eq. 11)
        scores, labels, label_weights = self.flatten_cls(cls_scores, labels_list,
                                                         label_weights_list)
        loss_cls = self.loss_cls(scores, labels, label_weights, avg_factor=avg_factor)

        # regression: per level, as mmdet
        num_level_anchors = [anchors.size(0) for anchors in anchor_list[0]]
        all_anchor_list = images_to_levels([cat_boxes(a) for a in anchor_list],
                                           num_level_anchors)
        (losses_bbox, ) = multi_apply(self._loss_bbox_single, bbox_preds, all_anchor_list,
                                      bbox_targets_list, bbox_weights_list,
                                      avg_factor=avg_factor)
        return dict(loss_rpn_cls=loss_cls, loss_rpn_bbox=losses_bbox)
