"""Evaluation maths of the cell-level GAN (Hu et al. 2018, sect. III-B and IV-C to IV-E).

Plain numpy / scikit-learn functions used by ``tools/analysis_tools/cell_gan_features.py``:
baseline features (raw pixels, HOG), k-means clustering, the L2-SVM, support-weighted and
binary precision / recall / F-score (eq. 13), per-image cell proportions
P_i = X_i / sum_k X_k (sect. III-B.2) and the image-level cross-validation of sect. IV-E
(k-means(2) with majority-labelled clusters, or an L2-SVM, on the proportions), and the
diagnostic of how much argmax Q depends on a crop's orientation (:func:`view_agreement`);
the reader of a ``cells.json`` with its crops (:func:`read_cells`); and a trained model's
Q logits and D / Q features of crops (:func:`load_model`, :func:`q_and_features`), shared
with the benchmark's ``cluster`` evaluator.
"""
import os.path as osp
import warnings
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from projects.common.io import read_rgb_uint8
from projects.common.layout import track

__all__ = ['HOG_ORIENTATIONS', 'HOG_PIXELS_PER_CELL', 'HOG_CELLS_PER_BLOCK', 'SVM_C',
           'pixel_features', 'hog_features', 'kmeans_clusters', 'svm_predict',
           'weighted_prf', 'binary_prf', 'cell_proportions', 'kmeans_image_classifier',
           'cross_validate_images', 'confusion_table', 'summarise', 'view_agreement',
           'orientation_agreement', 'read_cells', 'load_model', 'q_and_features']

#: HOG on the grey 32x32 crop: 9 orientations, 4x4-px cells, 2x2-cell blocks (L2-Hys)
#: -> 7 x 7 blocks x 4 cells x 9 = 1764-d, the standard setting closest to the 2048-d
#: HOG of the paper's HOG+DEC baseline (sect. IV-D; its cell size is not given).
HOG_ORIENTATIONS = 9
HOG_PIXELS_PER_CELL = 4
HOG_CELLS_PER_BLOCK = 2
#: L2-SVM (LinearSVC, squared hinge) regularisation on standardised features: sklearn's
#: default C = 1; the paper gives no value.
SVM_C = 1.0


def _check_crops(crops: np.ndarray, name: str = 'crops') -> np.ndarray:
    crops = np.asarray(crops)
    if crops.ndim != 4 or crops.shape[-1] != 3 or len(crops) == 0:
        raise ValueError(f'{name}: expected a non-empty (N, H, W, 3) RGB array, got shape '
                         f'{crops.shape}')
    if crops.dtype != np.uint8:
        raise ValueError(f'{name}: expected uint8 crops, got {crops.dtype}')
    return crops


def pixel_features(crops: np.ndarray) -> np.ndarray:
    """Raw-pixel baseline: each (H, W, 3) uint8 RGB crop flattened and divided by 255."""
    crops = _check_crops(crops)
    return crops.reshape(len(crops), -1).astype(np.float32) / 255.0


def hog_features(crops: np.ndarray, orientations: int = HOG_ORIENTATIONS,
                 pixels_per_cell: int = HOG_PIXELS_PER_CELL,
                 cells_per_block: int = HOG_CELLS_PER_BLOCK) -> np.ndarray:
    """HOG baseline: ``skimage.feature.hog`` (L2-Hys blocks) of each crop's grey image
    (``skimage.color.rgb2gray``), stacked to (N, D) float32."""
    from skimage.color import rgb2gray
    from skimage.feature import hog
    crops = _check_crops(crops)
    h, w = crops.shape[1:3]
    if min(h, w) < pixels_per_cell * cells_per_block:
        raise ValueError(f'hog_features: {h}x{w} crops are smaller than one block of '
                         f'{cells_per_block}x{cells_per_block} cells of {pixels_per_cell} px')
    feats = [hog(rgb2gray(c), orientations=orientations,
                 pixels_per_cell=(pixels_per_cell, pixels_per_cell),
                 cells_per_block=(cells_per_block, cells_per_block), block_norm='L2-Hys',
                 feature_vector=True) for c in crops]
    return np.stack(feats).astype(np.float32)


