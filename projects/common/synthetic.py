"""Seeded synthetic H&E tiles with full ground truth: the embedded default data.

A tile is rendered in stain space and converted to RGB with the Beer-Lambert law
(Ruifrok & Johnston, "Quantification of histochemical staining by color deconvolution",
Anal. Quant. Cytol. Histol. 23(4), 2001, eq. 1 with natural logarithms)::

    I = 255 * exp(-(c_H * h + c_E * e + c_R * r))

where h, e are unit optical-density (OD) vectors of hematoxylin and eosin, r is a neutral
grey residual (section thickness, glass) and c_* are per-pixel concentration maps. The
concentration maps come from:

* a tissue-region map (``REGION_CLASSES``) cut from smooth seeded noise: tumour nests
  (cells with purple cytoplasm, cell borders, vacuoles, white lumens), stroma (eosin
  fibres from orientation-steered anisotropic noise), lymphocyte-rich areas, necrosis
  (mottled eosin with nuclear dust) and background (glass, lumens, tears);
* nuclei of the classes ``NUCLEUS_CLASSES`` with class-specific size, shape and chromatin
  (vesicular tumour nuclei with a membrane rim and nucleoli, small dense lymphocytes,
  spindle stromal nuclei aligned with the fibres, rare ragged mitotic figures), boundaries
  perturbed by low-order Fourier terms, touching and partially overlapping; the class mix
  and density depend on the region;
* per-tile stain jitter (OD vectors and stain intensities), optical blur and sensor noise.

Ground truth (instances, classes, centroids, boxes, semantic and region maps) is exact:
it is computed from the same pixel masks that are rendered.
"""
import math
import os
import os.path as osp
import shutil
from dataclasses import dataclass, fields
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
from scipy import fft as sfft
from scipy import ndimage

from projects.common.instances import instance_geometry
from projects.common.io import write_json
from projects.common.layout import LAYOUT_DIRS, LayoutWriter, track

NUCLEUS_CLASSES: tuple = ('tumour', 'lymphocyte', 'stromal', 'mitosis')
REGION_CLASSES: tuple = ('background', 'tumour', 'stroma', 'lymphocytic', 'necrosis')
SPLITS: tuple = ('train', 'val', 'test')

TUMOUR, LYMPHOCYTE, STROMAL, MITOSIS = range(4)
BACKGROUND, R_TUMOUR, R_STROMA, R_LYMPH, R_NECROSIS = range(5)

# Unit OD vectors (rows: hematoxylin, eosin, residual). 'macenko': the reference H&E
# vectors of Macenko et al., "A method for normalizing histology slides for quantitative
# analysis", ISBI 2009 (the values used by common implementations); they reproduce the
# real TCGA tiles of this project within 3 grey levels. 'ruifrok': Ruifrok & Johnston 2001
# (skimage's rgb2hed), bluer nuclei and magenta eosin.
_GREY = [1.0, 1.0, 1.0]
STAIN_REFERENCES: Dict[str, np.ndarray] = {
    name: m / np.linalg.norm(m, axis=1, keepdims=True) for name, m in {
        'macenko': np.array([[0.5626, 0.7201, 0.4062], [0.2159, 0.8012, 0.5581], _GREY]),
        'ruifrok': np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], _GREY]),
    }.items()
}

# The stain-shifted variant (another lab / scanner): the same tissue (same seed, same
# draws), Ruifrok-Johnston stain vectors (bluer hematoxylin, magenta eosin) instead of
# Macenko's, 30% more hematoxylin and 25% less eosin. For tests of stain robustness.
STAIN_SHIFT: Dict[str, object] = dict(stains='ruifrok', stain_gain=(1.3, 0.75))

# Nuclei per 10,000 px (at scale 1) and class mix (tumour, lymphocyte, stromal, mitosis)
# per region; mitoses replace a fraction ``mitosis_rate`` of the tumour nuclei of tumour
# regions.
_REGION_DENSITY = (0.0, 26.0, 3.5, 70.0, 3.0)
_REGION_MIX = (
    (0.0, 0.0, 0.0, 0.0),
    (0.90, 0.06, 0.04, 0.0),
    (0.03, 0.22, 0.75, 0.0),
    (0.04, 0.92, 0.04, 0.0),
    (0.15, 0.85, 0.0, 0.0),
)
# Dirichlet concentration of the per-tile region composition.
_REGION_ALPHA = (0.3, 1.6, 1.2, 0.6, 0.35)


def stain_matrix(reference: Union[str, np.ndarray] = 'macenko') -> np.ndarray:
    """Return a (3, 3) float matrix of unit OD row vectors (hematoxylin, eosin, residual).

    ``reference`` is a name of :data:`STAIN_REFERENCES` or an array of 2 or 3 OD vectors
    (rows; a missing residual row becomes neutral grey).
    """
    if isinstance(reference, str):
        if reference not in STAIN_REFERENCES:
            raise ValueError(f'stains: unknown reference {reference!r}; '
                             f'valid: {sorted(STAIN_REFERENCES)}')
        return STAIN_REFERENCES[reference].copy()
    m = np.asarray(reference, dtype=np.float64)
    if m.ndim != 2 or m.shape[1] != 3 or m.shape[0] not in (2, 3):
        raise ValueError(f'stains: expected 2 or 3 OD row vectors of length 3, got shape {m.shape}')
    if m.shape[0] == 2:
        m = np.vstack([m, _GREY])
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    if not np.all(np.isfinite(m)) or np.any(norms == 0) or np.any(m < 0):
        raise ValueError(f'stains: OD vectors must be finite, non-negative and non-zero, got {m}')
    return m / norms


