"""Statistics of the benchmark (``tools/analysis_tools/benchmark.py``): intervals over seeds,
paired bootstrap over test images (and seeds), verdicts and the convergence rule.

Every function is plain numpy / scipy and deterministic (the bootstrap takes its seed), so a
report rebuilt from the same results is byte-identical.
"""
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

def t_interval(values: Sequence[float], conf: float = 0.95) -> Tuple[float, float]:
    """Mean and half-width of the two-sided Student-t interval over ``values`` (seeds).

    half = t_{(1+conf)/2, n-1} * s / sqrt(n), s the sample standard deviation (ddof=1).
    Needs at least 2 values (a ValueError otherwise: one seed has no interval).
    """
    from scipy import stats
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if x.size < 2:
        raise ValueError(f't_interval needs at least 2 values, got {x.size}')
    if not np.isfinite(x).all():
        raise ValueError(f't_interval: non-finite values {x.tolist()}')
    half = stats.t.ppf((1 + conf) / 2, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size)
    return float(x.mean()), float(half)


class Statistic:
    """A benchmark statistic of per-image terms that add up over the test images:
    ``value = of_sums(sum over images of terms(x_i))``.

    Every statistic of the benchmark has this form (pooled counts, weighted means, summed
    confusions, contingency tables), which is what lets ``paired_bootstrap`` score a draw
    from how often it takes each image instead of gathering the images.
    ``terms``: (..., n_images, k) per-image values -> (..., n_images, *shape) additive
    terms; ``of_sums``: (..., *shape) summed terms -> (...) statistic.
    """

    def __init__(self, terms: Callable[[np.ndarray], np.ndarray],
                 of_sums: Callable[[np.ndarray], np.ndarray], doc: str) -> None:
        self.terms, self.of_sums, self.__doc__ = terms, of_sums, doc

    def __call__(self, values: np.ndarray) -> np.ndarray:
        v = np.asarray(values)
        return self.of_sums(self.terms(v).sum(v.ndim - 2))


def _as_float(values: np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)


def _f1_of_sums(c: np.ndarray) -> np.ndarray:
    tp, fp, fn = c[..., 0], c[..., 1], c[..., 2]
    den = 2 * tp + fp + fn
    return np.where(den > 0, 2 * tp / np.where(den > 0, den, 1), 1.0)


pooled_f1 = Statistic(_as_float, _f1_of_sums, """\
F1 = 2 tp / (2 tp + fp + fn) of counts summed over the second-to-last axis.

``counts`` (..., n_images, 3) holds (tp, fp, fn) per image; returns (...). A set with
neither ground truth nor prediction scores 1.0 (the metrics module's convention).""")


def _weighted_terms(values: np.ndarray) -> np.ndarray:
    v = _as_float(values)
    return np.stack([v[..., 0] * v[..., 1], v[..., 1]], -1)


def _mean_of_sums(s: np.ndarray) -> np.ndarray:
    n = s[..., 1]
    return np.where(n > 0, s[..., 0] / np.where(n > 0, n, 1), 1.0)


masked_mean = Statistic(_weighted_terms, _mean_of_sums, """\
Mean over the images that count, along the second-to-last axis.

``values`` (..., n_images, 2): column 0 the per-image score, column 1 a 0/1 weight (an
image with neither ground-truth nor predicted object has weight 0, as in
``NucleiMetric``). No counted image: 1.0 (the module's convention).""")


def _confusion(v: np.ndarray) -> np.ndarray:
    """(..., C*C) flattened summed confusion -> (..., C, C)."""
    c = int(round(np.sqrt(v.shape[-1])))
    if c * c != v.shape[-1]:
        raise ValueError(f'a flattened confusion matrix needs C*C entries, got {v.shape[-1]}')
    return v.reshape(v.shape[:-1] + (c, c))


def _nanmean_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """Mean over the last axis of num / den, leaving out the entries with den == 0 (the
    classes absent from both ground truth and prediction, as mmseg's nan-mean)."""
    ok = den > 0
    r = np.where(ok, num / np.where(ok, den, 1), 0.0)
    n = ok.sum(-1)
    return np.where(n > 0, r.sum(-1) / np.where(n > 0, n, 1), np.nan)


