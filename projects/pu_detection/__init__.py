"""PU learning for cell detection (Zhao et al., MICCAI 2021).

Importing registers PULoss (eq. 12; Kiryo et al.'s nnPU step; a per-batch prior from
hidden_prior), the heads that give it one whole batch per call (PUHeadMixin: PURPNHead,
PURetinaHead, PUATSSHead, PUFCOSHead; PURoIHead: ground-truth proposals out of the
positive means), PULossHook (iteration for the hidden-prior warm-up, diagnostics), the
VGG16 backbone for two-stage detectors, and the BDE baseline (Li et al., MICCAI 2020):
BDERPNHead / BDERoIHead, which down-weight background samples covered by confident
regressed boxes more densely than the image's mean (box_density_energy, bde_weights,
relative_energy_weights).
"""
from .bde import (BDERoIHead, BDERPNHead, bde_weights, box_density_energy,
                  relative_energy_weights)
from .hooks import PULossHook
from .pu_heads import PUATSSHead, PUFCOSHead, PUHeadMixin, PURetinaHead, PURoIHead
from .pu_loss import PULoss, cross_entropies, nnpu_risk, pu_risk, sigmoid_losses
from .pu_rpn_head import PURPNHead
from .vgg import VGG16

__all__ = ['PULoss', 'pu_risk', 'nnpu_risk', 'cross_entropies', 'sigmoid_losses', 'PURPNHead',
           'PUHeadMixin', 'PURetinaHead', 'PUATSSHead', 'PUFCOSHead', 'PURoIHead', 'PULossHook',
           'VGG16', 'BDERPNHead', 'BDERoIHead', 'box_density_energy', 'bde_weights',
           'relative_energy_weights']