def compose_stains(concentrations: np.ndarray, stains: np.ndarray,
                   i0: float = 255.0) -> np.ndarray:
    """Beer-Lambert composition I = i0 * exp(-C @ S) (Ruifrok & Johnston 2001, eq. 1).

    concentrations: (..., K) stain amounts; stains: (K, 3) OD row vectors. Returns float64
    RGB intensities (..., 3) in [0, i0] (not rounded).
    """
    c = np.asarray(concentrations, dtype=np.float64)
    s = np.asarray(stains, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] != 3:
        raise ValueError(f'stains: expected shape (K, 3), got {s.shape}')
    if c.shape[-1] != s.shape[0]:
        raise ValueError(f'concentrations: last axis {c.shape[-1]} does not match the '
                         f'{s.shape[0]} stain vectors')
    return i0 * np.exp(-(c @ s))


@dataclass
class SyntheticOptions:
    """Options of :func:`generate_tile` (all optional keyword arguments).

    scale: size multiplier of nuclei and textures (1.0 ~ 0.5 um/px, 20x).
    density: multiplier of the nucleus density of every region.
    mitosis_rate: fraction of the tumour-region tumour nuclei drawn as mitotic figures.
    overlap_prob: probability that a nucleus may overlap its neighbours (else they touch).
    region_weights: fixed region composition (one weight per REGION_CLASSES entry);
        None draws a Dirichlet composition per tile.
    stains: name in STAIN_REFERENCES or an array of OD row vectors.
    stain_jitter: amount of per-tile stain variation (0 = none, 1 = default).
    stain_gain: multipliers of the hematoxylin and eosin amounts of every tile (1, 1 =
        none); with ``stains='ruifrok'`` the stain-shifted variant (:data:`STAIN_SHIFT`).
    blur_sigma: optical blur (Gaussian sigma in px, applied to the concentration maps).
    noise_std: sensor noise (std of additive Gaussian noise, grey levels).
    min_pixels: instances with fewer visible pixels are dropped from every output.
    """
    scale: float = 1.0
    density: float = 1.0
    mitosis_rate: float = 0.015
    overlap_prob: float = 0.2
    region_weights: Optional[Sequence[float]] = None
    stains: Union[str, np.ndarray] = 'macenko'
    stain_jitter: float = 1.0
    stain_gain: Sequence[float] = (1.0, 1.0)
    blur_sigma: float = 0.7
    noise_std: float = 2.0
    min_pixels: int = 10

    @classmethod
    def parse(cls, options: dict) -> 'SyntheticOptions':
        """Build from keyword options; unknown names or bad values raise ValueError."""
        valid = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - valid)
        if unknown:
            raise ValueError(f'generate_tile: unknown option(s) {unknown}; valid: {sorted(valid)}')
        opt = cls(**options)
        for name, lo in (('scale', 0.25), ('density', 0.0), ('blur_sigma', 0.0),
                         ('noise_std', 0.0), ('stain_jitter', 0.0)):
            val = getattr(opt, name)
            if not (isinstance(val, (int, float)) and math.isfinite(val) and val >= lo):
                raise ValueError(f'generate_tile: option {name}={val!r} must be a number >= {lo}')
        for name in ('mitosis_rate', 'overlap_prob'):
            val = getattr(opt, name)
            if not (isinstance(val, (int, float)) and 0.0 <= val <= 1.0):
                raise ValueError(f'generate_tile: option {name}={val!r} must lie in [0, 1]')
        if not (isinstance(opt.min_pixels, (int, np.integer)) and opt.min_pixels >= 1):
            raise ValueError(f'generate_tile: option min_pixels={opt.min_pixels!r} must be an '
                             'int >= 1')
        if opt.region_weights is not None:
            w = np.asarray(opt.region_weights, dtype=np.float64)
            if w.shape != (len(REGION_CLASSES),) or np.any(~np.isfinite(w)) or np.any(w < 0) \
                    or w.sum() <= 0:
                raise ValueError(f'generate_tile: option region_weights={opt.region_weights!r} '
                                 f'must be {len(REGION_CLASSES)} non-negative numbers '
                                 f'({REGION_CLASSES}) with a positive sum')
        stain_matrix(opt.stains)  # validates
        gain = np.asarray(opt.stain_gain, dtype=np.float64)
        if gain.shape != (2, ) or not np.all(np.isfinite(gain)) or np.any(gain <= 0):
            raise ValueError(f'generate_tile: option stain_gain={opt.stain_gain!r} must be '
                             'two positive numbers (hematoxylin, eosin)')
        return opt


def _parse_size(size: Union[int, Sequence[int]]) -> Tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        size = (int(size), int(size))
    try:
        h, w = (int(s) for s in size)
    except (TypeError, ValueError) as err:
        raise ValueError(f'size: expected an int or (H, W), got {size!r}') from err
    if h < 16 or w < 16 or h > 8192 or w > 8192:
        raise ValueError(f'size: H and W must lie in [16, 8192], got {(h, w)}')
    return h, w


