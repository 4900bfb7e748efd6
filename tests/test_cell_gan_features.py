"""Evaluation of the cell GAN (Hu et al. 2018, Tables I, II, sect. IV-E):
projects/cell_gan/evaluation.py and tools/analysis_tools/cell_gan_features.py."""
import importlib.util
import json
import os
import os.path as osp
from argparse import Namespace

import numpy as np
import pytest
import torch
from PIL import Image

from projects.cell_gan.dataset import dihedral
from projects.cell_gan.evaluation import (binary_prf, cell_proportions, confusion_table,
                                          cross_validate_images, hog_features,
                                          kmeans_clusters, kmeans_image_classifier,
                                          pixel_features, summarise, svm_predict,
                                          view_agreement, weighted_prf)
from projects.cell_gan.metrics import cluster_scores
from conftest import REPO, run_tool  # noqa: E402

TOOL = osp.join(REPO, 'tools', 'analysis_tools', 'cell_gan_features.py')
CLASSES = ['red', 'blue', 'dark']
COLOURS = {0: (200, 30, 30), 1: (30, 30, 200), 2: (40, 40, 40)}


def load_tool():
    spec = importlib.util.spec_from_file_location('cell_gan_features', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------- maths
def test_hog_baseline_equals_skimage_hog():
    from skimage.color import rgb2gray
    from skimage.feature import hog
    crops = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    got = hog_features(crops)
    want = np.stack([hog(rgb2gray(c), orientations=9, pixels_per_cell=(4, 4),
                         cells_per_block=(2, 2), block_norm='L2-Hys') for c in crops])
    # 32 / 4 = 8 cells a side -> 7 x 7 blocks of 2 x 2 cells x 9 orientations = 1764
    assert got.shape == (3, 1764)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_pixel_features_flatten_rgb_over_255():
    crops = np.zeros((2, 4, 5, 3), np.uint8)
    crops[1, 2, 3, 1] = 255  # row 2, column 3, green -> index (2 * 5 + 3) * 3 + 1 = 40
    crops[0, 0, 0, 0] = 51   # 51 / 255 = 0.2
    f = pixel_features(crops)
    assert f.shape == (2, 60)
    assert f[1, 40] == pytest.approx(1.0) and f[1].sum() == pytest.approx(1.0)
    assert f[0, 0] == pytest.approx(0.2) and f[0].sum() == pytest.approx(0.2)


def test_cell_proportions_by_hand():
    ids = ['a', 'a', 'b', 'a', 'b', 'c']
    clusters = [0, 2, 1, 2, 1, 0]
    order, p = cell_proportions(ids, clusters, 3)
    # a: X = (1, 0, 2) -> P = (1/3, 0, 2/3); b: (0, 2, 0) -> (0, 1, 0); c: (1, 0, 0)
    assert order == ['a', 'b', 'c']
    np.testing.assert_allclose(p, [[1 / 3, 0, 2 / 3], [0, 1, 0], [1, 0, 0]])
    order, p = cell_proportions(ids, clusters, 3, order=['c', 'a'])
    np.testing.assert_allclose(p, [[1, 0, 0], [1 / 3, 0, 2 / 3]])
    with pytest.raises(ValueError, match='without any cell'):
        cell_proportions(ids, clusters, 3, order=['a', 'zz'])
    with pytest.raises(ValueError, match=r'cluster ids must lie in \[0, 2\)'):
        cell_proportions(ids, clusters, 2)


def test_kmeans_image_classifier_labels_clusters_by_training_majority():
    # two well separated groups of proportions; group A holds labels 1, 1, 0 (majority 1),
    # group B 0, 0, 0, 1 (majority 0): one "wrong" member each must not flip the cluster
    a = [[0.90, 0.10], [0.85, 0.15], [0.92, 0.08]]
    b = [[0.10, 0.90], [0.15, 0.85], [0.05, 0.95], [0.12, 0.88]]
    train_p = np.array(a + b)
    train_y = np.array([1, 1, 0, 0, 0, 0, 1])
    test_p = np.array([[0.88, 0.12], [0.08, 0.92], [0.7, 0.3]])
    pred, centres, labels = kmeans_image_classifier(train_p, train_y, test_p, seed=0)
    assert pred.tolist() == [1, 0, 1]  # closest centre: A, B, A
    cluster_a = int(np.argmin(((centres - [0.89, 0.11]) ** 2).sum(1)))
    assert labels[cluster_a] == 1 and labels[1 - cluster_a] == 0
    np.testing.assert_allclose(centres[cluster_a], np.mean(a, axis=0))
    # a tie (group A labels 0, 1) goes to the smaller label
    pred, _, _ = kmeans_image_classifier(np.array(a[:2] + b), np.array([0, 1, 0, 0, 0, 0]),
                                         np.array([[0.9, 0.1]]))
    assert pred.tolist() == [0]


def test_weighted_prf_by_hand():
    y_true = [0, 0, 0, 1, 1, 2]
    y_pred = [0, 0, 1, 1, 2, 2]
    # class 0: TP 2, FP 0, FN 1 -> P 1, R 2/3, F 0.8, support 3
    # class 1: TP 1, FP 1, FN 1 -> P 1/2, R 1/2, F 1/2, support 2
    # class 2: TP 1, FP 1, FN 0 -> P 1/2, R 1, F 2/3, support 1
    s = weighted_prf(y_true, y_pred)
    assert s['precision'] == pytest.approx((3 * 1 + 2 * 0.5 + 1 * 0.5) / 6)       # 0.75
    assert s['recall'] == pytest.approx((3 * 2 / 3 + 2 * 0.5 + 1 * 1) / 6)        # 0.667
    assert s['f_score'] == pytest.approx((3 * 0.8 + 2 * 0.5 + 1 * 2 / 3) / 6)     # 0.678


def test_binary_prf_by_hand_and_without_predicted_positive():
    # TP 2 (idx 0, 4), FP 1 (idx 2), FN 1 (idx 1) -> P = R = F = 2/3
    s = binary_prf([1, 1, 0, 0, 1], [1, 0, 1, 0, 1])
    assert s == pytest.approx(dict(precision=2 / 3, recall=2 / 3, f_score=2 / 3))
    s = binary_prf([1, 0, 1], [0, 0, 0])  # nothing predicted positive: 0, never NaN
    assert s == dict(precision=0.0, recall=0.0, f_score=0.0)


def test_svm_predict_separable_and_one_class_error():
    x = np.array([[0.0, 0.1], [0.1, 0.0], [1.0, 0.9], [0.9, 1.0]])
    pred, n_warn = svm_predict(x, [0, 0, 1, 1], np.array([[0.05, 0.0], [1.0, 1.0]]))
    assert pred.tolist() == [0, 1] and n_warn == 0
    with pytest.raises(ValueError, match='one class only'):
        svm_predict(x, [1, 1, 1, 1], x)


def test_cross_validate_images_on_separable_proportions_is_perfect():
    rng = np.random.default_rng(0)
    pos = np.column_stack([rng.uniform(0.7, 0.9, 8), np.zeros(8)])
    neg = np.column_stack([rng.uniform(0.1, 0.3, 8), np.zeros(8)])
    p = np.vstack([pos, neg])
    p[:, 1] = 1 - p[:, 0]
    y = np.array([1] * 8 + [0] * 8)
    out = cross_validate_images({'q': p}, y, folds=4, repeats=2, seed=0)
    # every test fold of a linearly separable, cluster-separated set is classified right
    for clf in ('k-means(2)', 'L2-SVM'):
        for key in ('precision', 'recall', 'f_score'):
            assert out['q'][clf][key] == [1.0, 1.0]


def test_summarise_mean_and_sample_std():
    s = summarise([0.5, 1.0])
    # mean 0.75; sample std sqrt((0.25^2 + 0.25^2) / 1) = 0.353553
    assert s['mean'] == pytest.approx(0.75) and s['std'] == pytest.approx(0.3535534)
    assert summarise([0.4])['std'] == 0.0


def test_view_agreement_by_hand():
    # 4 crops, 3 views (view 0 = the crop itself):
    #   view 0: 0 0 1 2
    #   view 1: 0 1 1 2   -> agrees with view 0 on 3 of 4 crops
    #   view 2: 0 0 2 0   -> agrees on 2 of 4
    # agreement = (3 + 2) / 8 = 0.625; crop 0 agrees in both views, crop 1
    # not in view 1, crop 2 not in view 2, crop 3 not in view 2 -> all_agree = 1/4.
    # cluster shares over the 12 predictions: 0 -> 6, 1 -> 3, 2 -> 3 -> chance
    # = (1/2)^2 + (1/4)^2 + (1/4)^2 = 0.375
    v = view_agreement(np.array([[0, 0, 1, 2], [0, 1, 1, 2], [0, 0, 2, 0]]),
                       names=['id', 'a', 'b'])
    assert v['agreement'] == pytest.approx(0.625) and v['all_agree'] == pytest.approx(0.25)
    assert v['per_view'] == {'a': pytest.approx(0.75), 'b': pytest.approx(0.5)}
    assert v['chance'] == pytest.approx(0.375)
    assert (v['num_views'], v['num_crops']) == (3, 4)
    # one cluster for everything: agreement 1, and so is chance
    v = view_agreement(np.zeros((8, 5), int))
    assert v['agreement'] == v['all_agree'] == v['chance'] == 1.0
    with pytest.raises(ValueError, match=r'got shape \(4,\)'):
        view_agreement(np.zeros(4, int))
    with pytest.raises(ValueError, match='2 names for 3 views'):
        view_agreement(np.zeros((3, 2), int), names=['a', 'b'])


def test_confusion_table_by_hand():
    t = confusion_table([0, 0, 1, 2, 2, 2], [1, 1, 0, 0, 1, 1], 4, 2)
    assert t.tolist() == [[0, 2], [1, 0], [1, 2], [0, 0]]


# -------------------------------------------------------------------- fixtures
def make_crop(cls: int, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """A disk of the class colour (radius 8-10, centre jittered by 2 px) on white."""
    yy, xx = np.mgrid[:size, :size]
    cy, cx = size / 2 + rng.uniform(-2, 2, 2)
    disk = (yy - cy) ** 2 + (xx - cx) ** 2 <= rng.uniform(8, 10) ** 2
    img = np.full((size, size, 3), 240, np.float64)
    img[disk] = COLOURS[cls]
    img += rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_split(root: str, split: str, num_images: int, rng, mode: str = 'seg',
                size: int = 32, image_labels=None, crop_labels: bool = True) -> str:
    """Images alternate label 1 (3 red + 1 dark crops) / 0 (3 blue + 1 dark); each image
    also has one unlabelled (-1) dark crop."""
    folder = osp.join(root, split)
    crop_dir = 'crops' if mode == 'seg' else 'crops_bbox'
    os.makedirs(osp.join(folder, crop_dir), exist_ok=True)
    data, images = [], []
    for i in range(num_images):
        img_id = f'{split}_{i}'
        label = i % 2 if image_labels is None else image_labels[i]
        images.append(dict(image_id=img_id, img_path=f'images/{img_id}.png', gt_label=label))
        main = 0 if label == 1 else 1
        for t, (cls, known) in enumerate([(main, 1), (main, 1), (main, 1), (2, 1), (2, 0)]):
            rel = f'{crop_dir}/{img_id}_{t:05d}.png'
            Image.fromarray(make_crop(cls, rng, size)).save(osp.join(folder, rel))
            data.append(dict(img_path=rel, image_id=img_id, inst_id=t,
                             gt_label=cls if known and crop_labels else -1,
                             bbox=[0, 0, size, size], centroid=[16.0, 16.0], area=300))
    path = osp.join(folder, 'cells.json' if mode == 'seg' else 'cells_bbox.json')
    with open(path, 'w') as f:
        json.dump(dict(metainfo=dict(classes=CLASSES, crop_size=32, mode=mode),
                       data_list=data, images=images), f)
    return path


@pytest.fixture(scope='module')
def fixture_dir(tmp_path_factory):
    from projects.cell_gan.model import CellInfoWGAN
    root = str(tmp_path_factory.mktemp('cell_gan_eval'))
    rng = np.random.default_rng(0)
    paths = dict(train=write_split(root, 'train', 8, rng), test=write_split(root, 'test', 4, rng),
                 bbox_train=write_split(root, 'train', 8, rng, mode='bbox'),
                 bbox_test=write_split(root, 'test', 4, rng, mode='bbox'))
    torch.manual_seed(3)
    model = CellInfoWGAN(z_dim=4, num_categories=3, channels=4)
    # an untrained Q puts every crop in one cluster (its bias dominates): centre its logits
    # on the training crops so that argmax Q varies with the crop's colour
    with open(paths['train']) as f:
        data = json.load(f)['data_list']
    rgb = np.stack([np.asarray(Image.open(osp.join(root, 'train', d['img_path'])))
                    for d in data])
    with torch.no_grad():
        pooled = model.auxiliary.trunk(torch.from_numpy(rgb).permute(0, 3, 1, 2).float()
                                       / 127.5 - 1)[0]  # Q's own residual trunk
        fc = model.auxiliary.fc
        fc.weight /= pooled.std(0).clamp_min(1e-6)
        fc.bias.copy_(-fc.weight @ pooled.mean(0))
    paths['ckpt'] = osp.join(root, 'tiny.pth')
    torch.save({'state_dict': model.state_dict()}, paths['ckpt'])
    paths['config'] = osp.join(root, 'tiny_cfg.py')
    with open(paths['config'], 'w') as f:
        f.write("custom_imports = dict(imports=['projects.cell_gan'], "
                "allow_failed_imports=False)\ndefault_scope = 'mmseg'\n"
                "model = dict(type='CellInfoWGAN', z_dim=4, num_categories=3, channels=4)\n")
    paths['root'] = root
    return paths


def base_args(p: dict, out: str) -> list:
    return [p['config'], p['ckpt'], '--train-ann', p['train'], '--test-ann', p['test'],
            '--out', out, '--folds', '2', '--cv-repeats', '2', '--device', 'cpu',
            '--no-progress']


def q_clusters_independently(p: dict, ann: str, view: int = 0,
                             q_features: bool = False) -> tuple:
    """argmax of q_logits on crops scaled to [-1, 1] RGB by hand (not the preprocessor),
    each crop under symmetry ``view``; with ``q_features`` also Q's pooled trunk."""
    from projects.cell_gan.model import CellInfoWGAN
    model = CellInfoWGAN(z_dim=4, num_categories=3, channels=4)
    model.load_state_dict(torch.load(p['ckpt'], weights_only=True)['state_dict'])
    model.eval()
    with open(ann) as f:
        data = json.load(f)['data_list']
    rgb = np.stack([dihedral(np.asarray(Image.open(osp.join(osp.dirname(ann), d['img_path']))),
                             view) for d in data])
    x = torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        logits = model.auxiliary(x)  # Q's own residual trunk and its head
        feats = model.auxiliary.trunk(x)[0]
    out = (logits.argmax(1).numpy(), np.array([d['gt_label'] for d in data]))
    return out + (feats.numpy(), ) if q_features else out


# ------------------------------------------------------------------ end to end
def test_tool_end_to_end(fixture_dir, tmp_path):
    p = fixture_dir
    out = str(tmp_path / 'eval')
    args = base_args(p, out) + ['--bbox-train-ann', p['bbox_train'],
                                '--bbox-test-ann', p['bbox_test']]
    proc = run_tool([TOOL] + args)
    with open(osp.join(out, 'cell_gan_eval.json')) as f:
        res = json.load(f)
    md = open(osp.join(out, 'cell_gan_eval.md')).read()
    assert md.startswith('# CellInfoWGAN evaluation')
    assert 'python tools/analysis_tools/cell_gan_features.py ' + p['config'] in md
    assert '| Ours: argmax Q |' in md and md.strip() in proc.stdout
    assert osp.getsize(osp.join(out, 'clusters.png')) > 0

    clusters, labels = q_clusters_independently(p, p['test'])
    assert np.unique(clusters).size >= 2, 'fixture: the tiny model should use >= 2 clusters'
    lab = labels >= 0
    want = cluster_scores(clusters[lab], labels[lab])
    got = res['table2']['w_seg']['Ours: argmax Q']
    for key in ('purity', 'entropy', 'f_score'):
        assert got[key] == pytest.approx(want[key])
    # cluster x class table of the labelled test crops, counted here
    table = np.zeros((3, 3), int)
    np.add.at(table, (clusters[lab], labels[lab]), 1)
    assert res['confusion']['table'] == table.tolist()
    assert res['confusion']['cluster_sizes'] == np.bincount(clusters, minlength=3).tolist()

    # k-means on pixels separates the three colours exactly: purity 1, entropy 0, F 1
    for mode in ('w_seg', 'wo_seg'):
        km = res['table2'][mode]['k-means on pixels']
        assert km['purity'] == pytest.approx(1.0) and km['entropy'] == pytest.approx(0.0)
        assert res['table1'][mode]['L2-SVM on pixels']['f_score'] == pytest.approx(1.0)
    assert 'Ours: argmax Q' not in res['table2']['wo_seg']
    # image level: 12 images, 6 per class; pixel-cluster proportions (3/5 red or blue)
    # separate the classes, so both classifiers score 1 in every fold
    img = res['image_level']
    assert img['skipped'] is None and img['num_images'] == 12
    assert img['class_counts'] == {'0': 6, '1': 6}
    for clf in ('k-means(2)', 'L2-SVM'):
        f = img['results']['k-means on pixels'][clf]['f_score']
        assert f['per_repeat'] == [1.0, 1.0] and f['std'] == 0.0
    # 4 D blocks x 4 channels x 4 x 4 cells; Q's pooled trunk: 4 channels; 32 x 32 x 3
    # pixels; HOG as above
    assert res['settings']['feature_dims'] == dict(D=4 * 4 * 16, Q=4, pixels=3072, HOG=1764)

    # k-means on Q's features (its pooled trunk), fitted on the training crops
    _, _, f_tr = q_clusters_independently(p, p['train'], q_features=True)
    _, _, f_te = q_clusters_independently(p, p['test'], q_features=True)
    _, (km, ) = kmeans_clusters(f_tr, 3, 0, predict=[f_te])
    want = cluster_scores(km[lab], labels[lab])
    got = res['table2']['w_seg']['k-means on Q features']
    for key in ('purity', 'entropy', 'f_score'):
        assert got[key] == pytest.approx(want[key], abs=1e-6)
    # orientation: argmax Q of every test crop under the 8 symmetries, recomputed here
    views = np.stack([q_clusters_independently(p, p['test'], view=k)[0] for k in range(8)])
    same = views[1:] == views[0]
    o = res['orientation']
    assert o['num_views'] == 8 and o['num_crops'] == len(clusters)
    assert o['agreement'] == pytest.approx(same.mean())
    assert o['all_agree'] == pytest.approx(same.all(0).mean())
    assert list(o['per_view'].values()) == pytest.approx(same.mean(1).tolist())
    assert list(o['per_view']) == ['rot90', 'rot180', 'rot270', 'flip-lr', 'flip-lr+rot90',
                                   'flip-ud', 'flip-lr+rot270']
    assert f'all 8 copies agree for {o["all_agree"]:.1%}' in md


def test_tool_errors_name_the_file(fixture_dir, tmp_path):
    tool = load_tool()
    p = fixture_dir
    out = str(tmp_path / 'o')
    missing = str(tmp_path / 'nope.json')
    with pytest.raises(FileNotFoundError, match='nope.json'):
        tool.main(base_args(dict(p, train=missing), out))
    empty = tmp_path / 'empty.json'
    empty.write_text('')
    with pytest.raises(ValueError, match=r'empty\.json: cell annotation file is empty'):
        tool.main(base_args(dict(p, test=str(empty)), out))
    # crops of the wrong size
    small = write_split(str(tmp_path / 'small'), 'test', 2, np.random.default_rng(1), size=28)
    with pytest.raises(ValueError, match=r'_00000\.png is 28x28, the model takes 32x32'):
        tool.main(base_args(dict(p, test=small), out))
    # no labelled test crop
    unl = write_split(str(tmp_path / 'unl'), 'test', 2, np.random.default_rng(1),
                      crop_labels=False)
    with pytest.raises(ValueError, match=r'unl/test/cells\.json: no crop has a class'):
        tool.main(base_args(dict(p, test=unl), out))
    with pytest.raises(SystemExit):
        tool.main(base_args(p, out) + ['--bbox-train-ann', p['bbox_train']])
    assert not osp.exists(out)


def test_image_level_skips_with_a_reason_and_checks_conflicts():
    tool = load_tool()
    args = Namespace(folds=2, cv_repeats=1, seed=0, svm_c=1.0)

    def cells(path, ids, labels):
        return dict(path=path, image_ids=ids, image_labels=labels)

    train = cells('tr.json', ['a', 'b'], {'a': 1, 'b': 1})
    test = cells('te.json', ['c'], {'c': -1})
    z = (np.zeros(2, int), np.zeros(1, int))
    out = tool.image_level(train, test, z, z, 3, 3, args)
    assert 'needs two' in out['skipped'] and 'results' not in out
    # one image of class 0 < 2 folds
    test = cells('te.json', ['c'], {'c': 0})
    out = tool.image_level(train, test, z, z, 3, 3, args)
    assert 'fewer than --folds 2' in out['skipped']
    with pytest.raises(ValueError, match="te.json: image 'a' has label 0"):
        tool.image_level(train, cells('te.json', ['a'], {'a': 0}), z, z, 3, 3, args)
