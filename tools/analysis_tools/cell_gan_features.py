"""Evaluate a trained CellInfoWGAN as in Hu et al. 2018: Table II (cell-level clustering),
Table I (cell-level classification with features) and the image-level result (sect. IV-E).

    python tools/analysis_tools/cell_gan_features.py CONFIG CHECKPOINT \\
        --train-ann data/synthetic_cells/train/cells.json \\
        --test-ann data/synthetic_cells/test/cells.json \\
        [--bbox-train-ann .../train/cells_bbox.json --bbox-test-ann .../test/cells_bbox.json] \\
        --out work_dirs/cell_gan_eval [--clusters K] [--seed 0] [--folds 4 --cv-repeats 4]

1. Table II: clusters of the labelled test crops scored by purity / entropy / F-score
   (:func:`projects.cell_gan.metrics.cluster_scores`). Ours = argmax Q. Baselines: k-means
   (k-means++, 10 restarts, K clusters) on raw pixels and on HOG, plus k-means on our D
   features and on Q's features (the input of Q's linear head; extra rows: does Q's
   representation hold the classes even where its argmax does not?). Every k-means is
   fitted on all training crops (labels unused) and applied to the test crops: the
   protocol of Q, which is trained on the training crops.
2. Table I: L2-SVM (standardised features, LinearSVC) trained on the labelled training
   crops, tested on the labelled test crops; support-weighted precision / recall / F-score.
   Features: our D features (sect. IV-C), raw pixels, HOG.
   The w/o Seg columns (``--bbox-*-ann``, bounding-box crops) hold the baselines only, as
   in the paper (our model is trained on segmented crops).
3. Image level: per source image (train + test crops, labelled or not) the proportions of
   its cells over the clusters; images with a 0/1 label; ``--folds``-fold stratified CV
   repeated ``--cv-repeats`` times; k-means(2) with majority-labelled clusters and an
   L2-SVM; binary precision / recall / F-score of class 1, mean +- std over the repeats.
   Proportions from argmax Q (ours) and from the k-means-on-pixels clusters (baseline).
4. ``clusters.png``: per Q cluster up to 12 random test crops (Fig. 8) with its majority
   class; the cluster x class table is in the JSON.
5. Orientation diagnostic: argmax Q of every test crop under the 8 rotations / flips of the
   square (:func:`projects.cell_gan.dataset.dihedral`); the share of rotated / flipped
   copies that stay in the crop's cluster, per symmetry and overall, the share of crops
   whose 8 copies agree, and the agreement expected by chance from the cluster sizes
   (:func:`projects.cell_gan.evaluation.view_agreement`). A cell's class does not depend
   on its orientation; a low agreement means c encodes orientation.

Writes OUT/cell_gan_eval.json, OUT/cell_gan_eval.md (printed too) and OUT/clusters.png.
"""
import argparse
import os.path as osp
import shlex
import sys
import time
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
import projects  # noqa: E402,F401  (registration, checkpoint-loader fix)
from projects.cell_gan.evaluation import (HOG_CELLS_PER_BLOCK, HOG_ORIENTATIONS,  # noqa: E402
                                          HOG_PIXELS_PER_CELL, SVM_C, cell_proportions,
                                          confusion_table, cross_validate_images,
                                          hog_features, kmeans_clusters, load_model,
                                          orientation_agreement, pixel_features,
                                          q_and_features, read_cells, summarise,
                                          svm_predict, weighted_prf)
from projects.cell_gan.metrics import cluster_scores  # noqa: E402
from projects.common.io import atomic_write, write_json  # noqa: E402
from projects.common.layout import track  # noqa: E402