# ----------------------------------------------------------------------------- noise
class _Noise:
    """Smooth random fields on a fixed grid by filtering white noise in Fourier space.

    White noise is drawn directly as complex Gaussian Fourier coefficients (one inverse
    real FFT per field); fields are normalised to zero mean and unit std.
    """

    def __init__(self, rng: np.random.Generator, shape: Tuple[int, int]):
        self.rng, self.shape = rng, shape
        self.ky = np.fft.fftfreq(shape[0]).astype(np.float32)[:, None]
        self.kx = np.fft.rfftfreq(shape[1]).astype(np.float32)[None, :]
        self.k2 = self.ky ** 2 + self.kx ** 2

    def white(self, kmax: float = 1.0) -> np.ndarray:
        """Complex Gaussian coefficients, zero above the frequency ``kmax`` (cycles/px)."""
        if kmax >= 0.75:  # every coefficient
            shp = self.k2.shape
            return self.rng.standard_normal((shp[0], 2 * shp[1]),
                                            dtype=np.float32).view(np.complex64)
        keep = self.k2 <= kmax * kmax
        spec = np.zeros(self.k2.shape, np.complex64)
        spec[keep] = self.rng.standard_normal((int(keep.sum()), 2),
                                              dtype=np.float32).view(np.complex64)[:, 0]
        return spec

    def _finish(self, spec: np.ndarray) -> np.ndarray:
        f = sfft.irfft2(spec, s=self.shape).astype(np.float32, copy=False)
        f -= f.mean()
        std = f.std()
        return f / std if std > 0 else f

    def smooth(self, sigma: float) -> np.ndarray:
        """Zero-mean, unit-std Gaussian-filtered white noise (spatial sigma in px)."""
        # the Gaussian transfer is below 1e-6 beyond |k| = sqrt(ln(1e6) / (2 pi^2)) / sigma
        kmax = 0.84 / max(sigma, 1e-6)
        return self._finish(self.white(kmax) *
                            np.exp(np.float32(-2 * np.pi ** 2 * sigma ** 2) * self.k2))

    def oriented(self, n_angles: int, along: float, across: float,
                 highpass: float) -> np.ndarray:
        """(n_angles, H, W) fields from ONE white noise filtered by anisotropic Gaussians
        elongated along angle pi * i / n_angles (fibres), large blobs removed."""
        c = np.float32(-2 * np.pi ** 2)
        spec = self.white() * (1 - np.exp(c * highpass ** 2 * self.k2))
        out = []
        for i in range(n_angles):
            a = np.pi * i / n_angles
            k_al = self.kx * np.float32(math.cos(a)) + self.ky * np.float32(math.sin(a))
            k_ac = -self.kx * np.float32(math.sin(a)) + self.ky * np.float32(math.cos(a))
            out.append(self._finish(spec * np.exp(c * (
                np.float32(along ** 2) * k_al ** 2 + np.float32(across ** 2) * k_ac ** 2))))
        return np.stack(out)


