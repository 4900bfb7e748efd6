"""Unsupervised nuclei segmentation and cell crops (Hu et al. 2018, sect. III.B.1 and IV.B).

The paper segments nuclei with HistomicsTK in four stages (sect. III.B.1, Fig. 6) and
puts every cell in a 32 x 32 crop ("Segmentation Parameters", "Bounding Box", sect. IV.B):

1. **Reinhard normalisation** to a target's per-channel mean / std (the paper prints the
   target as Ruderman l-alpha-beta statistics, mean [8.98, 0.08, 0.02], std
   [0.64, 0.11, 0.03]: :data:`PAPER_TARGET_STATS`; HistomicsTK's ``lab_mean_std`` works
   in that space, so ``space='lalphabeta'`` is the default here).
2. **Macenko colour deconvolution**: stain vectors at the 1% / 99% angle percentiles
   (``alpha=1``). The paper "excludes magnitudes below 16": HistomicsTK's
   ``minimum_magnitude``, on the magnitude of a pixel's optical density in SDA units
   (``SDA = OD * 255 / ln 255``), i.e. an OD norm of ``16 ln(255) / 255 = 0.348``
   (:data:`MACENKO_MIN_OD`). Only pixels whose OD vector has at least that Euclidean norm
   enter :func:`projects.common.stain.macenko_stain_matrix` (with its per-channel
   ``beta`` set to 0). HistomicsTK measures the norm after projecting on the stain plane;
   we measure it before (the plane holds nearly all of an H&E pixel's OD). A per-channel
   ``beta`` would drop pale eosin, whose red OD is small.
3. **Intensity thresholding** of the hematoxylin image. As HistomicsTK's
   ``color_deconvolution`` ``Stains`` output, the H channel is an 8-bit *intensity*
   ``I_H = uint8(clip(255 exp(-c_H) + 1e-6, 0, 255))`` (truncation, 255 = no
   hematoxylin; the 1e-6 only guards integers against float error),
   ``c_H`` the H concentration of :func:`projects.common.stain.separate_stains` with unit
   stain vectors and natural-log OD (HistomicsTK's 3 x 3 inverse with the complementary
   third vector gives the same ``c_H`` as our least squares on the two stain rows, since
   that third vector is orthogonal to both). A pixel is nucleus when ``I_H < threshold``
   (paper: 120), i.e. when ``c_H > ln(255 / threshold)`` (:func:`threshold_od`: 0.754 OD
   for 120). Holes of the mask are filled (``binary_fill_holes``, the authors' code
   ``bohu615/nu_gan``; vesicular nuclei have pale centres).
4. **Post-processing**: objects smaller than ``min_size`` px (paper: 200; 4-connected) are
   removed, then a binary opening with an ``opening`` x ``opening`` square (paper: 7)
   separates touching cells. The paper's extra step "remove thin protrusions [44]"
   (HistomicsTK ``compact``) is not a separate step here: the opening removes every
   protrusion narrower than the square. Connected components (4-connectivity, as the
   authors' ``skimage.measure.label(connectivity=1)``) are the instances; fragments the
   opening leaves below ``min_size`` are dropped too, so every instance has >= ``min_size``
   pixels. Erosion treats pixels outside the image as foreground (as scikit-image's
   ``binary_opening``), so nuclei cut by the image border are not eaten from the border.

Crops (:func:`cell_crops`): ``mode='seg'`` (the paper's "w/ Seg"): the instance's bounding
box with the pixels outside the instance mask set to ``fill`` (white), centred in a
``size`` x ``size`` white canvas; when the larger box edge exceeds ``size`` the box is
rescaled so that the larger edge equals ``size`` (aspect kept, the other edge
``round(edge * size / larger)``, at least 1; the authors' code truncates). ``mode='bbox'``
(the paper's "w/o Seg" baseline input): the minimum bounding box, unmasked, resized to
``size`` x ``size``. Resizing uses OpenCV: area averaging (``INTER_AREA``) when no edge
grows, bilinear (``INTER_LINEAR``) otherwise; the instance mask is resized with centre-
aligned nearest neighbour (``INTER_NEAREST_EXACT``) and everything outside it is set to
``fill`` again after resizing, so no neighbouring pixel bleeds into a 'seg' crop.
"""
import math
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from scipy import ndimage

from projects.common.instances import instance_geometry
from projects.common.stain import (macenko_stain_matrix, optical_density,
                                   reinhard_normalize, separate_stains)