def kmeans_clusters(fit_features: np.ndarray, num_clusters: int, seed: int = 0,
                    predict: Sequence[np.ndarray] = ()) -> Tuple[np.ndarray, List[np.ndarray]]:
    """k-means (k-means++ init, 10 restarts, ``seed``) fitted on ``fit_features`` (N, D).

    Returns the fitted samples' cluster ids and those of each array in ``predict``
    (nearest centre)."""
    from sklearn.cluster import KMeans
    x = np.asarray(fit_features, dtype=np.float64)
    if x.ndim != 2 or len(x) < num_clusters:
        raise ValueError(f'kmeans_clusters: need a 2-D array with at least num_clusters='
                         f'{num_clusters} rows, got shape {x.shape}')
    km = KMeans(n_clusters=num_clusters, init='k-means++', n_init=10, random_state=seed)
    labels = km.fit_predict(x)
    return labels.astype(np.int64), [km.predict(np.asarray(p, dtype=np.float64)).astype(
        np.int64) for p in predict]


def svm_predict(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                c: float = SVM_C, seed: int = 0) -> Tuple[np.ndarray, int]:
    """L2-SVM (sect. IV-C): features standardised on the training set, then sklearn's
    ``LinearSVC`` (squared hinge, one-vs-rest, ``C`` = ``c``). Returns the test predictions
    and the number of convergence warnings raised while fitting (0 = converged)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC
    train_y = np.asarray(train_y)
    if np.unique(train_y).size < 2:
        raise ValueError(f'svm_predict: the training labels hold one class only '
                         f'({np.unique(train_y).tolist()}); an SVM needs two')
    clf = make_pipeline(StandardScaler(),
                        LinearSVC(C=c, loss='squared_hinge', max_iter=10000,
                                  random_state=seed))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always', ConvergenceWarning)
        clf.fit(np.asarray(train_x, np.float64), train_y)
    n_warn = sum(issubclass(w.category, ConvergenceWarning) for w in caught)
    return clf.predict(np.asarray(test_x, np.float64)), n_warn


def weighted_prf(y_true: Sequence[int], y_pred: Sequence[int]) -> Dict[str, float]:
    """Precision, recall, F-score per class (eq. 13) averaged with weights n_j / N, the
    class support (sect. IV-C); a class never predicted has precision 0."""
    from sklearn.metrics import precision_recall_fscore_support
    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, average='weighted',
                                                 zero_division=0)
    return dict(precision=float(p), recall=float(r), f_score=float(f))


def binary_prf(y_true: Sequence[int], y_pred: Sequence[int], positive: int = 1
               ) -> Dict[str, float]:
    """Binary precision / recall / F-score of class ``positive`` (sect. IV-E, eq. 13);
    0 where a ratio has an empty denominator (no positive predicted / present)."""
    from sklearn.metrics import precision_recall_fscore_support
    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, average='binary',
                                                 pos_label=positive, zero_division=0)
    return dict(precision=float(p), recall=float(r), f_score=float(f))


def cell_proportions(image_ids: Sequence[str], clusters: Sequence[int], num_clusters: int,
                     order: Optional[Sequence[str]] = None) -> Tuple[List[str], np.ndarray]:
    """Cell proportions of sect. III-B.2: for each image, X_i = number of its cells in
    cluster i and P_i = X_i / sum_k X_k.

    ``image_ids`` / ``clusters``: per cell. ``order``: the images to return (default: in
    order of first appearance); an image in ``order`` without any cell raises ValueError.
    Returns (image ids, P of shape (M, num_clusters))."""
    ids = list(image_ids)
    clusters = np.asarray(clusters, dtype=np.int64)
    if len(ids) != len(clusters):
        raise ValueError(f'cell_proportions: {len(ids)} image ids for {len(clusters)} '
                         'cluster ids')
    if clusters.size and (clusters.min() < 0 or clusters.max() >= num_clusters):
        raise ValueError(f'cell_proportions: cluster ids must lie in [0, {num_clusters}), '
                         f'got [{clusters.min()}, {clusters.max()}]')
    if order is None:
        order = list(dict.fromkeys(ids))
    row = {img: i for i, img in enumerate(order)}
    counts = np.zeros((len(order), num_clusters), np.float64)
    for img, k in zip(ids, clusters):
        if img in row:
            counts[row[img], k] += 1
    totals = counts.sum(axis=1)
    if (totals == 0).any():
        empty = [order[i] for i in np.flatnonzero(totals == 0)]
        raise ValueError(f'cell_proportions: images without any cell: {empty[:5]}'
                         f'{" ..." if len(empty) > 5 else ""}')
    return list(order), counts / totals[:, None]


def kmeans_image_classifier(train_p: np.ndarray, train_y: np.ndarray, test_p: np.ndarray,
                            seed: int = 0) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sect. IV-E "Our method (w/ k-means)": k-means(2) on the training images'
    proportions; each cluster takes the majority label of its training images (ties ->
    the smaller label; a cluster without training image -> the overall majority); a test
    image gets the label of its closest centre.

    Returns (test predictions, centres (2, K), cluster labels (2,))."""
    from sklearn.cluster import KMeans
    train_y = np.asarray(train_y, dtype=np.int64)
    x = np.asarray(train_p, np.float64)
    if len(x) < 2:
        raise ValueError(f'kmeans_image_classifier: need >= 2 training images, got {len(x)}')
    km = KMeans(n_clusters=2, init='k-means++', n_init=10, random_state=seed)
    with warnings.catch_warnings():
        # identical training proportions: fewer distinct points than clusters
        warnings.simplefilter('ignore')
        assign = km.fit_predict(x)
    values, counts = np.unique(train_y, return_counts=True)
    overall = values[np.argmax(counts)]
    labels = np.empty(2, np.int64)
    for k in range(2):
        members = train_y[assign == k]
        if members.size == 0:
            labels[k] = overall
        else:
            v, c = np.unique(members, return_counts=True)
            labels[k] = v[np.argmax(c)]
    pred = labels[km.predict(np.asarray(test_p, np.float64))]
    return pred, km.cluster_centers_, labels