def _miou(v: np.ndarray) -> np.ndarray:
    c = _confusion(v)
    tp = np.diagonal(c, axis1=-2, axis2=-1)
    return _nanmean_ratio(tp, c.sum(-1) + c.sum(-2) - tp)


def _op(v: np.ndarray) -> np.ndarray:
    c = _confusion(v)
    return np.diagonal(c, axis1=-2, axis2=-1).sum(-1) / c.sum((-2, -1))


def _pc(v: np.ndarray) -> np.ndarray:
    c = _confusion(v)
    return _nanmean_ratio(np.diagonal(c, axis1=-2, axis2=-1), c.sum(-2))


def _macc(v: np.ndarray) -> np.ndarray:
    c = _confusion(v)
    return _nanmean_ratio(np.diagonal(c, axis1=-2, axis2=-1), c.sum(-1))


# per-image flattened confusions (..., n_images, C*C), rows ground truth, columns prediction
confusion_miou = Statistic(_as_float, _miou, """\
mIoU of the summed confusion (rows ground truth, columns prediction): mean over classes
of TP / (TP + FP + FN), as ``negative_pseudo_labels.metric.seg_scores``.""")
confusion_op = Statistic(_as_float, _op, """\
Overall accuracy of the summed confusion: sum TP / sum of all entries.""")
confusion_pc = Statistic(_as_float, _pc, """\
Mean per-class precision TP / (TP + FP) (Tokunaga et al. eq. 7's PC, as printed).""")
confusion_macc = Statistic(_as_float, _macc, """\
Mean per-class recall TP / (TP + FN).""")


def _one_hot_pairs(values: np.ndarray) -> np.ndarray:
    """(..., n, 2) integer (cluster, class) pairs -> (..., n, K, J) one-hot cells of the
    contingency table, K / J one more than the largest id in the whole array (so every
    bootstrap draw has the same shape)."""
    v = np.asarray(values)
    if v.shape[-1] != 2 or v.size == 0 or (v < 0).any():
        raise ValueError('cluster statistics take (cluster, class) pairs of ids >= 0, got '
                         f'shape {v.shape}')
    v = v.astype(np.int64, copy=False)
    k, j = int(v[..., 0].max()) + 1, int(v[..., 1].max()) + 1
    out = np.zeros(v.shape[:-1] + (k * j, ), np.float64)
    np.put_along_axis(out, (v[..., 0] * j + v[..., 1])[..., None], 1.0, -1)
    return out.reshape(v.shape[:-1] + (k, j))


def _purity(c: np.ndarray) -> np.ndarray:
    return c.max(-1).sum(-1) / c.sum((-2, -1))


def _entropy(c: np.ndarray) -> np.ndarray:
    nk = c.sum(-1, keepdims=True)
    p = np.where(nk > 0, c / np.where(nk > 0, nk, 1), 0.0)
    plogp = np.where(p > 0, p * np.log2(np.where(p > 0, p, 1)), 0.0)
    return -(nk[..., 0] * plogp.sum(-1)).sum(-1) / c.sum((-2, -1))


def _cluster_f(c: np.ndarray) -> np.ndarray:
    nj, nk = c.sum(-2), c.sum(-1)
    assign = np.argmax(c, -1)[..., None] == np.arange(c.shape[-1])  # (..., K, J)
    tp = (assign * c).sum(-2)
    size = (assign * nk[..., None]).sum(-2)
    f1 = np.where(tp > 0, 2 * tp / np.maximum(size + nj, 1), 0.0)
    return (nj * f1).sum(-1) / nj.sum(-1)


def _classification_f(c: np.ndarray) -> np.ndarray:
    n = max(c.shape[-2], c.shape[-1])
    pad = [(0, 0)] * (c.ndim - 2) + [(0, n - c.shape[-2]), (0, n - c.shape[-1])]
    c = np.pad(c, pad)
    tp = np.diagonal(c, axis1=-2, axis2=-1)
    predicted, nj = c.sum(-1), c.sum(-2)
    f1 = np.where(tp > 0, 2 * tp / np.maximum(predicted + nj, 1), 0.0)
    return (nj * f1).sum(-1) / nj.sum(-1)


