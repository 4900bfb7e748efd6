"""Positive / negative pseudo-label selection from class proportions (numpy only).

Tokunaga, H., Iwana, B. K., Teramoto, Y., Yoshizawa, A., Bise, R., "Negative Pseudo
Labeling using Class Proportion for Semantic Segmentation in Pathology", ECCV 2020
(``papers/negative_pseudo_labeling``), sections 3-4; DESIGN.md 4.4.

A bag is one slide; its N patches have softmax probabilities (N, C) and the bag has a true
class ratio TCR (C,) summing to 1. With pred = argmax (ties -> lowest class index),
conf = max probability and PCR_c = fraction of the bag's patches predicted c:

- SAE  = min(1, sum_c |TCR_c - PCR_c|)                          eq. (2), corrected: the
  paper prints max(1, .), which would make every PS_c <= 0 (erratum, DESIGN.md 4.4)
- NS_c = SAE * max(0, PCR_c - TCR_c) * (1 - TCR_c / PCR_c)      eq. (1), 0 when PCR_c = 0
- PS_c = (1 - SAE) * min(TCR_c, PCR_c)                          eq. (5), adaptive PL

Counts: n_neg_c = round_half_up(NS_c * N), n_pos_c = round_half_up(PS_c * N), each clipped
to the number of patches predicted c. Within the patches predicted c, ordered by conf
descending with ties broken by the lower patch index first, negative label c goes to the
last n_neg_c (least confident first; among equal conf the higher index first) and positive
label c to the first n_pos_c that carry no accumulated negative label c (old ones, and
the ones given this round: negative wins). With ``positive='fixed'`` (the baseline, max
probability >= threshold) the same rule holds: a patch that carries negative c loses a
fixed-threshold positive c (it is masked, not replaced), so no patch is ever positive and
negative for the same class.

Multi-NPL (sect. 3.3): the returned negative mask is old | new; a patch predicted c that
already carries negative c can be chosen again (a no-op in the mask), exactly as the
paper's rule "the least confident patches predicted c" reads. A round therefore adds
n_neg_c minus the number of chosen patches that already carried negative c *new*
negatives of class c: between 0 and n_neg_c (the hook logs them as ``negative_new``).
"""
from typing import Optional, Tuple

import numpy as np

ROUND_EPS = 1e-9  # 2.5 computed as 2.4999999999999996 still rounds up to 3
SUM_TOL = 1e-3  # tolerance on sum(probs row) = 1 and sum(ratio) = 1
PROB_EPS = 1e-6  # float32 softmax round-off allowed outside [0, 1]
POSITIVE_MODES = ('adaptive', 'fixed', 'none')


def round_half_up(x: np.ndarray) -> np.ndarray:
    """floor(x + 0.5) with a 1e-9 tolerance (so 2.5 -> 3 even after float round-off), int64."""
    return np.floor(np.asarray(x, np.float64) + 0.5 + ROUND_EPS).astype(np.int64)


# ------------------------------------------------------------------ input checks
def _raise_at_first(bad: np.ndarray, message) -> None:
    """ValueError(message(i)) for the first index i where ``bad`` is True, if any."""
    if bad.any():
        raise ValueError(message(int(np.flatnonzero(bad)[0])))


def _check_ratios(true_ratios, num_classes: int, name: str) -> np.ndarray:
    """(B, C) float64 ratios, finite, non-negative, each row summing to 1 within 1e-3."""
    tcr = np.asarray(true_ratios, dtype=np.float64)
    if tcr.ndim != 2 or tcr.shape[1] != num_classes:
        raise ValueError(f'{name}: expected shape (bags, {num_classes}), got {tcr.shape}')
    _raise_at_first(~np.isfinite(tcr).all(1) | (tcr < 0).any(1), lambda b: (
        f'{name}: bag {b} has a negative or non-finite ratio {tcr[b].tolist()}'))
    sums = tcr.sum(1)
    _raise_at_first(np.abs(sums - 1.0) > SUM_TOL, lambda b: (
        f'{name}: bag {b} sums to {sums[b]:.6f}, expected 1 (tolerance {SUM_TOL:g})'))
    return tcr


