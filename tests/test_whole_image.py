"""Whole-image evaluation of patch predictions (PU-detection protocol, Zhao et al. 2021,
sect. 3.1-3.2): WholeImageDetectionMetric, the patch -> frame fields of CellDetDataset and
an end-to-end run on the MITOS-ATYPIA-14 converter's output."""
import json
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.registry import init_default_scope

import projects.common.datasets  # noqa: F401  (registers CellDetDataset)
import projects.common.metrics  # noqa: F401  (registers the metrics)
from test_mitos_atypia14 import ARGS, make_root, mitos

# --------------------------------------------------------------------- hand-built case
# Whole images (W x H), GT boxes 10x10 (COCO xywh), category 1 'mitosis':
#   f.png 100x60: g1 [10,25] (point = centre (15,30)); g2 [45,25] with annotated point
#                 (50,31) (centre would be (50,30)); g3 [80,25] (centre (85,30))
#   g.png 60x60:  [5,5] and [40,40]
#   h.png 60x60:  no GT
# Patches (60x60): f: P0 at (0,0), P1 at (40,0) (overlap x 40..60); g, h: one patch each.
FRAMES = [('f.png', 100, 60, [([10, 25], None), ([45, 25], [50, 31]), ([80, 25], None)]),
          ('g.png', 60, 60, [([5, 5], None), ([40, 40], None)]),
          ('h.png', 60, 60, [])]
# per patch: (parent, offset, [(box in patch pixels, score)])
PATCHES = {
    'P0': ('f.png', [0, 0], [([10, 25, 20, 35], 0.9),    # a: g1
                             ([45, 25, 55, 35], 0.8),    # b: g2
                             ([0, 0, 10, 10], 0.5)]),    # c: score not > 0.5 -> dropped
    'P1': ('f.png', [40, 0], [([5.5, 25, 15.5, 35], 0.7),  # b': frame [45.5,25,55.5,35]
                              ([40, 25, 50, 35], 0.95),    # d: frame [80,25,90,35] = g3
                              ([50, 50, 60, 60], 0.6)]),   # e: frame [90,50,100,60], no GT
    'G': ('g.png', [0, 0], [([5, 5, 15, 15], 0.9)]),       # finds the first GT of g
    'H': ('h.png', [0, 0], [([20, 20, 30, 30], 0.8)]),     # false positive
}


def _write_frames(tmp_path, frames=FRAMES, categories=((1, 'mitosis'), )) -> str:
    images, anns = [], []
    for i, (name, w, h, gts) in enumerate(frames, start=1):
        images.append(dict(id=i, file_name=name, width=w, height=h))
        for xy, point in gts:
            ann = dict(id=len(anns) + 1, image_id=i, category_id=1, bbox=[*xy, 10, 10],
                       area=100, iscrowd=0)
            if point is not None:
                ann['point'] = point
            anns.append(ann)
    path = osp.join(str(tmp_path), 'frames.json')
    with open(path, 'w') as f:
        json.dump(dict(images=images, annotations=anns,
                       categories=[dict(id=i, name=n) for i, n in categories]), f)
    return path


def _sample(key, patches=PATCHES, **override):
    """A patch DetDataSample as mmengine's Evaluator hands it to process(): via to_dict()."""
    parent, offset, preds = patches[key]
    boxes = torch.tensor([b for b, _ in preds], dtype=torch.float32).reshape(-1, 4)
    s = dict(img_id=key, img_path=f'{key}.png', ori_shape=(60, 60), img_shape=(60, 60),
             scale_factor=(1.0, 1.0), parent=parent, offset=offset,
             pred_instances=dict(bboxes=boxes,
                                 scores=torch.tensor([p for _, p in preds], dtype=torch.float32),
                                 labels=torch.zeros(len(preds), dtype=torch.int64)))
    s.update(override)
    return s


def _metric(ann_file, **kwargs):
    from mmdet.registry import METRICS
    metric = METRICS.build(dict(type='WholeImageDetectionMetric', ann_file=ann_file,
                                radius=5, **kwargs))
    metric.dataset_meta = dict(classes=('mitosis', ))
    return metric


