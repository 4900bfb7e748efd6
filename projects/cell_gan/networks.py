"""Residual generator, critic and auxiliary head of Hu et al. 2018 (Fig. 3).

Fig. 3(c) has three residual blocks: with nearest-neighbour upsampling (generator, with
batch normalisation), with mean-pool downsampling (discriminator, no normalisation) and
without resampling. The widths and depths follow the WGAN-GP ResNet for 32x32 images the
paper builds on (Gulrajani et al. 2017): G = linear -> 4x4 -> three up blocks -> 32x32;
D = four blocks (32 -> 16 -> 8 -> 8 -> 8), ReLU, global mean pool, linear critic. With 128
channels, D's four block outputs max-pooled to 4x4 give the paper's 8192-dimensional
feature (sect. IV-C). Q is a linear softmax head, on D's pooled trunk (the authors' code)
or on a residual trunk of its own (the paper's Fig. 3).
"""
import math
from typing import List, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

__all__ = ['ResBlock', 'ResGenerator', 'ResTrunk', 'ResDiscriminator', 'QNetwork',
           'num_down_blocks']


def num_down_blocks(img_size: int) -> int:
    """Resampling steps between ``img_size`` and the 4x4 (G) / 8x8 (D) grids: log2(size / 4)."""
    steps = math.log2(img_size / 4) if img_size > 0 else 0
    if img_size < 16 or steps != int(steps):
        raise ValueError(f'img_size must be 4 * 2^k >= 16 (e.g. 32), got {img_size}')
    return int(steps)


class ResBlock(nn.Module):
    """Residual block of Fig. 3(c): ``resample`` 'up' | 'down' | None.

    'up' (generator): BN-ReLU-upsample-conv3-BN-ReLU-conv3, shortcut upsample-conv1.
    'down' (critic): ReLU-conv3-ReLU-conv3-meanpool, shortcut conv1-meanpool; with
    ``first=True`` (on the image) conv3-ReLU-conv3-meanpool, shortcut meanpool-conv1.
    None: the critic's block without resampling (identity shortcut).
    """

    def __init__(self, in_channels: int, out_channels: int, resample: Union[str, None],
                 first: bool = False):
        super().__init__()
        if resample not in ('up', 'down', None):
            raise ValueError(f'resample must be "up", "down" or None, got {resample!r}')
        self.resample, self.first = resample, first
        norm = resample == 'up'
        self.bn1 = nn.BatchNorm2d(in_channels) if norm else nn.Identity()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(out_channels) if norm else nn.Identity()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.shortcut = (nn.Conv2d(in_channels, out_channels, 1)
                         if in_channels != out_channels or resample else nn.Identity())

    def forward(self, x: Tensor) -> Tensor:
        if self.resample == 'up':
            h = F.interpolate(F.relu(self.bn1(x)), scale_factor=2, mode='nearest')
            h = self.conv2(F.relu(self.bn2(self.conv1(h))))
            return h + self.shortcut(F.interpolate(x, scale_factor=2, mode='nearest'))
        h = self.conv1(x if self.first else F.relu(x))
        h = self.conv2(F.relu(h))
        if self.resample is None:
            return h + self.shortcut(x)
        h = F.avg_pool2d(h, 2)
        if self.first:
            return h + self.shortcut(F.avg_pool2d(x, 2))
        return h + F.avg_pool2d(self.shortcut(x), 2)


class ResGenerator(nn.Module):
    """G(z, c): [z, one-hot c] -> linear -> (C, 4, 4) -> up blocks -> BN-ReLU-conv3-tanh."""

    def __init__(self, z_dim: int = 32, num_categories: int = 5, channels: int = 128,
                 img_size: int = 32):
        super().__init__()
        self.z_dim, self.num_categories, self.channels = z_dim, num_categories, channels
        self.fc = nn.Linear(z_dim + num_categories, channels * 16)
        self.blocks = nn.Sequential(*[ResBlock(channels, channels, 'up')
                                      for _ in range(num_down_blocks(img_size))])
        self.bn = nn.BatchNorm2d(channels)
        self.to_rgb = nn.Conv2d(channels, 3, 3, padding=1)

    def forward(self, z: Tensor, c: Tensor) -> Tensor:
        """Images in [-1, 1], (B, 3, size, size); ``c`` category ids (B,)."""
        code = torch.cat([z, F.one_hot(c, self.num_categories).to(z.dtype)], dim=1)
        h = self.fc(code).view(-1, self.channels, 4, 4)
        return torch.tanh(self.to_rgb(F.relu(self.bn(self.blocks(h)))))


class ResTrunk(nn.Module):
    """Critic trunk: a first down block, (log2(size/4) - 2) more down blocks and two plain
    blocks, ending on an 8x8 grid; ``forward`` gives (ReLU + global mean pool (B, C),
    every block's output map)."""

    def __init__(self, channels: int = 128, img_size: int = 32):
        super().__init__()
        downs = num_down_blocks(img_size) - 1  # the trunk ends on an 8x8 grid
        blocks = [ResBlock(3, channels, 'down', first=True)]
        blocks += [ResBlock(channels, channels, 'down') for _ in range(downs - 1)]
        blocks += [ResBlock(channels, channels, None) for _ in range(2)]
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: Tensor) -> Tuple[Tensor, List[Tensor]]:
        maps = []
        h = x
        for block in self.blocks:
            h = block(h)
            maps.append(h)
        return F.relu(h).mean(dim=(2, 3)), maps


class ResDiscriminator(nn.Module):
    """Critic D: :class:`ResTrunk` and a linear critic on its pooled output."""

    def __init__(self, channels: int = 128, img_size: int = 32):
        super().__init__()
        self.trunk = ResTrunk(channels, img_size)
        self.critic = nn.Linear(channels, 1)
        self.channels = channels

    def forward(self, x: Tensor, return_features: bool = False
                ) -> Union[Tuple[Tensor, Tensor], Tuple[Tensor, Tensor, List[Tensor]]]:
        """(critic value (B,), pooled trunk (B, C)[, every block's output map])."""
        pooled, maps = self.trunk(x)
        out = self.critic(pooled).squeeze(1)
        return (out, pooled, maps) if return_features else (out, pooled)


class QNetwork(nn.Module):
    """Auxiliary network Q: logits of Q(c | x) over the K categories (softmax in the loss
    and the prediction).

    ``shared_trunk=False`` (the default, as :class:`CellInfoWGAN`'s ``q_shares_trunk``;
    the paper's Fig. 3: Q is its own residual network): a :class:`ResTrunk` of its own,
    same architecture as D's, and a linear head; ``forward`` takes images.
    ``shared_trunk=True`` (the authors' code): a linear head on D's pooled trunk, so
    ``forward`` takes D's pooled features (B, C).
    """

    def __init__(self, channels: int = 128, num_categories: int = 5, img_size: int = 32,
                 shared_trunk: bool = False):
        super().__init__()
        self.shared_trunk = bool(shared_trunk)
        self.trunk = None if self.shared_trunk else ResTrunk(channels, img_size)
        self.fc = nn.Linear(channels, num_categories)

    def features(self, x: Tensor) -> Tensor:
        """The (B, C) input of the linear head: Q's pooled trunk of images, or ``x`` itself
        (D's pooled trunk) when the trunk is shared."""
        return x if self.trunk is None else self.trunk(x)[0]

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x))
