"""Point-supervised nuclei segmentation (Qu et al.): Voronoi and cluster labels from
points, the H-component input, SC-Net (ResUNet + colourisation U-Net), and co-training of
two SC-Nets with EMA pseudo labels.

Importing registers (mmdet and mmseg): MODELS ``ResUNet``, ``ColorizationHead``,
``CoTrainingSegmentor``; TRANSFORMS ``PointsToVoronoiLabel``, ``PointsToClusterLabel``,
``AddSourceIndex``, ``BinarizeSegMap``, ``PackCoTrainingInputs``; HOOKS
``EMAPseudoLabelHook``. ``ExtractHematoxylin`` and ``NucleiMetric`` come from
``projects.common``.
"""
import projects.common  # noqa: F401  (ExtractHematoxylin, NucleiMetric, datasets)
from .colorization import ColorizationHead
from .cotraining import (CoTrainingSegmentor, binary_kl, ema_update, ema_weights,
                         grad_norm_shares, loss_weights, masked_ce, pseudo_label)
from .hooks import EMAPseudoLabelHook, split_halves
from .labels import cluster_label, voronoi_label
from .pipeline import (AddSourceIndex, BinarizeSegMap, PackCoTrainingInputs, RandomRot90Flip,
                       RandomZoom)
from .resunet import ResUNet
from .transforms import PointsToClusterLabel, PointsToVoronoiLabel

__all__ = ['ColorizationHead', 'CoTrainingSegmentor', 'binary_kl', 'ema_update',
           'ema_weights', 'grad_norm_shares', 'loss_weights', 'masked_ce', 'pseudo_label',
           'EMAPseudoLabelHook', 'split_halves', 'AddSourceIndex', 'BinarizeSegMap',
           'PackCoTrainingInputs', 'RandomRot90Flip', 'RandomZoom', 'ResUNet',
           'cluster_label', 'voronoi_label', 'PointsToClusterLabel', 'PointsToVoronoiLabel']