def _steer(bank: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Per-pixel linear interpolation of an oriented field bank at angle theta (mod pi)."""
    n = bank.shape[0]
    t = np.mod(theta, np.pi) / (np.pi / n)
    i0 = np.floor(t).astype(np.intp) % n
    w = (t - np.floor(t)).astype(np.float32)
    a = np.take_along_axis(bank, i0[None], 0)[0]
    b = np.take_along_axis(bank, ((i0 + 1) % n)[None], 0)[0]
    out = (1 - w) * a + w * b
    return out / max(float(out.std()), 1e-6)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


# --------------------------------------------------------------------------- nuclei
@dataclass
class _Nucleus:
    cls: int
    cy: float
    cx: float
    a: float       # semi-axis along the orientation
    b: float       # semi-axis across
    angle: float
    excl: float    # exclusion radius for placement
    pu: float = 2.0          # exponent along u (< 2: pointed spindle ends)
    bend: float = 0.0
    amps: np.ndarray = None  # Fourier amplitudes for orders 2..
    phases: np.ndarray = None
    orders: np.ndarray = None


_AMPS = {  # std of the Fourier amplitudes of orders 2, 3, ... of the boundary radius
    TUMOUR: np.array([0.07, 0.05, 0.03, 0.02, 0.015]),
    LYMPHOCYTE: np.array([0.03, 0.02, 0.015]),
    STROMAL: np.array([0.02, 0.015, 0.01]),
    MITOSIS: np.r_[0.14, 0.12, 0.07, 0.05, 0.04, np.full(6, 0.045)],  # clumped figure
    -MITOSIS: np.r_[0.03, 0.03, 0.03, 0.04, np.full(7, 0.06)],  # metaphase plate
}


def _sample_nucleus(cls: int, cy: float, cx: float, fibre_angle: float, s: float,
                    u: np.ndarray, z: np.ndarray) -> _Nucleus:
    """Geometry of one nucleus of class ``cls`` (sizes scaled by ``s``) from pre-drawn
    uniform ``u`` (18: 0-3 shape, 7-17 Fourier phases) and standard normal ``z`` (13)."""
    def rnd(k, lo, hi):
        return lo + (hi - lo) * float(u[k])

    angle = rnd(2, 0, np.pi)
    pu, bend = 2.0, 0.0
    if cls == TUMOUR:
        a = rnd(0, 7.0, 11.5) * s
        b = a / rnd(1, 1.0, 1.55)
        excl, key = 0.5 * (a + b), TUMOUR
    elif cls == LYMPHOCYTE:
        a = rnd(0, 3.4, 4.7) * s
        b = a / rnd(1, 1.0, 1.2)
        excl, key = 0.5 * (a + b), LYMPHOCYTE
    elif cls == STROMAL:
        a = rnd(0, 8.0, 13.0) * s
        b = rnd(1, 2.1, 3.1) * s
        excl, key = 0.5 * (a + b), STROMAL
        angle, pu, bend = fibre_angle + 0.15 * float(z[11]), 1.4, 0.015 * float(z[12]) / s
    elif cls == MITOSIS:
        if u[3] < 0.6:  # clumped prophase / prometaphase figure: lumpy, ragged
            a = rnd(0, 6.5, 9.5) * s
            b = a / rnd(1, 1.0, 1.3)
            key = MITOSIS
        else:  # metaphase plate seen from the side: a ragged bar
            a = rnd(0, 7.0, 10.5) * s
            b = rnd(1, 2.8, 4.0) * s
            key = -MITOSIS
        excl = 0.65 * (a + b)
    else:
        raise ValueError(f'unknown nucleus class {cls}')
    std = _AMPS[key]
    k = len(std)
    return _Nucleus(cls, cy, cx, a, b, angle, excl, pu=pu, bend=bend, amps=z[:k] * std,
                    phases=2 * np.pi * u[7:7 + k],
                    orders=np.arange(2, 2 + k))


def _nucleus_window(n: _Nucleus, shape: Tuple[int, int]):
    """Local geometry of a nucleus: (window slices, inside mask, distance to the edge px)."""
    reach = n.a * (1 + np.abs(n.amps).sum()) + 2.0
    y0, y1 = max(int(n.cy - reach), 0), min(int(n.cy + reach) + 2, shape[0])
    x0, x1 = max(int(n.cx - reach), 0), min(int(n.cx + reach) + 2, shape[1])
    if y1 <= y0 or x1 <= x0:
        return None
    dy = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5 - n.cy
    dx = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5 - n.cx
    ca, sa = math.cos(n.angle), math.sin(n.angle)
    u = dx * ca + dy * sa
    v = -dx * sa + dy * ca - n.bend * (dx * ca + dy * sa) ** 2
    theta = np.arctan2(v / n.b, u / n.a)
    rad = 1.0 + np.tensordot(n.amps, np.cos(n.orders[:, None, None] * theta[None]
                                            + n.phases[:, None, None]), axes=1)
    q = np.sqrt(np.abs(u / n.a) ** n.pu + (v / n.b) ** 2) / np.maximum(rad, 0.3)
    rho = np.sqrt(u * u + v * v)
    edge = np.where(q > 1e-6, rho * (1.0 / np.maximum(q, 1e-6) - 1.0), n.a)
    return (slice(y0, y1), slice(x0, x1)), q <= 1.0, edge.astype(np.float32)


def _place_nuclei(rng: np.random.Generator, region: np.ndarray, theta: np.ndarray,
                  opt: SyntheticOptions) -> list:
    """Sequential random placement with class-dependent exclusion (touching/overlap)."""
    s = opt.scale
    h, w = region.shape
    cands = []
    for r in range(len(REGION_CLASSES)):
        dens = _REGION_DENSITY[r] * opt.density / (s * s) / 1e4
        ys, xs = np.nonzero(region == r)
        if dens <= 0 or len(ys) == 0:
            continue
        target = rng.poisson(dens * len(ys))
        if target == 0:
            continue
        mix = np.array(_REGION_MIX[r], dtype=np.float64)
        if r == R_TUMOUR:
            mix[MITOSIS] = mix[TUMOUR] * opt.mitosis_rate
            mix[TUMOUR] *= 1 - opt.mitosis_rate
        n_cand = 3 * target + 10
        pick = rng.integers(0, len(ys), n_cand)
        cy = ys[pick] + rng.random(n_cand)
        cx = xs[pick] + rng.random(n_cand)
        cls = rng.choice(len(NUCLEUS_CLASSES), size=n_cand, p=mix / mix.sum())
        for i in range(n_cand):
            cands.append((r, target, int(cls[i]), float(cy[i]), float(cx[i])))
    # random numbers of every candidate, drawn at once: 18 uniforms, 13 normals
    unif = rng.random((len(cands), 18))
    gauss = rng.standard_normal((len(cands), 13))
    order = rng.permutation(len(cands))
    counts = np.zeros(len(REGION_CLASSES), np.int64)
    cell = 27.0 * s  # >= the largest exclusion distance 1.05 * 2 * 0.65 * (9.5 + 9.5) * s
    grid: Dict[Tuple[int, int], list] = {}
    accepted = []
    for idx in order:
        r, target, c, cy, cx = cands[idx]
        if counts[r] >= target:
            continue
        fib = float(theta[min(int(cy), h - 1), min(int(cx), w - 1)])
        n = _sample_nucleus(c, cy, cx, fib, s, unif[idx], gauss[idx])
        # touching (0.92-1.05 x the sum of exclusion radii) or overlapping (0.55-0.8 x)
        f = 0.55 + 0.25 * unif[idx, 5] if unif[idx, 6] < opt.overlap_prob \
            else 0.92 + 0.13 * unif[idx, 5]
        gy, gx = int(cy // cell), int(cx // cell)
        ok = True
        for yy in (gy - 1, gy, gy + 1):
            for xx in (gx - 1, gx, gx + 1):
                for m in grid.get((yy, xx), ()):
                    if (m.cy - cy) ** 2 + (m.cx - cx) ** 2 < (f * (m.excl + n.excl)) ** 2:
                        ok = False
                        break
                if not ok:
                    break
            if not ok:
                break
        if not ok:
            continue
        grid.setdefault((gy, gx), []).append(n)
        accepted.append(n)
        counts[r] += 1
    return accepted


# --------------------------------------------------------------------------- tile
def generate_tile(seed: int, size: tuple = (256, 256), **options) -> dict:
    """Render one synthetic H&E tile with its ground truth, deterministic in ``seed``.

    Options: see :class:`SyntheticOptions`. Returns a dict with
    ``image`` uint8 (H, W, 3); ``inst_map`` int32 (H, W), 0 background, 1..K (instance k
    is entry k-1 of every per-instance array; later nuclei overwrite earlier ones where
    they overlap; instances with fewer than ``min_pixels`` visible pixels are dropped);
    ``labels`` int64 (K,) indices into NUCLEUS_CLASSES; ``points`` float64 (K, 2) (x, y)
    centroid of the visible pixels and ``boxes`` float64 (K, 4) x1, y1, x2, y2 with
    x2 = last column + 1 (so w = number of columns spanned > 0), both from
    :func:`projects.common.instances.instance_geometry` (continuous pixel coordinates:
    pixel (r, c) covers [c, c+1) x [r, r+1), centroid = center_of_mass + 0.5, as in
    docs/data_layout.md; the nuclei are rendered in the same frame); ``semantic`` uint8
    (inst_map > 0); ``region_map`` uint8 indices into REGION_CLASSES; and extras
    ``stain_matrix`` (3, 3) the jittered OD vectors (H, E, residual) and
    ``concentrations`` float32 (H, W, 3) such that without noise
    image == round(compose_stains(concentrations, stain_matrix)).
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f'seed: expected a non-negative int, got {seed!r}')
    opt = SyntheticOptions.parse(options)
    height, width = _parse_size(size)
    s = opt.scale
    rng = np.random.default_rng(int(seed))
    pad = int(math.ceil(20 * s))
    shape = (sfft.next_fast_len(height + 2 * pad, real=True),
             sfft.next_fast_len(width + 2 * pad, real=True))
    noise = _Noise(rng, shape)

    # ---- per-tile stain and appearance jitter
    j = opt.stain_jitter
    stains = stain_matrix(opt.stains)
    stains[:2] = np.abs(stains[:2] + rng.normal(0, 0.03 * j, (2, 3)))
    stains /= np.linalg.norm(stains, axis=1, keepdims=True)
    gain_h = (1 + rng.uniform(-0.15, 0.15) * j) * float(opt.stain_gain[0])
    gain_e = (1 + rng.uniform(-0.2, 0.2) * j) * float(opt.stain_gain[1])

    # ---- regions
    if opt.region_weights is None:
        weights = rng.dirichlet(_REGION_ALPHA)
    else:
        weights = np.asarray(opt.region_weights, np.float64) / np.sum(opt.region_weights)
    score = np.stack([noise.smooth(34 * s) + 0.2 * noise.smooth(7 * s) for _ in REGION_CLASSES])
    score += 1.3 * np.log(weights + 1e-4)[:, None, None].astype(np.float32)
    region = np.argmax(score, axis=0).astype(np.uint8)
    lumen = noise.smooth(5 * s)
    lumen_thr = rng.uniform(2.0, 3.2)
    if weights[BACKGROUND] > 0:
        region[(region == R_TUMOUR) & (lumen > lumen_thr)] = BACKGROUND
    soft = np.stack([ndimage.gaussian_filter((region == r).astype(np.float32), 1.5 * s)
                     for r in range(len(REGION_CLASSES))])

    # ---- textures
    theta = (rng.uniform(0, np.pi) + 0.6 * noise.smooth(60 * s)).astype(np.float32)
    fibre = _steer(noise.oriented(8, 14 * s, 1.6 * s, 10 * s), theta)
    fibre2 = _steer(noise.oriented(8, 6 * s, 0.8 * s, 4 * s), theta + 0.15)
    mottle = noise.smooth(3 * s)
    patchy = noise.smooth(12 * s)
    fine = noise.smooth(0.6 * s)
    gran = noise.smooth(1.2 * s)
    speck = noise.smooth(1.2 * s)

    conc_h = np.zeros(shape, np.float32)
    conc_e = np.zeros(shape, np.float32)
    # background: glass / lumen, nearly white
    conc_h += soft[BACKGROUND] * 0.01
    conc_e += soft[BACKGROUND] * (0.035 + 0.015 * patchy)
    # stroma: wavy collagen fibres with pale clefts
    e_str = rng.uniform(0.6, 0.9)
    bundles = _sigmoid(1.3 * fibre + 0.6 * patchy + 2.4)
    conc_e += soft[R_STROMA] * e_str * (0.15 + 0.95 * bundles) * (1 + 0.12 * fibre2 + 0.08 * fine)
    conc_h += soft[R_STROMA] * (0.1 + 0.12 * bundles)
    # lymphocyte-rich: loose, paler stroma
    conc_e += soft[R_LYMPH] * (0.35 + 0.15 * bundles + 0.06 * mottle)
    conc_h += soft[R_LYMPH] * 0.25
    # necrosis: mottled eosinophilic debris with nuclear dust
    nec_e = 0.9 + 0.12 * mottle + 0.1 * patchy + 0.08 * gran
    dust = np.clip(speck - 1.9, 0, None) * 2.2 + 0.08 * np.clip(gran, 0, None)
    conc_e += soft[R_NECROSIS] * np.clip(nec_e, 0.4, None)
    conc_h += soft[R_NECROSIS] * (0.2 + 0.06 * np.clip(mottle, -2, 2) + 0.06 * patchy + dust)
    # tumour: purple cytoplasm (per-cell variation, borders, vacuoles added below)
    conc_e += soft[R_TUMOUR] * (0.5 + 0.06 * mottle)
    conc_h += soft[R_TUMOUR] * (0.38 + 0.05 * mottle)

    # ---- nuclei geometry, visibility, drops
    nuclei = _place_nuclei(rng, region, theta, opt)
    crop = (slice(pad, pad + height), slice(pad, pad + width))

    def reaches_tile(n: _Nucleus) -> bool:  # nuclei in the margin may not touch the tile
        reach = n.a * (1 + np.abs(n.amps).sum()) + 2.0
        return (pad - reach <= n.cy <= pad + height + reach
                and pad - reach <= n.cx <= pad + width + reach)

    geoms = [_nucleus_window(n, shape) if reaches_tile(n) else None for n in nuclei]

    def paint(keep):
        canvas = np.zeros(shape, np.int32)
        for i in keep:
            sl, inside, _ = geoms[i]
            canvas[sl][inside] = i + 1
        return canvas

    drawable = [i for i, g in enumerate(geoms) if g is not None]
    visible = np.bincount(paint(drawable)[crop].ravel(), minlength=len(nuclei) + 1)[1:]
    keep = [i for i in drawable if visible[i] >= opt.min_pixels]
    canvas = paint(keep)

    # ---- tumour cytoplasm: territories of the tumour / mitotic cells
    seeds = [n for n in nuclei if n.cls in (TUMOUR, MITOSIS)]
    if seeds:
        seed_img = np.zeros(shape, np.int32)
        for k, n in enumerate(seeds):
            seed_img[min(int(n.cy), shape[0] - 1), min(int(n.cx), shape[1] - 1)] = k + 1
        dist, (iy, ix) = ndimage.distance_transform_edt(seed_img == 0, return_indices=True)
        owner = seed_img[iy, ix] - 1
        radius = np.array([0.5 * (n.a + n.b) * rng.uniform(1.3, 1.9) for n in seeds], np.float32)
        mit = np.array([n.cls == MITOSIS for n in seeds])
        cyto_e = np.where(mit, -0.2, rng.uniform(0.0, 0.4, len(seeds))).astype(np.float32)
        cyto_h = np.where(mit, -0.2, rng.uniform(0.0, 0.3, len(seeds))).astype(np.float32)
        body = np.clip(radius[owner] - dist, 0, 4.0) / 4.0
        border = np.zeros(shape, bool)
        border[:, 1:] |= owner[:, 1:] != owner[:, :-1]
        border[1:, :] |= owner[1:, :] != owner[:-1, :]
        vac = np.clip(gran * 0.6 + mottle * 0.8 - 1.9, 0, 1)  # small clear vacuoles
        tex = (1 + 0.18 * mottle + 0.12 * fine) * (1 - 0.8 * vac)
        wt = soft[R_TUMOUR] * body
        conc_e += wt * (cyto_e[owner] * tex + 0.12 * border)
        conc_h += wt * (cyto_h[owner] * tex + 0.03 * border)

    # ---- nuclei appearance (only kept ones are rendered)
    for i in keep:
        n = nuclei[i]
        sl, inside, edge = geoms[i]
        alpha = np.clip(edge + 0.5, 0.0, 1.0)
        f_, g_ = fine[sl], gran[sl]
        if n.cls == TUMOUR:
            if rng.random() < 0.3:  # hyperchromatic
                hv = rng.uniform(1.1, 1.6) * (0.9 + 0.2 * g_ + 0.1 * f_)
            else:  # vesicular: paler, clumped chromatin and a membrane rim
                hv = rng.uniform(0.65, 1.05) * (0.8 + 0.4 * np.clip(g_, -1.5, 2.5) + 0.15 * f_)
                hv = hv + 0.45 * np.exp(-(edge / (1.2 * s)) ** 2)
            ev = np.full_like(hv, 0.15)
            for _ in range(rng.choice(3, p=(0.3, 0.5, 0.2))):
                rr = rng.uniform(0, 0.45) * n.b
                ang = rng.uniform(0, 2 * np.pi)
                ny, nx = n.cy + rr * math.sin(ang), n.cx + rr * math.cos(ang)
                nr = rng.uniform(1.0, 1.9) * s
                yy = np.arange(sl[0].start, sl[0].stop)[:, None] + 0.5 - ny
                xx = np.arange(sl[1].start, sl[1].stop)[None, :] + 0.5 - nx
                spot = np.exp(-(yy ** 2 + xx ** 2) / (2 * (0.7 * nr) ** 2))
                hv = hv + 1.0 * spot
                ev = ev + 0.7 * spot
        elif n.cls == LYMPHOCYTE:
            hv = rng.uniform(1.9, 2.5) * (1 + 0.08 * f_ + 0.08 * g_)
            ev = np.full_like(hv, 0.1)
        elif n.cls == STROMAL:
            hv = rng.uniform(1.4, 1.9) * (1 + 0.12 * f_)
            ev = np.full_like(hv, 0.15)
        else:  # mitosis: very dark, clumped, ragged
            hv = rng.uniform(2.7, 3.3) * (0.85 + 0.25 * np.clip(g_, -2, 2) + 0.1 * f_)
            ev = np.full_like(hv, 0.05)
        conc_h[sl] += alpha * np.clip(hv, 0.1, None)
        conc_e[sl] += alpha * ev

    # ---- stain intensity jitter, saturation, residual, blur, crop
    conc_h = 3.2 * np.tanh(gain_h * conc_h / 3.2)
    conc_e = 2.5 * np.tanh(gain_e * conc_e / 2.5)
    conc_r = np.full(shape, rng.uniform(0.0, 0.03), np.float32) + 0.01 * (patchy + 1.0).clip(0)
    conc = np.stack([conc_h, conc_e, conc_r], axis=-1)
    if opt.blur_sigma > 0:
        conc = ndimage.gaussian_filter(conc, (opt.blur_sigma, opt.blur_sigma, 0))
    conc = np.ascontiguousarray(np.clip(conc[crop], 0, None), dtype=np.float32)
    rgb = compose_stains(conc, stains)
    if opt.noise_std > 0:
        rgb += rng.normal(0, opt.noise_std, rgb.shape)
    image = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)

    # ---- ground truth
    inst_crop = canvas[crop]
    old_ids = np.unique(inst_crop)
    old_ids = old_ids[old_ids > 0]
    lut = np.zeros(len(nuclei) + 1, np.int32)
    lut[old_ids] = np.arange(1, len(old_ids) + 1, dtype=np.int32)
    inst_map = lut[inst_crop]
    labels = np.array([nuclei[i - 1].cls for i in old_ids], np.int64)
    _, points, boxes = instance_geometry(inst_map, np.arange(1, len(old_ids) + 1))
    return dict(
        image=image,
        inst_map=inst_map,
        labels=labels,
        points=points,
        boxes=boxes,
        semantic=(inst_map > 0).astype(np.uint8),
        region_map=region[crop].copy(),
        stain_matrix=stains,
        concentrations=conc,
    )


