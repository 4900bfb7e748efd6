"""Stain maths for H&E images: optical density, colour deconvolution, stain normalisation.

Beer-Lambert law (Ruifrok & Johnston 2001; Qu et al., point-supervised nuclei
segmentation, eq. (1)): a pixel's intensity is ``x = x0 * exp(-W D)``, with ``x0`` the
illumination (``background``), ``W`` the stain colour vectors (OD per unit concentration)
and ``D`` the stain concentrations. In optical density ``OD = -ln(x / x0) = W D`` the model
is linear, so concentrations follow from OD by least squares on the stain vectors.

Conventions used throughout this module:

- RGB images are ``(H, W, 3)`` arrays on the 0..255 scale (uint8 as read from disk; a float
  array on the same scale is accepted, which lets tests build exact images).
- A stain matrix holds one stain per ROW, ``(k, 3)``: OD = conc @ stain_matrix. The
  hematoxylin row always comes first. ``RGB_FROM_HED`` is such a matrix (k = 3) and
  ``HED_FROM_RGB`` is its inverse, so ``conc = OD @ HED_FROM_RGB``.
- Optical densities use the natural logarithm (scikit-image's ``rgb2hed`` divides by
  ``ln(1e-6)`` instead; see :func:`separate_stains`).

Estimators: fixed Ruifrok-Johnston matrix (``'hed'``), Macenko et al. 2009 (SVD plane and
angle percentiles, :func:`macenko_stain_matrix`) and Vahadane et al. 2016 (sparse
non-negative dictionary learning, :func:`vahadane_stain_matrix`). Normalisation: Reinhard
et al. 2001 (:func:`reinhard_normalize`) and Macenko (:func:`macenko_normalize`).
"""
from typing import Optional, Sequence, Tuple, Union

import numpy as np
from mmcv.transforms import BaseTransform

from projects.common.registry import TRANSFORMS, register

__all__ = [
    'RGB_FROM_HED', 'HED_FROM_RGB', 'HEMATOXYLIN_METHODS', 'optical_density', 'od_to_rgb',
    'separate_stains', 'combine_stains', 'macenko_stain_matrix', 'vahadane_stain_matrix',
    'lab_stats', 'reinhard_normalize', 'macenko_normalize', 'hematoxylin',
    'hematoxylin_image', 'ExtractHematoxylin', 'hed_jitter', 'RandomStainJitter',
    'StainNormalize'
]

# Ruifrok & Johnston 2001, the H, E and DAB optical-density vectors (rows), with the same
# values as scikit-image's ``skimage.color.rgb_from_hed`` / ``hed_from_rgb``.
RGB_FROM_HED = np.array([[0.65, 0.70, 0.29],
                         [0.07, 0.99, 0.11],
                         [0.27, 0.57, 0.78]])
HED_FROM_RGB = np.linalg.inv(RGB_FROM_HED)

HEMATOXYLIN_METHODS = ('macenko', 'vahadane', 'hed')

Stats = Tuple[np.ndarray, np.ndarray]


