"""Score calibration of a detector trained on incomplete labels (Elkan & Noto 2008).

Elkan & Noto, "Learning classifiers from only positive and unlabeled data", KDD 2008:
when the labelled cells are a random sample of all cells (SCAR), a classifier g trained
to separate labelled from unlabeled examples scores g(x) = c * p(y=1|x), with
c = p(s=1|y=1) the labelling frequency. So thresholding g at ``0.5 * c`` takes the
decision of the fully supervised classifier at 0.5, and c is estimated on a validation
set by their estimator e1: the mean of g over the labelled examples,

    c_hat = (1 / |P|) * sum_{x in P} g(x),   P = the annotated cells of the validation set.

A detector trained with cross-entropy on sparse annotations is such a g: unannotated
cells are its "background". Here g(x) of an annotated cell is the score of the detection
that represents it (:func:`labelled_cell_scores`); the validation set keeps its incomplete
labels (every annotated cell is a labelled example; the unannotated cells are not used).
"""
import json
import os.path as osp
from typing import Any, Sequence

import numpy as np

from .metrics import _as_points, _point_pairs


def labelled_cell_scores(gt_xy: Any, pred_xy: Any, scores: Any, radius: float) -> np.ndarray:
    """The detector's score of each annotated cell: (N,) float64, one per GT point.

    Definition: the score of GT point i is the **highest** score among **all** predictions
    whose centre lies within ``radius`` px of it (Euclidean distance <= radius, as in
    :func:`~projects.common.metrics.match_points`), and 0.0 if there is none.

    Why: g(x) of Elkan & Noto is the classifier's output for the example x; a detector's
    output for a cell is the detection at that cell, and where several boxes lie there
    (e.g. boxes of different classes, which NMS keeps apart) the strongest one decides:
    the cell is found at threshold t exactly when its score is >= t. No score threshold
    is applied (the estimator needs the scores below any operating point; a cell with no
    detection at all scores 0, the detector's "not a cell"), so dump the predictions with
    the model's own test ``score_thr`` at 0. The assignment is not one-to-one: two
    annotated cells near the same box both get its score (the detector's output at each
    of them), and it is class-agnostic (a box's score as CellDetectionMetric thresholds it).
    """
    if not np.isfinite(radius) or radius < 0:
        raise ValueError(f'radius must be a finite number >= 0, got {radius}')
    gt = _as_points(gt_xy, 'gt_xy')
    pred = _as_points(pred_xy, 'pred_xy')
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(s) != len(pred):
        raise ValueError(f'{len(pred)} predictions but {len(s)} scores')
    if not np.isfinite(s).all() or (s < 0).any() or (s > 1).any():
        raise ValueError('scores must be probabilities in [0, 1] (Elkan & Noto calibrate '
                         f'probabilities), got values in [{s.min():g}, {s.max():g}]')
    out = np.zeros(len(gt), dtype=np.float64)
    gi, pj, _ = _point_pairs(gt, pred, float(radius))
    np.maximum.at(out, gi, s[pj])
    return out


def labelling_frequency(images: Sequence[dict], radius: float,
                        source: str = 'the predictions') -> float:
    """c = mean of :func:`labelled_cell_scores` over all annotated cells of all images.

    ``images``: dicts with ``gt`` (N, 2) annotated points, ``pred`` (M, 2) box centres and
    ``scores`` (M,), e.g. from ``score_sweep.load_predictions``. Pooled over cells (not a
    mean of per-image means), as e1 averages over labelled examples. ValueError naming
    ``source`` if no image has an annotated cell (c is then undefined).
    """
    per_image = [labelled_cell_scores(im['gt'], im['pred'], im['scores'], radius)
                 for im in images]
    pooled = np.concatenate(per_image) if per_image else np.zeros(0)
    if pooled.size == 0:
        raise ValueError(f'{source}: no annotated cell in {len(per_image)} images; c (the mean '
                         'detector score of the annotated validation cells) is undefined: '
                         'the split needs annotations (gt_points or gt_instances)')
    return float(pooled.mean())


def calibrated_threshold(c: float, base: float = 0.5) -> float:
    """The score threshold ``base * c`` (Elkan & Noto: 0.5 c recovers the supervised 0.5).

    ValueError if c is not in (0, 1] (c = 0: no annotated cell was detected at all, so no
    threshold can be calibrated) or ``base`` not in (0, 1].
    """
    if not np.isfinite(c) or not 0 < c <= 1:
        raise ValueError(f'labelling frequency c must lie in (0, 1], got {c} (c = 0 means '
                         'no annotated cell has a detection within the radius)')
    if not np.isfinite(base) or not 0 < base <= 1:
        raise ValueError(f'base threshold must lie in (0, 1], got {base}')
    return float(base * c)


def read_threshold(value: str, source: str) -> float:
    """A score threshold given as a number or as the JSON that ``calibrate_threshold.py
    --out`` writes (its ``threshold`` key). Errors name ``source`` (the argument given)
    or the JSON file."""
    try:
        thr = float(value)
    except ValueError:
        if not osp.isfile(value):
            raise FileNotFoundError(
                f'{source}: {value} is neither a threshold nor a JSON file') from None
        try:
            with open(value) as f:
                data = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f'{value}: not valid JSON ({e})') from None
        if not isinstance(data, dict) or isinstance(data.get('threshold'), bool) \
                or not isinstance(data.get('threshold'), (int, float)):
            raise ValueError(f'{value}: no numeric "threshold" key '
                             '(calibrate_threshold.py --out)')
        thr = float(data['threshold'])
    if not np.isfinite(thr):
        raise ValueError(f'{source}: the threshold must be a finite number, got {thr}')
    return thr
