"""projects/common/stats.py: the benchmark's statistics, on hand-worked cases."""
import numpy as np
import pytest

from projects.common import stats


def test_t_interval_by_hand():
    # [1, 2, 3]: mean 2, s = 1; t_{0.975, 2} = 4.302653 -> half = 4.302653 / sqrt(3) = 2.484138
    mean, half = stats.t_interval([1.0, 2.0, 3.0])
    assert mean == pytest.approx(2.0)
    assert half == pytest.approx(2.484138, abs=1e-6)


def test_t_interval_needs_two_values():
    with pytest.raises(ValueError, match='at least 2 values'):
        stats.t_interval([0.5])


def test_pooled_f1_sums_counts_before_the_ratio():
    # image 1: tp 2, fp 1, fn 0; image 2: tp 1, fp 0, fn 1 -> tp 3, fp 1, fn 1
    # F1 = 6 / (6 + 1 + 1) = 0.75 (the mean of per-image F1s would be (0.8 + 0.6667) / 2)
    assert stats.pooled_f1(np.array([[2, 1, 0], [1, 0, 1]])) == pytest.approx(0.75)
    assert stats.pooled_f1(np.zeros((2, 3))) == 1.0  # neither GT nor prediction


def test_masked_mean_skips_images_without_objects():
    # (0.5 + 0.7) / 2: the middle image has weight 0
    assert stats.masked_mean(np.array([[0.5, 1], [0.9, 0], [0.7, 1]])) == pytest.approx(0.6)


def test_paired_bootstrap_constant_difference_has_a_zero_width_interval():
    base = [np.array([[0.2, 1], [0.5, 1], [0.7, 1]]), np.array([[0.1, 1], [0.4, 1], [0.9, 1]])]
    method = [b + np.array([0.1, 0]) for b in base]  # every image +0.1, both seeds
    d = stats.paired_bootstrap(method, base, stats.masked_mean, n_boot=500)
    assert (d['diff'], d['lo'], d['hi']) == pytest.approx((0.1, 0.1, 0.1))
    assert stats.verdict(d['lo'], d['hi']) == 'better'


def test_paired_bootstrap_two_images_by_hand():
    # per-image differences 0 and 1: a draw of 2 images gives 0 (p 1/4), 0.5 (p 1/2) or
    # 1 (p 1/4), so the 2.5% / 97.5% quantiles are 0 and 1 and the full-sample diff is 0.5
    base = [np.array([[0.0, 1], [0.0, 1]])]
    method = [np.array([[0.0, 1], [1.0, 1]])]
    d = stats.paired_bootstrap(method, base, stats.masked_mean, n_boot=4000, seed=3)
    assert d['diff'] == pytest.approx(0.5)
    assert (d['lo'], d['hi']) == (0.0, 1.0)
    assert stats.verdict(d['lo'], d['hi']) == 'no difference'
    # deterministic for a given seed (reports must rebuild byte for byte)
    assert d == stats.paired_bootstrap(method, base, stats.masked_mean, n_boot=4000, seed=3)


def test_paired_bootstrap_pooled_f1_resamples_whole_images():
    # one image where the method finds 1 more cell (tp 2 / fn 0 vs tp 1 / fn 1), one equal:
    # method F1 = 2*3 / (6 + 0 + 0) = 1.0 vs base 2*2 / (4 + 0 + 1) = 0.8 on all images
    method = [np.array([[2, 0, 0], [1, 0, 0]])]
    base = [np.array([[1, 0, 1], [1, 0, 0]])]
    d = stats.paired_bootstrap(method, base, stats.pooled_f1, n_boot=1000)
    assert d['diff'] == pytest.approx(0.2)
    # draws: both copies of image 2 -> 0; both of image 1 -> 1 - 2/3 = 1/3 ; one each -> 0.2
    assert d['lo'] == pytest.approx(0.0) and d['hi'] == pytest.approx(1 / 3)