def _run(metric, keys=('P0', 'P1', 'G', 'H')):
    metric.process({}, [_sample(k) for k in keys])
    return metric.compute_metrics(metric.results)


def test_whole_image_merge_by_nms_and_hand_counts(tmp_path):
    metric = _metric(_write_frames(tmp_path))
    metric.process({}, [_sample('P0'), _sample('P1')])
    metric.process({}, [_sample('G'), _sample('H')])
    merged = metric.merge(metric.results)
    assert list(merged) == ['f.png', 'g.png', 'h.png']  # ann_file order
    # f: c dropped (0.5 is not > 0.5); b' (IoU with b = 9.5*10 / (200 - 95) = 0.905 > 0.5,
    # lower score) suppressed; P1 boxes shifted by (40, 0); sorted by score
    np.testing.assert_allclose(merged['f.png']['boxes'], [[80, 25, 90, 35], [10, 25, 20, 35],
                                                          [45, 25, 55, 35], [90, 50, 100, 60]])
    np.testing.assert_allclose(merged['f.png']['scores'], [0.95, 0.9, 0.8, 0.6], rtol=1e-6)
    res = metric.compute_metrics(metric.results)
    # f: a->g1 (centre (15,30)), b->g2 (centre (50,30), 1 px from its point (50,31)),
    #    d->g3, e fp -> (tp, fp, fn) = (3, 1, 0); g: (1, 0, 1); h: (0, 1, 0)
    # pooled tp 4, fp 2, fn 1: recall 4/5, precision 4/6, F1 8/11
    assert (res['recall'], res['precision'], res['f1']) == pytest.approx((0.8, 2 / 3, 8 / 11))
    # avg_recall over f, g (GT): (1 + 1/2) / 2; avg_precision over f, g, h: (3/4 + 1 + 0) / 3
    assert res['avg_recall'] == pytest.approx(0.75)
    assert res['avg_precision'] == pytest.approx(1.75 / 3)
    # boxes: a, b, d coincide with their GT, g's prediction too: the same counts
    assert (res['box_recall'], res['box_precision']) == pytest.approx((0.8, 2 / 3))
    assert 0 < res['coco_AP50'] <= 1


def test_whole_image_without_nms_duplicates_are_false_positives(tmp_path):
    # nms_iou=1: IoU > 1 never holds, nothing is suppressed; b' stays and, b having taken
    # g2, is an fp: f (3, 2, 0) -> pooled tp 4, fp 3, fn 1
    res = _run(_metric(_write_frames(tmp_path), nms_iou=1.0))
    assert (res['recall'], res['precision']) == pytest.approx((0.8, 4 / 7))
    assert res['avg_precision'] == pytest.approx((3 / 5 + 1 + 0) / 3)


def test_whole_image_patch_filter(tmp_path):
    ann = _write_frames(tmp_path)
    # max_per_patch=1: P0 keeps a (0.9), P1 keeps d (0.95): f (2, 0, 1), g (1, 0, 1),
    # h (0, 1, 0) -> tp 3, fp 1, fn 2; avg_recall (2/3 + 1/2) / 2, avg_precision (1+1+0)/3
    res = _run(_metric(ann, max_per_patch=1))
    assert (res['recall'], res['precision']) == pytest.approx((0.6, 0.75))
    assert (res['avg_recall'], res['avg_precision']) == pytest.approx((7 / 12, 2 / 3))
    # patch_score_thr=0.49 lets c (0.5, centre (5, 5), no GT there) through: f (3, 2, 0)
    res = _run(_metric(ann, patch_score_thr=0.49))
    assert (res['recall'], res['precision']) == pytest.approx((0.8, 4 / 7))
    # the whole-image score_thr acts after the merge: 0.85 keeps d, a (f: 2, 0, 1), g's
    # 0.9 (1, 0, 1), not h's 0.8 -> tp 3, fp 0, fn 2; h has no counted prediction
    res = _run(_metric(ann, score_thr=0.85))
    assert (res['recall'], res['precision']) == pytest.approx((0.6, 1.0))
    assert res['avg_precision'] == pytest.approx(1.0)


