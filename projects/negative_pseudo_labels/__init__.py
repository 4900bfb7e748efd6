"""Negative pseudo labelling from class proportions (Tokunaga et al., ECCV 2020): patch
classification in bags (slides) whose class ratios are known.

Importing registers (mmdet and mmseg unless noted): MODELS ``PatchClassifier``; DATASETS
(mmseg) ``ProportionBagDataset``; TRANSFORMS ``LoadPatchFromSlide``, ``PackPatchInputs``;
METRICS ``PatchSegMetric``; DATA_SAMPLERS (mmengine) ``PseudoLabelSampler``; HOOKS
``NegativePseudoLabelHook``.
"""
import projects.common  # noqa: F401
from .bags import patch_grid, read_bag_json, read_ratio_csv, tissue_grid, tissue_mask
from .classifier import (PatchClassifier, log_one_minus_softmax, multi_negative_loss,
                         positive_loss)
from .dataset import LoadPatchFromSlide, PackPatchInputs, ProportionBagDataset
from .hooks import NegativePseudoLabelHook
from .metric import PatchSegMetric, seg_scores, stitch
from .sampler import PseudoLabelSampler
from .selection import (bag_sae, fixed_threshold_labels, select_pseudo_labels,
                        select_pseudo_labels_bags, selection_rates, training_pool)

__all__ = ['patch_grid', 'read_bag_json', 'read_ratio_csv', 'tissue_grid', 'tissue_mask',
           'PatchClassifier', 'log_one_minus_softmax', 'multi_negative_loss', 'positive_loss',
           'LoadPatchFromSlide', 'PackPatchInputs', 'ProportionBagDataset',
           'NegativePseudoLabelHook', 'PatchSegMetric', 'seg_scores', 'stitch',
           'PseudoLabelSampler', 'bag_sae', 'fixed_threshold_labels', 'select_pseudo_labels',
           'select_pseudo_labels_bags', 'selection_rates', 'training_pool']
