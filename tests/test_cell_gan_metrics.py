"""Clustering scores of the cell-level GAN (Hu et al. 2018, eqs. 13-14; DESIGN 4.5)."""
import importlib
import math
from collections import Counter

import numpy as np
import pytest
import torch

from projects.cell_gan import ClusteringMetric, cluster_scores


def _samples(table):
    """(clusters, classes) with table[k][j] samples in cluster k of class j."""
    clusters, classes = [], []
    for k, row in enumerate(table):
        for j, count in enumerate(row):
            clusters += [k] * count
            classes += [j] * count
    return np.array(clusters), np.array(classes)


# 3 clusters x 2 classes, N = 12
TABLE = [[4, 1], [0, 3], [2, 2]]


def test_hand_table():
    s = cluster_scores(*_samples(TABLE))
    # purity: row maxima 4 + 3 + 2 = 9 of 12
    assert s['purity'] == pytest.approx(9 / 12)
    # entropy: cluster 0 (5 cells, shares .8/.2) H0 = -(.8 log2 .8 + .2 log2 .2) ~ 0.7219;
    # cluster 1 is pure, H1 = 0; cluster 2 (4 cells, .5/.5) H2 = 1 bit
    # -> 5/12 * H0 + 3/12 * 0 + 4/12 * 1 ~ 0.6341
    h0 = -(0.8 * math.log2(0.8) + 0.2 * math.log2(0.2))
    assert s['entropy'] == pytest.approx(5 / 12 * h0 + 4 / 12)
    assert s['entropy'] == pytest.approx(0.634137, abs=1e-6)
    # majority: cluster 0 -> class 0, cluster 1 -> class 1, cluster 2 tie -> class 0
    # class 0: union of clusters 0, 2 = 9 cells, TP 6, P = 2/3, R = 6/6 = 1 -> F1 = 0.8
    # class 1: cluster 1 = 3 cells, TP 3, P = 1, R = 3/6 -> F1 = 2 * .5 / 1.5 = 2/3
    # weighted by support 6/12 each: 0.4 + 1/3 = 11/15
    assert s['per_class_f1'] == {0: pytest.approx(0.8), 1: pytest.approx(2 / 3)}
    assert s['f_score'] == pytest.approx(11 / 15)
    assert (s['num_clusters'], s['num_classes']) == (3, 2)


def test_perfect_clustering():
    # every cluster is exactly one class (cluster ids permuted w.r.t. class ids)
    classes = np.array([0, 0, 1, 1, 1, 2])
    clusters = np.array([5, 5, 3, 3, 3, 9])
    s = cluster_scores(clusters, classes)
    assert s['purity'] == 1.0 and s['entropy'] == 0.0 and s['f_score'] == pytest.approx(1.0)


def test_one_cluster_holds_everything():
    # class counts 5 / 3 / 2 in a single cluster, N = 10
    classes = np.array([0] * 5 + [1] * 3 + [2] * 2)
    s = cluster_scores(np.zeros(10, dtype=int), classes)
    # purity = largest class share 5/10
    assert s['purity'] == pytest.approx(0.5)
    # entropy = class entropy -(.5 log2 .5 + .3 log2 .3 + .2 log2 .2) ~ 1.4855
    assert s['entropy'] == pytest.approx(
        -(0.5 * math.log2(0.5) + 0.3 * math.log2(0.3) + 0.2 * math.log2(0.2)))
    # the cluster goes to class 0: P = 5/10, R = 1 -> F1 = 2/3; classes 1, 2 get no
    # cluster -> F1 = 0; weighted: 5/10 * 2/3 = 1/3
    assert s['per_class_f1'] == {0: pytest.approx(2 / 3), 1: 0.0, 2: 0.0}
    assert s['f_score'] == pytest.approx(1 / 3)


def test_tie_goes_to_smallest_class_id():
    # one cluster with two cells of class 9 and two of class 3: assigned to class 3
    # class 3: P = 2/4, R = 1 -> F1 = 2/3; class 9: no cluster -> 0
    s = cluster_scores([1, 1, 1, 1], [9, 3, 9, 3])
    assert s['per_class_f1'] == {3: pytest.approx(2 / 3), 9: 0.0}
    assert s['f_score'] == pytest.approx(0.5 * 2 / 3)


def test_non_contiguous_ids_match_relabelled():
    clusters, classes = _samples(TABLE)
    ref = cluster_scores(clusters, classes)
    # clusters 0, 1, 2 -> 42, -5, 7; classes 0, 1 -> 7, 1000 (order kept: same tie rule)
    s = cluster_scores(np.array([42, -5, 7])[clusters], np.array([7, 1000])[classes])
    for key in ('purity', 'entropy', 'f_score'):
        assert s[key] == pytest.approx(ref[key])
    assert s['per_class_f1'] == {7: pytest.approx(0.8), 1000: pytest.approx(2 / 3)}
    # torch tensors and lists are accepted too
    t = cluster_scores(torch.tensor(clusters), classes.tolist())
    assert t['f_score'] == pytest.approx(ref['f_score'])