def test_whole_image_errors(tmp_path):
    ann = _write_frames(tmp_path)
    metric = _metric(ann)
    no_meta = _sample('P0')
    del no_meta['parent'], no_meta['offset']
    with pytest.raises(ValueError, match=r"img_path=P0\.png.*'parent', 'offset'.*PackDetInputs "
                                         r"meta_keys"):
        metric.process({}, [no_meta])
    for bad in ([-1, 0], [0], 'ab', [np.nan, 0]):
        with pytest.raises(ValueError, match=r"img_path=P1\.png.*\"offset\" must be"):
            metric.process({}, [_sample('P1', offset=bad)])
    with pytest.raises(ValueError, match=r"'x\.png' is not an image file_name of " + ann):
        metric.process({}, [_sample('P0', parent='x.png')])
    with pytest.raises(ValueError, match=r'60x60 patch at offset \(50, 0\) reaches outside '
                                         r'f\.png \(100x60\)'):
        metric.process({}, [_sample('P1', offset=[50, 0])])
    assert metric.results == []
    # h.png receives no patch
    metric.process({}, [_sample(k) for k in ('P0', 'P1', 'G')])
    with pytest.raises(ValueError, match=ann + r': 1 of 3 images received no patch.*h\.png'):
        metric.compute_metrics(metric.results)
    # f.png only half covered: x 60..100 of 60 rows = 2400 px^2 outside P0
    metric = _metric(ann)
    metric.process({}, [_sample(k) for k in ('P0', 'G', 'H')])
    with pytest.raises(ValueError, match=r'image f\.png \(100x60\) is not covered by its 1 '
                                         r'patches \(2400 px\^2'):
        metric.compute_metrics(metric.results)
    # no result at all: nothing to merge, no error (CellDetectionMetric over zero images)
    assert metric.compute_metrics([])['avg_recall'] == 1.0
    # GT category unknown to the dataset classes
    metric = _metric(ann)
    metric.dataset_meta = dict(classes=('tumour', ))
    metric.process({}, [_sample(k) for k in PATCHES])
    with pytest.raises(ValueError, match=ann + r": annotation id 1 \(f\.png\) has category "
                                               r"'mitosis'"):
        metric.compute_metrics(metric.results)
    # arguments and the GT file
    with pytest.raises(ValueError, match='nms_iou'):
        _metric(ann, nms_iou=0)
    with pytest.raises(ValueError, match='max_per_patch'):
        _metric(ann, max_per_patch=0)
    with pytest.raises(FileNotFoundError, match='missing.json'):
        _metric(str(tmp_path / 'missing.json'))
    bad = _write_frames(tmp_path, frames=[('f.png', 100, 60, [([10, 25], [1, np.inf])])])
    with pytest.raises(ValueError, match=bad + r': annotation id 1: "point" must be'):
        _metric(bad)


# ------------------------------------------------------------ CellDetDataset pass-through


def _patch_json(tmp_path, **fields):
    img = dict(id=5, file_name='p.png', width=60, height=60, **fields)
    path = osp.join(str(tmp_path), 'patches.json')
    with open(path, 'w') as f:
        json.dump(dict(images=[img], annotations=[],
                       categories=[dict(id=1, name='mitosis')]), f)
    return path


def _dataset(ann_file, pipeline=(), **kwargs):
    from mmdet.registry import DATASETS
    init_default_scope('mmdet')
    cfg = dict(type='CellDetDataset', ann_file=ann_file, data_prefix=dict(img=''),
               pipeline=list(pipeline))
    cfg.update(kwargs)
    return DATASETS.build(cfg)


