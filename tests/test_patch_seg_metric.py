"""PatchSegMetric and its maths: stitching, OP / PC / mAcc / mIoU (Tokunaga et al. 2020,
eq. 7), pixel- and patch-level confusion, pictures, registry."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

from projects.negative_pseudo_labels.metric import (PatchSegMetric, seg_scores, stitch,
                                                    upsample_grid)

CLASSES = ('tumour', 'stroma', 'necrosis')
P = 4  # patch size of the hand-made bags


# --------------------------------------------------------------------------- seg_scores


def test_seg_scores_hand_made_3x3():
    # rows = ground truth, columns = prediction
    conf = np.array([[5, 1, 0],
                     [2, 3, 1],
                     [0, 0, 4]])
    # TP = (5, 3, 4); column sums (7, 4, 5) -> FP = (2, 1, 1); row sums (6, 6, 4) -> FN = (1, 3, 0)
    # OP = 12 / (12 + 4) = 0.75
    # PC = (5/7 + 3/4 + 4/5) / 3 (precision); mAcc = (5/6 + 3/6 + 4/4) / 3 (recall)
    # mIoU = (5/8 + 3/7 + 4/5) / 3
    s = seg_scores(conf)
    assert s['OP'] == pytest.approx(0.75)
    assert s['PC'] == pytest.approx((5 / 7 + 3 / 4 + 4 / 5) / 3)
    assert s['mAcc'] == pytest.approx((5 / 6 + 3 / 6 + 1.0) / 3)
    assert s['mIoU'] == pytest.approx((5 / 8 + 3 / 7 + 4 / 5) / 3)
    assert s['iou'] == pytest.approx([5 / 8, 3 / 7, 4 / 5])
    assert s['precision'] == pytest.approx([5 / 7, 3 / 4, 4 / 5])
    assert s['recall'] == pytest.approx([5 / 6, 3 / 6, 1.0])
    assert s['support'] == [6, 6, 4]


def test_seg_scores_absent_class_is_left_out():
    # the 3x3 case above plus class 3, absent from both GT and prediction: M stays 3
    conf = np.zeros((4, 4), np.int64)
    conf[:3, :3] = [[5, 1, 0], [2, 3, 1], [0, 0, 4]]
    s = seg_scores(conf)
    assert s['PC'] == pytest.approx((5 / 7 + 3 / 4 + 4 / 5) / 3)
    assert s['mAcc'] == pytest.approx((5 / 6 + 3 / 6 + 1.0) / 3)
    assert s['mIoU'] == pytest.approx((5 / 8 + 3 / 7 + 4 / 5) / 3)
    assert s['iou'][3] is None and s['precision'][3] is None and s['recall'][3] is None


def test_seg_scores_class_only_predicted():
    # class 1 is predicted once but never in the GT: conf = [[2, 1], [0, 0]]
    # precision (1, 0/1 = 0) -> PC = 0.5 (both classes predicted, M = 2)
    # recall: class 0 = 2/3, class 1 undefined (no GT) -> mAcc = 2/3 (M = 1)
    # IoU: 2/(2+1+0) = 2/3 and 0/(0+1+0) = 0 -> mIoU = 1/3; OP = 2/3
    s = seg_scores(np.array([[2, 1], [0, 0]]))
    assert s['PC'] == pytest.approx(0.5)
    assert s['mAcc'] == pytest.approx(2 / 3)
    assert s['mIoU'] == pytest.approx(1 / 3)
    assert s['OP'] == pytest.approx(2 / 3)
    assert s['recall'][1] is None


@pytest.mark.parametrize('bad, msg', [(np.zeros((2, 2)), 'all zeros'),
                                      (np.ones((2, 3)), 'square'),
                                      (np.array([[1, -1], [0, 1]]), '>= 0')])
def test_seg_scores_rejects_bad_confusion(bad, msg):
    with pytest.raises(ValueError, match=msg):
        seg_scores(bad)


# --------------------------------------------------------------------------- stitching


def test_stitch_and_upsample_tiny_grid():
    grid_map = stitch(np.array([[0, 1], [1, 0], [1, 2]]), np.array([3, 4, 5]), (2, 3))
    np.testing.assert_array_equal(grid_map, [[255, 3, 255],
                                             [4, 255, 5]])
    # 2x2 cells of 2 px -> 4x4 px, cropped to 3 rows and padded to 5 columns with fill
    px = upsample_grid(np.array([[1, 2], [3, 4]]), 2, 3, 5)
    np.testing.assert_array_equal(px, [[1, 1, 2, 2, 255],
                                       [1, 1, 2, 2, 255],
                                       [3, 3, 4, 4, 255]])


def test_stitch_rejects_overlap_and_outside():
    with pytest.raises(ValueError, match='share the grid cell'):
        stitch(np.array([[0, 0], [0, 0]]), np.array([1, 2]), (1, 1))
    with pytest.raises(ValueError, match='outside'):
        stitch(np.array([[0, 3]]), np.array([1]), (1, 3))


# --------------------------------------------------------------------------- metric

# bag A: 8 x 12 px -> 2 x 3 grid, patches at (0,0), (0,1), (1,2); bag B: 4 x 8 px,
# patches at (0,0), (0,1). Predictions and patch labels are set by hand.
PATCHES = [  # bag, (row, col), pred, gt
    ('A', (0, 0), 0, 0),
    ('A', (0, 1), 1, 0),
    ('A', (1, 2), 2, 2),
    ('B', (0, 0), 1, 1),
    ('B', (0, 1), 0, 2),
]
SHAPES = {'A': (8, 12), 'B': (4, 8)}


def _masks() -> dict:
    """Seeded region masks with some ignore (255) pixels."""
    rng = np.random.default_rng(0)
    masks = {}
    for name, shape in SHAPES.items():
        m = rng.integers(0, 3, size=shape).astype(np.uint8)
        m[rng.random(shape) < 0.15] = 255
        masks[name] = m
    return masks


def _samples(masks: dict, with_counts: bool = True) -> list:
    out = []
    for bag, (r, c), pred, gt in PATCHES:
        s = dict(bag_name=bag, grid=(r, c), patch_size=P, img_shape=(P, P),
                 pred_label=torch.tensor([pred]), gt_label=torch.tensor(gt),
                 bag_shape=SHAPES[bag])
        if with_counts:
            window = masks[bag][r * P:(r + 1) * P, c * P:(c + 1) * P]
            s['pixel_counts'] = torch.tensor(np.bincount(window[window != 255], minlength=3))
        out.append(s)
    return out


def _run(samples: list, **kwargs) -> tuple:
    metric = PatchSegMetric(**kwargs)
    metric.dataset_meta = dict(classes=CLASSES)
    metric.process({}, samples)
    return metric.compute_metrics(metric.results), metric


def _reference_confusion(masks: dict) -> np.ndarray:
    """Paint each bag's predictions into a pixel map with numpy slicing and compare it
    with the mask pixel by pixel (pixels without prediction or with GT 255 left out)."""
    conf = np.zeros((3, 3), np.int64)
    for name, mask in masks.items():
        pred_px = np.full(mask.shape, 255, np.int64)
        for bag, (r, c), pred, _ in PATCHES:
            if bag == name:
                pred_px[r * P:(r + 1) * P, c * P:(c + 1) * P] = pred
        valid = (pred_px != 255) & (mask != 255)
        np.add.at(conf, (mask[valid].astype(np.int64), pred_px[valid]), 1)
    return conf


def _hand_scores(conf: np.ndarray) -> dict:
    """eq. (7) and mean recall written out class by class."""
    prec, rec, iou = [], [], []
    for c in range(len(conf)):
        tp = conf[c, c]
        fp = sum(conf[g, c] for g in range(len(conf)) if g != c)
        fn = sum(conf[c, q] for q in range(len(conf)) if q != c)
        if tp + fp:
            prec.append(tp / (tp + fp))
        if tp + fn:
            rec.append(tp / (tp + fn))
        if tp + fp + fn:
            iou.append(tp / (tp + fp + fn))
    op = np.trace(conf) / conf.sum()
    return dict(OP=op, PC=np.mean(prec), mAcc=np.mean(rec), mIoU=np.mean(iou))


def test_metric_pixel_level_matches_pixel_by_pixel_reference():
    masks = _masks()
    metrics, metric = _run(_samples(masks))
    ref = _reference_confusion(masks)
    # 5 patches x 16 px = 80 px, minus the ignore pixels inside them
    inside = sum((masks[b][r * P:(r + 1) * P, c * P:(c + 1) * P] != 255).sum()
                 for b, (r, c), _, _ in PATCHES)
    assert ref.sum() == inside
    np.testing.assert_array_equal(metric.last_confusion, ref)
    for k, v in _hand_scores(ref).items():
        assert metrics[k] == pytest.approx(v), k
    # patch labels: (0,0) (1,0) (2,2) (1,1) (2,0) -> 3 of 5 right
    assert metrics['patch_acc'] == pytest.approx(3 / 5)
    assert set(metrics) == {'OP', 'PC', 'mAcc', 'mIoU', 'patch_acc'}


def test_metric_patch_level_without_pixel_counts():
    # (gt, pred) = (0,0) (0,1) (2,2) (1,1) (2,0) -> confusion [[1,1,0],[0,1,0],[1,0,1]]
    # TP (1,1,1); FP = column sums (2,2,1) - TP = (1,1,0); FN = row sums (2,1,2) - TP = (1,0,1)
    # OP = 3/5; PC = (1/2 + 1/2 + 1) / 3 = 2/3; mAcc = (1/2 + 1 + 1/2) / 3 = 2/3
    # mIoU = (1/3 + 1/2 + 1/2) / 3 = 4/9
    metrics, metric = _run(_samples(_masks(), with_counts=False))
    np.testing.assert_array_equal(metric.last_confusion, [[1, 1, 0], [0, 1, 0], [1, 0, 1]])
    assert metrics['OP'] == pytest.approx(3 / 5)
    assert metrics['PC'] == pytest.approx(2 / 3)
    assert metrics['mAcc'] == pytest.approx(2 / 3)
    assert metrics['mIoU'] == pytest.approx(4 / 9)
    assert metrics['patch_acc'] == pytest.approx(3 / 5)


def test_metric_ignores_patches_without_ground_truth():
    masks = _masks()
    base, _ = _run(_samples(masks))
    extra = _samples(masks)
    # two more patches of bag A, one with gt_label = ignore_index (9 here), one with -1;
    # their (wrong) predictions and pixel counts must change nothing
    extra.append(dict(bag_name='A', grid=(1, 0), patch_size=P, pred_label=torch.tensor(2),
                      gt_label=torch.tensor(9), pixel_counts=torch.tensor([16, 0, 0])))
    extra.append(dict(bag_name='A', grid=(1, 1), patch_size=P, pred_label=torch.tensor(2),
                      gt_label=torch.tensor(-1), pixel_counts=torch.tensor([0, 16, 0])))
    metrics, _ = _run(extra, ignore_index=9)
    assert metrics == pytest.approx(base)
    # with the default ignore_index 255, the label 9 is not a class id: error
    with pytest.raises(ValueError, match='gt_label 9'):
        _run(extra)


def test_metric_writes_one_picture_per_bag(tmp_path):
    masks = _masks()
    samples = _samples(masks)
    samples.append(dict(bag_name='A', grid=(1, 0), patch_size=P, pred_label=torch.tensor(1),
                        gt_label=torch.tensor(-1), bag_shape=(8, 12)))
    palette = [(10, 20, 30), (40, 50, 60), (70, 80, 90)]
    metric = PatchSegMetric(out_dir=str(tmp_path))
    metric.dataset_meta = dict(classes=CLASSES, palette=palette)
    metric.process({}, samples)
    metric.compute_metrics(metric.results)
    assert sorted(os.listdir(tmp_path)) == ['A.png', 'B.png']
    img = np.asarray(Image.open(tmp_path / 'A.png').convert('RGB'))
    w = 12  # bag A width; the ground truth starts after the 8-px separator
    assert img.shape[1] >= 2 * w + 8 and img.shape[0] > 8
    # prediction side: patch (0,1) predicted 1, patch (1,2) predicted 2, the unlabelled
    # patch (1,0) predicted 1, cell (0,2) has no patch -> white
    assert tuple(img[0 * P + 1, 1 * P + 2]) == palette[1]
    assert tuple(img[1 * P + 3, 2 * P]) == palette[2]
    assert tuple(img[1 * P + 1, 0 * P + 1]) == palette[1]
    assert tuple(img[0 * P + 1, 2 * P + 1]) == (255, 255, 255)
    # ground-truth side: patch (0,1) labelled 0; patch (1,0) has no label -> grey
    assert tuple(img[0 * P + 1, w + 8 + 1 * P + 1]) == palette[0]
    assert tuple(img[1 * P + 1, w + 8 + 0 * P + 1]) == (200, 200, 200)
    img_b = np.asarray(Image.open(tmp_path / 'B.png').convert('RGB'))
    assert tuple(img_b[2, 1 * P + 2]) == palette[0]  # bag B patch (0,1) predicted 0


def test_metric_without_ground_truth_raises():
    samples = [dict(bag_name='weak_0', grid=(0, k), patch_size=P, pred_label=torch.tensor(0),
                    gt_label=torch.tensor(-1)) for k in range(3)]
    with pytest.raises(ValueError, match='no labelled patches'):
        _run(samples)


def test_metric_rejects_mixed_counts_and_bad_samples():
    samples = _samples(_masks())
    del samples[0]['pixel_counts']
    with pytest.raises(ValueError, match='cannot be pooled'):
        _run(samples)
    bad = _samples(_masks())
    bad[1]['pred_label'] = torch.tensor(3)
    with pytest.raises(ValueError, match="bag 'A' patch \\(row 0, col 1\\): pred_label 3"):
        _run(bad)
    bad = _samples(_masks())
    bad[2]['pixel_counts'] = torch.tensor([1, 2])
    with pytest.raises(ValueError, match='pixel_counts must be 3 integers'):
        _run(bad)
    dup = _samples(_masks())
    dup[1]['grid'] = (0, 0)
    with pytest.raises(ValueError, match="bag 'A'.*share the grid cell"):
        _run(dup)


def test_metric_through_evaluator_with_data_elements():
    # mmengine's Evaluator turns BaseDataElement samples into dicts via to_dict()
    from mmengine.evaluator import Evaluator
    from mmengine.structures import BaseDataElement
    elems = []
    for bag, (r, c), pred, gt in PATCHES:
        e = BaseDataElement(metainfo=dict(bag_name=bag, grid=(r, c), patch_size=P))
        e.pred_label = torch.tensor([pred])
        e.gt_label = torch.tensor(gt)
        elems.append(e)
    evaluator = Evaluator(PatchSegMetric(classes=CLASSES))
    evaluator.process(elems)
    # same numbers as the patch-level test: OP 3/5, mIoU 4/9
    out = evaluator.evaluate(len(elems))
    assert out['OP'] == pytest.approx(3 / 5)
    assert out['mIoU'] == pytest.approx(4 / 9)


@pytest.mark.parametrize('scope', ['mmseg', 'mmdet'])
def test_builds_through_registries(scope):
    import importlib
    metrics_registry = importlib.import_module(f'{scope}.registry').METRICS
    metric = metrics_registry.build(dict(type='PatchSegMetric'))
    assert isinstance(metric, PatchSegMetric) and metric.ignore_index == 255
