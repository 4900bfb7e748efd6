"""PU learning for cell detection (Zhao et al., MICCAI 2021): importing registers PULoss."""
from .pu_loss import PULoss, pu_risk

__all__ = ['PULoss', 'pu_risk']