cluster_purity = Statistic(_one_hot_pairs, _purity, """\
Purity (1/N) sum_k max_j n_kj of (cluster, class) pairs (Hu et al. 2018, eq. 14; the same
quantity as ``projects.cell_gan.metrics.cluster_scores``).""")
cluster_entropy = Statistic(_one_hot_pairs, _entropy, """\
Cluster-size weighted class entropy in bits, -sum_k (n_k/N) sum_j p_jk log2 p_jk (lower is
better; ``cluster_scores``' convention).""")
cluster_f_score = Statistic(_one_hot_pairs, _cluster_f, """\
Support-weighted F-score of clusters assigned to their majority class (eq. 13; ties to
the smaller class id): F1_j = 2 TP_j / (|union of j's clusters| + n_j).""")
classification_f_score = Statistic(_one_hot_pairs, _classification_f, """\
Support-weighted F-score of (predicted class, true class) pairs (Hu et al. 2018, eq. 13
and Table I; sklearn's ``average='weighted'``, ``zero_division=0``):
sum_j (n_j / N) 2 TP_j / (predicted_j + n_j).""")


STATISTICS: Dict[str, Statistic] = dict(
    pooled_f1=pooled_f1, masked_mean=masked_mean, confusion_miou=confusion_miou,
    confusion_op=confusion_op, confusion_pc=confusion_pc, confusion_macc=confusion_macc,
    cluster_purity=cluster_purity, cluster_entropy=cluster_entropy,
    cluster_f_score=cluster_f_score, classification_f_score=classification_f_score)


def paired_bootstrap(method: Sequence[np.ndarray], base: Sequence[np.ndarray],
                     statistic: Statistic, n_boot: int = 2000, seed: int = 0,
                     conf: float = 0.95, resample_seeds: bool = False) -> Dict[str, float]:
    """Paired difference ``statistic(method) - statistic(base)``, averaged over seeds, with
    a percentile bootstrap interval over test images (and seeds).

    ``method[s]`` / ``base[s]``: per-image arrays (n_images, k) of seed s, rows in the same
    image order for every seed and both sides (same test images). One bootstrap draw
    resamples the image indices with replacement, once for all seeds and both sides, and
    takes mean_s [stat(method[s][idx]) - stat(base[s][idx])]. With ``resample_seeds`` the
    draw also resamples the seeds with replacement (the same seeds for both sides), so the
    interval carries the spread between training runs as well as between images: seeds and
    test images are crossed factors, and resampling both independently is Owen's (2007)
    pigeonhole bootstrap. Without it, a row whose seeds disagree (e.g. one run learns, two
    collapse) gets an interval as narrow as if every seed had the mean's result.
    Returns ``diff`` (all images and seeds), ``lo`` / ``hi`` (the (1-conf)/2 and
    (1+conf)/2 quantiles of the draws).
    """
    if len(method) != len(base) or not len(method):
        raise ValueError(f'paired_bootstrap: {len(method)} method seeds vs {len(base)} '
                         'baseline seeds; they must be the same, non-empty set')
    m, b = (np.stack([np.asarray(a) for a in side]) for side in (method, base))
    if m.shape != b.shape:
        raise ValueError(f'paired_bootstrap: per-image arrays {m.shape} vs {b.shape}: the '
                         'two sides must be scored on the same test images')
    n = m.shape[1]
    if n == 0:
        raise ValueError('paired_bootstrap: no test image')
    diff = float(np.mean(statistic(m) - statistic(b)))
    # a draw's statistic is of_sums(sum_i c_i terms_i), c_i how often it takes image i:
    # the same value as gathering the drawn images, without the gather
    tm, tb = statistic.terms(m), statistic.terms(b)  # (seeds, images, *shape)
    rng = np.random.default_rng(seed)
    draws = np.empty(n_boot, dtype=np.float64)
    chunk = 250
    for start in range(0, n_boot, chunk):
        idx = rng.integers(0, n, size=(min(chunk, n_boot - start), n))
        times = np.bincount((idx + n * np.arange(len(idx))[:, None]).reshape(-1),
                            minlength=len(idx) * n).reshape(len(idx), n).astype(np.float64)
        # (draws, images) x (seeds, images, *shape) -> (draws, seeds, *shape) -> (draws, seeds)
        per_seed = (statistic.of_sums(np.tensordot(times, tm, axes=([1], [1])))
                    - statistic.of_sums(np.tensordot(times, tb, axes=([1], [1]))))
        if resample_seeds:
            sidx = rng.integers(0, m.shape[0], size=per_seed.shape)
            per_seed = np.take_along_axis(per_seed, sidx, axis=-1)
        draws[start:start + len(idx)] = per_seed.mean(-1)
    lo, hi = np.quantile(draws, [(1 - conf) / 2, (1 + conf) / 2])
    return dict(diff=diff, lo=float(lo), hi=float(hi))


