"""Sampler over a changing pool of training patches (labelled + pseudo-labelled)."""
import math
from typing import Iterator, Optional, Sequence

import numpy as np
import torch
from mmengine.dist import get_dist_info, sync_random_seed
from mmengine.registry import DATA_SAMPLERS
from torch.utils.data import Sampler

from .selection import training_pool

__all__ = ['PseudoLabelSampler']


@DATA_SAMPLERS.register_module()
class PseudoLabelSampler(Sampler):
    """Yield a shuffled epoch over ``pool``: dataset indices, repeats allowed.

    The initial pool is the dataset's labelled patches (``dataset.gt_labels >= 0``), with
    rare classes oversampled when ``oversample`` (see
    :func:`projects.negative_pseudo_labels.selection.training_pool`).
    :class:`NegativePseudoLabelHook` replaces it each round with :meth:`set_pool`. The
    epoch length follows the pool; in distributed runs the pool (identical on every rank)
    is padded to a multiple of the world size and split like mmengine's DefaultSampler.

    ``samples_per_epoch``: draw this many samples per epoch (cycling through successive
    shuffles of the pool) instead of one pass over the pool, so that an epoch costs the
    same however many pseudo labels there are (None: one pass).
    """

    def __init__(self, dataset, shuffle: bool = True, seed: Optional[int] = None,
                 oversample: bool = True, samples_per_epoch: Optional[int] = None) -> None:
        if samples_per_epoch is not None and samples_per_epoch < 1:
            raise ValueError(f'PseudoLabelSampler: samples_per_epoch={samples_per_epoch} must '
                             'be >= 1 or None')
        self.samples_per_epoch = samples_per_epoch
        self.rank, self.world_size = get_dist_info()
        self.dataset = dataset
        self.shuffle = shuffle
        self.seed = sync_random_seed() if seed is None else seed
        self.epoch = 0
        self.oversample = oversample
        gt = getattr(dataset, 'gt_labels', None)
        if gt is None:
            raise TypeError(f'PseudoLabelSampler: {type(dataset).__name__} has no `gt_labels`; '
                            'use it with ProportionBagDataset')
        num_classes = len(dataset.metainfo['classes'])
        self.set_pool(training_pool(gt, None, num_classes, oversample, self.seed))

    def set_pool(self, pool: Sequence[int]) -> None:
        """Train on these dataset indices from the next epoch on."""
        pool = np.asarray(pool, dtype=np.int64)
        if pool.ndim != 1 or pool.size == 0:
            raise ValueError('PseudoLabelSampler.set_pool: the pool is empty: no labelled or '
                             'pseudo-labelled patch to train on')
        if pool.min() < 0 or pool.max() >= len(self.dataset):
            raise ValueError(f'PseudoLabelSampler.set_pool: indices must lie in '
                             f'[0, {len(self.dataset)}), got [{pool.min()}, {pool.max()}]')
        self.pool = pool

    def __iter__(self) -> Iterator[int]:
        total = len(self) * self.world_size
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)
            passes = math.ceil(total / len(self.pool))
            order = np.concatenate([self.pool[torch.randperm(len(self.pool), generator=g).numpy()]
                                    for _ in range(passes)])
        else:
            order = self.pool
        order = np.resize(order, total)  # pad / cycle by repeating from the start
        return iter(order[self.rank:total:self.world_size].tolist())

    def __len__(self) -> int:
        size = len(self.pool) if self.samples_per_epoch is None else self.samples_per_epoch
        return math.ceil(size / self.world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