# -------------------------------------------------------------------------- preview
CLASS_COLOURS: Dict[str, Tuple[int, int, int]] = {
    'tumour': (40, 230, 40), 'lymphocyte': (0, 200, 255), 'stromal': (255, 225, 0),
    'mitosis': (255, 30, 30)}
REGION_COLOURS: Dict[str, Tuple[int, int, int]] = {
    'background': (235, 235, 235), 'tumour': (220, 60, 200), 'stroma': (250, 160, 60),
    'lymphocytic': (40, 90, 230), 'necrosis': (120, 120, 40)}


def render_preview(tile: dict, zoom: int = 1, show_regions: bool = False) -> np.ndarray:
    """RGB uint8 picture: the image | instance outlines coloured by class + points
    [| region map over the image], with a legend strip (classes with counts)."""
    from PIL import Image, ImageDraw
    for key in ('image', 'inst_map', 'labels', 'points'):
        if key not in tile:
            raise ValueError(f'render_preview: tile has no {key!r} entry')
    if not isinstance(zoom, (int, np.integer)) or zoom < 1:
        raise ValueError(f'render_preview: zoom must be an int >= 1, got {zoom!r}')
    img = np.asarray(tile['image'], np.uint8)
    inst = np.asarray(tile['inst_map'])
    labels = np.asarray(tile['labels'])
    if img.shape[:2] != inst.shape:
        raise ValueError(f'render_preview: image {img.shape} and inst_map {inst.shape} differ')
    img = np.repeat(np.repeat(img, zoom, 0), zoom, 1)
    inst = np.repeat(np.repeat(inst, zoom, 0), zoom, 1)
    over = img.copy()
    edge = np.zeros(inst.shape, bool)
    edge[:, 1:] |= inst[:, 1:] != inst[:, :-1]
    edge[:, :-1] |= inst[:, 1:] != inst[:, :-1]
    edge[1:, :] |= inst[1:, :] != inst[:-1, :]
    edge[:-1, :] |= inst[1:, :] != inst[:-1, :]
    edge &= inst > 0
    if len(labels):
        palette = np.array([CLASS_COLOURS[c] for c in NUCLEUS_CLASSES], np.uint8)
        over[edge] = palette[labels[inst[edge] - 1]]
    pil = Image.fromarray(over)
    draw = ImageDraw.Draw(pil)
    rad = max(1, zoom)
    for (x, y), c in zip(np.asarray(tile['points']), labels):
        # continuous (x, y) -> zoomed x * zoom; PIL addresses pixel centres at integers
        px, py = x * zoom - 0.5, y * zoom - 0.5
        draw.ellipse([px - rad, py - rad, px + rad, py + rad],
                     fill=CLASS_COLOURS[NUCLEUS_CLASSES[c]], outline=(0, 0, 0))
    panels = [img, np.asarray(pil)]
    if show_regions:
        if 'region_map' not in tile:
            raise ValueError("render_preview: show_regions needs a 'region_map' entry")
        reg = np.repeat(np.repeat(np.asarray(tile['region_map']), zoom, 0), zoom, 1)
        rpal = np.array([REGION_COLOURS[r] for r in REGION_CLASSES], np.float32)
        panels.append((0.55 * img + 0.45 * rpal[reg]).astype(np.uint8))
    h, w = img.shape[:2]
    gap = 4
    legend_h = 16 if not show_regions else 30
    out = np.full((h + legend_h, len(panels) * w + (len(panels) - 1) * gap, 3), 255, np.uint8)
    for k, p in enumerate(panels):
        out[:h, k * (w + gap):k * (w + gap) + w] = p
    pil = Image.fromarray(out)
    draw = ImageDraw.Draw(pil)
    counts = np.bincount(labels.astype(np.int64), minlength=len(NUCLEUS_CLASSES))
    x = 4
    for c, name in enumerate(NUCLEUS_CLASSES):
        draw.rectangle([x, h + 4, x + 8, h + 12], fill=CLASS_COLOURS[name], outline=(0, 0, 0))
        text = f'{name} {counts[c]}'
        draw.text((x + 12, h + 2), text, fill=(0, 0, 0))
        x += 12 + int(draw.textlength(text)) + 10
    if show_regions:
        x = 4
        for name in REGION_CLASSES:
            draw.rectangle([x, h + 18, x + 8, h + 26], fill=REGION_COLOURS[name], outline=(0, 0, 0))
            draw.text((x + 12, h + 16), name, fill=(0, 0, 0))
            x += 12 + int(draw.textlength(name)) + 10
    return np.asarray(pil)