def _brute_force(clusters, classes):
    """Per-sample loops: an independent reference for purity and the F-score."""
    n = len(clusters)
    members = {k: [c for c, kk in zip(classes, clusters) if kk == k] for k in set(clusters)}
    purity = sum(max(Counter(m).values()) for m in members.values()) / n
    majority = {}
    for k, m in members.items():
        counts = Counter(m)
        top = max(counts.values())
        majority[k] = min(c for c, v in counts.items() if v == top)
    f_score = 0.0
    for j in set(classes):
        pred = [majority[k] == j for k in clusters]
        truth = [c == j for c in classes]
        tp = sum(p and t for p, t in zip(pred, truth))
        if tp:
            prec, rec = tp / sum(pred), tp / sum(truth)
            f_score += sum(truth) / n * 2 * prec * rec / (prec + rec)
    return purity, f_score


def test_random_against_scipy_entropy_and_brute_force():
    from scipy.stats import entropy as scipy_entropy
    rng = np.random.default_rng(0)
    for _ in range(5):
        n = int(rng.integers(20, 200))
        clusters = rng.choice([3, 11, 12, 40, 77], size=n)
        classes = rng.choice([0, 2, 5, 6], size=n, p=[.4, .3, .2, .1])
        s = cluster_scores(clusters, classes)
        # entropy: sum_k n_k/N * H_2(class counts within cluster k), via scipy
        ref = sum((clusters == k).sum() / n
                  * scipy_entropy(np.bincount(classes[clusters == k], minlength=7), base=2)
                  for k in np.unique(clusters))
        assert s['entropy'] == pytest.approx(ref)
        purity, f_score = _brute_force(clusters.tolist(), classes.tolist())
        assert s['purity'] == pytest.approx(purity)
        assert s['f_score'] == pytest.approx(f_score)


@pytest.mark.parametrize('clusters, classes, match', [
    ([0, 1, 2], [0, 1], 'same length'),
    ([[0, 1], [1, 0]], [0, 1, 1, 0], 'clusters: expected a 1-D'),
    ([0, 1], np.zeros((2, 1), int), 'classes: expected a 1-D'),
    ([], [], 'clusters: is empty'),
    ([0.0, 1.0], [0, 1], 'clusters: ids must be integers'),
    ([0, 1], [True, False], 'classes: ids must be integers'),
])
def test_bad_input(clusters, classes, match):
    with pytest.raises(ValueError, match=match):
        cluster_scores(clusters, classes)


def _elements(clusters, classes):
    from mmengine.structures import BaseDataElement
    elems = []
    for k, j in zip(clusters, classes):
        e = BaseDataElement()
        e.pred_label = torch.tensor([int(k)])
        e.gt_label = torch.tensor(int(j))
        elems.append(e)
    return elems


def test_metric_through_evaluator_with_data_elements():
    from mmengine.evaluator import Evaluator
    clusters, classes = _samples(TABLE)
    # two extra cells without ground truth (gt_label -1) must not change the scores
    elems = _elements(list(clusters) + [0, 2], list(classes) + [-1, -1])
    evaluator = Evaluator(ClusteringMetric())
    evaluator.process(elems[:7])
    evaluator.process(elems[7:])
    out = evaluator.evaluate(len(elems))
    ref = cluster_scores(clusters, classes)
    assert set(out) == {'purity', 'entropy', 'f_score'}
    assert out['purity'] == pytest.approx(9 / 12)
    assert out['f_score'] == pytest.approx(11 / 15)
    for key in out:
        assert out[key] == pytest.approx(ref[key])


def test_metric_errors():
    metric = ClusteringMetric()
    with pytest.raises(ValueError, match='has no "pred_label"'):
        metric.process({}, [dict(gt_label=1)])
    with pytest.raises(ValueError, match='pred_label must be an integer'):
        metric.process({}, [dict(pred_label=0.5, gt_label=1)])
    with pytest.raises(ValueError, match='gt_label must be a single integer'):
        metric.process({}, [dict(pred_label=0, gt_label=torch.tensor([1, 2]))])
    metric.process({}, [dict(pred_label=0, gt_label=-1), dict(pred_label=1)])
    with pytest.raises(ValueError, match='none of the 2 evaluated samples'):
        metric.compute_metrics(metric.results)


@pytest.mark.parametrize('scope', ['mmseg', 'mmdet'])
def test_builds_through_registries(scope):
    registry = importlib.import_module(f'{scope}.registry').METRICS
    assert isinstance(registry.build(dict(type='ClusteringMetric')), ClusteringMetric)
