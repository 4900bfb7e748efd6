"""Patch classifier with positive, negative and multi-negative losses (Tokunaga et al. 2020).

Per patch x with logits z and probabilities f(c|x) = softmax(z)_c:

* positive loss, eq. (6): -sum_c y_c log f(c|x) (labelled and positive pseudo labels);
* negative loss, eqs. (3)-(4): -(C - |y|) / (C - 1) * sum_c y_c log(1 - f(c|x)), y the
  negative labels of the patch. The paper prints log(1 - log f); the loss is
  -log(1 - f) (DESIGN.md 4.4). With one negative label the weight is 1 and eq. (4) is
  eq. (3).

log(1 - f(c|x)) is computed as logsumexp_{j != c} z_j - logsumexp_j z_j, finite even when
f(c|x) rounds to 1 in floating point.
"""
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModel
from mmengine.registry import MODELS as ENGINE_MODELS
from mmengine.structures import BaseDataElement
from torch import Tensor

from projects.common.registry import MODELS, register

__all__ = ['log_one_minus_softmax', 'multi_negative_loss', 'positive_loss', 'PatchClassifier']


def log_one_minus_softmax(logits: Tensor) -> Tensor:
    """log(1 - softmax(z)_c) for every class c, (B, C), computed stably."""
    num_classes = logits.shape[1]
    if num_classes < 2:
        raise ValueError(f'log_one_minus_softmax: needs >= 2 classes, got {num_classes}')
    eye = torch.eye(num_classes, dtype=torch.bool, device=logits.device)
    others = logits[:, None, :].masked_fill(eye[None], float('-inf'))
    return torch.logsumexp(others, dim=2) - torch.logsumexp(logits, dim=1, keepdim=True)


def multi_negative_loss(logits: Tensor, negatives: Tensor) -> Tensor:
    """Per-sample multi-negative loss, Tokunaga et al. 2020, eq. (4) (corrected).

    negatives: (B, C) bool, y_c = 1 for each negative label. Returns (B,): 0 for samples
    without negative labels; the weight (C - |y|) / (C - 1) is 1 for one label.
    """
    num_classes = logits.shape[1]
    neg = negatives.to(logits.dtype)
    weight = (num_classes - neg.sum(1)) / (num_classes - 1)
    return -weight * (neg * log_one_minus_softmax(logits)).sum(1)


def positive_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Per-sample cross-entropy, eq. (6); 0 where ``target`` is -1 (no positive label)."""
    return F.cross_entropy(logits, target.clamp(min=0), reduction='none') * (target >= 0)


@register(MODELS)
class PatchClassifier(BaseModel):
    """Backbone + global average pooling + linear head over the bag classes.

    Args:
        backbone: any registered backbone config (MobileNetV2 in the paper, e.g.
            ``dict(type='mmdet.MobileNetV2', out_indices=(7, ))``; ResNet-50 as an option);
            its last output is pooled.
        num_classes: number of classes C.
        dropout: dropout before the linear head.
        neg_loss_weight: factor on the negative term (1 in the paper).

    Targets: ``gt_label`` of each data sample (labelled patches); for the others the
    pseudo labels set by :class:`NegativePseudoLabelHook` through
    :meth:`set_pseudo_labels`, looked up by the sample's ``sample_idx``. The batch loss
    is the mean per-sample loss (positive + negative term) over the samples that carry
    any label; ``loss_pos`` and ``loss_neg`` are its two parts.
    """

    def __init__(self, backbone: dict, num_classes: int, dropout: float = 0.0,
                 neg_loss_weight: float = 1.0, data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[Union[dict, List[dict]]] = None) -> None:
        if data_preprocessor is None:
            data_preprocessor = dict(type='ImgDataPreprocessor')
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        if num_classes < 2:
            raise ValueError(f'PatchClassifier: num_classes={num_classes} must be >= 2')
        self.num_classes = num_classes
        self.neg_loss_weight = neg_loss_weight
        self.backbone = ENGINE_MODELS.build(backbone)
        with torch.no_grad():
            was_training = self.backbone.training
            self.backbone.eval()
            channels = self._features(torch.zeros(1, 3, 64, 64)).shape[1]
            self.backbone.train(was_training)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Linear(channels, num_classes)
        self._pseudo_positive: Optional[Tensor] = None
        self._pseudo_negative: Optional[Tensor] = None

    def _features(self, inputs: Tensor) -> Tensor:
        feats = self.backbone(inputs)
        if isinstance(feats, (list, tuple)):
            feats = feats[-1]
        return feats.mean(dim=(2, 3))

    def set_pseudo_labels(self, positive: Union[np.ndarray, Tensor],
                          negative: Union[np.ndarray, Tensor]) -> None:
        """Store per-patch targets of the training set: ``positive`` (N,) class or -1,
        ``negative`` (N, C) bool. Kept on the CPU (not a buffer: not in the state dict)."""
        positive = torch.as_tensor(np.asarray(positive), dtype=torch.long)
        negative = torch.as_tensor(np.asarray(negative), dtype=torch.bool)
        if positive.ndim != 1 or negative.shape != (positive.shape[0], self.num_classes):
            raise ValueError(f'set_pseudo_labels: positive {tuple(positive.shape)} and negative '
                             f'{tuple(negative.shape)} must be (N,) and (N, {self.num_classes})')
        self._pseudo_positive, self._pseudo_negative = positive, negative

    def _targets(self, data_samples: Sequence[BaseDataElement], device: torch.device):
        gt = torch.stack([s.gt_label.reshape(()) for s in data_samples]).cpu()
        if self._pseudo_positive is None:
            neg = torch.zeros(len(data_samples), self.num_classes, dtype=torch.bool)
            return gt.to(device), neg.to(device)
        idx = torch.tensor([int(s.sample_idx) for s in data_samples])
        if int(idx.max()) >= self._pseudo_positive.shape[0]:
            raise ValueError(f'PatchClassifier: sample_idx {int(idx.max())} is outside the '
                             f'{self._pseudo_positive.shape[0]} stored pseudo labels')
        pos = torch.where(gt >= 0, gt, self._pseudo_positive[idx])
        neg = self._pseudo_negative[idx] & (gt < 0)[:, None]
        return pos.to(device), neg.to(device)

    def forward(self, inputs: Tensor, data_samples: Optional[list] = None,
                mode: str = 'tensor'):
        logits = self.head(self.dropout(self._features(inputs)))
        if mode == 'tensor':
            return logits
        if mode == 'loss':
            return self.loss(logits, data_samples)
        if mode == 'predict':
            return self.predict(logits, data_samples)
        raise ValueError(f'PatchClassifier: unknown mode {mode!r}')

    def loss(self, logits: Tensor, data_samples: Sequence[BaseDataElement]) -> Dict[str, Tensor]:
        pos, neg = self._targets(data_samples, logits.device)
        has_label = (pos >= 0) | neg.any(1)
        count = has_label.sum().clamp(min=1)
        loss_pos = positive_loss(logits, pos).sum() / count
        loss_neg = self.neg_loss_weight * multi_negative_loss(logits, neg).sum() / count
        return dict(loss_pos=loss_pos, loss_neg=loss_neg)

    def predict(self, logits: Tensor, data_samples: Optional[list]) -> List[BaseDataElement]:
        probs = logits.softmax(1)
        if data_samples is None:
            data_samples = [BaseDataElement() for _ in range(len(logits))]
        for sample, p in zip(data_samples, probs):
            sample.pred_score = p.detach()
            sample.pred_label = p.argmax().detach()
        return list(data_samples)