def test_paired_bootstrap_resampling_seeds_widens_a_split_row():
    # seed 0: the method is +0.2 on every image, seed 1: +0.0 (one run learnt, one did not).
    # Over images alone every draw is mean(0.2, 0.0) = 0.1: "better". Resampling the seeds
    # too, a draw is 0.2 (both seed 0, p 1/4), 0.1 (p 1/2) or 0.0 (both seed 1, p 1/4):
    # the 2.5% / 97.5% quantiles are 0.0 and 0.2, "no difference".
    base = [np.array([[0.3, 1], [0.6, 1], [0.1, 1]]), np.array([[0.5, 1], [0.2, 1], [0.4, 1]])]
    method = [base[0] + np.array([0.2, 0]), base[1].copy()]
    d = stats.paired_bootstrap(method, base, stats.masked_mean, n_boot=4000)
    assert (d['diff'], d['lo'], d['hi']) == pytest.approx((0.1, 0.1, 0.1))
    d = stats.paired_bootstrap(method, base, stats.masked_mean, n_boot=4000,
                               resample_seeds=True)
    assert d['diff'] == pytest.approx(0.1)
    assert (d['lo'], d['hi']) == pytest.approx((0.0, 0.2))
    assert stats.verdict(d['lo'], d['hi']) == 'no difference'


def test_paired_bootstrap_resampling_seeds_keeps_agreeing_seeds_apart_from_zero():
    # per-seed constant differences 0.1, 0.2, 0.3: a draw of 3 seeds averages to at least
    # 0.1 and at most 0.3 (all the same seed, p 1/27 each), so the interval stays > 0
    base = [np.array([[0.1, 1], [0.2, 1]])] * 3
    method = [b + np.array([d, 0]) for b, d in zip(base, (0.1, 0.2, 0.3))]
    d = stats.paired_bootstrap(method, base, stats.masked_mean, n_boot=4000, seed=1,
                               resample_seeds=True)
    assert d['diff'] == pytest.approx(0.2)
    assert 0.1 - 1e-12 <= d['lo'] < 0.2 < d['hi'] <= 0.3 + 1e-12
    # the quantiles of the 10 distinct seed multisets, by hand: P(mean <= 0.1) = 1/27 > 2.5%
    assert d['lo'] == pytest.approx(0.1) and d['hi'] == pytest.approx(0.3)
    assert stats.verdict(d['lo'], d['hi']) == 'better'


def test_paired_bootstrap_rejects_other_images():
    with pytest.raises(ValueError, match='same test images'):
        stats.paired_bootstrap([np.zeros((3, 2))], [np.zeros((4, 2))], stats.masked_mean)


def test_paired_t_over_seeds():
    # differences 0.1, 0.2, 0.3: mean 0.2, s 0.1, half 4.302653 * 0.1 / sqrt(3) = 0.248414
    d = stats.paired_t([0.5, 0.7, 0.9], [0.4, 0.5, 0.6])
    assert d['diff'] == pytest.approx(0.2)
    assert (d['lo'], d['hi']) == pytest.approx((0.2 - 0.248414, 0.2 + 0.248414), abs=1e-6)
    assert stats.verdict(d['lo'], d['hi']) == 'no difference'
    assert stats.verdict(-0.3, -0.1) == 'worse'


def test_converged_compares_the_last_fifth():
    curve = [(100, 0.3), (400, 0.5), (800, 0.600), (900, 0.7), (1000, 0.605)]
    # start of the last 20%: 800 -> |0.605 - 0.600| = 0.005 < 0.01
    assert stats.converged(curve) is True
    curve[-1] = (1000, 0.62)  # 0.02 >= 0.01
    assert stats.converged(curve) is False
    assert stats.converged([(1000, 0.5)]) is None  # one point: nothing to judge