# --------------------------------------------------------------------------- helpers
def _check_rgb(rgb: np.ndarray, name: str = 'rgb') -> np.ndarray:
    """Return ``rgb`` as float64 (H, W, 3) on the 0..255 scale, or raise ValueError."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f'{name}: expected an RGB image of shape (H, W, 3), got shape '
                         f'{rgb.shape}')
    if rgb.size == 0:
        raise ValueError(f'{name}: image is empty (shape {rgb.shape})')
    if not (np.issubdtype(rgb.dtype, np.integer) or np.issubdtype(rgb.dtype, np.floating)):
        raise ValueError(f'{name}: expected a numeric image, got dtype {rgb.dtype}')
    rgb = rgb.astype(np.float64)
    lo, hi = float(rgb.min()), float(rgb.max())
    if not np.isfinite(lo) or not np.isfinite(hi) or lo < 0 or hi > 255:
        raise ValueError(f'{name}: values must lie in [0, 255], got [{lo}, {hi}]')
    return rgb


def _check_stain_matrix(stain_matrix: np.ndarray, name: str = 'stain_matrix') -> np.ndarray:
    m = np.asarray(stain_matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[1] != 3 or not 1 <= m.shape[0] <= 3:
        raise ValueError(f'{name}: expected (k, 3) stain rows with k in 1..3, got shape '
                         f'{m.shape}')
    if not np.all(np.isfinite(m)):
        raise ValueError(f'{name}: contains non-finite values')
    return m


def _check_method(method: str) -> None:
    if method not in HEMATOXYLIN_METHODS:
        raise ValueError(f'unknown stain separation method {method!r}; allowed: '
                         f'{", ".join(repr(m) for m in HEMATOXYLIN_METHODS)}')


def _unit_rows(m: np.ndarray) -> np.ndarray:
    return m / np.linalg.norm(m, axis=1, keepdims=True)


def _order_h_first(m: np.ndarray) -> np.ndarray:
    """Put the hematoxylin row first: of two unit stain vectors, hematoxylin absorbs more red.

    Ruifrok's unit vectors have red OD 0.65 (H) vs 0.07 (E); the red channel separates the
    two stains far more than green or blue, so this rule is robust to estimation noise.
    """
    return m if m[0, 0] >= m[1, 0] else m[::-1].copy()


def _as_grey(img: np.ndarray) -> Optional[np.ndarray]:
    """Return the single channel of a grey image ((H, W), (H, W, 1) or R == G == B), else None."""
    if img.ndim == 2:
        return img
    if img.ndim == 3 and img.shape[-1] == 1:
        return img[..., 0]
    if (img.ndim == 3 and img.shape[-1] == 3 and img.size > 0
            and np.array_equal(img[..., 0], img[..., 1])
            and np.array_equal(img[..., 0], img[..., 2])):
        return img[..., 0]
    return None


def _check_image(img: np.ndarray, name: str = 'rgb') -> np.ndarray:
    img = np.asarray(img)
    if not (img.ndim == 2 or (img.ndim == 3 and img.shape[-1] in (1, 3))):
        raise ValueError(f'{name}: expected an RGB image (H, W, 3) or a single-channel image '
                         f'(H, W), got shape {img.shape}')
    if img.size == 0:
        raise ValueError(f'{name}: image is empty (shape {img.shape})')
    return img


# --------------------------------------------------------------------- optical density
def optical_density(rgb: np.ndarray, background: float = 255.0) -> np.ndarray:
    """Beer-Lambert optical density ``OD = -ln(max(I, 1) / background)`` (float64).

    Element-wise, so any shape works; usually (H, W, 3). Intensities are clipped below at
    1 so that a saturated black pixel (I = 0) gets the finite OD ``ln(background)`` (5.54
    for 255) instead of infinity. Intensities above ``background`` give a negative OD
    (they are kept, so that :func:`od_to_rgb` inverts this exactly).
    """
    arr = np.asarray(rgb, dtype=np.float64)
    if background <= 1:
        raise ValueError(f'background must be > 1, got {background}')
    if arr.size and (not np.all(np.isfinite(arr)) or arr.min() < 0):
        raise ValueError(f'rgb: intensities must be finite and >= 0, got min {arr.min()}')
    return -np.log(np.maximum(arr, 1.0) / background)


def od_to_rgb(od: np.ndarray, background: float = 255.0) -> np.ndarray:
    """Inverse of :func:`optical_density`: ``round(background * exp(-od))`` as uint8.

    Element-wise; values are clipped to [0, 255]. ``od_to_rgb(optical_density(x)) == x`` for
    every integer ``1 <= x <= background``.
    """
    od = np.asarray(od, dtype=np.float64)
    return np.clip(np.round(background * np.exp(-od)), 0, 255).astype(np.uint8)


def separate_stains(rgb: np.ndarray, stain_matrix: np.ndarray,
                    background: float = 255.0) -> np.ndarray:
    """Stain concentrations ``(H, W, k)``: least squares of OD on the stain rows.

    ``conc = OD @ pinv(stain_matrix)``; for the square ``RGB_FROM_HED`` this is
    ``OD @ HED_FROM_RGB`` (Ruifrok & Johnston 2001 colour deconvolution). Concentrations
    are not clipped (negative values mean the pixel lies outside the stains' cone); clip
    them yourself if you need ``>= 0``. Relation to scikit-image: for pixels with every
    channel >= 1, ``skimage.color.rgb2hed(rgb) == max(0, separate_stains(rgb,
    RGB_FROM_HED)) / ln(1e6)``, because skimage computes ``ln(I/255) / ln(1e-6)``.
    """
    m = _check_stain_matrix(stain_matrix)
    od = optical_density(_check_rgb(rgb), background)
    return od @ np.linalg.pinv(m)


def combine_stains(conc: np.ndarray, stain_matrix: np.ndarray,
                   background: float = 255.0) -> np.ndarray:
    """RGB uint8 image from concentrations ``(H, W, k)``: ``background * exp(-conc @ W)``."""
    m = _check_stain_matrix(stain_matrix)
    conc = np.asarray(conc, dtype=np.float64)
    if conc.ndim != 3 or conc.shape[-1] != m.shape[0]:
        raise ValueError(f'conc: expected shape (H, W, {m.shape[0]}) to match the '
                         f'{m.shape[0]} stain rows, got {conc.shape}')
    return od_to_rgb(conc @ m, background)


# ----------------------------------------------------------------- stain estimation
def macenko_stain_matrix(rgb: np.ndarray, alpha: float = 1.0, beta: float = 0.15,
                         background: float = 255.0) -> np.ndarray:
    """H and E stain vectors ``(2, 3)`` (unit rows, hematoxylin first), Macenko et al. 2009.

    Steps of the paper: (1) OD of every pixel; (2) drop pixels with an OD below ``beta``
    in any channel (background / faint pixels); (3) the plane of the two largest singular
    directions of the remaining OD vectors (an SVD through the origin, computed as the
    eigenvectors of ``OD^T OD``); (4) project onto the plane, angle of every pixel; the
    ``alpha``-th and ``(100 - alpha)``-th angle percentiles give the two stain directions.
    The row with the larger red OD is hematoxylin (see :func:`_order_h_first`).
    """
    if not 0 <= alpha < 50:
        raise ValueError(f'alpha must be a percentile in [0, 50), got {alpha}')
    od = optical_density(_check_rgb(rgb), background).reshape(-1, 3)
    od = od[np.all(od >= beta, axis=1)]
    if len(od) < 3:
        raise ValueError(f'rgb: only {len(od)} pixels have OD >= beta={beta} in every '
                         f'channel; cannot estimate stains (blank image?)')
    _, vecs = np.linalg.eigh(od.T @ od)
    plane = vecs[:, [2, 1]]  # eigh sorts ascending: the two largest
    if plane[:, 0].sum() < 0:  # first direction points into the positive OD octant
        plane[:, 0] *= -1
    proj = od @ plane
    phi = np.arctan2(proj[:, 1], proj[:, 0])
    lo, hi = np.percentile(phi, [alpha, 100 - alpha])
    v1 = plane @ np.array([np.cos(lo), np.sin(lo)])
    v2 = plane @ np.array([np.cos(hi), np.sin(hi)])
    m = np.stack([v1, v2])
    m *= np.where(m.sum(axis=1, keepdims=True) < 0, -1.0, 1.0)
    return _order_h_first(_unit_rows(m))


def vahadane_stain_matrix(rgb: np.ndarray, lambda1: float = 0.1,
                          luminosity_threshold: float = 0.8, max_pixels: int = 2000,
                          max_iter: int = 10, batch_size: int = 256, seed: int = 0,
                          background: float = 255.0) -> np.ndarray:
    """H and E stain vectors ``(2, 3)`` (unit rows, hematoxylin first), Vahadane et al. 2016.

    Sparse non-negative matrix factorisation ``OD ~ D W`` with ``D, W >= 0`` and an L1
    penalty ``lambda1`` (0.1 in the paper) on the concentrations D, solved as
    non-negative dictionary learning (unit-norm atoms = stain vectors), like the authors'
    SPAMS ``trainDL``. Solved with scikit-learn's ``MiniBatchDictionaryLearning``
    (``max_iter`` passes over the pixels in batches of ``batch_size``): on the test images
    it gives the stain vectors of the full-batch ``DictionaryLearning`` within 0.01 in
    about 1/20 of the time. Only tissue pixels enter: CIE-LAB lightness ``L / 100 <
    luminosity_threshold`` (background is bright). At most ``max_pixels`` tissue pixels,
    drawn with ``seed``, are used, so the result is deterministic and fast.
    """
    from skimage.color import rgb2lab
    from sklearn.decomposition import MiniBatchDictionaryLearning

    img = _check_rgb(rgb)
    pix = img.reshape(-1, 3)
    tissue = rgb2lab(pix[None] / 255.0)[0, :, 0] / 100.0 < luminosity_threshold
    pix = pix[tissue]
    if len(pix) < 3:
        raise ValueError(f'rgb: only {len(pix)} tissue pixels (LAB lightness < '
                         f'{luminosity_threshold * 100:g}); cannot estimate stains '
                         f'(blank image?)')
    rng = np.random.default_rng(seed)
    if len(pix) > max_pixels:
        pix = pix[rng.choice(len(pix), max_pixels, replace=False)]
    od = optical_density(pix, background)
    od = np.maximum(od, 0)  # pixels brighter than the background carry no stain
    dl = MiniBatchDictionaryLearning(
        n_components=2, alpha=lambda1, max_iter=max_iter, batch_size=batch_size,
        fit_algorithm='cd', transform_algorithm='lasso_cd', positive_code=True,
        positive_dict=True, random_state=int(rng.integers(2**31 - 1)))
    dl.fit(od)
    m = dl.components_
    norms = np.linalg.norm(m, axis=1)
    if np.any(norms == 0):
        raise ValueError('rgb: dictionary learning returned an empty stain vector; the '
                         'image probably holds a single stain')
    return _order_h_first(_unit_rows(m))


def _stain_matrix(rgb: np.ndarray, method: str) -> np.ndarray:
    if method == 'macenko':
        return macenko_stain_matrix(rgb)
    if method == 'vahadane':
        return vahadane_stain_matrix(rgb)
    return RGB_FROM_HED


# --------------------------------------------------------------------- normalisation
# Ruderman's l-alpha-beta space as used by Reinhard et al. 2001 (eqs. 4-6): RGB -> LMS,
# logarithm, decorrelating rotation. Natural log on the 0..255 scale, so the statistics are
# comparable with those printed in the cell-GAN paper (mean l about 8.98).
_RGB2LMS = np.array([[0.3811, 0.5783, 0.0402],
                     [0.1967, 0.7244, 0.0782],
                     [0.0241, 0.1288, 0.8444]])
_LMS2LAB = np.diag([1 / np.sqrt(3), 1 / np.sqrt(6), 1 / np.sqrt(2)]) @ np.array(
    [[1.0, 1.0, 1.0], [1.0, 1.0, -2.0], [1.0, -1.0, 0.0]])


def _to_space(rgb: np.ndarray, space: str) -> np.ndarray:
    if space == 'lab':
        from skimage.color import rgb2lab
        return rgb2lab(rgb / 255.0)
    if space == 'lalphabeta':
        lms = np.maximum(rgb @ _RGB2LMS.T, 1.0)  # avoid log(0) on black pixels
        return np.log(lms) @ _LMS2LAB.T
    raise ValueError(f"unknown colour space {space!r}; allowed: 'lab', 'lalphabeta'")


def _from_space(img: np.ndarray, space: str) -> np.ndarray:
    if space == 'lab':
        from skimage.color import lab2rgb
        return lab2rgb(img) * 255.0
    lms = np.exp(img @ np.linalg.inv(_LMS2LAB).T)
    return lms @ np.linalg.inv(_RGB2LMS).T


def lab_stats(rgb: np.ndarray, space: str = 'lab') -> Stats:
    """Per-channel mean and standard deviation (3,), (3,) of an RGB image in ``space``.

    ``space='lab'``: CIE L*a*b* (scikit-image ``rgb2lab``); ``'lalphabeta'``: Ruderman's
    l-alpha-beta of Reinhard et al. 2001 (natural log, 0..255 RGB).
    """
    lab = _to_space(_check_rgb(rgb), space).reshape(-1, 3)
    return lab.mean(axis=0), lab.std(axis=0)


def reinhard_normalize(src: np.ndarray, target_or_stats: Union[np.ndarray, Stats],
                       space: str = 'lab') -> np.ndarray:
    """Reinhard et al. 2001 colour transfer: match per-channel mean / std in LAB space.

    ``lab' = (lab - mean_src) / std_src * std_tgt + mean_tgt`` per channel, then back to
    RGB (clipped to the gamut) as uint8. ``target_or_stats`` is a target RGB image or a
    ``(mean, std)`` pair in the same ``space`` (see :func:`lab_stats`); the cell-GAN paper
    prints its target as l-alpha-beta statistics, usable with ``space='lalphabeta'``.
    """
    img = _check_rgb(src, 'src')
    if isinstance(target_or_stats, (tuple, list)):
        if len(target_or_stats) != 2:
            raise ValueError(f'target_or_stats: expected an RGB image or (mean, std), got a '
                             f'sequence of length {len(target_or_stats)}')
        t_mean, t_std = (np.asarray(v, dtype=np.float64) for v in target_or_stats)
        if t_mean.shape != (3, ) or t_std.shape != (3, ) or np.any(t_std < 0):
            raise ValueError(f'target_or_stats: mean and std must have shape (3,) with std '
                             f'>= 0, got {t_mean.shape}, {t_std.shape}')
    else:
        t_mean, t_std = lab_stats(_check_rgb(target_or_stats, 'target'), space)
    lab = _to_space(img, space)
    s_mean = lab.reshape(-1, 3).mean(axis=0)
    s_std = lab.reshape(-1, 3).std(axis=0)
    scale = np.divide(t_std, s_std, out=np.zeros(3), where=s_std > 0)
    out = _from_space((lab - s_mean) * scale + t_mean, space)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def macenko_normalize(src: np.ndarray, target: Union[np.ndarray, Tuple[np.ndarray,
                                                                          np.ndarray]],
                      percentile: float = 99.0, background: float = 255.0) -> np.ndarray:
    """Macenko et al. 2009 normalisation to a target image (uint8 RGB out).

    Source concentrations (least squares on the source's Macenko stain matrix) are scaled
    per stain so that their ``percentile``-th value equals the target's, then recombined
    with the target's stain matrix. ``target`` is an RGB image or a precomputed
    ``(stain_matrix (2, 3), max_conc (2,))`` pair.
    """
    if isinstance(target, (tuple, list)):
        t_m = _check_stain_matrix(target[0], 'target stain matrix')
        t_max = np.asarray(target[1], dtype=np.float64)
        if t_m.shape[0] != 2 or t_max.shape != (2, ):
            raise ValueError(f'target: expected ((2, 3) stain matrix, (2,) max '
                             f'concentrations), got {t_m.shape}, {t_max.shape}')
    else:
        t_m = macenko_stain_matrix(target, background=background)
        t_conc = separate_stains(target, t_m, background).reshape(-1, 2)
        t_max = np.percentile(t_conc, percentile, axis=0)
    s_m = macenko_stain_matrix(src, background=background)
    s_conc = separate_stains(src, s_m, background)
    s_max = np.percentile(s_conc.reshape(-1, 2), percentile, axis=0)
    scale = np.divide(t_max, s_max, out=np.ones(2), where=s_max > 0)
    return combine_stains(s_conc * scale, t_m, background)


# ---------------------------------------------------------------------- hematoxylin
def hematoxylin(rgb: np.ndarray, method: str = 'macenko') -> np.ndarray:
    """Hematoxylin concentration map (float32, (H, W), OD units, >= 0).

    The stain matrix comes from ``method``: ``'macenko'`` / ``'vahadane'`` (estimated on
    this image) or ``'hed'`` (fixed Ruifrok-Johnston matrix, 3 stains); the concentration
    is the hematoxylin column of :func:`separate_stains`, clipped at 0. A single-channel
    (fluorescence) image is its own H-component (DESIGN 4.3): a 2-D, (H, W, 1) or
    R == G == B image is returned as float32, divided by the dtype's maximum if integer
    (so in [0, 1]), whatever the method.
    """
    _check_method(method)
    img = _check_image(rgb)
    grey = _as_grey(img)
    if grey is not None:
        if np.issubdtype(grey.dtype, np.integer):
            return (grey / float(np.iinfo(grey.dtype).max)).astype(np.float32)
        return grey.astype(np.float32)
    conc = separate_stains(img, _stain_matrix(img, method))
    return np.maximum(conc[..., 0], 0).astype(np.float32)


def hematoxylin_image(rgb: np.ndarray, method: str = 'macenko',
                      background: float = 255.0) -> np.ndarray:
    """H-component image (uint8, (H, W)): ``x_h = x0 * exp(-D[0])``, Qu et al. eq. (2).

    ``D[0]`` is the hematoxylin concentration of :func:`hematoxylin` and ``x0`` the
    illumination ``background``. The paper's eq. (2) has no colour vector, so ``x_h`` is a
    grey image: white (255) where there is no hematoxylin, dark on nuclei. For a
    single-channel input the image is returned as it is: uint8 unchanged, other integer
    types rescaled by their dtype maximum to 0..255, floats must lie in [0, 1].
    """
    _check_method(method)
    img = _check_image(rgb)
    grey = _as_grey(img)
    if grey is not None:
        if grey.dtype == np.uint8:
            return grey.copy()
        h = hematoxylin(grey, method).astype(np.float64)
        if h.min() < 0 or h.max() > 1:
            raise ValueError(f'rgb: a float single-channel image must lie in [0, 1], got '
                             f'[{h.min()}, {h.max()}]')
        return np.round(h * 255).astype(np.uint8)
    return od_to_rgb(hematoxylin(img, method).astype(np.float64), background)


@register(TRANSFORMS)
class ExtractHematoxylin(BaseTransform):
    """Replace (or complement) the image by its hematoxylin component (DESIGN 4.3).

    Reads ``results[in_key]`` (BGR uint8, as mmcv's ``LoadImageFromFile`` gives it; a
    single-channel image is its own H-component) and writes ``results[out_key]``:

    - ``output='intensity'`` (default): the H-component image of :func:`hematoxylin_image`
      (uint8, 255 = no hematoxylin), the colourisation input of Qu et al. eq. (2);
    - ``output='density'``: the concentration map of :func:`hematoxylin` (float32, OD).

    ``to_rgb=True`` repeats the single channel 3 times (H, W, 3) so that a 3-channel
    backbone / data preprocessor can take it; otherwise the output is (H, W) (mmdet / mmseg
    packers add the channel axis). With ``out_key == in_key`` the input image is
    replaced; ``keep_key`` (e.g. ``'img_color'``) first stores the unchanged input (same
    BGR order) there, e.g. as the colourisation target.

    Args:
        method: ``'macenko'``, ``'vahadane'`` or ``'hed'``.
        output: ``'intensity'`` or ``'density'``.
        in_key / out_key: results keys to read / write (default ``'img'`` for both).
        keep_key: where to keep the original image, or None.
        to_rgb: repeat the output to 3 channels.
    """

    def __init__(self, method: str = 'macenko', output: str = 'intensity',
                 in_key: str = 'img', out_key: str = 'img', keep_key: Optional[str] = None,
                 to_rgb: bool = False) -> None:
        _check_method(method)
        if output not in ('intensity', 'density'):
            raise ValueError(f"ExtractHematoxylin: output must be 'intensity' or 'density', "
                             f'got {output!r}')
        if keep_key is not None and keep_key in (in_key, out_key):
            raise ValueError(f'ExtractHematoxylin: keep_key {keep_key!r} must differ from '
                             f'in_key {in_key!r} and out_key {out_key!r}')
        self.method = method
        self.output = output
        self.in_key = in_key
        self.out_key = out_key
        self.keep_key = keep_key
        self.to_rgb = to_rgb

    def transform(self, results: dict) -> dict:
        if self.in_key not in results:
            raise ValueError(f'ExtractHematoxylin: results has no {self.in_key!r} (keys: '
                             f'{sorted(results)}); load the image first')
        img = _check_image(results[self.in_key], f'results[{self.in_key!r}]')
        if img.ndim == 3 and img.shape[-1] == 3:
            img = img[..., ::-1]  # BGR -> RGB
        if self.output == 'intensity':
            out = hematoxylin_image(img, self.method)
        else:
            out = hematoxylin(img, self.method)
        if self.to_rgb:
            out = np.repeat(out[..., None], 3, axis=2)
        if self.keep_key is not None:
            results[self.keep_key] = results[self.in_key].copy()
        results[self.out_key] = np.ascontiguousarray(out)
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(method={self.method!r}, output={self.output!r}, '
                f'in_key={self.in_key!r}, out_key={self.out_key!r}, '
                f'keep_key={self.keep_key!r}, to_rgb={self.to_rgb})')


# ---------------------------------------------------------------- augmentation transforms
def _bgr_image(results: dict, name: str) -> np.ndarray:
    if 'img' not in results:
        raise ValueError(f'{name}: results has no "img" (keys: {sorted(results)}); load the '
                         'image first')
    img = np.asarray(results['img'])
    if img.ndim != 3 or img.shape[-1] != 3 or img.dtype != np.uint8:
        raise ValueError(f'{name}: expected a BGR uint8 image (H, W, 3) in results["img"] '
                         f'({results.get("img_path", "?")}), got {img.dtype} {img.shape}')
    return img


def hed_jitter(rgb: np.ndarray, alpha: np.ndarray, beta: np.ndarray,
               background: float = 255.0) -> np.ndarray:
    """Tellez et al. 2018 HED perturbation: the Ruifrok-Johnston H, E, DAB concentrations
    ``c`` (:func:`separate_stains` on ``RGB_FROM_HED``) become ``alpha * c + beta`` per stain
    (alpha, beta: (3,)), then back to RGB uint8. ``alpha = 1, beta = 0`` gives the image
    back to one grey level (only pixels of value 0 change, to 1: OD is clipped at I >= 1).
    """
    conc = separate_stains(rgb, RGB_FROM_HED, background)
    conc = conc * np.asarray(alpha, np.float64) + np.asarray(beta, np.float64)
    return combine_stains(conc, RGB_FROM_HED, background)


@register(TRANSFORMS)
class RandomStainJitter(BaseTransform):
    """Random HED stain perturbation (Tellez et al., IEEE TMI 2018, "HED" augmentation).

    Per image and per stain (hematoxylin, eosin, DAB of the fixed Ruifrok-Johnston matrix),
    the concentration c becomes ``alpha * c + beta`` with ``alpha ~ U(1 - sigma, 1 +
    sigma)`` and ``beta ~ U(-bias, bias)`` (:func:`hed_jitter`). Concentrations are in
    natural-log optical density (this module's unit); Tellez et al. use scikit-image's
    ``rgb2hed`` scale, which is OD / ln(10^6) = OD / 13.8, so their "HED-light" bias 0.05
    would be 0.69 here: the defaults (sigma 0.05, bias 0.05 OD) are a mild jitter that
    leaves white glass within a few grey levels of white. Draws come from numpy's global
    generator, which mmengine seeds with ``randomness.seed`` (as the other random
    transforms here). Applied with probability ``prob``; the draws are recorded in
    ``results['stain_jitter'] = (alpha, beta)`` (alpha = 1, beta = 0 when skipped). Reads
    and writes ``results['img']`` (BGR uint8, as mmcv loads it); geometry is unchanged.
    """

    def __init__(self, sigma: float = 0.05, bias: float = 0.05, prob: float = 1.0) -> None:
        for name, v, hi in (('sigma', sigma, 1.0), ('bias', bias, None), ('prob', prob, 1.0)):
            if not (isinstance(v, (int, float)) and np.isfinite(v) and v >= 0
                    and (hi is None or v <= hi)):
                raise ValueError(f'RandomStainJitter: {name} must be a number in [0, '
                                 f'{hi if hi is not None else "inf"}), got {v!r}')
        self.sigma, self.bias, self.prob = float(sigma), float(bias), float(prob)

    def transform(self, results: dict) -> dict:
        img = _bgr_image(results, type(self).__name__)
        alpha, beta = np.ones(3), np.zeros(3)
        if np.random.rand() < self.prob:
            alpha = np.random.uniform(1 - self.sigma, 1 + self.sigma, 3)
            beta = np.random.uniform(-self.bias, self.bias, 3)
            results['img'] = np.ascontiguousarray(hed_jitter(img[..., ::-1], alpha,
                                                             beta)[..., ::-1])
        results['stain_jitter'] = (alpha, beta)
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(sigma={self.sigma}, bias={self.bias}, '
                f'prob={self.prob})')


NORMALIZE_METHODS = ('macenko', 'reinhard')


@register(TRANSFORMS)
class StainNormalize(BaseTransform):
    """Normalise the stain of every image to a target image (Macenko or Reinhard).

    ``target``: path of an RGB image (read once, at build time) or an RGB uint8 array.
    ``method='macenko'``: :func:`macenko_normalize`'s rule (concentrations on the image's
    Macenko stains, scaled so that their ``percentile``-th value is the target's, recombined
    with the target's stains), except that, with ``keep_residual=True`` (default), the part
    of each pixel's OD that the two stains do not explain (OD - conc @ stains) is added
    back, so that an image normalised to itself comes back unchanged (to one grey level);
    ``keep_residual=False`` is Macenko's projection onto the two stains. An image with too
    few stained pixels to estimate stains is left unchanged. ``method='reinhard'``:
    :func:`reinhard_normalize` in ``space`` ('lab' or 'lalphabeta'). Reads and writes
    ``results['img']`` (BGR uint8).
    """

    def __init__(self, target, method: str = 'macenko', percentile: float = 99.0,
                 keep_residual: bool = True, space: str = 'lab') -> None:
        if method not in NORMALIZE_METHODS:
            raise ValueError(f'StainNormalize: method must be one of {NORMALIZE_METHODS}, '
                             f'got {method!r}')
        if isinstance(target, str):
            from .io import read_rgb_uint8
            self.target_path = target
            target = read_rgb_uint8(target)
        else:
            self.target_path = None
        target = _check_rgb(target, 'StainNormalize target')
        self.method, self.percentile = method, float(percentile)
        self.keep_residual, self.space = bool(keep_residual), space
        if method == 'macenko':
            self.stains = macenko_stain_matrix(target)
            conc = separate_stains(target, self.stains).reshape(-1, 2)
            self.max_conc = np.percentile(conc, self.percentile, axis=0)
        else:
            self.stats = lab_stats(target, space)

    def normalize(self, rgb: np.ndarray) -> np.ndarray:
        """RGB uint8 in, RGB uint8 out."""
        if self.method == 'reinhard':
            return reinhard_normalize(rgb, self.stats, self.space)
        try:
            src = macenko_stain_matrix(rgb)
        except ValueError:  # blank / unstained image: nothing to normalise
            return np.asarray(rgb, np.uint8)
        od = optical_density(_check_rgb(rgb))
        conc = od @ np.linalg.pinv(src)
        s_max = np.percentile(conc.reshape(-1, 2), self.percentile, axis=0)
        scale = np.divide(self.max_conc, s_max, out=np.ones(2), where=s_max > 0)
        out = (conc * scale) @ self.stains
        if self.keep_residual:
            out += od - conc @ src
        return od_to_rgb(out)

    def transform(self, results: dict) -> dict:
        img = _bgr_image(results, type(self).__name__)
        results['img'] = np.ascontiguousarray(self.normalize(img[..., ::-1])[..., ::-1])
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(target={self.target_path or "<array>"!r}, '
                f'method={self.method!r})')
