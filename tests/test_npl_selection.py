"""Pseudo-label selection of Tokunaga et al. (ECCV 2020): eqs. (1), (2) corrected, (5).

Hand-worked bags carry their arithmetic in comments; the batched selection is compared
with a slow per-bag reference written here with Python sorting (not the module's code).
"""
import math
import os.path as osp
import sys

import numpy as np
import pytest

from projects.negative_pseudo_labels.selection import (
    fixed_threshold_labels, round_half_up, select_pseudo_labels, select_pseudo_labels_bags,
    selection_rates, training_pool)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(REPO, 'tools', 'analysis_tools'))
import benchmark_pseudo_labels  # noqa: E402


def rows_for(confs, preds, c=3):
    """Probability rows with max `conf` at class `pred`, the rest split evenly."""
    p = np.full((len(confs), c), 0.0)
    for i, (conf, k) in enumerate(zip(confs, preds)):
        p[i] = (1.0 - conf) / (c - 1)
        p[i, k] = conf
    return p


# 10 patches, 3 classes; conf / pred:
#   class 0: patches 0, 1, 2, 3 with conf 0.9, 0.6, 0.5, 0.7
#   class 1: patches 4, 5, 6, 7 with conf 0.8, 0.95, 0.55, 0.7
#   class 2: patches 8, 9       with conf 0.65, 0.85
BAG10 = np.array([[0.9, 0.05, 0.05], [0.6, 0.3, 0.1], [0.5, 0.3, 0.2], [0.7, 0.2, 0.1],
                  [0.1, 0.8, 0.1], [0.02, 0.95, 0.03], [0.25, 0.55, 0.2], [0.1, 0.7, 0.2],
                  [0.15, 0.2, 0.65], [0.05, 0.1, 0.85]])
TCR10 = np.array([0.1, 0.5, 0.4])