def test_cell_det_dataset_passes_parent_and_offset(tmp_path):
    info = _dataset(_patch_json(tmp_path, parent='f.png', offset=[40, 0])).get_data_info(0)
    assert info['parent'] == 'f.png' and info['offset'] == [40, 0]
    info = _dataset(_patch_json(tmp_path)).get_data_info(0)
    assert 'parent' not in info and 'offset' not in info  # optional fields
    for bad in ([40], [-1, 0], ['a', 0], 7, [True, 0]):
        path = _patch_json(tmp_path, offset=bad)
        with pytest.raises(ValueError, match=path + r': image id 5 \(p\.png\): "offset"'):
            _dataset(path)
    path = _patch_json(tmp_path, parent='')
    with pytest.raises(ValueError, match=path + r': image id 5 \(p\.png\): "parent"'):
        _dataset(path)
    with open(path) as f:  # json cannot hold NaN by the standard, Python writes it anyway
        raw = json.load(f)
    raw['images'][0].update(parent='f.png', offset=[float('nan'), 0])
    with open(path, 'w') as f:
        json.dump(raw, f)
    with pytest.raises(ValueError, match='"offset" must be'):
        _dataset(path)


# -------------------------------------------------------------------------- end to end

META_KEYS = ('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor', 'parent',
             'offset')
# patch-level annotation counts and frame mitoses of the converter fixture (worked out in
# tests/test_mitos_atypia14.py): a mitosis in an overlap appears in every patch holding it
PATCH_ANNS = {'A03_00Aa': 6, 'A03_00Ab': 0, 'A03_00Ac': 0, 'A04_00Aa': 2, 'A04_00Ab': 2,
              'A04_00Ac': 8}
FRAME_MITOSES = {'A03_00Aa': 3, 'A03_00Ab': 0, 'A03_00Ac': 0, 'A04_00Aa': 2, 'A04_00Ab': 1,
                 'A04_00Ac': 2}


def test_end_to_end_perfect_patch_predictions_on_converted_mitos(tmp_path):
    from mmengine.evaluator import Evaluator
    from mmengine.structures import InstanceData

    out = str(tmp_path / 'out')
    assert mitos.main(['--root', make_root(tmp_path), '--out', out, '--seed', '0',
                       *ARGS]) == 0
    with open(osp.join(out, 'annotations', 'frames.json')) as f:
        groups = json.load(f)['groups']
    pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True),
                dict(type='Resize', scale_factor=1.0, keep_ratio=True),
                dict(type='PackDetInputs', meta_keys=META_KEYS)]
    removed = 0
    for k in range(5):
        frame = groups[f'fold{k}'][0]
        ds = _dataset(f'annotations/test_fold{k}.json', pipeline, data_root=out,
                      data_prefix=dict(img='images/'))
        evaluator = Evaluator(dict(
            type='WholeImageDetectionMetric',
            ann_file=osp.join(out, 'annotations', f'frames_test_fold{k}.json')))
        evaluator.dataset_meta = ds.metainfo
        n_fed = 0
        for i in range(len(ds)):
            sample = ds[i]['data_samples']
            gt = sample.gt_instances
            # the GT boxes of the patch as "perfect predictions", in patch pixels
            sample.pred_instances = InstanceData(
                bboxes=gt.bboxes.tensor.clone(), labels=gt.labels.clone(),
                scores=torch.full((len(gt.labels), ), 0.9))
            n_fed += len(gt.labels)
            evaluator.process([sample])
        metric = evaluator.metrics[0]
        merged = metric.merge(metric.results)
        res = evaluator.evaluate(len(ds))
        assert n_fed == PATCH_ANNS[frame]
        # duplicates in the overlaps coincide after the shift (IoU 1) and NMS keeps one
        assert list(merged) == [f'{frame}.png']
        assert len(merged[f'{frame}.png']['boxes']) == FRAME_MITOSES[frame]
        removed += PATCH_ANNS[frame] - FRAME_MITOSES[frame]
        for key in ('recall', 'precision', 'avg_recall', 'avg_precision', 'box_recall',
                    'box_precision'):
            assert res[f'cell/{key}'] == 1.0, (frame, key)
    # the val frame is one of the six; the folds hold the other five, so at least one
    # frame with mitoses in overlaps (A03_00Aa, A04_00Ab, A04_00Ac) is tested
    val = groups['val'][0]
    assert removed == sum(PATCH_ANNS.values()) - sum(FRAME_MITOSES.values()) \
        - (PATCH_ANNS[val] - FRAME_MITOSES[val]) > 0

