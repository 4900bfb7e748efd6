"""Exclusive (focal) cross-entropy for sparse-shot detection and segmentation
(Panteli et al., ICCV 2021).

Importing registers ExclusiveCrossEntropyLoss (mmdet and mmseg MODELS; eqs. 7-8 with the
paper's and the ece-loss package's schedules, after a short warm-up without exclusion by
default), ExclusivityScheduleHook, and the YOLLO-style detector (YOLLO, YOLLOHead: one
stride-4 map, per-cell class logits and centre offset, fixed-size boxes); PixelFocalLoss,
mmseg's sigmoid focal loss on any device (the segmentation benchmark's focal peer).
"""
from .ece_loss import ExclusiveCrossEntropyLoss, anneal, exclusive_ce, schedule_constants
from .focal_loss import PixelFocalLoss, sigmoid_focal
from .hooks import ExclusivityScheduleHook, ece_losses

__all__ = ['ExclusiveCrossEntropyLoss', 'anneal', 'exclusive_ce', 'schedule_constants',
           'ExclusivityScheduleHook', 'ece_losses', 'PixelFocalLoss', 'sigmoid_focal']
from .yollo import YOLLO, YOLLOHead, valid_cells, yollo_targets  # noqa: E402

__all__ += ['YOLLO', 'YOLLOHead', 'valid_cells', 'yollo_targets']