SCRIPT = 'tools/analysis_tools/cell_gan_features.py'
CROPS_PER_ROW = 12
OURS_Q = 'Ours: argmax Q'
KM_PIX, KM_HOG, KM_D = 'k-means on pixels', 'k-means on HOG', 'k-means on D features'
KM_Q = 'k-means on Q features'
SVM_D, SVM_PIX, SVM_HOG = 'L2-SVM on D features (ours)', 'L2-SVM on pixels', 'L2-SVM on HOG'
PROP_Q, PROP_PIX = 'argmax Q (ours)', 'k-means on pixels'


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('config', help='the CellInfoWGAN config the checkpoint was trained with')
    p.add_argument('checkpoint', help='checkpoint (.pth) of that model')
    p.add_argument('--train-ann', required=True, help='cells.json of the training crops')
    p.add_argument('--test-ann', required=True, help='cells.json of the test crops')
    p.add_argument('--bbox-train-ann', help='cells.json of bounding-box training crops '
                   '(w/o Seg column; needs --bbox-test-ann)')
    p.add_argument('--bbox-test-ann', help='cells.json of bounding-box test crops')
    p.add_argument('--out', required=True, help='output folder')
    p.add_argument('--clusters', type=int, default=None,
                   help='K of the k-means baselines (default: the model\'s num_categories)')
    p.add_argument('--seed', type=int, default=0, help='seed of k-means, SVM, CV splits, '
                   'picture (default 0)')
    p.add_argument('--folds', type=int, default=4, help='image-level CV folds (default 4)')
    p.add_argument('--cv-repeats', type=int, default=4,
                   help='image-level CV repeats with different splits (default 4)')
    p.add_argument('--svm-c', type=float, default=SVM_C, help=f'LinearSVC C (default {SVM_C})')
    p.add_argument('--batch', type=int, default=256, help='crops per forward pass (256)')
    p.add_argument('--device', default=None, help='torch device (default: cuda if available)')
    p.add_argument('--no-progress', action='store_true', help='no progress bars')
    args = p.parse_args(argv)
    for name, low in (('folds', 2), ('cv_repeats', 1), ('batch', 1)):
        if getattr(args, name) < low:
            p.error(f'--{name.replace("_", "-")} must be >= {low}, got {getattr(args, name)}')
    if args.clusters is not None and args.clusters < 2:
        p.error(f'--clusters must be >= 2, got {args.clusters}')
    if args.svm_c <= 0:
        p.error(f'--svm-c must be > 0, got {args.svm_c}')
    if (args.bbox_train_ann is None) != (args.bbox_test_ann is None):
        p.error('--bbox-train-ann and --bbox-test-ann go together (the w/o Seg baselines '
                'are fitted on the one and scored on the other)')
    return args


# ------------------------------------------------------------------------- data
def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


# ---------------------------------------------------------------------- results
def _scores(clusters: np.ndarray, classes: np.ndarray) -> dict:
    s = cluster_scores(clusters, classes)
    return dict(purity=s['purity'], entropy=s['entropy'], f_score=s['f_score'],
                num_clusters=s['num_clusters'],
                per_class_f1={str(k): v for k, v in s['per_class_f1'].items()})


def _labelled(cells: dict, what: str, min_classes: int = 1) -> np.ndarray:
    idx = np.flatnonzero(cells['labels'] >= 0)
    if idx.size == 0:
        raise ValueError(f'{cells["path"]}: no crop has a class (gt_label >= 0); the '
                         f'{what} needs labelled crops')
    n_cls = np.unique(cells['labels'][idx]).size
    if n_cls < min_classes:
        raise ValueError(f'{cells["path"]}: the labelled crops hold {n_cls} class(es); the '
                         f'{what} needs at least {min_classes}')
    return idx