__all__ = ['PAPER_TARGET_STATS', 'MACENKO_MIN_OD', 'CROP_MODES', 'threshold_od',
           'hematoxylin_intensity', 'macenko_matrix', 'normalize_stats', 'segment_nuclei',
           'cell_crops', 'extract_cells']

#: Reinhard target of the paper (sect. IV.B), Ruderman l-alpha-beta (mean, std).
PAPER_TARGET_STATS: Tuple[Tuple[float, float, float], Tuple[float, float, float]] = (
    (8.98, 0.08, 0.02), (0.64, 0.11, 0.03))
#: HistomicsTK's Macenko ``minimum_magnitude`` 16 (SDA units) as a natural-log OD norm:
#: 16 * ln(255) / 255.
MACENKO_MIN_OD: float = 16.0 * math.log(255.0) / 255.0
CROP_MODES: tuple = ('seg', 'bbox')

Stats = Tuple[Sequence[float], Sequence[float]]


# ----------------------------------------------------------------------------- checks
def _check_rgb_uint8(rgb: np.ndarray, name: str = 'rgb') -> np.ndarray:
    if not isinstance(rgb, np.ndarray):
        raise ValueError(f'{name}: expected a numpy array, got {type(rgb).__name__}')
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f'{name}: expected an RGB image of shape (H, W, 3), got shape '
                         f'{rgb.shape}')
    if rgb.size == 0:
        raise ValueError(f'{name}: image is empty (shape {rgb.shape})')
    if rgb.dtype != np.uint8:
        raise ValueError(f'{name}: expected dtype uint8, got {rgb.dtype} (convert with '
                         f'projects.common.io.to_uint8)')
    return rgb


def _check_int(value, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f'{name}: expected an int >= {low}, got {value!r}')
    return int(value)


def normalize_stats(target_stats: Stats, name: str = 'target_stats') -> Tuple[np.ndarray,
                                                                              np.ndarray]:
    """``(mean (3,), std (3,))`` float64 from a pair of 3-vectors; ValueError naming
    ``name`` unless both are finite with std > 0."""
    try:
        mean, std = (np.asarray(v, np.float64) for v in target_stats)
    except (TypeError, ValueError) as err:
        raise ValueError(f'{name}: expected (mean, std), two sequences of 3 numbers, got '
                         f'{target_stats!r}') from err
    if mean.shape != (3, ) or std.shape != (3, ) or not np.all(np.isfinite(mean)) \
            or not np.all(np.isfinite(std)) or np.any(std <= 0):
        raise ValueError(f'{name}: expected (mean, std), two sequences of 3 finite numbers '
                         f'with std > 0, got {target_stats!r}')
    return mean, std


# ---------------------------------------------------------------------- segmentation
def threshold_od(threshold: float) -> float:
    """Hematoxylin concentration (natural-log OD) above which ``I_H < threshold``:
    ``ln(255 / threshold)`` (0.7538 for the paper's 120), see the module docstring."""
    if not (isinstance(threshold, (int, float, np.integer, np.floating))
            and not isinstance(threshold, bool) and 0 < threshold <= 255):
        raise ValueError(f'threshold: expected a number in (0, 255], got {threshold!r}')
    return math.log(255.0 / float(threshold))


def hematoxylin_intensity(rgb: np.ndarray, stain_matrix: np.ndarray) -> np.ndarray:
    """8-bit hematoxylin intensity image ``uint8(clip(255 exp(-c_H), 0, 255))`` (H, W).

    ``c_H`` is the first column of :func:`projects.common.stain.separate_stains` with
    ``stain_matrix`` (rows = unit OD vectors, hematoxylin first). 255 = no hematoxylin;
    the cast truncates like HistomicsTK's ``color_deconvolution`` (after adding 1e-6
    against float error).
    """
    rgb = _check_rgb_uint8(rgb)
    conc_h = separate_stains(rgb, stain_matrix)[..., 0]
    # + 1e-6: an intensity that is an integer up to float error (e.g. 255 exp(ln(119/255)))
    # must not be truncated to the integer below
    return np.clip(255.0 * np.exp(-conc_h) + 1e-6, 0, 255).astype(np.uint8)


def macenko_matrix(rgb: np.ndarray, min_od: float = MACENKO_MIN_OD) -> np.ndarray:
    """Macenko H and E vectors (2, 3) of the paper's deconvolution: 1% / 99% angle
    percentiles over the pixels whose OD norm is >= ``min_od`` (module docstring)."""
    rgb = _check_rgb_uint8(rgb)
    od = optical_density(rgb)
    keep = np.linalg.norm(od, axis=-1) >= min_od
    n = int(keep.sum())
    if n < 3:
        raise ValueError(f'rgb: only {n} pixels have an optical density norm >= {min_od:.3f} '
                         f'(HistomicsTK magnitude 16); cannot estimate the stains of a '
                         f'blank image')
    return macenko_stain_matrix(rgb[keep][None], alpha=1.0, beta=0.0)