def cross_validate_images(features: Dict[str, np.ndarray], labels: np.ndarray,
                          folds: int = 4, repeats: int = 4, seed: int = 0,
                          c: float = SVM_C) -> Dict[str, Dict[str, Dict[str, list]]]:
    """Sect. IV-E protocol: ``folds``-fold stratified cross-validation repeated
    ``repeats`` times (split r shuffled with seed ``seed + r``). For each proportion set in
    ``features`` (name -> (M, K)) and each classifier (``k-means(2)``, ``L2-SVM``), binary
    precision / recall / F-score of class 1 per test fold; the score of a repeat is the
    mean over its folds.

    Returns {feature name: {classifier: {'precision'|'recall'|'f_score': [per repeat]}}}.
    """
    from sklearn.model_selection import StratifiedKFold
    y = np.asarray(labels, np.int64)
    out = {name: {clf: dict(precision=[], recall=[], f_score=[])
                  for clf in ('k-means(2)', 'L2-SVM')} for name in features}
    for r in range(repeats):
        skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed + r)
        per_fold = {name: {clf: [] for clf in ('k-means(2)', 'L2-SVM')} for name in features}
        for tr, te in skf.split(np.zeros(len(y)), y):
            for name, x in features.items():
                pred, _, _ = kmeans_image_classifier(x[tr], y[tr], x[te], seed=seed)
                per_fold[name]['k-means(2)'].append(binary_prf(y[te], pred))
                pred, _ = svm_predict(x[tr], y[tr], x[te], c=c, seed=seed)
                per_fold[name]['L2-SVM'].append(binary_prf(y[te], pred))
        for name in features:
            for clf, scores in per_fold[name].items():
                for key in ('precision', 'recall', 'f_score'):
                    out[name][clf][key].append(float(np.mean([s[key] for s in scores])))
    return out


