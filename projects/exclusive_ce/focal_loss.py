"""The focal-loss peer of the segmentation benchmark, usable on CPU.

mmseg 1.2.2's ``FocalLoss`` (sigmoid focal loss on one-hot targets, Lin et al. 2017) runs
only on CUDA: its CPU branch takes ``one_hot[:, num_classes]`` (one column) instead of the
first ``num_classes`` columns and fails with a shape error. :class:`PixelFocalLoss` is the
same loss for mmseg decode heads, on any device.
"""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from projects.common.registry import MODELS, register


def sigmoid_focal(cls_score: Tensor, label: Tensor, gamma: float = 2.0, alpha: float = 0.5,
                  ignore_index: int = 255) -> Tensor:
    """Element-wise sigmoid focal loss, Lin et al. 2017, eq. (5):
    ``-alpha_t (1 - p_t)^gamma log p_t`` on every class column of one-hot targets
    (alpha_t = alpha for the target column, 1 - alpha for the others); ``(N, C, *)``, zero
    at ignored pixels."""
    valid = label != ignore_index
    target = F.one_hot(label.masked_fill(~valid, 0).long(), cls_score.shape[1])
    target = target.movedim(-1, 1).to(cls_score)
    p = cls_score.sigmoid()
    p_t = p * target + (1 - p) * (1 - target)
    alpha_t = alpha * target + (1 - alpha) * (1 - target)
    ce = F.binary_cross_entropy_with_logits(cls_score, target, reduction='none')
    return alpha_t * (1 - p_t).pow(gamma) * ce * valid.unsqueeze(1)


@register(MODELS)
class PixelFocalLoss(nn.Module):
    """Sigmoid focal loss for mmseg ``loss_decode`` (mmseg's ``FocalLoss`` formula,
    defaults gamma 2, alpha 0.5): the mean over the non-ignored pixels and the classes."""

    def __init__(self, gamma: float = 2.0, alpha: float = 0.5, loss_weight: float = 1.0,
                 loss_name: str = 'loss_focal') -> None:
        super().__init__()
        if gamma < 0 or not 0 < alpha < 1:
            raise ValueError(f'PixelFocalLoss: need gamma >= 0 and 0 < alpha < 1, got '
                             f'{gamma}, {alpha}')
        if not loss_name.startswith('loss_'):
            raise ValueError(f'PixelFocalLoss: loss_name must start with "loss_", got '
                             f'{loss_name!r}')
        self.gamma, self.alpha, self.loss_weight = gamma, alpha, loss_weight
        self._loss_name = loss_name

    @property
    def loss_name(self) -> str:
        return self._loss_name

    def forward(self, cls_score: Tensor, label: Tensor, weight: Optional[Tensor] = None,
                avg_factor: Optional[float] = None, reduction_override: Optional[str] = None,
                ignore_index: int = 255, **kwargs) -> Tensor:
        loss = sigmoid_focal(cls_score, label, self.gamma, self.alpha, ignore_index)
        if weight is not None:
            loss = loss * weight.unsqueeze(1)
        if reduction_override == 'none':
            return self.loss_weight * loss
        if reduction_override == 'sum':
            return self.loss_weight * loss.sum()
        n = (label != ignore_index).sum() * cls_score.shape[1]
        return self.loss_weight * loss.sum() / n.clamp(min=1)