def _drop_small(labels: np.ndarray, n: int, min_size: int) -> np.ndarray:
    """Keep components with >= ``min_size`` pixels; boolean mask."""
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    keep = sizes >= min_size
    keep[0] = False
    return keep[labels]


def segment_nuclei(rgb: np.ndarray, target_stats: Optional[Stats] = None,
                   threshold: float = 120, min_size: int = 200, opening: int = 7,
                   stain_matrix: Optional[np.ndarray] = None, space: str = 'lalphabeta',
                   fill_holes: bool = True) -> np.ndarray:
    """Nuclei instance map (int32 (H, W), 0 background, 1..K) of an H&E image, Hu et al.
    2018 sect. III.B.1 with the parameters of sect. IV.B (see the module docstring).

    Args:
        rgb: uint8 (H, W, 3) image.
        target_stats: Reinhard target ``(mean, std)`` in ``space`` (e.g.
            :data:`PAPER_TARGET_STATS`, or ``lab_stats(target_image, space)``); None skips
            the normalisation.
        threshold: nucleus = hematoxylin intensity ``< threshold`` (0..255 scale).
        min_size: smallest object kept, in pixels.
        opening: side of the square of the binary opening (odd; 1 = no opening).
        stain_matrix: (2, 3) or (3, 3) unit OD rows, hematoxylin first; None estimates
            it on the (normalised) image: :func:`macenko_matrix`.
        space: colour space of the Reinhard statistics, 'lalphabeta' or 'lab'.
        fill_holes: fill holes of the thresholded mask (authors' code).
    """
    rgb = _check_rgb_uint8(rgb)
    img = _normalize(rgb, target_stats, space)
    mask = _threshold_mask(img, threshold, stain_matrix, fill_holes)
    return _postprocess(mask, min_size, opening)


def _normalize(rgb: np.ndarray, target_stats: Optional[Stats], space: str) -> np.ndarray:
    if space not in ('lalphabeta', 'lab'):
        raise ValueError(f"space: expected 'lalphabeta' or 'lab', got {space!r}")
    if target_stats is None:
        return rgb
    return reinhard_normalize(rgb, normalize_stats(target_stats), space=space)


def _threshold_mask(img: np.ndarray, threshold: float, stain_matrix: Optional[np.ndarray],
                    fill_holes: bool) -> np.ndarray:
    threshold_od(threshold)  # validates
    if stain_matrix is None:
        stain_matrix = macenko_matrix(img)
    mask = hematoxylin_intensity(img, stain_matrix) < threshold
    if fill_holes:
        mask = ndimage.binary_fill_holes(mask)
    return mask


def _postprocess(mask: np.ndarray, min_size: int, opening: int) -> np.ndarray:
    min_size = _check_int(min_size, 'min_size', 0)
    opening = _check_int(opening, 'opening', 1)
    if opening % 2 == 0:
        raise ValueError(f'opening: the square side must be odd (centred), got {opening}')
    labels, n = ndimage.label(mask)  # 4-connectivity
    mask = _drop_small(labels, n, min_size)
    if opening > 1:
        # erosion then dilation by a k x k square; outside = foreground for the erosion
        mask = ndimage.minimum_filter(mask, size=opening, mode='constant', cval=1)
        mask = ndimage.maximum_filter(mask, size=opening, mode='constant', cval=0)
    labels, n = ndimage.label(mask)
    keep = _drop_small(labels, n, min_size)
    labels, _ = ndimage.label(keep)
    return labels.astype(np.int32)


# ----------------------------------------------------------------------------- crops
def _resize(img: np.ndarray, height: int, width: int, nearest: bool = False) -> np.ndarray:
    """OpenCV resize to (height, width): area averaging when no edge grows, bilinear
    otherwise; centre-aligned nearest neighbour when ``nearest``."""
    import cv2
    if img.shape[:2] == (height, width):
        return img.copy()
    if nearest:
        interp = cv2.INTER_NEAREST_EXACT
    elif height <= img.shape[0] and width <= img.shape[1]:
        interp = cv2.INTER_AREA
    else:
        interp = cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(img), (width, height), interpolation=interp)


