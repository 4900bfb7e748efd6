"""PU learning for cell detection (Zhao et al., MICCAI 2021).

Importing registers PULoss, PURPNHead (one PU risk over all FPN levels and images), the
VGG16 backbone for two-stage detectors, and the BDE baseline (Li et al., MICCAI 2020):
BDERPNHead / BDERoIHead, which down-weight background samples covered by confident
regressed boxes more densely than the image's mean (box_density_energy, bde_weights,
relative_energy_weights).
"""
from .bde import (BDERoIHead, BDERPNHead, bde_weights, box_density_energy,
                  relative_energy_weights)
from .pu_loss import PULoss, pu_risk
from .pu_rpn_head import PURPNHead
from .vgg import VGG16

__all__ = ['PULoss', 'pu_risk', 'PURPNHead', 'VGG16', 'BDERPNHead', 'BDERoIHead',
           'box_density_energy', 'bde_weights', 'relative_energy_weights']
