"""Clustering scores of cell-level clusters against cell classes (Hu et al. 2018).

:func:`cluster_scores` holds the maths (numpy in, Python numbers out);
:class:`ClusteringMetric` only adapts it to MMEngine's ``process`` / ``compute_metrics``
contract (cluster = the model's ``pred_label``, e.g. argmax of the auxiliary network Q).
"""
from typing import Any, Dict, Optional, Sequence

import numpy as np
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log

from projects.common.metrics import _field, _numpy, int_scalar
from projects.common.registry import METRICS, register
from .evaluation import confusion_table

__all__ = ['cluster_scores', 'ClusteringMetric']


def _as_ids(x: Any, name: str) -> np.ndarray:
    """Non-empty 1-D integer id array; raises ValueError naming ``name``."""
    arr = _numpy(x)
    if arr.ndim != 1:
        raise ValueError(f'{name}: expected a 1-D array of integer ids, got shape {arr.shape}')
    if arr.size == 0:
        raise ValueError(f'{name}: is empty; nothing to score')
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f'{name}: ids must be integers, got dtype {arr.dtype}')
    return arr.astype(np.int64)


def cluster_scores(clusters: Any, classes: Any) -> Dict[str, Any]:
    """Purity, entropy (bits) and support-weighted F-score; Hu et al. 2018, eqs. (13)-(14).

    ``clusters`` / ``classes``: 1-D integer ids of the same N samples (any integers, not
    necessarily contiguous). With n_jk = |cluster k & class j|, n_k = |cluster k|,
    n_j = |class j|:

    * purity = (1/N) sum_k max_j n_jk (eq. 14, left).
    * entropy = -sum_k (n_k/N) sum_j p_jk log2 p_jk with p_jk = n_jk / n_k, 0 log 0 = 0:
      the cluster-size weighted conditional class entropy in bits. Erratum: the printed
      eq. (14), -(1/N) sum_k |w_k| log(|w_k|/N), lost the class terms (it is the entropy
      of the cluster sizes alone); the authors' code (bohu615/nu_gan,
      utils/evaluation.py) computes the quantity above, which we follow.
    * f_score: each cluster is assigned to its majority class argmax_j n_jk (ties -> the
      smallest class id). For class j, the predicted positives are the union of the
      clusters assigned to j; TP = members of j in that union, precision = TP / |union|,
      recall = TP / n_j, F1 = 2PR / (P + R) (eq. 13; 0 when TP = 0, e.g. no cluster
      assigned to j). f_score = sum_j (n_j / N) F1_j, weighted by class support as the
      paper's text says (the authors' code weights by TP instead).

    Returns a dict: ``purity``, ``entropy``, ``f_score`` (floats), ``num_clusters``,
    ``num_classes`` (ints) and ``per_class_f1`` ({class id: F1}).
    """
    k_ids = _as_ids(clusters, 'clusters')
    j_ids = _as_ids(classes, 'classes')
    if k_ids.size != j_ids.size:
        raise ValueError(f'clusters and classes must have the same length, got '
                         f'{k_ids.size} and {j_ids.size}')
    n = k_ids.size
    _, k_idx = np.unique(k_ids, return_inverse=True)
    class_values, j_idx = np.unique(j_ids, return_inverse=True)
    num_k, num_j = int(k_idx.max()) + 1, class_values.size
    table = confusion_table(k_idx, j_idx, num_k, num_j)  # n_jk, clusters x classes
    n_k = table.sum(axis=1)
    n_j = table.sum(axis=0)

    purity = table.max(axis=1).sum() / n

    p = table / n_k[:, None]
    plogp = np.zeros_like(p)
    nz = table > 0
    plogp[nz] = p[nz] * np.log2(p[nz])
    entropy = float(-(n_k / n * plogp.sum(axis=1)).sum())
    entropy = max(0.0, entropy)  # -0.0 / rounding below zero for pure clusters

    majority = table.argmax(axis=1)  # first maximum = smallest class id (sorted unique)
    per_class_f1: Dict[int, float] = {}
    f_score = 0.0
    for j in range(num_j):
        assigned = majority == j
        tp = int(table[assigned, j].sum())
        if tp == 0:
            f1 = 0.0
        else:
            precision = tp / int(n_k[assigned].sum())
            recall = tp / int(n_j[j])
            f1 = 2 * precision * recall / (precision + recall)
        per_class_f1[int(class_values[j])] = f1
        f_score += n_j[j] / n * f1
    return dict(purity=float(purity), entropy=entropy, f_score=float(f_score),
                num_clusters=num_k, num_classes=int(num_j), per_class_f1=per_class_f1)


@register(METRICS)
class ClusteringMetric(BaseMetric):
    """Purity / entropy / F-score of cell clusters (Hu et al. 2018, eqs. 13-14).

    Each data sample (a dict, as MMEngine's Evaluator passes them, or a data element) is
    one cell with ``pred_label`` (cluster id, e.g. argmax Q) and ``gt_label`` (class id).
    Samples whose ``gt_label`` is negative or absent have no ground truth and are left
    out (their number is logged); a ValueError is raised if no sample has a label.
    Returns ``purity``, ``entropy`` (bits) and ``f_score``; see :func:`cluster_scores`.
    """

    default_prefix: Optional[str] = None

    def process(self, data_batch: Any, data_samples: Sequence[Any]) -> None:
        """Store (cluster id, class id or -1) per sample."""
        for i, sample in enumerate(data_samples):
            pred = _field(sample, 'pred_label')
            if pred is None:
                raise ValueError(f'ClusteringMetric: data sample {i} of the batch has no '
                                 '"pred_label" (the cluster id the model must set)')
            cluster = int_scalar(pred, f'ClusteringMetric: data sample {i}: pred_label')
            gt = _field(sample, 'gt_label')
            label = -1 if gt is None else int_scalar(
                gt, f'ClusteringMetric: data sample {i}: gt_label')
            self.results.append((cluster, label))

    def compute_metrics(self, results: list) -> Dict[str, float]:
        """Score the labelled samples with :func:`cluster_scores`."""
        pairs = np.array(results, dtype=np.int64).reshape(-1, 2)
        labelled = pairs[pairs[:, 1] >= 0]
        if len(labelled) == 0:
            raise ValueError(f'ClusteringMetric: none of the {len(pairs)} evaluated samples '
                             'has a ground-truth class (gt_label missing or < 0); evaluate '
                             'on a labelled split')
        scores = cluster_scores(labelled[:, 0], labelled[:, 1])
        print_log(
            f'Clustering of {len(labelled)} labelled cells ({len(pairs) - len(labelled)} '
            f'without label skipped) into {scores["num_clusters"]} clusters, '
            f'{scores["num_classes"]} classes: purity {scores["purity"]:.4f}, entropy '
            f'{scores["entropy"]:.4f} bits, F-score {scores["f_score"]:.4f}; per-class F1 '
            + ', '.join(f'{c}: {f:.4f}' for c, f in scores['per_class_f1'].items()),
            logger='current')
        return {k: scores[k] for k in ('purity', 'entropy', 'f_score')}
