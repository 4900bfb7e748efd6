"""ResUNet: the segmentation network S of SC-Net (a ResNet encoder + a residual U-Net decoder).

Lin et al., "Nuclei segmentation with point annotations from pathology images via
self-supervised learning and co-training" (``papers/point_supervised_nuclei_segmentation``),
sect. II.A.3 and Fig. 2(b): "we adopt the ResUNet as the segmentation network which
integrates the residual blocks into the U-Net". S maps the H-component image x_h (one
channel) to features from which a 1x1 head predicts the nucleus probability y = S(x_h).

Layout (input stride 1, H and W divisible by 32):

========= ======================================= ========================
stride    encoder side                            skip channels
========= ======================================= ========================
1         stem conv3x3 s1 - BN - ReLU             ``stem_channels[0]``
2         stem conv3x3 s2 - BN - ReLU             ``stem_channels[1]``
4..32     ResNet stages 0..3 (``out_indices``)    read from a dummy forward
========= ======================================= ========================

ResNet's own stem downsamples by 4, so the stride-1 and stride-2 skips come from our
small stem (run on the input, parallel to the ResNet). The decoder starts from the
stride-32 map and has 5 stages; stage k upsamples by 2 (bilinear), concatenates the skip
at the new stride and applies a :class:`ResidualBlock` with ``decoder_channels[k]``
outputs. The last stage is at full resolution.
"""
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmengine.model import BaseModule
from mmseg.registry import MODELS as SEG_MODELS
from torch import Tensor

from projects.common.registry import MODELS, build_in_scope, register

ENCODER_STRIDES: Tuple[int, ...] = (4, 8, 16, 32)
# size of the dummy input used to read the encoder's channels and strides at init
_PROBE_SIZE = 64