def _check_probs(probs, name: str = 'probs',
                 bag_index: Optional[np.ndarray] = None) -> np.ndarray:
    """(N, C) float64 probabilities: finite, in [0, 1], rows summing to 1 within 1e-3."""
    p = np.asarray(probs)
    if p.ndim != 2 or p.shape[1] < 1 or not (np.issubdtype(p.dtype, np.floating)
                                            or np.issubdtype(p.dtype, np.integer)):
        raise ValueError(f'{name}: expected a numeric (patches, classes) array, got shape '
                         f'{p.shape} dtype {p.dtype}')
    p = p.astype(np.float64, copy=False)

    def where(i: int) -> str:
        return f'row {i}' + ('' if bag_index is None else f' (bag {int(bag_index[i])})')

    _raise_at_first(~np.isfinite(p).all(1), lambda i: (
        f'{name}: {where(i)} is not finite: {p[i].tolist()}'))
    _raise_at_first(((p < -PROB_EPS) | (p > 1 + PROB_EPS)).any(1), lambda i: (
        f'{name}: {where(i)} has values outside [0, 1]: {p[i].tolist()}'))
    sums = p.sum(1)
    _raise_at_first(np.abs(sums - 1.0) > SUM_TOL, lambda i: (
        f'{name}: {where(i)} sums to {sums[i]:.6f}, expected 1 (softmax probabilities, '
        f'tolerance {SUM_TOL:g})'))
    return p


def _check_labels(labels, name: str, low: int, high: int) -> np.ndarray:
    """1-D integer array with values in [low, high)."""
    a = np.asarray(labels)
    if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f'{name}: expected a 1-D integer array, got shape {a.shape} '
                         f'dtype {a.dtype}')
    _raise_at_first((a < low) | (a >= high), lambda i: (
        f'{name}: entry {i} is {int(a[i])}, expected {low} <= value < {high}'))
    return a.astype(np.int64, copy=False)


def _check_threshold(threshold: float) -> float:
    """A number in [0, 1] (the fixed pseudo-labelling threshold)."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.number)) \
            or not np.isfinite(threshold) or not 0.0 <= threshold <= 1.0:
        raise ValueError(f'threshold: expected a number in [0, 1], got {threshold!r}')
    return float(threshold)


def _check_negatives(negatives, shape: Tuple[int, int], name: str = 'negatives') -> np.ndarray:
    """(N, C) bool mask."""
    neg = np.asarray(negatives)
    if neg.shape != tuple(shape) or neg.dtype != np.bool_:
        raise ValueError(f'{name}: expected a bool array of shape {tuple(shape)}, got shape '
                         f'{neg.shape} dtype {neg.dtype}')
    return neg


# ------------------------------------------------------------------ the maths
def _rates(counts: np.ndarray, tcr: np.ndarray) -> Tuple[np.ndarray, ...]:
    """PCR, SAE, NS, PS for bags given predicted-class counts (B, C) and TCR (B, C)."""
    n = counts.sum(1, keepdims=True).astype(np.float64)
    pcr = np.divide(counts, n, out=np.zeros(counts.shape), where=n > 0)
    sae = np.minimum(1.0, np.abs(tcr - pcr).sum(1))                                # eq. (2)
    over = pcr > tcr  # implies PCR_c > 0
    ratio_term = 1.0 - np.divide(tcr, pcr, out=np.ones(pcr.shape), where=over)
    ns = np.where(over, sae[:, None] * np.maximum(0.0, pcr - tcr) * ratio_term, 0.0)  # (1)
    ps = (1.0 - sae)[:, None] * np.minimum(tcr, pcr)                               # eq. (5)
    return pcr, sae, ns, ps


def bag_sae(pred: np.ndarray, bag_index: np.ndarray, true_ratios: np.ndarray) -> np.ndarray:
    """SAE of eq. (2) (corrected, min(1, .)) for every bag from argmax predictions (N,) and
    bag indices (N,); NaN for bags without a patch."""
    tcr = np.asarray(true_ratios, np.float64)
    num_bags, num_classes = tcr.shape
    key = np.asarray(bag_index, np.int64) * num_classes + np.asarray(pred, np.int64)
    counts = np.bincount(key, minlength=num_bags * num_classes).reshape(num_bags, num_classes)
    _, sae, _, _ = _rates(counts, tcr)
    return np.where(counts.sum(1) > 0, sae, np.nan)


def selection_rates(pred: np.ndarray, num_classes: int,
                    true_ratio: np.ndarray) -> Tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """PCR (C,), SAE, NS (C,) and PS (C,) of one bag from its argmax predictions (N,).

    SAE = min(1, sum_c |TCR_c - PCR_c|) is eq. (2) with the erratum (the paper prints
    max(1, .), which makes 1 - SAE <= 0 and so every PS_c <= 0); NS_c is eq. (1) (0 when
    PCR_c = 0 or PCR_c <= TCR_c); PS_c is eq. (5). NS_c and PS_c are fractions of the
    bag's patches. An empty bag has PCR = 0.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) \
            or num_classes < 1:
        raise ValueError(f'num_classes: expected a positive int, got {num_classes!r}')
    pred = _check_labels(pred, 'pred', 0, int(num_classes))
    tcr = np.asarray(true_ratio, np.float64)
    if tcr.shape != (num_classes,):
        raise ValueError(f'true_ratio: expected shape ({num_classes},), got {tcr.shape}')
    tcr = _check_ratios(tcr[None], int(num_classes), 'true_ratio')
    counts = np.bincount(pred, minlength=int(num_classes))[None]
    pcr, sae, ns, ps = _rates(counts, tcr)
    return pcr[0], float(sae[0]), ns[0], ps[0]


