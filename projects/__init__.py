"""MMHisto: OpenMMLab components for computational pathology with incomplete labels."""
from . import compat  # noqa: F401  (torch.load fix for mmengine checkpoints)

__version__ = '0.1.0'
