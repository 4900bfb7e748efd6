"""VGG16 backbone for two-stage detectors (Faster R-CNN + FPN), as used by the PU paper.

Zhao et al., MICCAI 2021 (PU learning for cell detection) train Faster R-CNN on an
ImageNet-pretrained VGG16 (Simonyan & Zisserman, ICLR 2015). mmdet registers only
``SSDVGG`` (SSD's extra layers and L2 norm); this module is the plain 13-conv VGG16
feature extractor returning multi-scale maps for an FPN.

Stages and strides (input stride 1): stage ``i`` (0..4) is conv block ``i`` *followed by
its 2x2 max pool*, so stage ``i`` has stride ``2 ** (i + 1)``:

====== =========================== ======== ======
stage  layers (torchvision names)  channels stride
====== =========================== ======== ======
0      conv1_1, conv1_2, pool1      64       2
1      conv2_1, conv2_2, pool2      128      4
2      conv3_1..conv3_3, pool3      256      8
3      conv4_1..conv4_3, pool4      512      16
4      conv5_1..conv5_3, pool5      512      32
====== =========================== ======== ======

``out_indices=(1, 2, 3, 4)`` therefore gives the strides 4, 8, 16, 32 of a ResNet, and
mmdet's FPN / RPN / RoI settings for ResNet (anchor strides [4, 8, 16, 32, 64], RoI
strides [4, 8, 16, 32]) apply unchanged with ``neck.in_channels=[128, 256, 512, 512]``.
``with_last_pool=False`` drops pool5, so stage 4 is conv5_3 at stride 16: the single
feature map of the original Faster R-CNN VGG16.

Layers live in ``self.features``, an ``nn.Sequential`` with torchvision's indices
(``features.0.weight`` = conv1_1, ..., ``features.28`` = conv5_3; with BN, the indices of
torchvision's ``vgg16_bn``), so a torchvision ImageNet checkpoint loads without renaming
(its ``classifier.*`` keys are reported as unexpected by mmengine and ignored)::

    init_cfg=dict(type='Pretrained',
                  checkpoint='https://download.pytorch.org/models/vgg16-397923af.pth')

(``checkpoint='torchvision://vgg16'`` resolves to the same file but makes mmengine import
torchvision, which is not installable next to this CPU torch.) The checkpoint expects RGB
input normalised with ImageNet mean/std, which is mmdet's default data preprocessor.
"""
from typing import List, Optional, Sequence, Tuple, Union

import torch.nn as nn
from mmengine.model import BaseModule
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm

from projects.common.registry import MODELS, register

# VGG16 ("configuration D"): output channels of the convs of each block.
VGG16_BLOCKS: Tuple[Tuple[int, ...], ...] = ((64, 64), (128, 128), (256, 256, 256),
                                             (512, 512, 512), (512, 512, 512))


@register(MODELS)
class VGG16(BaseModule):
    """VGG16 feature extractor returning the maps of the requested stages.

    Args:
        out_indices: stages to return (0..4; stage i has stride 2**(i+1), see the module
            docstring), in increasing order.
        with_bn: BatchNorm after every conv (torchvision's ``vgg16_bn`` layout). The
            paper's VGG16 has none (default).
        with_last_pool: keep pool5; if False stage 4 has stride 16 instead of 32.
        frozen_stages: stages 0..frozen_stages get ``requires_grad=False`` and stay in
            eval mode; -1 freezes nothing.
        norm_eval: keep every BatchNorm in eval mode during training (frozen statistics).
        in_channels: input image channels.
        init_cfg: mmengine init config, e.g. ``dict(type='Pretrained', checkpoint=...)``;
            None keeps PyTorch's default initialisation.
    """

    num_stages = len(VGG16_BLOCKS)

    def __init__(self,
                 out_indices: Sequence[int] = (1, 2, 3, 4),
                 with_bn: bool = False,
                 with_last_pool: bool = True,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 in_channels: int = 3,
                 init_cfg: Optional[Union[dict, List[dict]]] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        out_indices = tuple(int(i) for i in out_indices)
        if not out_indices:
            raise ValueError('VGG16: out_indices is empty; give at least one stage in 0..4')
        for i in out_indices:
            if not 0 <= i < self.num_stages:
                raise ValueError(f'VGG16: out_indices={out_indices} contains {i}; '
                                 f'stages are 0..{self.num_stages - 1}')
        if list(out_indices) != sorted(set(out_indices)):
            raise ValueError(f'VGG16: out_indices={out_indices} must be strictly increasing')
        if not -1 <= frozen_stages < self.num_stages:
            raise ValueError(f'VGG16: frozen_stages={frozen_stages} must be in '
                             f'-1..{self.num_stages - 1}')
        if in_channels < 1:
            raise ValueError(f'VGG16: in_channels={in_channels} must be >= 1')
        self.out_indices = out_indices
        self.with_bn = with_bn
        self.with_last_pool = with_last_pool
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval

        layers: List[nn.Module] = []
        # stage_ends[i]: index in `features` one past the last layer of stage i
        self.stage_ends: List[int] = []
        channels = in_channels
        for stage, block in enumerate(VGG16_BLOCKS):
            for out_ch in block:
                layers.append(nn.Conv2d(channels, out_ch, kernel_size=3, padding=1))
                if with_bn:
                    layers.append(nn.BatchNorm2d(out_ch))
                layers.append(nn.ReLU(inplace=True))
                channels = out_ch
            if stage < self.num_stages - 1 or with_last_pool:
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            self.stage_ends.append(len(layers))
        self.features = nn.Sequential(*layers)
        self.out_channels = tuple(VGG16_BLOCKS[i][-1] for i in out_indices)
        self._freeze_stages()

    def _stage_modules(self, stage: int) -> nn.Sequential:
        start = self.stage_ends[stage - 1] if stage > 0 else 0
        return self.features[start:self.stage_ends[stage]]

    def _freeze_stages(self) -> None:
        for stage in range(self.frozen_stages + 1):
            block = self._stage_modules(stage)
            block.eval()
            for param in block.parameters():
                param.requires_grad = False

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        """Return the feature maps of ``out_indices`` (stage i: stride 2**(i+1))."""
        outs = []
        start = 0
        for stage, end in enumerate(self.stage_ends):
            for layer in self.features[start:end]:
                x = layer(x)
            start = end
            if stage in self.out_indices:
                outs.append(x)
            if stage == self.out_indices[-1]:
                break
        return tuple(outs)

    def train(self, mode: bool = True) -> 'VGG16':
        """Switch mode, keeping frozen stages (and BN if ``norm_eval``) in eval mode."""
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self