def baseline_tables(train: dict, test: dict, k: int, seed: int, c: float,
                    progress: bool) -> tuple:
    """Table II / Table I baseline rows (pixels, HOG) for one crop mode; also returns the
    k-means-on-pixels cluster ids of all train and test crops (image-level baseline)."""
    lab_tr = _labelled(train, 'L2-SVM (Table I)', 2)
    lab_te = _labelled(test, 'clustering score (Table II)')
    feats = {}
    for name, fn in (('pixels', pixel_features), ('HOG', hog_features)):
        feats[name] = (fn(train['crops']), fn(test['crops']))
    clustering, classification, warn = {}, {}, {}
    pix_clusters = None
    for name, row_km, row_svm in (('pixels', KM_PIX, SVM_PIX), ('HOG', KM_HOG, SVM_HOG)):
        f_tr, f_te = feats[name]
        c_tr, (c_te, ) = kmeans_clusters(f_tr, k, seed, predict=[f_te])
        clustering[row_km] = _scores(c_te[lab_te], test['labels'][lab_te])
        if name == 'pixels':
            pix_clusters = (c_tr, c_te)
        pred, n_warn = svm_predict(f_tr[lab_tr], train['labels'][lab_tr], f_te[lab_te], c, seed)
        classification[row_svm] = weighted_prf(test['labels'][lab_te], pred)
        warn[row_svm] = n_warn
    return clustering, classification, warn, pix_clusters, \
        dict(pixels=int(feats['pixels'][0].shape[1]), HOG=int(feats['HOG'][0].shape[1]))


def image_level(train: dict, test: dict, q_clusters: tuple, pix_clusters: tuple,
                num_q: int, k: int, args: argparse.Namespace) -> dict:
    """Sect. IV-E on the union of train and test images; returns the result dict, with
    ``skipped`` = the reason when the image labels do not allow the experiment."""
    labels: Dict[str, int] = dict(train['image_labels'])
    for img, lab in test['image_labels'].items():
        if img in labels and labels[img] != lab:
            raise ValueError(f'{test["path"]}: image {img!r} has label {lab}, but '
                             f'{train["path"]} gives {labels[img]}')
        labels[img] = lab
    ids = train['image_ids'] + test['image_ids']
    with_cells = set(ids)
    no_cells = sorted(i for i, lab in labels.items() if lab >= 0 and i not in with_cells)
    order = [i for i in dict.fromkeys(ids) if labels.get(i, -1) >= 0]
    y = np.array([labels[i] for i in order], np.int64)
    out = dict(num_images=len(order), images_without_cells=no_cells, skipped=None,
               folds=args.folds, repeats=args.cv_repeats, positive_class=1)
    values, counts = np.unique(y, return_counts=True)
    out['class_counts'] = {str(v): int(n) for v, n in zip(values, counts)}
    if values.size < 2:
        out['skipped'] = (f'the images with a cell have {values.size} image-level class(es) '
                          f'{values.tolist()} (images[].gt_label >= 0 in {train["path"]} and '
                          f'{test["path"]}); the image-level step needs two')
    elif not set(values.tolist()) <= {0, 1}:
        out['skipped'] = (f'image-level labels {values.tolist()} are not binary 0/1 (the '
                          'paper\'s normal / abnormal task)')
    elif counts.min() < args.folds:
        out['skipped'] = (f'class {values[np.argmin(counts)]} has {counts.min()} image(s), '
                          f'fewer than --folds {args.folds} (stratified CV impossible)')
    if out['skipped']:
        return out
    feats = {}
    for name, clusters, kk in ((PROP_Q, q_clusters, num_q), (PROP_PIX, pix_clusters, k)):
        _, feats[name] = cell_proportions(ids, np.concatenate(clusters), kk, order=order)
    cv = cross_validate_images(feats, y, args.folds, args.cv_repeats, args.seed, args.svm_c)
    out['results'] = {name: {clf: {key: summarise(v) for key, v in res.items()}
                             for clf, res in per.items()} for name, per in cv.items()}
    return out