def select_pseudo_labels_bags(probs: np.ndarray, bag_index: np.ndarray,
                              true_ratios: np.ndarray,
                              negatives: Optional[np.ndarray] = None, *,
                              positive: str = 'adaptive',
                              negative: bool = True,
                              threshold: float = 0.95) -> Tuple[np.ndarray, np.ndarray]:
    """Select pseudo labels for all bags at once (vectorised, no loop over bags/patches).

    probs (N, C) softmax probabilities; bag_index (N,) in [0, B) (bags need not be
    contiguous); true_ratios (B, C) TCR per bag; negatives: accumulated (N, C) bool mask of
    earlier rounds (multi-NPL, sect. 3.3) or None. ``positive='adaptive'`` assigns eq. (5)
    positives, ``'fixed'`` the baseline's (max probability >= ``threshold``, masked where
    the patch carries a negative label of that class), ``'none'`` none; ``negative=False``
    adds no new negatives (old ones are still returned and still block positives). Returns
    positive labels (N,) int64 (-1 = none) and the negative mask old | new (N, C).
    Selection rule: see the module docstring.
    """
    if positive not in POSITIVE_MODES:
        raise ValueError(f'positive: expected one of {POSITIVE_MODES}, got {positive!r}')
    threshold = _check_threshold(threshold)
    tcr = np.asarray(true_ratios, dtype=np.float64)
    if tcr.ndim != 2:
        raise ValueError(f'true_ratios: expected shape (bags, classes), got {tcr.shape}')
    num_bags = tcr.shape[0]
    p = np.asarray(probs)
    if p.ndim != 2:
        raise ValueError(f'probs: expected shape (patches, classes), got {p.shape}')
    bag = _check_labels(bag_index, 'bag_index', 0, num_bags)
    if bag.shape[0] != p.shape[0]:
        raise ValueError(f'bag_index: {bag.shape[0]} entries for {p.shape[0]} rows of probs')
    p = _check_probs(p, 'probs', bag)
    n, c = p.shape
    tcr = _check_ratios(tcr, c, 'true_ratios')
    old = None if negatives is None else _check_negatives(negatives, (n, c))

    rows = np.arange(n)
    pred = p.argmax(1)  # ties -> lowest class index
    conf = p[rows, pred]
    key = bag * c + pred  # group = (bag, predicted class)
    counts = np.bincount(key, minlength=num_bags * c).reshape(num_bags, c)
    _, _, ns, ps = _rates(counts, tcr)
    flat_counts = counts.ravel()
    zero = np.zeros(num_bags * c, np.int64)
    n_patches_bag = counts.sum(1, keepdims=True)
    n_neg = np.minimum(round_half_up(ns * n_patches_bag), counts).ravel() if negative else zero
    n_pos = (np.minimum(round_half_up(ps * n_patches_bag), counts).ravel()
             if positive == 'adaptive' else zero)

    # Sort by group, conf descending, patch index ascending; rank within the group.
    order = np.lexsort((rows, -conf, key))
    key_s = key[order]
    first = np.cumsum(flat_counts) - flat_counts  # sorted position where each group starts
    start_s = first[key_s]
    rank_s = rows - start_s  # 0 = most confident of its group
    new_neg_s = flat_counts[key_s] - 1 - rank_s < n_neg[key_s]  # the n_neg least confident

    acc = np.zeros((n, c), bool) if old is None else old.copy()
    neg_idx = order[new_neg_s]
    acc[neg_idx, pred[neg_idx]] = True  # old | new
    labels = np.full(n, -1, np.int64)
    if positive == 'fixed':  # negative wins: mask, do not replace
        keep = (conf >= threshold) & ~acc[rows, pred]
        labels[keep] = pred[keep]
        return labels, acc
    cand_s = ~acc[order, pred[order]]  # no (old or new) negative of its predicted class
    before = np.cumsum(cand_s) - cand_s  # candidates earlier in the sorted order
    cand_rank_s = before - before[start_s]  # candidate rank within the group
    pos_idx = order[cand_s & (cand_rank_s < n_pos[key_s])]
    labels[pos_idx] = pred[pos_idx]
    return labels, acc