def paired_t(method: Sequence[float], base: Sequence[float],
             conf: float = 0.95) -> Dict[str, float]:
    """Paired difference over seeds (for set-level metrics such as COCO AP that do not
    split into per-image terms): mean and t-interval of method[s] - base[s]."""
    d = np.asarray(method, np.float64) - np.asarray(base, np.float64)
    mean, half = t_interval(d, conf)
    return dict(diff=mean, lo=mean - half, hi=mean + half)


def verdict(lo: float, hi: float, higher_is_better: bool = True) -> str:
    """'better' if the interval of method - baseline lies above 0, 'worse' if below, else
    'no difference' (the other way round when lower is better, e.g. entropy)."""
    if lo > 0:
        return 'better' if higher_is_better else 'worse'
    if hi < 0:
        return 'worse' if higher_is_better else 'better'
    return 'no difference'


def converged(curve: Sequence[Sequence[float]], tol: float = 0.01,
              tail: float = 0.2, rule: str = 'last') -> Optional[bool]:
    """Did the validation metric settle? ``curve``: (iteration, value) pairs in order.

    The rule: |value at the last validation - value at the validation closest to (at or
    before) (1 - tail) x the last iteration| < ``tol`` (1 point on a [0, 1] metric over
    the last 20% of training). None when the curve has fewer than 2 points in that span
    (nothing to judge). ``rule='best'`` reads the best value so far (the running maximum)
    instead of the value itself: the rule for runs that test their best validation
    checkpoint (``save_best``), where what must have settled is the model selected, not an
    epoch-to-epoch validation score that moves by a few points either way.
    """
    if rule not in ('last', 'best'):
        raise ValueError(f"converged: rule must be 'last' or 'best', got {rule!r}")
    pts = [(float(i), float(v)) for i, v in curve]
    if rule == 'best':
        pts = list(zip([i for i, _ in pts], np.maximum.accumulate([v for _, v in pts])))
    if len(pts) < 2:
        return None
    last_it, last_v = pts[-1]
    start = (1 - tail) * last_it
    before = [p for p in pts if p[0] <= start]
    if not before:
        return None
    return bool(abs(last_v - before[-1][1]) < tol)


def best_threshold(thresholds: Sequence[float], f1: Sequence[float]) -> Tuple[float, float]:
    """The threshold of the highest F1 (ties: the lowest threshold) and that F1."""
    f = np.asarray(f1, np.float64)
    i = int(np.flatnonzero(f == f.max())[0])
    return float(thresholds[i]), float(f[i])


def summarise_seeds(values: List[float], conf: float = 0.95) -> Dict[str, float]:
    """``mean``, ``ci`` (half-width; NaN with one value) and ``n``."""
    if len(values) >= 2:
        mean, half = t_interval(values, conf)
    else:
        mean, half = (float(values[0]) if values else float('nan')), float('nan')
    return dict(mean=mean, ci=half, n=len(values))
