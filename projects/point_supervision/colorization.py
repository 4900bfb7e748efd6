"""Nuclei-aware colourisation network C of SC-Net and its loss (eq. (8)).

Lin et al., "Nuclei segmentation with point annotations from pathology images via
self-supervised learning and co-training" (``papers/point_supervised_nuclei_segmentation``),
sect. II.C and Fig. 2(b): a second U-Net maps the nucleus probability map S(x_h) back to
the H&E image x; L_color = 1/|Omega| sum_{i in Omega} ||C(S(x_h))_i - x_i||_2^2 (eq. (8)).
The authors' code (hust-linyi/SC-Net) uses ``torch.nn.L1Loss`` instead; both are offered.

The U-Net here is our own small one (mmseg's ``UNet`` builds its ``InterpConv`` upsampling
through the default scope and fails outside the mmseg scope): ``num_stages`` levels, each
two 3x3 conv-BN-ReLU, 2x2 max-pool down, bilinear 2x up + concat skip on the way back,
``base_channels * 2**k`` channels at level k; then a 1x1 conv and a sigmoid give RGB in
[0, 1].
"""
from typing import List, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmengine.model import BaseModule
from torch import Tensor

from projects.common.registry import MODELS, register

LOSSES = ('l2', 'l1')


def colorization_loss(pred: Tensor, target: Tensor, mask: Optional[Tensor] = None,
                      mode: str = 'l2') -> Tensor:
    """Colourisation loss between predicted and true RGB images, eq. (8) of SC-Net.

    Args:
        pred / target: (B, C, H, W) images; target in [0, 1].
        mask: optional (B, H, W) bool; Omega = its True pixels (e.g. excluding padding),
            else every pixel.
        mode: ``'l2'``: eq. (8), per pixel the squared L2 norm over channels, averaged over
            Omega; ``'l1'`` (the authors' code, ``nn.L1Loss``): mean absolute error over
            Omega x channels.

    An empty Omega (mask all False) gives 0, keeping the graph.
    """
    if mode not in LOSSES:
        raise ValueError(f'colorization_loss: mode must be one of {LOSSES}, got {mode!r}')
    if pred.dim() != 4 or pred.shape != target.shape:
        raise ValueError(f'colorization_loss: pred {tuple(pred.shape)} and target '
                         f'{tuple(target.shape)} must have the same (B, C, H, W) shape')
    if target.numel() and (target.min() < 0 or target.max() > 1):
        raise ValueError(f'colorization_loss: target must be an RGB image in [0, 1], got '
                         f'values in [{target.min().item():g}, {target.max().item():g}]')
    diff = pred - target.to(pred.dtype)
    if mode == 'l2':
        per_pixel = diff.pow(2).sum(dim=1)  # (B, H, W): ||C(S(x_h))_i - x_i||_2^2
    else:
        per_pixel = diff.abs().mean(dim=1)  # mean over channels; then over pixels
    if mask is None:
        return per_pixel.mean()
    b, _, h, w = pred.shape
    if mask.dtype != torch.bool or tuple(mask.shape) != (b, h, w):
        raise ValueError(f'colorization_loss: mask must be a bool tensor of shape '
                         f'{(b, h, w)}, got {mask.dtype} {tuple(mask.shape)}')
    mask = mask.to(per_pixel.device)
    count = mask.sum()
    if count == 0:
        return per_pixel.sum() * 0.0
    return per_pixel[mask].sum() / count


class _DoubleConv(nn.Sequential):
    """Two 3x3 conv-norm-ReLU (one U-Net level)."""

    def __init__(self, in_channels: int, out_channels: int, norm_cfg: dict) -> None:
        act = dict(type='ReLU')
        super().__init__(
            ConvModule(in_channels, out_channels, 3, padding=1, norm_cfg=norm_cfg, act_cfg=act),
            ConvModule(out_channels, out_channels, 3, padding=1, norm_cfg=norm_cfg, act_cfg=act))


@register(MODELS)
class ColorizationHead(BaseModule):
    """The colourisation U-Net C of SC-Net: nucleus probability map -> RGB in [0, 1].

    Args:
        in_channels: channels of the probability map (1: nucleus probability).
        out_channels: output image channels (3: RGB).
        base_channels: channels of the full-resolution level (level k: base * 2**k).
        num_stages: U-Net levels (num_stages - 1 poolings; H, W must be divisible by
            2 ** (num_stages - 1)).
        loss: ``'l2'`` (eq. (8), the paper) or ``'l1'`` (the authors' code); see
            :func:`colorization_loss`.
        norm_cfg: norm layer config.
        init_cfg: mmengine init config.
    """

    def __init__(self,
                 in_channels: int = 1,
                 out_channels: int = 3,
                 base_channels: int = 16,
                 num_stages: int = 4,
                 loss: str = 'l2',
                 norm_cfg: Optional[dict] = dict(type='BN'),
                 init_cfg: Optional[Union[dict, List[dict]]] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        for name, value in (('in_channels', in_channels), ('out_channels', out_channels),
                            ('base_channels', base_channels), ('num_stages', num_stages)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f'ColorizationHead: {name} must be a positive int, '
                                 f'got {value!r}')
        if loss not in LOSSES:
            raise ValueError(f'ColorizationHead: loss must be one of {LOSSES}, got {loss!r}')
        norm_cfg = dict(type='BN') if norm_cfg is None else norm_cfg
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_stages = num_stages
        self.loss_type = loss
        self.size_divisor = 2**(num_stages - 1)

        widths = [base_channels * 2**k for k in range(num_stages)]
        self.encoder = nn.ModuleList()
        channels = in_channels
        for width in widths:
            self.encoder.append(_DoubleConv(channels, width, norm_cfg))
            channels = width
        # decoder level k (from num_stages-2 down to 0): concat(up(level k+1), skip k)
        self.decoder = nn.ModuleList(
            _DoubleConv(widths[k + 1] + widths[k], widths[k], norm_cfg)
            for k in reversed(range(num_stages - 1)))
        self.to_rgb = nn.Conv2d(widths[0], out_channels, 1)

    def forward(self, prob: Tensor) -> Tensor:
        """(B, in_channels, H, W) probability map -> (B, out_channels, H, W) image in [0, 1]."""
        if prob.dim() != 4 or prob.shape[1] != self.in_channels:
            raise ValueError(f'ColorizationHead: input must have shape (B, {self.in_channels}, '
                             f'H, W), got {tuple(prob.shape)}')
        h, w = prob.shape[-2:]
        if h % self.size_divisor or w % self.size_divisor:
            raise ValueError(f'ColorizationHead: input height and width must be divisible by '
                             f'{self.size_divisor} (num_stages={self.num_stages}), got shape '
                             f'{tuple(prob.shape)}')
        skips = []
        x = prob
        for k, level in enumerate(self.encoder):
            if k > 0:
                x = F.max_pool2d(x, 2)
            x = level(x)
            skips.append(x)
        for level, skip in zip(self.decoder, reversed(skips[:-1])):
            x = F.interpolate(x, size=skip.shape[-2:], mode='bilinear', align_corners=False)
            x = level(torch.cat([x, skip], dim=1))
        return torch.sigmoid(self.to_rgb(x))

    def loss(self, pred: Tensor, target: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """L_color between ``pred`` = C(S(x_h)) and the RGB image ``target`` in [0, 1]."""
        return colorization_loss(pred, target, mask=mask, mode=self.loss_type)