def test_rates_hand_worked_bag():
    # PCR = [4, 4, 2] / 10 = [0.4, 0.4, 0.2]
    # SAE = min(1, |0.1-0.4| + |0.5-0.4| + |0.4-0.2|) = min(1, 0.3 + 0.1 + 0.2) = 0.6
    # NS_0 = 0.6 * (0.4-0.1) * (1 - 0.1/0.4) = 0.6 * 0.3 * 0.75 = 0.135; NS_1 = NS_2 = 0
    # PS = (1-0.6) * min(TCR, PCR) = 0.4 * [0.1, 0.4, 0.2] = [0.04, 0.16, 0.08]
    pcr, sae, ns, ps = selection_rates(BAG10.argmax(1), 3, TCR10)
    np.testing.assert_allclose(pcr, [0.4, 0.4, 0.2])
    assert sae == pytest.approx(0.6)
    np.testing.assert_allclose(ns, [0.135, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(ps, [0.04, 0.16, 0.08])


def test_hand_worked_bag_two_rounds_multi_npl():
    # Round 1 (rates above), N = 10:
    # n_neg = round(NS * 10) = [round(1.35), 0, 0] = [1, 0, 0] -> least confident of
    #   class 0 (conf 0.9, 0.6, 0.5, 0.7) = patch 2
    # n_pos = round(PS * 10) = round([0.4, 1.6, 0.8]) = [0, 2, 1] -> class 1: patches 5
    #   (0.95) and 4 (0.8); class 2: patch 9 (0.85)
    pos1, neg1 = select_pseudo_labels(BAG10, TCR10)
    assert pos1.tolist() == [-1, -1, -1, -1, 1, 1, -1, -1, -1, 2]
    assert pos1.dtype == np.int64 and neg1.dtype == np.bool_
    assert np.argwhere(neg1).tolist() == [[2, 0]]

    # Round 2: the negative moved patch 2 to class 2 (conf 0.5), and patch 5 carries an
    # old negative for class 1 (added by hand).
    probs2 = BAG10.copy()
    probs2[2] = [0.2, 0.3, 0.5]
    old = neg1.copy()
    old[5, 1] = True
    # PCR = [3, 4, 3] / 10; SAE = |0.1-0.3| + |0.5-0.4| + |0.4-0.3| = 0.4
    # NS_0 = 0.4 * 0.2 * (1 - 0.1/0.3) = 0.0533 -> round(0.533) = 1 -> patch 1 (conf 0.6
    #   < 0.7 < 0.9)
    # PS = 0.6 * [0.1, 0.4, 0.3] = [0.06, 0.24, 0.18] -> round([0.6, 2.4, 1.8]) = [1, 2, 2]
    # class 0: most confident without negative 0: patch 0 (0.9)
    # class 1: patch 5 (0.95) carries old negative 1 -> skipped -> patches 4 (0.8), 7 (0.7)
    # class 2: patches 9 (0.85), 8 (0.65); patch 2's old negative is for class 0 only
    pos2, neg2 = select_pseudo_labels(probs2, TCR10, old)
    assert pos2.tolist() == [0, -1, -1, -1, 1, -1, -1, 1, 2, 2]
    assert np.argwhere(neg2).tolist() == [[1, 0], [2, 0], [5, 1]]  # accumulated: old | new
    assert not old[1, 0]  # the input mask is not modified
    # without the hand-added negative, class 1 goes to the two most confident again
    pos2b, _ = select_pseudo_labels(probs2, TCR10, neg1)
    assert pos2b.tolist() == [0, -1, -1, -1, 1, 1, -1, -1, 2, 2]


def test_class_that_should_be_absent():
    # TCR_0 = 0 with PCR_0 > 0: NS_0 = SAE * PCR_0 * (1 - 0) = SAE * PCR_0, PS_0 = 0.
    # N = 10, counts [1, 5, 4], TCR [0, 0.6, 0.4]: SAE = 0.1 + 0.1 + 0 = 0.2;
    # NS_0 = 0.2 * 0.1 = 0.02; PS_0 = 0.8 * min(0, 0.1) = 0
    pcr, sae, ns, ps = selection_rates(np.repeat([0, 1, 2], [1, 5, 4]), 3, [0, 0.6, 0.4])
    assert sae == pytest.approx(0.2)
    assert ns[0] == pytest.approx(sae * pcr[0]) == pytest.approx(0.02)
    assert ps[0] == 0.0
    # N = 4, TCR [0, 1], PCR [0.5, 0.5]: SAE = min(1, 0.5 + 0.5) = 1
    # NS_0 = 1 * 0.5 * 1 = 0.5 -> 2 = every patch predicted 0; PS = 0 * ... = 0
    probs = rows_for([0.9, 0.6, 0.8, 0.7], [0, 0, 1, 1], c=2)
    pos, neg = select_pseudo_labels(probs, [0.0, 1.0])
    assert pos.tolist() == [-1, -1, -1, -1]
    assert neg.tolist() == [[True, False], [True, False], [False, False], [False, False]]


def test_sae_clipped_to_one_gives_no_positives_and_tie_rule():
    # N = 10, counts [6, 4, 0], TCR [0, 0.2, 0.8]: sum |.| = 0.6 + 0.2 + 0.8 = 1.6 -> SAE 1
    # PS = (1 - 1) * ... = 0 -> no positives at all
    # NS_0 = 1 * 0.6 * 1 = 0.6 -> 6: all class-0 patches
    # NS_1 = 1 * (0.4 - 0.2) * (1 - 0.2/0.4) = 0.1 -> 1: the least confident class-1 patch;
    #   patches 7 and 9 tie at conf 0.6 -> the higher index (9) is taken first
    confs = [0.9, 0.8, 0.7, 0.6, 0.5, 0.95, 0.9, 0.6, 0.7, 0.6]
    probs = rows_for(confs, [0] * 6 + [1] * 4)
    pcr, sae, ns, ps = selection_rates(probs.argmax(1), 3, [0.0, 0.2, 0.8])
    assert sae == 1.0 and np.all(ps == 0.0)
    np.testing.assert_allclose(ns, [0.6, 0.1, 0.0])
    pos, neg = select_pseudo_labels(probs, [0.0, 0.2, 0.8])
    assert np.all(pos == -1)
    assert np.argwhere(neg).tolist() == [[i, 0] for i in range(6)] + [[9, 1]]


def test_perfect_prediction_gives_no_negatives_and_all_positives():
    # counts [3, 5, 2] = TCR * 10 -> SAE = 0 -> NS = 0, PS = TCR -> n_pos = counts
    probs = rows_for([0.4, 0.5, 0.6, 0.7, 0.4, 0.5, 0.6, 0.9, 0.45, 0.8],
                     [0, 0, 0, 1, 1, 1, 1, 1, 2, 2])
    pcr, sae, ns, ps = selection_rates(probs.argmax(1), 3, [0.3, 0.5, 0.2])
    assert sae == 0.0 and np.all(ns == 0.0)
    np.testing.assert_allclose(ps, [0.3, 0.5, 0.2])
    pos, neg = select_pseudo_labels(probs, [0.3, 0.5, 0.2])
    assert pos.tolist() == probs.argmax(1).tolist()
    assert not neg.any()


def test_erratum_sae_is_min_not_max():
    # counts [4, 4, 2], TCR [0.2, 0.5, 0.3]: sum |.| = 0.2 + 0.1 + 0.1 = 0.4
    # printed eq. (2): SAE = max(1, 0.4) = 1 -> PS = 0 * ... = 0 for every class
    # corrected: SAE = 0.4 -> PS = 0.6 * [0.2, 0.4, 0.2] = [0.12, 0.24, 0.12] > 0
    pcr, sae, ns, ps = selection_rates(np.repeat([0, 1, 2], [4, 4, 2]), 3, [0.2, 0.5, 0.3])
    printed = max(1.0, float(np.abs(np.array([0.2, 0.5, 0.3]) - pcr).sum()))
    assert (1.0 - printed) * 0.4 <= 0.0
    assert sae == pytest.approx(0.4)
    np.testing.assert_allclose(ps, [0.12, 0.24, 0.12])
    assert np.all(ps > 0)


def test_round_half_up():
    # floor(x + 0.5 + 1e-9): 2.5 -> 3 even one ulp below 2.5; 2.4999 -> 2; 0.49 -> 0
    x = np.array([2.5, np.nextafter(2.5, 0.0), 2.4999, 0.49, 0.5, 3.0, 0.0])
    assert round_half_up(x).tolist() == [3, 3, 2, 0, 1, 3, 0]


def test_counts_round_half_up_in_selection():
    # N = 20, counts [5, 10, 5], TCR [0, 0.5, 0.5]:
    # SAE = 0.25 + 0 + 0.25 = 0.5; NS_0 = 0.5 * 0.25 * 1 = 0.125 -> 0.125 * 20 = 2.5 -> 3
    # PS = 0.5 * [0, 0.5, 0.25] = [0, 0.25, 0.125] -> * 20 = [0, 5, 2.5] -> [0, 5, 3]
    confs = [0.9, 0.5, 0.7, 0.6, 0.8] + [0.9 - 0.05 * i for i in range(10)] \
        + [0.5, 0.9, 0.6, 0.8, 0.7]
    probs = rows_for(confs, [0] * 5 + [1] * 10 + [2] * 5)
    pos, neg = select_pseudo_labels(probs, [0.0, 0.5, 0.5])
    # class 0 negatives: 3 least confident of 0.9, 0.5, 0.7, 0.6, 0.8 -> patches 1, 3, 2
    assert np.argwhere(neg).tolist() == [[1, 0], [2, 0], [3, 0]]
    # class 1: 5 most confident = patches 5..9; class 2: 0.9, 0.8, 0.7 = patches 16, 18, 19
    assert np.flatnonzero(pos == 1).tolist() == [5, 6, 7, 8, 9]
    assert np.flatnonzero(pos == 2).tolist() == [16, 18, 19]
    assert np.flatnonzero(pos == 0).tolist() == []


def test_negative_wins_and_clipping_to_available_patches():
    # The count clip (n <= patches predicted c) cannot bind through eqs. (1)/(5) alone
    # (NS_c <= PCR_c and PS_c <= PCR_c); what binds in practice is the number of patches
    # left after negatives, checked here.
    # N = 20, counts [10, 5, 5], TCR [0.3, 0.4, 0.3]: SAE = 0.2 + 0.15 + 0.05 = 0.4
    # NS_0 = 0.4 * 0.2 * (1 - 0.3/0.5) = 0.032 -> 0.64 -> 1 (patch 9, conf 0.5)
    # PS = 0.6 * [0.3, 0.25, 0.25] -> * 20 = [3.6, 3, 3] -> [4, 3, 3]
    confs = [0.95 - 0.05 * i for i in range(10)] + [0.8] * 5 + [0.7] * 5
    probs = rows_for(confs, [0] * 10 + [1] * 5 + [2] * 5)
    tcr = [0.3, 0.4, 0.3]
    pos, neg = select_pseudo_labels(probs, tcr)
    assert np.flatnonzero(pos == 0).tolist() == [0, 1, 2, 3]
    # equal conf within classes 1 and 2 -> the lower patch indices first
    assert np.flatnonzero(pos == 1).tolist() == [10, 11, 12]
    assert np.flatnonzero(pos == 2).tolist() == [15, 16, 17]
    assert np.argwhere(neg).tolist() == [[9, 0]]
    # old negatives 0 on patches 0..6 -> candidates 7, 8 (9 gets the new negative): only 2
    old = np.zeros((20, 3), bool)
    old[:7, 0] = True
    pos, neg = select_pseudo_labels(probs, tcr, old)
    assert np.flatnonzero(pos == 0).tolist() == [7, 8]
    # old negatives on 0..8 -> the only candidate, patch 9, gets negative 0 -> no positive
    old[:9, 0] = True
    pos, neg = select_pseudo_labels(probs, tcr, old)
    assert np.flatnonzero(pos == 0).tolist() == []
    assert neg[:10, 0].all() and pos[9] == -1


def test_positive_none_and_negative_off():
    old = np.zeros((10, 3), bool)
    old[5, 1] = True
    pos, neg = select_pseudo_labels(BAG10, TCR10, old, positive='none')
    assert np.all(pos == -1) and np.argwhere(neg).tolist() == [[2, 0], [5, 1]]
    # no new negatives; the old one still blocks patch 5 -> class 1: 4 (0.8), 7 (0.7)
    pos, neg = select_pseudo_labels(BAG10, TCR10, old, negative=False)
    assert pos.tolist() == [-1, -1, -1, -1, 1, -1, -1, 1, -1, 2]
    assert np.argwhere(neg).tolist() == [[5, 1]]


def test_fixed_positive_never_overrides_a_negative():
    # Negative wins for the fixed-threshold baseline too: the positive is masked (-1), not
    # moved to another patch. Two ways a conflict arises:
    # (1) an old negative (multi-NPL): BAG10, threshold 0.8 -> conf >= 0.8 are patches
    #     0 (0.9, class 0), 4 (0.8, class 1), 5 (0.95, class 1), 9 (0.85, class 2); patch 5
    #     carries an old negative 1 -> masked. The new negative (patch 2, class 0, conf 0.5)
    #     is below the threshold anyway.
    old = np.zeros((10, 3), bool)
    old[5, 1] = True
    pos, neg = select_pseudo_labels(BAG10, TCR10, old, positive='fixed', threshold=0.8)
    assert fixed_threshold_labels(BAG10, 0.8).tolist() == [0, -1, -1, -1, 1, 1, -1, -1, -1, 2]
    assert pos.tolist() == [0, -1, -1, -1, 1, -1, -1, -1, -1, 2]
    assert np.argwhere(neg).tolist() == [[2, 0], [5, 1]]
    # (2) a negative given this round: the SAE = 1 bag of the test above gives negative 0 to
    #     all six class-0 patches (0-5), the confident ones included; threshold 0.9 ->
    #     fixed labels 0 for patches 0 (0.9) and 5 (0.95), 1 for patch 6 (0.9) -> the two
    #     class-0 positives are masked, patch 6 keeps its positive
    confs = [0.9, 0.8, 0.7, 0.6, 0.5, 0.95, 0.9, 0.6, 0.7, 0.6]
    probs = rows_for(confs, [0] * 6 + [1] * 4)
    pos, neg = select_pseudo_labels(probs, [0.0, 0.2, 0.8], positive='fixed', threshold=0.9)
    assert fixed_threshold_labels(probs, 0.9).tolist() == [0, -1, -1, -1, -1, 0, 1, -1, -1, -1]
    assert pos.tolist() == [-1, -1, -1, -1, -1, -1, 1, -1, -1, -1]
    assert np.argwhere(neg).tolist() == [[i, 0] for i in range(6)] + [[9, 1]]
    # without negative labelling the baseline is fixed_threshold_labels itself
    pos, neg = select_pseudo_labels(probs, [0.0, 0.2, 0.8], positive='fixed', threshold=0.9,
                                    negative=False)
    assert pos.tolist() == fixed_threshold_labels(probs, 0.9).tolist() and not neg.any()


def test_multi_npl_new_negatives_per_round():
    # A round adds n_neg_c minus the chosen patches that already carry negative c.
    # Round 1 = BAG10 (test above): n_neg_0 = 1 -> patch 2 (conf 0.5): 1 new negative.
    pos1, neg1 = select_pseudo_labels(BAG10, TCR10)
    assert np.argwhere(neg1).tolist() == [[2, 0]]
    # Round 2, the model has not moved (same probabilities): again n_neg_0 = 1, and the
    # least confident class-0 patch is patch 2 again -> 0 new negatives; positives as round 1
    pos2, neg2 = select_pseudo_labels(BAG10, TCR10, neg1)
    assert (neg2 & ~neg1).sum(0).tolist() == [0, 0, 0]
    assert pos2.tolist() == pos1.tolist()
    # Round 3, patch 6 moves from class 1 (0.55) to class 0 with conf 0.45:
    # PCR = [5, 3, 2] / 10; SAE = 0.4 + 0.2 + 0.2 = 0.8
    # NS_0 = 0.8 * 0.4 * (1 - 0.1 / 0.5) = 0.256 -> round(2.56) = 3 -> the three least
    #   confident of class 0 (0.9, 0.6, 0.5, 0.7, 0.45): patches 6, 2, 1; patch 2 already
    #   carries negative 0 -> 2 new (patches 1 and 6), 3 in all
    # NS_1 = NS_2 = 0 (PCR below TCR); PS = 0.2 * [0.1, 0.3, 0.2] -> * 10 = [0.2, 0.6, 0.4]
    #   -> [0, 1, 0]: patch 5 (0.95) gets positive 1
    probs3 = BAG10.copy()
    probs3[6] = [0.45, 0.35, 0.2]
    pos3, neg3 = select_pseudo_labels(probs3, TCR10, neg2)
    assert (neg3 & ~neg2).sum(0).tolist() == [2, 0, 0]
    assert np.argwhere(neg3 & ~neg2).tolist() == [[1, 0], [6, 0]]
    assert neg3.sum(0).tolist() == [3, 0, 0]
    assert pos3.tolist() == [-1, -1, -1, -1, -1, 1, -1, -1, -1, -1]
    # single NPL (no old mask) would have given the same 3 negatives, all counted "new"
    _, single = select_pseudo_labels(probs3, TCR10)
    assert np.argwhere(single).tolist() == [[1, 0], [2, 0], [6, 0]]


# ------------------------------------------------------------------ independent reference
def reference_bag(probs, tcr, old=None, positive=True, negative=True, threshold=None):
    """Slow per-bag selection written from the paper with Python lists and sorted();
    ``threshold`` set: the fixed-threshold positives instead of eq. (5), negative wins."""
    n, c = len(probs), len(tcr)
    rows = [list(map(float, r)) for r in probs]
    pred = [min(range(c), key=lambda k, r=r: (-r[k], k)) for r in rows]
    conf = [rows[i][pred[i]] for i in range(n)]
    counts = [pred.count(k) for k in range(c)]
    pcr = [counts[k] / n if n else 0.0 for k in range(c)]
    sae = min(1.0, sum(abs(float(tcr[k]) - pcr[k]) for k in range(c)))
    neg = [[bool(v) for v in r] for r in old] if old is not None else [[False] * c
                                                                       for _ in range(n)]
    pos = [-1] * n
    for k in range(c):
        t, p = float(tcr[k]), pcr[k]
        ns = sae * max(0.0, p - t) * (1.0 - t / p) if p > t else 0.0
        ps = (1.0 - sae) * min(t, p)
        n_neg = min(math.floor(ns * n + 0.5 + 1e-9), counts[k]) if negative else 0
        n_pos = min(math.floor(ps * n + 0.5 + 1e-9), counts[k]) if positive else 0
        members = sorted((i for i in range(n) if pred[i] == k), key=lambda i: (-conf[i], i))
        for i in members[len(members) - n_neg:]:
            neg[i][k] = True
        for i in [i for i in members if not neg[i][k]][:n_pos]:
            pos[i] = k
    if threshold is not None:
        pos = [pred[i] if conf[i] >= threshold and not neg[i][pred[i]] else -1
               for i in range(n)]
    return np.array(pos, np.int64), np.array(neg, bool).reshape(n, c)


def random_bags(seed, num_bags=50, c=4):
    """50 bags of 0..40 patches, interleaved; probs in tenths (many conf / argmax ties),
    ratios in percent with zeros, sparse old negatives."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(0, 41, num_bags)
    sizes[:2] = [0, 1]
    bag_index = rng.permutation(np.repeat(np.arange(num_bags), sizes))
    n = len(bag_index)
    probs = rng.multinomial(10, rng.dirichlet(np.full(c, 0.7), n)) / 10.0
    ratios = rng.multinomial(100, rng.dirichlet(np.full(c, 0.5), num_bags)) / 100.0
    old = rng.random((n, c)) < 0.1
    return probs, bag_index, ratios, old


def _reference_mode(mode: dict) -> dict:
    return dict(positive=mode.get('positive') != 'none', negative=mode.get('negative', True),
                threshold=mode.get('threshold') if mode.get('positive') == 'fixed' else None)


@pytest.mark.parametrize('seed', [0, 1, 2])
@pytest.mark.parametrize('mode', [dict(), dict(positive='none'), dict(negative=False),
                                  dict(positive='fixed', threshold=0.6)])
def test_batched_equals_reference_and_per_bag_calls(seed, mode):
    probs, bag_index, ratios, old = random_bags(seed)
    pos, neg = select_pseudo_labels_bags(probs, bag_index, ratios, old, **mode)
    # the random bags exercise every path: some positives, some new negatives, and (fixed)
    # some confident patches whose positive a negative masks
    assert (pos >= 0).sum() > 0 or mode.get('positive') == 'none'
    assert (neg & ~old).sum() > 0 or mode.get('negative') is False
    pred = probs.argmax(1)
    assert not neg[np.flatnonzero(pos >= 0), pos[pos >= 0]].any()  # never both
    if mode.get('positive') == 'fixed':
        assert ((probs.max(1) >= 0.6) & neg[np.arange(len(pred)), pred]).any()
    for b in range(len(ratios)):
        idx = np.flatnonzero(bag_index == b)
        ref_pos, ref_neg = reference_bag(probs[idx], ratios[b], old[idx],
                                         **_reference_mode(mode))
        np.testing.assert_array_equal(pos[idx], ref_pos, err_msg=f'bag {b}')
        np.testing.assert_array_equal(neg[idx], ref_neg, err_msg=f'bag {b}')
        one_pos, one_neg = select_pseudo_labels(probs[idx], ratios[b], old[idx], **mode)
        np.testing.assert_array_equal(one_pos, pos[idx])
        np.testing.assert_array_equal(one_neg, neg[idx])
    # without old negatives as well
    pos, neg = select_pseudo_labels_bags(probs, bag_index, ratios, **mode)
    for b in range(0, len(ratios), 7):
        idx = np.flatnonzero(bag_index == b)
        ref_pos, ref_neg = reference_bag(probs[idx], ratios[b], None, **_reference_mode(mode))
        np.testing.assert_array_equal(pos[idx], ref_pos)
        np.testing.assert_array_equal(neg[idx], ref_neg)


# ------------------------------------------------------------------ baseline, pool
def test_fixed_threshold_labels():
    probs = np.array([[0.96, 0.02, 0.02], [0.02, 0.95, 0.03], [0.94, 0.06, 0.0],
                      [0.5, 0.5, 0.0], [0.0, 0.01, 0.99]])
    # conf >= 0.95: rows 0 (0.96), 1 (0.95, equal counts), 4 (0.99); row 2 (0.94) no
    assert fixed_threshold_labels(probs).tolist() == [0, 1, -1, -1, 2]
    # threshold 0.5: row 3 ties 0.5 / 0.5 -> the lowest class, 0
    assert fixed_threshold_labels(probs, 0.5).tolist() == [0, 1, 0, 0, 2]
    with pytest.raises(ValueError, match='threshold'):
        fixed_threshold_labels(probs, 1.5)


def test_training_pool_oversampling_and_negative_only():
    # class 0: patches 0, 2, 4, 6, 8 (5); class 1: patches 1, 3 (2); class 2: none;
    # negative-only: 5, 7, 9; patch 10 has nothing; patch 0 has a label and a negative.
    positive = np.array([0, 1, 0, 1, 0, -1, 0, -1, 0, -1, -1])
    negatives = np.zeros((11, 3), bool)
    negatives[[0, 5, 7, 9], [2, 0, 1, 2]] = True
    pool = training_pool(positive, negatives, 3, oversample=True, seed=0)
    # 5 (class 0) + 5 (class 1 tiled to 5) + 0 (class 2) + 3 negative-only = 13
    assert pool.dtype == np.int64 and len(pool) == 13
    assert sorted(pool[:5].tolist()) == [0, 2, 4, 6, 8]
    # np.resize of a permutation [a, b] to 5 -> a, b, a, b, a
    a, b = pool[5:7].tolist()
    assert {a, b} == {1, 3} and pool[5:10].tolist() == [a, b, a, b, a]
    assert pool[10:].tolist() == [5, 7, 9]  # each negative-only patch once
    assert 10 not in pool
    np.testing.assert_array_equal(pool, training_pool(positive, negatives, 3, seed=0))
    assert not np.array_equal(pool, training_pool(positive, negatives, 3, seed=1))
    # without oversampling: every member once, index order, then the negative-only ones
    assert training_pool(positive, negatives, 3, oversample=False).tolist() == \
        [0, 2, 4, 6, 8, 1, 3, 5, 7, 9]
    # no negatives: 5 + 5 = 10, patches 1 and 3 three and two times (in some order)
    no_neg = training_pool(positive, None, 3).tolist()
    assert len(no_neg) == 10 and sorted(no_neg[:5]) == [0, 2, 4, 6, 8]
    assert sorted([no_neg.count(1), no_neg.count(3)]) == [2, 3]
    with pytest.raises(ValueError, match=r'negatives: expected a bool array of shape '
                                         r'\(11, 3\)'):
        training_pool(positive, negatives[:5], 3)
    with pytest.raises(ValueError, match='positive: entry 0 is 3'):
        training_pool(np.array([3]), None, 3)


# ------------------------------------------------------------------ errors
def test_errors_name_the_problem():
    probs = BAG10[:4]
    bags = np.array([0, 0, 1, 1])
    ratios = np.array([[0.5, 0.5, 0.0], [0.5, 0.3, 0.1]])
    with pytest.raises(ValueError, match=r'true_ratios: bag 1 sums to 0\.900000'):
        select_pseudo_labels_bags(probs, bags, ratios)
    good = np.array([[0.5, 0.5, 0.0], [0.5, 0.4, 0.1]])
    nan = probs.copy()
    nan[3, 1] = np.nan
    with pytest.raises(ValueError, match=r'probs: row 3 \(bag 1\) is not finite'):
        select_pseudo_labels_bags(nan, bags, good)
    unnorm = probs.copy()
    unnorm[2] *= 0.9
    with pytest.raises(ValueError, match=r'probs: row 2 \(bag 1\) sums to 0\.900000'):
        select_pseudo_labels_bags(unnorm, bags, good)
    with pytest.raises(ValueError, match=r'probs: row 0 \(bag 0\) has values outside'):
        select_pseudo_labels_bags(np.array([[1.5, -0.5, 0.0]]), np.array([0]), good)
    with pytest.raises(ValueError, match=r'negatives: expected a bool array of shape '
                                         r'\(4, 3\), got shape \(4, 2\)'):
        select_pseudo_labels_bags(probs, bags, good, np.zeros((4, 2), bool))
    with pytest.raises(ValueError, match='negatives: .* dtype int64'):
        select_pseudo_labels_bags(probs, bags, good, np.zeros((4, 3), np.int64))
    with pytest.raises(ValueError, match=r'bag_index: entry 1 is 2, expected 0 <= value < 2'):
        select_pseudo_labels_bags(probs, np.array([0, 2, 0, 0]), good)
    with pytest.raises(ValueError, match='true_ratios: bag 0 has a negative'):
        select_pseudo_labels_bags(probs, bags, np.array([[1.2, -0.2, 0.0], [0.5, 0.4, 0.1]]))
    with pytest.raises(ValueError, match=r'true_ratios: expected shape \(bags, 3\)'):
        select_pseudo_labels_bags(probs, bags, np.array([[0.5, 0.5], [0.5, 0.5]]))
    with pytest.raises(ValueError, match="positive: expected one of"):
        select_pseudo_labels(probs, [0.5, 0.5, 0.0], positive='soft')
    with pytest.raises(ValueError, match='threshold: expected a number in'):
        select_pseudo_labels(probs, [0.5, 0.5, 0.0], positive='fixed', threshold=1.5)
    with pytest.raises(ValueError, match=r'true_ratio: bag 0 sums to 0\.500000'):
        selection_rates(np.array([0, 1]), 3, [0.5, 0.0, 0.0])
    with pytest.raises(ValueError, match='pred: entry 1 is 3'):
        selection_rates(np.array([0, 3]), 3, [0.5, 0.5, 0.0])


# ------------------------------------------------------------------ benchmark tool
def test_benchmark_main_tiny_reports_identical(capsys):
    rc = benchmark_pseudo_labels.main(['--patches', '500', '--bags', '10', '--repeat', '1'])
    out = capsys.readouterr().out
    assert rc == 0 and 'outputs identical: yes' in out
    assert 'ours (select_pseudo_labels_bags)' in out and 'per-bag loop' in out


def test_benchmark_detects_a_mismatch(capsys, monkeypatch):
    # a peer that drops one positive label must be reported and give exit status 1
    real = benchmark_pseudo_labels.select_pseudo_labels

    def broken(*args, **kwargs):
        pos, neg = real(*args, **kwargs)
        pos = pos.copy()
        pos[pos >= 0] = -1
        return pos, neg

    monkeypatch.setattr(benchmark_pseudo_labels, 'select_pseudo_labels', broken)
    rc = benchmark_pseudo_labels.main(['--patches', '500', '--bags', '10', '--repeat', '1'])
    assert rc == 1 and 'outputs identical: NO' in capsys.readouterr().out


def test_bag_sae_per_bag_by_hand():
    from projects.negative_pseudo_labels.selection import bag_sae
    # bag 0: predictions 0, 0, 1 -> PCR (2/3, 1/3), TCR (1/3, 2/3) -> |1/3| + |1/3| = 2/3
    # bag 1: predictions 1, 1 -> PCR (0, 1) = TCR -> 0 ; bag 2: no patch -> NaN
    # bag 3: predictions 0 -> PCR (1, 0), TCR (0, 1) -> min(1, 2) = 1 (eq. 2 corrected)
    sae = bag_sae(np.array([0, 0, 1, 1, 1, 0]), np.array([0, 0, 0, 1, 1, 3]),
                  np.array([[1 / 3, 2 / 3], [0.0, 1.0], [0.5, 0.5], [0.0, 1.0]]))
    assert sae[[0, 1, 3]] == pytest.approx([2 / 3, 0.0, 1.0])
    assert np.isnan(sae[2])
