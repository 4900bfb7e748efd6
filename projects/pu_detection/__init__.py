"""PU learning for cell detection (Zhao et al., MICCAI 2021).

Importing registers PULoss, PURPNHead (one PU risk over all FPN levels and images) and the
VGG16 backbone for two-stage detectors.
"""
from .pu_loss import PULoss, pu_risk
from .pu_rpn_head import PURPNHead
from .vgg import VGG16

__all__ = ['PULoss', 'pu_risk', 'PURPNHead', 'VGG16']
