"""RPN head whose classification loss is computed once over the whole batch.

mmdet's ``AnchorHead.loss_by_feat`` (inherited by ``RPNHead``) calls ``loss_cls`` once per
FPN level. For a loss that is a sum of per-sample terms normalised by a shared
``avg_factor`` (cross-entropy, focal loss) the sum over levels equals one call on all
samples. For the non-negative PU risk of Zhao et al. 2021, eq. (12), it does not: the
max(0, .) of eq. (11) and every mean of eq. (12) would be taken per level, a different
(and wrong) estimator. ``PURPNHead`` (``PUHeadMixin`` + ``RPNHead``) calls the loss once on
the sampled anchors of every level and every image of the batch.
"""
from typing import List

from mmdet.models.dense_heads import RPNHead
from mmdet.registry import MODELS
from mmdet.utils import InstanceList, OptInstanceList
from torch import Tensor

from .pu_heads import PUHeadMixin


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
class PURPNHead(PUHeadMixin, RPNHead):
    """``RPNHead`` with one ``loss_cls`` call over all levels and images of the batch.

    Same arguments as mmdet's ``RPNHead``. Intended for ``loss_cls=dict(type='PULoss',
    use_sigmoid=True, prior=...)``: targets, sampling, ``avg_factor`` and the regression
    losses are mmdet's; :class:`~projects.pu_detection.pu_heads.PUHeadMixin` gathers the
    per-level classification inputs and calls the loss once on their concatenation (level
    by level, each level image by image). With any other loss it is the stock head.

    Output of :meth:`loss_by_feat` with a ``PULoss``: ``dict(loss_rpn_cls=Tensor,
    loss_rpn_bbox=[Tensor per level])``. Unlike mmdet (a list per level), ``loss_rpn_cls``
    is a single scalar: there is only one classification loss. mmengine's ``parse_losses``
    sums lists and tensors alike.
    """
