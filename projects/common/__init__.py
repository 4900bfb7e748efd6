"""Components shared by every MMHisto method (importing this registers them)."""
from . import datasets, metrics, stain, tiling, transforms  # noqa: F401
from .metrics import CellDetectionMetric, NucleiMetric, aji, dice_obj, match_points
from .tiling import SlidingWindowInference, crop_patches, merge_detections, tile_grid

__all__ = [
    'CellDetectionMetric', 'NucleiMetric', 'aji', 'dice_obj', 'match_points',
    'SlidingWindowInference', 'crop_patches', 'merge_detections', 'tile_grid'
]