def test_converged_best_so_far_for_runs_that_keep_their_best_checkpoint():
    # a plateau with noise: 0.68 at epoch 32 (start of the last fifth of 40), 0.67 at 40 is
    # 0.0105 apart ('last': not converged); the best so far goes 0.681 -> 0.687 (< 0.01)
    curve = [(8, 0.51), (16, 0.64), (32, 0.681), (36, 0.687), (40, 0.6705)]
    assert stats.converged(curve) is False
    assert stats.converged(curve, rule='best') is True
    # still climbing: the best so far moves 0.60 -> 0.65
    assert stats.converged([(8, 0.5), (32, 0.60), (40, 0.65)], rule='best') is False
    with pytest.raises(ValueError, match="rule must be 'last' or 'best'"):
        stats.converged(curve, rule='mean')


def test_best_threshold_takes_the_lowest_of_ties():
    assert stats.best_threshold([0.1, 0.2, 0.3], [0.5, 0.7, 0.7]) == (0.2, 0.7)


def test_confusion_statistics_by_hand_and_against_seg_scores():
    # two slides, rows = ground truth: [[3, 1], [0, 2]] + [[1, 0], [2, 1]] = [[4, 1], [2, 3]]
    # TP (4, 3), GT rows (5, 5), predicted columns (6, 4):
    # IoU 4/7 and 3/6 -> mIoU 0.535714; OP 7/10; PC (4/6 + 3/4)/2; mAcc (4/5 + 3/5)/2
    from projects.negative_pseudo_labels.metric import seg_scores
    per_slide = np.array([[3, 1, 0, 2], [1, 0, 2, 1]])
    assert stats.confusion_miou(per_slide) == pytest.approx((4 / 7 + 0.5) / 2)
    assert stats.confusion_op(per_slide) == pytest.approx(0.7)
    assert stats.confusion_pc(per_slide) == pytest.approx((4 / 6 + 3 / 4) / 2)
    assert stats.confusion_macc(per_slide) == pytest.approx(0.7)
    ref = seg_scores(np.array([[4, 1], [2, 3]]))
    for fn, key in ((stats.confusion_miou, 'mIoU'), (stats.confusion_op, 'OP'),
                    (stats.confusion_pc, 'PC'), (stats.confusion_macc, 'mAcc')):
        assert fn(per_slide) == pytest.approx(ref[key])
    # a class absent from both ground truth and prediction is left out of the means
    three = np.array([[4, 1, 0, 2, 3, 0, 0, 0, 0]])
    assert stats.confusion_miou(three) == pytest.approx((4 / 7 + 0.5) / 2)


def test_cluster_statistics_by_hand_and_against_cluster_scores():
    from projects.cell_gan.metrics import cluster_scores
    # clusters 0: classes (0, 0, 1); 1: (1, 1); 2: (2). Purity (2 + 2 + 1) / 6.
    pairs = np.array([[0, 0], [0, 0], [0, 1], [1, 1], [1, 1], [2, 2]])
    assert stats.cluster_purity(pairs) == pytest.approx(5 / 6)
    # entropy: only cluster 0 is mixed, weight 3/6, H(2/3, 1/3)
    h = -(2 / 3 * np.log2(2 / 3) + 1 / 3 * np.log2(1 / 3))
    assert stats.cluster_entropy(pairs) == pytest.approx(3 / 6 * h)
    # F: class 0 <- cluster 0 (P 2/3, R 1, F1 0.8); class 1 <- cluster 1 (P 1, R 2/3, F1
    # 0.8); class 2 <- cluster 2 (F1 1). Weighted (2 0.8 + 3 0.8 + 1) / 6.
    assert stats.cluster_f_score(pairs) == pytest.approx((2 * 0.8 + 3 * 0.8 + 1) / 6)
    # random pairs, batched like bootstrap draws: the reference implementation per draw
    rng = np.random.default_rng(0)
    draws = np.stack([rng.integers(0, [5, 4], size=(60, 2)) for _ in range(7)])
    for fn, key in ((stats.cluster_purity, 'purity'), (stats.cluster_entropy, 'entropy'),
                    (stats.cluster_f_score, 'f_score')):
        got = fn(draws)
        want = [cluster_scores(d[:, 0], d[:, 1])[key] for d in draws]
        np.testing.assert_allclose(got, want, rtol=1e-12)
    with pytest.raises(ValueError, match='pairs'):
        stats.cluster_purity(np.array([[0, -1]]))