def draw_clusters(path: str, crops: np.ndarray, clusters: np.ndarray, labels: np.ndarray,
                  classes: Sequence[str], num_clusters: int, seed: int) -> None:
    """Fig. 8: one row per Q cluster, up to 12 random crops, majority class at the left."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    rng = np.random.default_rng(seed)
    s = crops.shape[1]
    gap = 2
    fig, axes = plt.subplots(num_clusters, 1, figsize=(1.0 + 0.5 * CROPS_PER_ROW,
                                                       0.6 * num_clusters + 0.4),
                             squeeze=False)
    for k in range(num_clusters):
        ax = axes[k, 0]
        members = np.flatnonzero(clusters == k)
        pick = rng.choice(members, size=min(CROPS_PER_ROW, members.size), replace=False) \
            if members.size else members
        strip = np.full((s, CROPS_PER_ROW * (s + gap), 3), 255, np.uint8)
        for t, i in enumerate(pick):
            strip[:, t * (s + gap):t * (s + gap) + s] = crops[i]
        ax.imshow(strip, interpolation='nearest')
        ax.set_xticks([])
        ax.set_yticks([])
        lab = labels[members][labels[members] >= 0]
        if lab.size:
            counts = np.bincount(lab, minlength=len(classes))
            j = int(np.argmax(counts))
            text = f'{k}: {classes[j]}\n{counts[j] / lab.size:.0%} of {lab.size}'
        else:
            text = f'{k}: {members.size} crops\nno class' if members.size else f'{k}: empty'
        ax.set_ylabel(text, rotation=0, ha='right', va='center', fontsize=8)
    fig.suptitle('Q clusters of the test crops (cluster: majority class, share of '
                 'labelled)', fontsize=9)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format='png', dpi=100))
    plt.close(fig)


# --------------------------------------------------------------------- markdown
def _f(v: Optional[float]) -> str:
    return '/' if v is None else f'{v:.3f}'


def to_markdown(res: dict) -> str:
    s = res['settings']
    has_bbox = res['table2']['wo_seg'] is not None
    cols = ['w/ Seg', 'w/o Seg'] if has_bbox else ['w/ Seg']
    lines = ['# CellInfoWGAN evaluation (Hu et al. 2018, Tables I, II, sect. IV-E)', '',
             '```', res['command'], '```', '',
             f'Checkpoint `{s["checkpoint"]}`; {s["num_train_crops"]} training crops '
             f'({s["num_train_labelled"]} with a class), {s["num_test_crops"]} test crops '
             f'({s["num_test_labelled"]} with a class); classes {s["classes"]}; Q has '
             f'{s["num_categories"]} clusters, the k-means baselines K = {s["kmeans_k"]}; '
             f'seed {s["seed"]}. k-means: k-means++, 10 restarts, fitted on all training '
             f'crops, applied to the test crops. HOG: {s["hog"]}. L2-SVM: standardised '
             f'features, LinearSVC(C={s["svm_c"]}, squared hinge).', '']

    def table(title, rows, metrics, part):
        head = ['Method'] + [f'{m} {c}' for _, m in metrics for c in cols]
        out = [f'## {title}', '', '| ' + ' | '.join(head) + ' |',
               '|' + '---|' * len(head)]
        for row in rows:
            cells = [row]
            for key, _ in metrics:
                for mode in ('w_seg', 'wo_seg')[:len(cols)]:
                    block = res[part][mode]
                    cells.append(_f(block[row][key]) if block and row in block else '/')
            out.append('| ' + ' | '.join(cells) + ' |')
        return out + ['']

    lines += table(f'Table II: cell-level clustering ({s["num_test_labelled"]} labelled '
                   'test crops)', [KM_PIX, KM_HOG, KM_D, KM_Q, OURS_Q],
                   [('purity', 'Purity'), ('entropy', 'Entropy (bits)'),
                    ('f_score', 'F-score')], 'table2')
    lines += table('Table I: cell-level classification, L2-SVM, labelled train -> test '
                   'crops (weighted by support)', [SVM_PIX, SVM_HOG, SVM_D],
                   [('precision', 'Precision'), ('recall', 'Recall'),
                    ('f_score', 'F-score')], 'table1')
    img = res['image_level']
    lines += ['## Image-level classification (sect. IV-E)', '']
    if img['skipped']:
        lines += [f'Skipped: {img["skipped"]}.', '']
    else:
        lines += [f'{img["num_images"]} images (class counts {img["class_counts"]}), '
                  f'{img["folds"]}-fold stratified CV repeated {img["repeats"]} times; '
                  'binary scores of class 1, mean over folds, mean +- std over repeats.'
                  + (f' {len(img["images_without_cells"])} labelled image(s) without any '
                     'crop left out.' if img['images_without_cells'] else ''), '',
                  '| Proportions from | Classifier | Precision | Recall | F-score |',
                  '|---|---|---|---|---|']
        for name, per in img['results'].items():
            for clf, sc in per.items():
                vals = [f'{sc[k]["mean"]:.3f} +- {sc[k]["std"]:.3f}'
                        for k in ('precision', 'recall', 'f_score')]
                lines.append(f'| {name} | {clf} | ' + ' | '.join(vals) + ' |')
        lines.append('')
    conf = res['confusion']
    lines += ['## Q clusters x classes (labelled test crops)', '',
              '| Cluster | ' + ' | '.join(conf['classes']) + ' | all test crops |',
              '|' + '---|' * (len(conf['classes']) + 2)]
    for k, row in enumerate(conf['table']):
        lines.append(f'| {k} | ' + ' | '.join(str(v) for v in row) +
                     f' | {conf["cluster_sizes"][k]} |')
    lines += ['', '![Q clusters](clusters.png)', '']
    v = res['orientation']
    lines += ['## Orientation: argmax Q under the 8 rotations / flips of each test crop', '',
              f'{v["num_crops"]} test crops. A rotated / flipped copy stays in the crop\'s '
              f'cluster in {v["agreement"]:.1%} of the cases (chance from the cluster sizes: '
              f'{v["chance"]:.1%}); all 8 copies agree for {v["all_agree"]:.1%} of the crops.',
              '', '| Symmetry | ' + ' | '.join(v['per_view']) + ' |',
              '|' + '---|' * (len(v['per_view']) + 1),
              '| same cluster | ' + ' | '.join(f'{a:.3f}' for a in v['per_view'].values())
              + ' |', '']
    return '\n'.join(lines)


# ------------------------------------------------------------------------- main
def main(argv: Optional[List[str]] = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    progress = not args.no_progress
    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    t0 = time.time()
    model = load_model(args.config, args.checkpoint, device)
    num_q = model.num_categories
    k = args.clusters or num_q
    size = model.img_size
    print(f'Reading the {size}x{size} crops of {args.train_ann} and {args.test_ann} ...',
          flush=True)
    train = read_cells(args.train_ann, size, progress)
    test = read_cells(args.test_ann, size, progress)
    if train['classes'] != test['classes']:
        raise ValueError(f'{args.test_ann}: classes {test["classes"]} differ from '
                         f'{args.train_ann}: {train["classes"]}')
    classes = train['classes']
    lab_tr = _labelled(train, 'L2-SVM (Table I)', 2)
    lab_te = _labelled(test, 'clustering score (Table II)')
    bbox = None
    if args.bbox_train_ann:
        print(f'Reading the w/o Seg crops of {args.bbox_train_ann} and '
              f'{args.bbox_test_ann} ...', flush=True)
        bbox = [read_cells(p, size, progress, expect_mode='bbox')
                for p in (args.bbox_train_ann, args.bbox_test_ann)]
        for b in bbox:
            if b['classes'] != classes:
                raise ValueError(f'{b["path"]}: classes {b["classes"]} differ from '
                                 f'{args.train_ann}: {classes}')

    print(f'Q and D features of {len(train["crops"])} + {len(test["crops"])} crops on '
          f'{device} ...', flush=True)
    q_tr, d_tr, qf_tr = q_and_features(model, train['crops'], args.batch, progress)
    q_te, d_te, qf_te = q_and_features(model, test['crops'], args.batch, progress)
    cq_tr, cq_te = q_tr.argmax(1), q_te.argmax(1)
    print(f'argmax Q of the {len(test["crops"])} test crops under the 8 rotations / flips '
          '...', flush=True)
    views = orientation_agreement(model, test['crops'], cq_te, args.batch, progress)

    print('Table II / Table I ...', flush=True)
    y_te = test['labels'][lab_te]
    t2, t1, warn, pix_clusters, dims = baseline_tables(train, test, k, args.seed,
                                                       args.svm_c, progress)
    _, (cd_te, ) = kmeans_clusters(d_tr, k, args.seed, predict=[d_te])
    t2[KM_D] = _scores(cd_te[lab_te], y_te)
    _, (cqf_te, ) = kmeans_clusters(qf_tr, k, args.seed, predict=[qf_te])
    t2[KM_Q] = _scores(cqf_te[lab_te], y_te)
    t2[OURS_Q] = _scores(cq_te[lab_te], y_te)
    pred, warn[SVM_D] = svm_predict(d_tr[lab_tr], train['labels'][lab_tr], d_te[lab_te],
                                    args.svm_c, args.seed)
    t1[SVM_D] = weighted_prf(y_te, pred)
    t2_bbox = t1_bbox = None
    if bbox is not None:
        t2_bbox, t1_bbox, warn_bbox, _, _ = baseline_tables(bbox[0], bbox[1], k, args.seed,
                                                            args.svm_c, progress)
        warn.update({f'{key} (w/o Seg)': v for key, v in warn_bbox.items()})
    for key, n in warn.items():
        if n:
            print(f'warning: {key}: LinearSVC did not converge in 10000 iterations '
                  f'({n} warning(s)); its scores are of the last iterate', flush=True)

    print('Image-level classification ...', flush=True)
    img = image_level(train, test, (cq_tr, cq_te), pix_clusters, num_q, k, args)
    if img['skipped']:
        print(f'Image-level part skipped: {img["skipped"]}', flush=True)
    if img['images_without_cells']:
        print(f'note: {len(img["images_without_cells"])} labelled image(s) have no crop and '
              f'no cell proportions, left out of the image level: '
              f'{img["images_without_cells"][:5]}', flush=True)

    table = confusion_table(cq_te[lab_te], y_te, num_q, len(classes))
    sizes = np.bincount(cq_te, minlength=num_q)
    command = 'python ' + shlex.join([SCRIPT] + argv)
    hog = (f'skimage.feature.hog on the grey crop, {HOG_ORIENTATIONS} orientations, '
           f'{HOG_PIXELS_PER_CELL}x{HOG_PIXELS_PER_CELL}-px cells, {HOG_CELLS_PER_BLOCK}x'
           f'{HOG_CELLS_PER_BLOCK}-cell blocks, L2-Hys ({dims["HOG"]}-d)')
    res = dict(
        command=command,
        settings=dict(config=args.config, checkpoint=args.checkpoint,
                      train_ann=args.train_ann, test_ann=args.test_ann,
                      bbox_train_ann=args.bbox_train_ann, bbox_test_ann=args.bbox_test_ann,
                      modes=dict(train=train['mode'], test=test['mode']), classes=classes,
                      num_categories=num_q, kmeans_k=k, seed=args.seed, folds=args.folds,
                      cv_repeats=args.cv_repeats, svm_c=args.svm_c, batch=args.batch,
                      device=device, hog=hog,
                      feature_dims=dict(D=int(d_tr.shape[1]), Q=int(qf_tr.shape[1]), **dims),
                      num_train_crops=len(train['crops']), num_train_labelled=int(lab_tr.size),
                      num_test_crops=len(test['crops']), num_test_labelled=int(lab_te.size),
                      svm_convergence_warnings=warn),
        table2=dict(w_seg=t2, wo_seg=t2_bbox),
        table1=dict(w_seg=t1, wo_seg=t1_bbox),
        image_level=img,
        confusion=dict(classes=classes, table=table.tolist(),
                       cluster_sizes=[int(v) for v in sizes]),
        orientation=views,
        clusters_png='clusters.png')
    draw_clusters(osp.join(args.out, 'clusters.png'), test['crops'], cq_te, test['labels'],
                  classes, num_q, args.seed)
    md = to_markdown(res)
    res['seconds'] = round(time.time() - t0, 1)
    write_json(osp.join(args.out, 'cell_gan_eval.json'), res)

    def write_md(tmp: str) -> None:
        with open(tmp, 'w') as f:
            f.write(md)

    atomic_write(osp.join(args.out, 'cell_gan_eval.md'), write_md)
    print(md)
    print(f'Wrote {osp.join(args.out, "cell_gan_eval.json")}, cell_gan_eval.md and '
          f'clusters.png ({res["seconds"]} s)')
    return res


if __name__ == '__main__':
    main()