# -------------------------------------------------------------------------- dataset
def tile_seed(seed: int, split: str, index: int) -> int:
    """Seed of tile ``index`` of ``split``, derived from the dataset ``seed``."""
    if split not in SPLITS:
        raise ValueError(f'split: expected one of {SPLITS}, got {split!r}')
    if seed < 0 or index < 0:
        raise ValueError(f'seed and index must be non-negative, got seed={seed}, index={index}')
    ss = np.random.SeedSequence([int(seed), SPLITS.index(split), int(index)])
    return int(ss.generate_state(1, np.uint32)[0])


def tile_name(split: str, index: int, count: int) -> str:
    """File stem of tile ``index`` of ``split`` (``count`` tiles in the split)."""
    return f'{split}_{index:0{max(4, len(str(max(count - 1, 0))))}d}'


def _rle_string(counts: np.ndarray) -> str:
    """COCO's compressed RLE string of run lengths (the encoding of pycocotools'
    ``rleToString``: counts after the second are stored as differences to the count two
    places before, in little-endian 5-bit groups with a continuation bit, offset by 48)."""
    out = []
    for i in range(len(counts)):
        x = int(counts[i]) - (int(counts[i - 2]) if i > 2 else 0)
        more = True
        while more:
            c = x & 0x1F
            x >>= 5  # arithmetic shift, as for C's signed long
            more = (x != -1) if (c & 0x10) else (x != 0)
            out.append(chr((c | 0x20 if more else c) + 48))
    return ''.join(out)