def _fit(h: int, w: int, size: int) -> Tuple[int, int]:
    """Box size after the 'seg' rescale: unchanged if max(h, w) <= size, else the larger
    edge -> size and the other ``round(edge * size / larger)`` (half up, >= 1)."""
    big = max(h, w)
    if big <= size:
        return h, w
    return (max(1, int(math.floor(h * size / big + 0.5))),
            max(1, int(math.floor(w * size / big + 0.5))))


def cell_crops(rgb: np.ndarray, inst_map: np.ndarray, size: int = 32, mode: str = 'seg',
               fill: int = 255) -> Tuple[np.ndarray, List[Dict]]:
    """One ``size`` x ``size`` crop per instance (Hu et al. 2018 sect. IV.B).

    Returns ``crops`` uint8 (N, size, size, 3) in ascending instance id order and ``info``,
    one dict per crop: ``inst_id``, ``bbox`` [x1, y1, x2, y2] (source pixels, x2 / y2
    exclusive), ``centroid`` [x, y] (mean column / row + 0.5), ``area`` (pixels).
    ``mode='seg'``: masked box centred on a ``fill`` canvas at offset
    ``((size - h) // 2, (size - w) // 2)``, rescaled first if larger than ``size``;
    ``mode='bbox'``: the box resized to ``size`` x ``size`` (see the module docstring).
    """
    rgb = _check_rgb_uint8(rgb)
    inst = np.asarray(inst_map)
    if inst.shape != rgb.shape[:2]:
        raise ValueError(f'inst_map: shape {inst.shape} does not match the image '
                         f'{rgb.shape[:2]}')
    size = _check_int(size, 'size', 1)
    if mode not in CROP_MODES:
        raise ValueError(f'mode: expected one of {CROP_MODES}, got {mode!r}')
    fill = _check_int(fill, 'fill', 0)
    if fill > 255:
        raise ValueError(f'fill: expected an int in 0..255, got {fill}')
    ids, points, boxes = instance_geometry(inst, source='inst_map')
    areas = np.bincount(inst.ravel(), minlength=int(inst.max(initial=0)) + 1)
    crops = np.full((len(ids), size, size, 3), fill, np.uint8)
    info = []
    for k, (iid, pt, box) in enumerate(zip(ids, points, boxes)):
        x1, y1, x2, y2 = (int(v) for v in box)
        patch = rgb[y1:y2, x1:x2]
        if mode == 'bbox':
            crops[k] = _resize(patch, size, size)
        else:
            mask = inst[y1:y2, x1:x2] == iid
            patch = np.where(mask[..., None], patch, np.uint8(fill))
            h, w = _fit(y2 - y1, x2 - x1, size)
            if (h, w) != mask.shape:
                patch = _resize(patch, h, w)
                mask = _resize(mask.astype(np.uint8), h, w, nearest=True).astype(bool)
                patch[~mask] = fill
            top, left = (size - h) // 2, (size - w) // 2
            crops[k, top:top + h, left:left + w] = patch
        info.append(dict(inst_id=int(iid), bbox=[x1, y1, x2, y2],
                         centroid=[float(pt[0]), float(pt[1])], area=int(areas[iid])))
    return crops, info


def extract_cells(rgb: np.ndarray, target_stats: Optional[Stats] = None,
                  threshold: float = 120, min_size: int = 200, opening: int = 7,
                  size: int = 32, modes: Union[str, Sequence[str]] = 'seg',
                  stain_matrix: Optional[np.ndarray] = None, space: str = 'lalphabeta',
                  fill_holes: bool = True) -> dict:
    """The whole pipeline on one image: normalise, segment, crop.

    Crops are cut from the Reinhard-normalised image (as the authors'
    ``cell_segment``). Returns ``normalized`` (uint8 image), ``inst_map``, ``info`` (see
    :func:`cell_crops`) and ``crops`` {mode: (N, size, size, 3)} for each of ``modes``.
    """
    rgb = _check_rgb_uint8(rgb)
    modes = (modes, ) if isinstance(modes, str) else tuple(modes)
    if not modes:
        raise ValueError(f'modes: expected one or more of {CROP_MODES}, got none')
    for m in modes:
        if m not in CROP_MODES:
            raise ValueError(f'mode: expected one of {CROP_MODES}, got {m!r}')
    img = _normalize(rgb, target_stats, space)
    mask = _threshold_mask(img, threshold, stain_matrix, fill_holes)
    inst = _postprocess(mask, min_size, opening)
    crops, info = {}, []
    for m in modes:
        crops[m], info = cell_crops(img, inst, size, m)
    return dict(normalized=img, inst_map=inst, info=info, crops=crops)