def summarise(values: Sequence[float]) -> Dict[str, object]:
    """Mean and sample standard deviation (ddof = 1; 0 for a single value) of repeats."""
    v = np.asarray(values, np.float64)
    std = float(v.std(ddof=1)) if v.size > 1 else 0.0
    return dict(mean=float(v.mean()), std=std, per_repeat=[float(x) for x in v])


def confusion_table(clusters: Sequence[int], classes: Sequence[int], num_clusters: int,
                    num_classes: int) -> np.ndarray:
    """Counts n_kj of cells in cluster k with class j, (num_clusters, num_classes)."""
    k = np.asarray(clusters, np.int64)
    j = np.asarray(classes, np.int64)
    if k.shape != j.shape:
        raise ValueError(f'confusion_table: {k.size} cluster ids for {j.size} class ids')
    if k.size and (k.min() < 0 or k.max() >= num_clusters or j.min() < 0
                   or j.max() >= num_classes):
        raise ValueError(f'confusion_table: ids out of range (clusters < {num_clusters}, '
                         f'classes < {num_classes})')
    table = np.zeros((num_clusters, num_classes), np.int64)
    np.add.at(table, (k, j), 1)
    return table


def view_agreement(view_clusters: np.ndarray, names: Optional[Sequence[str]] = None
                   ) -> Dict[str, object]:
    """How often a crop keeps its cluster when it is rotated / flipped.

    ``view_clusters`` (V, N): cluster of each of N crops under V views, view 0 = the crop
    itself (e.g. the 8 symmetries of :func:`projects.cell_gan.dataset.dihedral`).

    Returns ``agreement``: the share of (crop, view >= 1) pairs in the crop's own cluster;
    ``all_agree``: the share of crops whose V views share one cluster; ``per_view``
    {name: agreement of that view}; ``chance``: sum_k p_k^2 with p_k the share of all
    V * N predictions in cluster k, the agreement of clusters drawn independently of the
    crop with the same sizes (1 when everything falls in one cluster).
    """
    v = np.asarray(view_clusters, np.int64)
    if v.ndim != 2 or v.shape[0] < 2 or v.shape[1] < 1:
        raise ValueError(f'view_agreement: expected (views >= 2, crops >= 1) cluster ids, '
                         f'got shape {v.shape}')
    if names is None:
        names = [str(i) for i in range(v.shape[0])]
    if len(names) != v.shape[0]:
        raise ValueError(f'view_agreement: {len(names)} names for {v.shape[0]} views')
    same = v[1:] == v[:1]
    p = np.bincount(v.ravel() - v.min()) / v.size
    return dict(agreement=float(same.mean()), all_agree=float(same.all(axis=0).mean()),
                per_view={str(n): float(s) for n, s in zip(names[1:], same.mean(axis=1))},
                chance=float((p ** 2).sum()), num_views=int(v.shape[0]),
                num_crops=int(v.shape[1]))


def orientation_agreement(model, crops: np.ndarray, clusters: np.ndarray, batch: int,
                          progress: bool = True) -> dict:
    """argmax Q of the crops under the 8 symmetries of the square, scored by
    :func:`view_agreement` (view 0 = the crops as given, whose ``clusters`` are known)."""
    from projects.cell_gan.dataset import DIHEDRAL_NAMES, dihedral
    views = [np.asarray(clusters, np.int64)]
    for k in range(1, 8):
        turned = np.stack([dihedral(c, k) for c in crops])
        views.append(q_and_features(model, turned, batch, progress, features=False)[0]
                     .argmax(1))
    return view_agreement(np.stack(views), DIHEDRAL_NAMES)