def select_pseudo_labels(probs: np.ndarray, true_ratio: np.ndarray,
                         negatives: Optional[np.ndarray] = None, *,
                         positive: str = 'adaptive',
                         negative: bool = True,
                         threshold: float = 0.95) -> Tuple[np.ndarray, np.ndarray]:
    """Pseudo labels of one bag: probs (N, C), true_ratio (C,), negatives (N, C) bool or None.

    Returns positive labels (N,) int64 with -1 where none (adaptive pseudo labelling,
    eq. 5) and the accumulated negative mask (N, C) bool, old | new (negative pseudo
    labelling, eqs. 1-2; multi-NPL, sect. 3.3). See :func:`select_pseudo_labels_bags`.
    """
    tcr = np.asarray(true_ratio, dtype=np.float64)
    if tcr.ndim != 1:
        raise ValueError(f'true_ratio: expected shape (classes,), got {tcr.shape}')
    p = np.asarray(probs)
    n = p.shape[0] if p.ndim >= 1 else 0
    return select_pseudo_labels_bags(p, np.zeros(n, np.int64), tcr[None], negatives,
                                     positive=positive, negative=negative,
                                     threshold=threshold)


def fixed_threshold_labels(probs: np.ndarray, threshold: float = 0.95) -> np.ndarray:
    """Baseline pseudo labelling (Lee 2013; paper Table 1-2, threshold 0.95).

    Returns argmax (ties -> lowest class) where the max probability >= threshold, else -1.
    """
    threshold = _check_threshold(threshold)
    p = _check_probs(probs)
    pred = p.argmax(1)
    return np.where(p[np.arange(len(p)), pred] >= threshold, pred, -1).astype(np.int64)


def training_pool(positive: np.ndarray, negatives: Optional[np.ndarray], num_classes: int,
                  oversample: bool = True, seed: int = 0) -> np.ndarray:
    """Indices (int64) of the patches to train on in one epoch.

    Every patch with ``positive >= 0`` (ground-truth or positive pseudo label). With
    ``oversample=True`` each non-empty class is brought to the size n_max of the largest
    class: a permutation of its members (one ``np.random.default_rng(seed)`` drawing one
    permutation per non-empty class, classes in order 0..C-1) tiled and truncated with
    ``np.resize`` to n_max; empty classes stay absent. With ``oversample=False`` each member
    once, in index order. Then every patch with no positive label but at least one
    negative label, once, in index order (the paper, sect. 5.3: NPL cannot be
    oversampled). Blocks are concatenated class 0, ..., class C-1, negative-only; the
    data loader shuffles. Deterministic for a given seed.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) \
            or num_classes < 1:
        raise ValueError(f'num_classes: expected a positive int, got {num_classes!r}')
    pos = _check_labels(positive, 'positive', -1, int(num_classes))
    if negatives is not None:
        neg = _check_negatives(negatives, (pos.shape[0], int(num_classes)))
        neg_only = np.flatnonzero((pos < 0) & neg.any(1))
    else:
        neg_only = np.zeros(0, np.int64)
    members = [np.flatnonzero(pos == k) for k in range(int(num_classes))]
    if oversample:
        n_max = max(len(m) for m in members)
        rng = np.random.default_rng(seed)
        members = [np.resize(rng.permutation(m), n_max) for m in members if len(m)]
    return np.concatenate(members + [neg_only]).astype(np.int64)