def mask_to_rle(inst_map: np.ndarray, num: int) -> list:
    """Compressed COCO RLE ({'size': [h, w], 'counts': str}, column-major) of ids 1..num."""
    h, w = inst_map.shape
    flat = inst_map.T.ravel()  # column-major: index = x * h + y
    order = np.argsort(flat, kind='stable')
    bounds = np.searchsorted(flat[order], np.arange(1, num + 2))
    out = []
    for k in range(num):
        pos = order[bounds[k]:bounds[k + 1]]
        if len(pos) == 0:
            raise ValueError(f'inst_map: instance {k + 1} has no pixel')
        brk = np.flatnonzero(np.diff(pos) != 1)
        starts = pos[np.r_[0, brk + 1]]
        ends = pos[np.r_[brk, len(pos) - 1]] + 1
        zeros = starts - np.r_[0, ends[:-1]]
        counts = np.empty(2 * len(starts) + 1, np.int64)
        counts[0:-1:2] = zeros
        counts[1:-1:2] = ends - starts
        counts[-1] = h * w - ends[-1]
        out.append({'size': [h, w], 'counts': _rle_string(counts)})
    return out


_LAYOUT_DIRS = LAYOUT_DIRS + ('region_dir', )


def generate_dataset(out_dir: str, num_train: int, num_val: int, num_test: int,
                     size=(256, 256), seed: int = 0, overwrite: bool = False,
                     progress: bool = False, **options) -> dict:
    """Write a synthetic dataset in both layouts of docs/data_layout.md; return a summary.

    Files are written by :class:`projects.common.layout.LayoutWriter`. Detection:
    ``images/<name>.png`` + ``annotations/{train,val,test}.json`` (COCO; categories =
    NUCLEUS_CLASSES with ids 1..C, supercategory ``nucleus``; bbox xywh, area = pixel
    count, iscrowd 0, ``point`` [x, y] centroid, full float precision, ``segmentation``
    compressed RLE). Segmentation: ``img_dir``, ``ann_dir`` (semantic), ``inst_dir``
    (uint16 PNG), ``points`` (CSV x,y,label), ``region_dir``, each with a ``<split>/``
    level. Tile i of split s is ``generate_tile(tile_seed(seed, s, i), size, **options)``,
    named ``<s>_<i>``. Tiles without nuclei are kept (listed in COCO ``images``); every
    split gets its JSON, even with no tile. Existing layout folders in ``out_dir`` raise
    ValueError unless ``overwrite`` (then they are removed first).
    The summary (also written to ``out_dir/summary.json``) holds per-split image,
    empty-image and per-class instance counts and region pixel fractions.
    """
    counts = {'train': num_train, 'val': num_val, 'test': num_test}
    for split, n in counts.items():
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f'num_{split}: expected a non-negative int, got {n!r}')
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f'seed: expected a non-negative int, got {seed!r}')
    height, width = _parse_size(size)
    SyntheticOptions.parse(options)
    if osp.exists(out_dir) and not osp.isdir(out_dir):
        raise ValueError(f'{out_dir}: output path exists and is not a directory')
    stale = [osp.join(out_dir, d) for d in _LAYOUT_DIRS
             if osp.isdir(osp.join(out_dir, d)) and os.listdir(osp.join(out_dir, d))]
    if stale and not overwrite:
        raise ValueError(f'{stale[0]}: output folder is not empty; pass overwrite=True '
                         '(--overwrite) to replace the dataset, or choose another out_dir')
    for d in stale:
        shutil.rmtree(d)
    os.makedirs(out_dir, exist_ok=True)

    writer = LayoutWriter(out_dir, NUCLEUS_CLASSES,
                          f'MMHisto synthetic H&E, seed {seed}, split {{split}}',
                          supercategory='nucleus', licenses=None, decimals=None, splits=SPLITS)
    summary = {'out_dir': out_dir, 'seed': int(seed), 'size': [height, width],
               'classes': list(NUCLEUS_CLASSES), 'regions': list(REGION_CLASSES),
               'options': {k: (np.asarray(v).tolist() if isinstance(v, np.ndarray) else v)
                           for k, v in options.items()},
               'splits': {}}
    reg_count = {split: np.zeros(len(REGION_CLASSES), np.int64) for split in SPLITS}
    jobs = [(split, i, n) for split, n in counts.items() for i in range(n)]
    for split, i, n in track(jobs, progress):
        tile = generate_tile(tile_seed(seed, split, i), (height, width), **options)
        rles = mask_to_rle(tile['inst_map'], len(tile['labels']))
        writer.add(split, tile_name(split, i, n), tile['image'], tile['semantic'],
                   tile['inst_map'], tile['labels'],
                   extra_maps={'region_dir': tile['region_map']},
                   ann_extra=[{'segmentation': rle} for rle in rles])
        reg_count[split] += np.bincount(tile['region_map'].ravel(),
                                        minlength=len(REGION_CLASSES))
    for split, c in writer.close().items():
        summary['splits'][split] = {
            'images': c['images'], 'empty_images': c['empty_images'],
            'instances': c['instances'], 'per_class': c['per_class'],
            'region_fraction': {r: round(float(v) / max(reg_count[split].sum(), 1), 4)
                                for r, v in zip(REGION_CLASSES, reg_count[split])}}
    write_json(osp.join(out_dir, 'summary.json'), summary)
    return summary