def read_cells(path: str, crop_size: int, progress: bool = True,
               expect_mode: Optional[str] = None) -> dict:
    """Read a ``cells.json`` and its crops; every error names ``path`` (and the crop).

    Returns dict(classes, mode, crops (N, s, s, 3) uint8 RGB, labels (N,) int64,
    image_ids (list), image_labels {image_id: label}, path)."""
    from projects.cell_gan.dataset import read_cell_json
    ann = read_cell_json(path)  # checks the entries, ids and labels
    meta, data = ann['metainfo'], ann['data_list']
    classes = meta['classes']
    if not classes:
        raise ValueError(f'{path}: metainfo "classes" is empty: the crops have no classes to '
                         'score against')
    mode = meta.get('mode')
    if expect_mode is not None and mode is not None and mode != expect_mode:
        raise ValueError(f'{path}: metainfo mode is {mode!r}, expected {expect_mode!r}')
    if meta.get('crop_size', crop_size) != crop_size:
        raise ValueError(f'{path}: metainfo crop_size {meta["crop_size"]} differs from the '
                         f'model\'s img_size {crop_size}')
    image_labels = {img['image_id']: int(img.get('gt_label', -1)) for img in ann['images']}
    root = osp.dirname(osp.abspath(path))
    crops = np.empty((len(data), crop_size, crop_size, 3), np.uint8)
    labels = np.empty(len(data), np.int64)
    image_ids = []
    for i in track(range(len(data)), progress):
        d = data[i]
        where = f'{path}: data_list[{i}]'
        label = d.get('gt_label', -1)
        crop_path = osp.join(root, d['img_path'])
        try:
            crop = read_rgb_uint8(crop_path)
        except FileNotFoundError as err:
            raise FileNotFoundError(f'{where}: {err}') from err
        except ValueError as err:
            raise ValueError(f'{where}: {err}') from err
        if crop.shape != (crop_size, crop_size, 3):
            raise ValueError(f'{where}: crop {crop_path} is {crop.shape[1]}x{crop.shape[0]}, '
                             f'the model takes {crop_size}x{crop_size}')
        crops[i], labels[i] = crop, label
        image_ids.append(d['image_id'])
    return dict(classes=list(classes), mode=mode, crops=crops, labels=labels,
                image_ids=image_ids, image_labels=image_labels, path=path)


def load_model(config, checkpoint: str, device: str = 'cpu'):
    """Build the model of ``config`` (a path or an mmengine ``Config``) in its default
    scope and load ``checkpoint`` (strict); eval mode."""
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope
    from mmengine.runner import load_checkpoint

    from projects.cell_gan.model import CellInfoWGAN
    from projects.common.runner_utils import load_config
    cfg = config if isinstance(config, Config) else load_config(config)
    config = getattr(cfg, 'filename', None) or config
    init_default_scope(cfg.get('default_scope', 'mmseg') or 'mmseg')
    model = MODELS.build(cfg.model)
    if not isinstance(model, CellInfoWGAN):
        raise TypeError(f'{config}: the model is a {type(model).__name__}, not a CellInfoWGAN')
    load_checkpoint(model, checkpoint, map_location='cpu', strict=True, logger='silent')
    return model.to(device).eval()


def q_and_features(model, crops: np.ndarray, batch: int, progress: bool = True,
                   features: bool = True) -> tuple:
    """Q logits (N, K), the sect. IV-C D features (N, D) and Q's features (N, C) (the
    input of its linear head) of RGB uint8 crops, through the model's own data
    preprocessor (which takes BGR, like the training loader). ``features=False``: the
    logits only (the two feature arrays are None)."""
    import torch
    logits, d_feats, q_feats = [], [], []
    starts = list(range(0, len(crops), batch))
    with torch.no_grad():
        for s in track(starts, progress):
            bgr = torch.from_numpy(np.ascontiguousarray(crops[s:s + batch, ..., ::-1]))
            x = model.data_preprocessor(dict(inputs=list(bgr.permute(0, 3, 1, 2))),
                                        False)['inputs']
            logits.append(model.q_logits(x).float().cpu().numpy())
            if features:
                d_feats.append(model.extract_features(x).float().cpu().numpy())
                q_feats.append(model.q_features(x).float().cpu().numpy())
    if not features:
        return np.concatenate(logits), None, None
    return np.concatenate(logits), np.concatenate(d_feats), np.concatenate(q_feats)