class ResidualBlock(BaseModule):
    """Two 3x3 conv-BN(-ReLU) with a 1x1 conv-BN projection shortcut (He et al. 2016).

    out = ReLU(BN(conv3x3(ReLU(BN(conv3x3(x))))) + BN(conv1x1(x))).
    """

    def __init__(self, in_channels: int, out_channels: int,
                 norm_cfg: Optional[dict] = None,
                 init_cfg: Optional[Union[dict, List[dict]]] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        norm_cfg = dict(type='BN') if norm_cfg is None else norm_cfg
        self.conv1 = ConvModule(in_channels, out_channels, 3, padding=1, norm_cfg=norm_cfg,
                                act_cfg=dict(type='ReLU'))
        self.conv2 = ConvModule(out_channels, out_channels, 3, padding=1, norm_cfg=norm_cfg,
                                act_cfg=None)
        self.shortcut = ConvModule(in_channels, out_channels, 1, norm_cfg=norm_cfg,
                                   act_cfg=None)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


def _check_channels(value: Sequence[int], length: int, name: str) -> Tuple[int, ...]:
    """``value`` as a tuple of ``length`` positive ints, else ValueError naming ``name``."""
    try:
        out = tuple(int(v) for v in value)
    except TypeError:
        raise ValueError(f'ResUNet: {name} must be a sequence of {length} positive ints, '
                         f'got {value!r}') from None
    if len(out) != length or any(v < 1 for v in out) or any(
            isinstance(v, bool) or int(v) != v for v in value):
        raise ValueError(f'ResUNet: {name} must be a sequence of {length} positive ints, '
                         f'got {value!r}')
    return out


@register(MODELS)
class ResUNet(BaseModule):
    """ResNet encoder + residual U-Net decoder, returning one full-resolution feature map.

    Args:
        encoder: config of a ResNet-like backbone built with ``mmseg.registry.MODELS``
            (e.g. ``dict(type='ResNet', depth=18)``, ``'ResNetV1c'``, ``'mmdet.ResNet'``).
            It must return 4 maps at strides 4, 8, 16, 32 (``out_indices=(0, 1, 2, 3)``,
            no dilation). Its ``in_channels`` defaults to ours.
        in_channels: input channels (1 for the H-component image of SC-Net).
        decoder_channels: output channels of the 5 decoder stages (strides 16, 8, 4, 2, 1).
        stem_channels: channels of our stride-1 and stride-2 stem convs (the skips the
            ResNet does not provide).
        norm_cfg: norm layer of the stem and decoder.
        init_cfg: mmengine init config of the whole module.

    ``forward(x)`` returns a 1-tuple ``(feat,)``, feat of shape
    ``(B, decoder_channels[-1], H, W)``; ``out_channels`` gives that channel count.
    """

    num_decoder_stages = 5

    def __init__(self,
                 encoder: dict,
                 in_channels: int = 1,
                 decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
                 stem_channels: Tuple[int, int] = (16, 32),
                 norm_cfg: Optional[dict] = dict(type='BN'),
                 init_cfg: Optional[Union[dict, List[dict]]] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f'ResUNet: in_channels must be a positive int, got {in_channels!r}')
        if not isinstance(encoder, dict) or 'type' not in encoder:
            raise ValueError(f'ResUNet: encoder must be a config dict with a "type" key, '
                             f'got {encoder!r}')
        self.in_channels = in_channels
        self.decoder_channels = _check_channels(decoder_channels, self.num_decoder_stages,
                                                'decoder_channels')
        self.stem_channels = _check_channels(stem_channels, 2, 'stem_channels')
        norm_cfg = dict(type='BN') if norm_cfg is None else norm_cfg

        encoder = dict(encoder)
        enc_in = encoder.setdefault('in_channels', in_channels)
        if enc_in != in_channels:
            raise ValueError(f'ResUNet: encoder in_channels={enc_in} differs from '
                             f'in_channels={in_channels}; the encoder and the stem read the '
                             f'same input')
        self.encoder = build_in_scope('mmseg', SEG_MODELS, encoder)
        self.encoder_channels = self._probe_encoder(encoder)

        act = dict(type='ReLU')
        self.stem_full = ConvModule(in_channels, self.stem_channels[0], 3, stride=1,
                                    padding=1, norm_cfg=norm_cfg, act_cfg=act)
        self.stem_half = ConvModule(self.stem_channels[0], self.stem_channels[1], 3, stride=2,
                                    padding=1, norm_cfg=norm_cfg, act_cfg=act)

        # skips in decoder order: strides 16, 8, 4 (encoder), 2, 1 (stem)
        skip_channels = (self.encoder_channels[2], self.encoder_channels[1],
                         self.encoder_channels[0], self.stem_channels[1],
                         self.stem_channels[0])
        blocks = []
        channels = self.encoder_channels[3]
        for skip, out in zip(skip_channels, self.decoder_channels):
            blocks.append(ResidualBlock(channels + skip, out, norm_cfg=norm_cfg))
            channels = out
        self.decoder = nn.ModuleList(blocks)
        self.out_channels = self.decoder_channels[-1]

    @torch.no_grad()
    def _probe_encoder(self, cfg: Dict) -> Tuple[int, ...]:
        """Channels of the encoder's 4 outputs, checking they have strides 4, 8, 16, 32.

        A dummy ``_PROBE_SIZE`` square input is run in eval mode (BN statistics untouched).
        """
        enc = self.encoder
        param = next(enc.parameters(), None)
        kw = dict(dtype=param.dtype, device=param.device) if param is not None else {}
        was_training = enc.training
        enc.eval()
        try:
            feats = enc(torch.zeros(1, self.in_channels, _PROBE_SIZE, _PROBE_SIZE, **kw))
        finally:
            enc.train(was_training)
        if isinstance(feats, Tensor) or len(feats) != len(ENCODER_STRIDES):
            n = 1 if isinstance(feats, Tensor) else len(feats)
            raise ValueError(f'ResUNet: encoder {cfg.get("type")!r} returns {n} feature maps; '
                             f'4 are needed (set out_indices=(0, 1, 2, 3))')
        strides = tuple(_PROBE_SIZE // f.shape[-1] for f in feats)
        if strides != ENCODER_STRIDES or any(f.shape[-2] != f.shape[-1] for f in feats):
            raise ValueError(f'ResUNet: encoder {cfg.get("type")!r} gives maps at strides '
                             f'{strides}; 4, 8, 16, 32 are needed (use strides=(1, 2, 2, 2), '
                             f'dilations=(1, 1, 1, 1))')
        return tuple(int(f.shape[1]) for f in feats)

    def forward(self, x: Tensor) -> Tuple[Tensor]:
        """(B, in_channels, H, W) with H, W divisible by 32 -> ((B, out_channels, H, W),)."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f'ResUNet: input must have shape (B, {self.in_channels}, H, W), '
                             f'got {tuple(x.shape)}')
        h, w = x.shape[-2:]
        if h % 32 or w % 32:
            raise ValueError(f'ResUNet: input height and width must be divisible by 32, got '
                             f'shape {tuple(x.shape)} (pad the input, e.g. with the '
                             f'data preprocessor size_divisor=32)')
        full = self.stem_full(x)
        half = self.stem_half(full)
        c4, c8, c16, c32 = self.encoder(x)
        out = c32
        for block, skip in zip(self.decoder, (c16, c8, c4, half, full)):
            out = F.interpolate(out, size=skip.shape[-2:], mode='bilinear',
                                align_corners=False)
            out = block(torch.cat([out, skip], dim=1))
        return (out, )