def test_classification_f_score_by_hand_and_against_sklearn():
    from projects.cell_gan.evaluation import weighted_prf
    # (predicted, true). Class 0 (n 2): TP 1, predicted twice -> F1 2 / (2 + 2) = 0.5;
    # class 1 (n 3): TP 2, predicted twice -> F1 4 / 5; class 2 (n 1): predicted as a
    # class that never occurs -> F1 0. Weighted (2 0.5 + 3 0.8 + 1 0) / 6.
    pairs = np.array([[0, 0], [2, 0], [1, 1], [1, 1], [0, 1], [3, 2]])
    assert stats.classification_f_score(pairs) == pytest.approx((2 * 0.5 + 3 * 0.8) / 6)
    # random pairs, batched like bootstrap draws: sklearn per draw (Hu et al.'s Table I)
    rng = np.random.default_rng(1)
    draws = np.stack([rng.integers(0, [5, 4], size=(60, 2)) for _ in range(7)])
    np.testing.assert_allclose(stats.classification_f_score(draws),
                               [weighted_prf(d[:, 1], d[:, 0])['f_score'] for d in draws],
                               rtol=1e-12)


def _gathered_bootstrap(method, base, statistic, n_boot, seed):
    """The bootstrap written out: draw images (the same draws as ``paired_bootstrap``),
    gather them and score each seed's gathered sample with the statistic."""
    m, b = np.stack(method), np.stack(base)
    n, rng, draws = m.shape[1], np.random.default_rng(seed), []
    for start in range(0, n_boot, 250):
        for idx in rng.integers(0, n, size=(min(250, n_boot - start), n)):
            draws.append(np.mean([statistic(m[s][idx]) - statistic(b[s][idx])
                                  for s in range(len(m))]))
    return np.quantile(draws, [0.025, 0.975])


@pytest.mark.parametrize('name', ['masked_mean', 'pooled_f1', 'confusion_miou',
                                  'cluster_purity', 'cluster_entropy', 'cluster_f_score',
                                  'classification_f_score'])
def test_paired_bootstrap_scores_draws_as_the_gathered_images(name):
    # paired_bootstrap scores a draw from how often it takes each image; the interval must
    # be the one of gathering the drawn images (600 draws: 3 chunks, the last one short)
    rng = np.random.default_rng(7)
    statistic = stats.STATISTICS[name]

    def sample():
        if name == 'masked_mean':
            return np.stack([rng.random(40), rng.integers(0, 2, 40)], 1)
        if name == 'pooled_f1':
            return rng.integers(0, 6, size=(40, 3))
        if name == 'confusion_miou':
            return rng.integers(0, 9, size=(40, 9))
        return rng.integers(0, [5, 4], size=(40, 2))

    method, base = [sample() for _ in range(3)], [sample() for _ in range(3)]
    d = stats.paired_bootstrap(method, base, statistic, n_boot=600, seed=5)
    lo, hi = _gathered_bootstrap(method, base, statistic, 600, 5)
    assert d['lo'] == pytest.approx(lo, abs=1e-12) and d['hi'] == pytest.approx(hi, abs=1e-12)
    assert lo < d['diff'] < hi or lo == hi  # the draws straddle the observed difference


def test_verdict_lower_is_better():
    assert stats.verdict(0.1, 0.2) == 'better'
    assert stats.verdict(0.1, 0.2, higher_is_better=False) == 'worse'
    assert stats.verdict(-0.2, -0.1, higher_is_better=False) == 'better'
    assert stats.verdict(-0.1, 0.1, higher_is_better=False) == 'no difference'
