"""Elkan & Noto calibration: projects/common/calibration.py and
tools/analysis_tools/calibrate_threshold.py on hand-made predictions, plus one smoke run."""
import json
import os.path as osp
import pickle
import sys

import numpy as np
import pytest
import torch

from conftest import REPO, write_config
from projects.common.calibration import (calibrated_threshold, labelled_cell_scores,
                                         labelling_frequency, read_threshold)

sys.path.insert(0, osp.join(REPO, 'tools', 'analysis_tools'))
import calibrate_threshold  # noqa: E402

CE_CONFIG = osp.join(REPO, 'configs/pu_detection/faster-rcnn_r18-c32_fpn_ce_500i_'
                     'synthetic-sparse30.py')  # two-stage, val_evaluator radius 8
YOLLO_CONFIG = osp.join(REPO, 'configs/exclusive_ce/yollo_r18-c32_ce_300i_synthetic-sparse30.py')

# Four annotated cells and three detections (box centres), radius 8:
GT = [[10, 10], [50, 50], [90, 90], [16, 10]]
PRED = [[11, 10], [13, 10], [50, 58], [90, 99]]
SCORES = [0.3, 0.8, 0.6, 0.9]
# cell (10, 10): (11, 10) at 1 px scores 0.3, (13, 10) at 3 px scores 0.8 -> 0.8 (the highest,
#   not the nearest);
# cell (50, 50): (50, 58) at exactly 8 px -> within the radius (distance <= radius): 0.6;
# cell (90, 90): (90, 99) at 9 px > 8 -> no detection: 0.0;
# cell (16, 10): (13, 10) at 3 px (0.8) and (11, 10) at 5 px (0.3) -> 0.8: the box that
#   already represents cell (10, 10) represents this one too (not one-to-one).
CELL_SCORES = [0.8, 0.6, 0.0, 0.8]


def test_labelled_cell_scores_by_hand():
    got = labelled_cell_scores(np.array(GT, float), np.array(PRED, float), SCORES, radius=8)
    assert got.tolist() == CELL_SCORES
    # radius 0: only exact hits; none here
    assert labelled_cell_scores(GT, PRED, SCORES, 0).tolist() == [0.0, 0.0, 0.0, 0.0]
    # radius 9: (90, 99) now reaches (90, 90) -> 0.9
    assert labelled_cell_scores(GT, PRED, SCORES, 9).tolist() == [0.8, 0.6, 0.9, 0.8]
    # no prediction at all: every cell scores 0; no cell: empty
    assert labelled_cell_scores(GT, np.zeros((0, 2)), [], 8).tolist() == [0.0] * 4
    assert labelled_cell_scores(np.zeros((0, 2)), PRED, SCORES, 8).shape == (0, )


def test_labelled_cell_scores_rejects_bad_input():
    with pytest.raises(ValueError, match='4 predictions but 3 scores'):
        labelled_cell_scores(GT, PRED, SCORES[:3], 8)
    with pytest.raises(ValueError, match=r'probabilities in \[0, 1\].*\[0.3, 1.5\]'):
        labelled_cell_scores(GT, PRED, [0.3, 0.8, 0.6, 1.5], 8)
    with pytest.raises(ValueError, match='radius must be a finite number >= 0'):
        labelled_cell_scores(GT, PRED, SCORES, -1)


def _images():
    return [
        dict(gt=np.array(GT, float), pred=np.array(PRED, float), scores=np.array(SCORES)),
        # one cell, one detection on it at 2 px with score 0.4
        dict(gt=np.array([[30., 30.]]), pred=np.array([[30., 32.]]), scores=np.array([0.4])),
        # an image without annotation: its detection (0.9) is no labelled example
        dict(gt=np.zeros((0, 2)), pred=np.array([[5., 5.]]), scores=np.array([0.9])),
    ]


def test_labelling_frequency_pools_cells():
    # cells: 0.8 + 0.6 + 0.0 + 0.8 (image 1) + 0.4 (image 2) = 2.6 over 5 cells -> c = 0.52
    # (the mean of per-image means would be (0.55 + 0.4) / 2 = 0.475: not e1)
    assert labelling_frequency(_images(), radius=8) == pytest.approx(0.52)
    # threshold 0.5 c = 0.26; another base: 0.4 * 0.52 = 0.208
    assert calibrated_threshold(0.52) == pytest.approx(0.26)
    assert calibrated_threshold(0.52, base=0.4) == pytest.approx(0.208)
    assert calibrated_threshold(1.0) == 0.5  # fully annotated and calibrated: 0.5 itself


def test_no_annotated_cell_and_bad_c_are_errors():
    with pytest.raises(ValueError, match=r'val_preds.pkl: no annotated cell in 1 images'):
        labelling_frequency(_images()[2:], 8, source='val_preds.pkl')
    with pytest.raises(ValueError, match='no annotated cell in 0 images'):
        labelling_frequency([], 8)
    with pytest.raises(ValueError, match=r'c must lie in \(0, 1\], got 0.0 .*no annotated '
                       'cell has a detection'):
        calibrated_threshold(0.0)
    with pytest.raises(ValueError, match=r'c must lie in \(0, 1\]'):
        calibrated_threshold(1.2)
    with pytest.raises(ValueError, match=r'base threshold must lie in \(0, 1\]'):
        calibrated_threshold(0.5, base=0.0)


# --- the tool, on predictions written by hand in the format of tools/test.py --out --------

def _entry(name, boxes, scores, gt_points=None, gt_boxes=None):
    """One element of the list mmengine's DumpResults pickles: the data sample as a dict
    (metainfo keys at the top level, instance data as dicts of CPU tensors)."""
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    e = dict(img_path=f'/data/images/{name}', img_id=0, ori_shape=(100, 100),
             pred_instances=dict(bboxes=boxes, scores=torch.tensor(scores, dtype=torch.float32),
                                 labels=torch.zeros(len(scores), dtype=torch.long)))
    if gt_points is not None:
        e['gt_points'] = np.asarray(gt_points, np.float32).reshape(-1, 2)
    if gt_boxes is not None:
        e['gt_instances'] = dict(bboxes=torch.tensor(gt_boxes, dtype=torch.float32),
                                 labels=torch.zeros(len(gt_boxes), dtype=torch.long))
    return e


def _box(cx, cy, half=4.0):
    return [cx - half, cy - half, cx + half, cy + half]


def _write_preds(path):
    entries = [
        _entry('a.png', [_box(*p) for p in PRED], SCORES, gt_points=GT),
        # no gt_points: the GT points are the gt_instances box centres, (30, 30)
        _entry('b.png', [_box(30, 32)], [0.4], gt_boxes=[[25., 25., 35., 35.]]),
        _entry('c.png', [_box(5, 5)], [0.9], gt_points=np.zeros((0, 2))),
    ]
    with open(path, 'wb') as f:
        pickle.dump(entries, f)
    return str(path)


def test_read_threshold_number_or_calibration_json(tmp_path):
    assert read_threshold('0.25', '--score-thr') == 0.25
    good = tmp_path / 'calibration.json'
    good.write_text(json.dumps(dict(c=0.44, threshold=0.22)))
    assert read_threshold(str(good), 'x') == 0.22
    with pytest.raises(FileNotFoundError, match='--score-thr: nope.json is neither'):
        read_threshold('nope.json', '--score-thr')
    bad = tmp_path / 'bad.json'
    bad.write_text('{"threshold": 0.2')
    with pytest.raises(ValueError, match='bad.json: not valid JSON'):
        read_threshold(str(bad), 'x')
    for data in (dict(c=0.4), dict(threshold='0.2'), dict(threshold=True), [0.2]):
        bad.write_text(json.dumps(data))
        with pytest.raises(ValueError, match='bad.json: no numeric "threshold" key'):
            read_threshold(str(bad), 'x')
    with pytest.raises(ValueError, match='PU: the threshold must be a finite number, got nan'):
        read_threshold('nan', 'PU')


def test_tool_on_hand_made_predictions(tmp_path, capsys):
    preds = _write_preds(tmp_path / 'val_preds.pkl')
    out = str(tmp_path / 'thr.json')
    # no --radius: the CE config's val_evaluator radius, 8 -> the cells of
    # test_labelling_frequency_pools_cells: c = 2.6 / 5 = 0.52, threshold 0.26
    result = calibrate_threshold.main([CE_CONFIG, '--preds', preds, '--out', out, '--apply'])
    assert result['radius'] == 8.0
    assert result['c'] == pytest.approx(0.52, abs=1e-6)  # float32 scores: 1e-6
    assert result['threshold'] == pytest.approx(0.26, abs=1e-6)
    # 3 images, 5 annotated cells, one of them ((90, 90)) without a detection
    assert (result['images'], result['cells'], result['undetected']) == (3, 5, 1)
    saved = json.load(open(out))
    assert saved['c'] == result['c'] and saved['threshold'] == result['threshold']
    assert saved['split'] == 'val' and saved['predictions'] == preds
    # two-stage mmdet model + CellDetectionMetric test evaluator
    assert saved['cfg_options'] == ['model.test_cfg.rcnn.score_thr=0.26',
                                    'test_evaluator.score_thr=0.26']
    text = capsys.readouterr().out
    assert 'c = 0.5200' in text and 'threshold = 0.5 c = 0.2600' in text
    assert ('--cfg-options model.test_cfg.rcnn.score_thr=0.26 test_evaluator.score_thr=0.26'
            in text)

    # --radius 9 reaches (90, 90): c = (2.6 + 0.9) / 5 = 0.7, threshold 0.35
    result = calibrate_threshold.main([CE_CONFIG, '--preds', preds, '--radius', '9',
                                       '--out', out])
    assert result['c'] == pytest.approx(0.7, abs=1e-6)
    assert json.load(open(out))['threshold'] == pytest.approx(0.35, abs=1e-6)


def test_apply_options_one_stage_and_evaluator_lists():
    from projects.common.runner_utils import load_config
    cfg = load_config(YOLLO_CONFIG)
    assert calibrate_threshold.apply_options(cfg, 0.26) == [
        'model.test_cfg.score_thr=0.26', 'test_evaluator.score_thr=0.26']
    # a list of evaluators: the CellDetectionMetric is addressed by its index
    cfg.test_evaluator = [dict(type='DumpResults', out_file_path='x.pkl'),
                          dict(type='mmdet.CellDetectionMetric', radius=6.0)]
    assert calibrate_threshold.apply_options(cfg, 1 / 3) == [
        'model.test_cfg.score_thr=0.333333', 'test_evaluator.1.score_thr=0.333333']


def test_split_config_predicts_the_incomplete_val_split_with_all_scores():
    cfg = calibrate_threshold.split_config(CE_CONFIG, 'val', None)
    assert cfg.test_dataloader.dataset.ann_file == 'annotations/val.json'
    assert any(t['type'] == 'SparsifyAnnotations' for t in cfg.test_dataloader.dataset.pipeline)
    assert cfg.test_evaluator == cfg.val_evaluator
    assert cfg.model.test_cfg.rcnn.score_thr == 0.0  # every detection is dumped
    # --cfg-options are merged after, so they can set the score threshold back
    cfg = calibrate_threshold.split_config(CE_CONFIG, 'val',
                                           {'model.test_cfg.rcnn.score_thr': 0.01})
    assert cfg.model.test_cfg.rcnn.score_thr == 0.01


def test_tool_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='nowhere.pkl: prediction file not found'):
        calibrate_threshold.main([CE_CONFIG, '--preds', str(tmp_path / 'nowhere.pkl'),
                                  '--out', str(tmp_path / 'o.json')])
    empty = str(tmp_path / 'unlabelled.pkl')
    with open(empty, 'wb') as f:
        pickle.dump([_entry('c.png', [_box(5, 5)], [0.9], gt_points=np.zeros((0, 2)))], f)
    with pytest.raises(ValueError, match='unlabelled.pkl: no annotated cell in 1 images'):
        calibrate_threshold.main([CE_CONFIG, '--preds', empty, '--out', str(tmp_path / 'o.json')])
    missed = str(tmp_path / 'missed.pkl')  # one cell, no detection near it: c = 0
    with open(missed, 'wb') as f:
        pickle.dump([_entry('d.png', [_box(80, 80)], [0.9], gt_points=[[10, 10]])], f)
    with pytest.raises(ValueError, match=r'missed.pkl: labelling frequency c must lie in'):
        calibrate_threshold.main([CE_CONFIG, '--preds', missed, '--out', str(tmp_path / 'o.json')])
    logits = str(tmp_path / 'logits.pkl')
    with open(logits, 'wb') as f:
        pickle.dump([_entry('e.png', [_box(10, 10)], [2.5], gt_points=[[10, 10]])], f)
    with pytest.raises(ValueError, match=r'logits.pkl: image e.png: scores must be'):
        calibrate_threshold.main([CE_CONFIG, '--preds', logits, '--out', str(tmp_path / 'o.json')])
    with pytest.raises(FileNotFoundError, match='nothing.pth: checkpoint file not found'):
        calibrate_threshold.main([CE_CONFIG, str(tmp_path / 'nothing.pth'),
                                  '--work-dir', str(tmp_path / 'w')])
    with pytest.raises(FileNotFoundError, match='no_config.py: config file not found'):
        calibrate_threshold.main([str(tmp_path / 'no_config.py'), '--preds', empty])
    with pytest.raises(ValueError, match='give a CHECKPOINT'):
        calibrate_threshold.main([CE_CONFIG])


# --- smoke test: the real tools/test.py run on the tiny synthetic set ----------------------

TINY_CE = '''
_base_ = '{repo}/configs/pu_detection/faster-rcnn_r18-c32_fpn_ce_500i_synthetic-sparse30.py'
data_root = '{data}/'
model = dict(
    backbone=dict(base_channels=8),
    neck=dict(in_channels=[8, 16, 32, 64], out_channels=16),
    rpn_head=dict(in_channels=16, feat_channels=16),
    roi_head=dict(bbox_roi_extractor=dict(out_channels=16),
                  bbox_head=dict(in_channels=16, fc_out_channels=32)))
val_dataloader = dict(num_workers=0, persistent_workers=False, dataset=dict(data_root=data_root))
test_dataloader = dict(num_workers=0, persistent_workers=False,
                       dataset=dict(data_root=data_root))
'''


def _untrained_checkpoint(cfg_path: str, path: str) -> str:
    """A checkpoint of the freshly initialised tiny detector (training is not the point)."""
    from mmengine.registry import init_default_scope

    from projects.common.runner_utils import load_config
    from mmdet.registry import MODELS
    init_default_scope('mmdet')
    torch.manual_seed(0)
    model = MODELS.build(load_config(cfg_path).model)
    model.init_weights()
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), path)
    return path


def test_smoke_end_to_end_on_tiny_synthetic(tmp_path, tiny_synthetic, capsys):
    # the tool runs in this process (one interpreter start less); tools/test.py in a child
    from projects.common.sparsify import image_seed, keep_count, nested_subsets
    cfg = write_config(tmp_path, TINY_CE, tiny_synthetic, 'tiny_ce.py')
    ckpt = _untrained_checkpoint(cfg, str(tmp_path / 'untrained.pth'))
    work, out = str(tmp_path / 'calib'), str(tmp_path / 'thr.json')
    calibrate_threshold.main([cfg, ckpt, '--work-dir', work, '--out', out, '--apply'])
    stdout = capsys.readouterr().out
    res = json.load(open(out))
    with open(res['predictions'], 'rb') as f:
        raw = pickle.load(f)

    # the dump is the val split with its incomplete (30%, nested, seed 0) labels
    with open(osp.join(tiny_synthetic, 'annotations', 'val.json')) as f:
        coco = json.load(f)
    assert sorted(osp.basename(r['img_path']) for r in raw) == \
        sorted(osp.basename(im['file_name']) for im in coco['images'])
    for r in raw:
        im = next(i for i in coco['images'] if osp.basename(i['file_name']) ==
                  osp.basename(r['img_path']))
        anns = [a for a in coco['annotations'] if a['image_id'] == im['id']]
        kept = nested_subsets(len(anns), [0.3], image_seed(0, im['file_name']))[0.3]
        assert len(kept) == keep_count(len(anns), 0.3)
        np.testing.assert_allclose(np.asarray(r['gt_points']).reshape(-1, 2),
                                   np.array([anns[i]['point'] for i in kept]).reshape(-1, 2),
                                   atol=1e-3)

    # c recomputed by brute force from the raw pickle: per cell, the max score of a box whose
    # centre lies within the radius (8 px), 0 if none; mean over all cells
    cell_scores = []
    for r in raw:
        boxes = np.asarray(r['pred_instances']['bboxes'], float)
        scores = np.asarray(r['pred_instances']['scores'], float)
        for gx, gy in np.asarray(r['gt_points'], float).reshape(-1, 2):
            best = 0.0
            for (x1, y1, x2, y2), s in zip(boxes, scores):
                if np.hypot((x1 + x2) / 2 - gx, (y1 + y2) / 2 - gy) <= 8.0:
                    best = max(best, s)
            cell_scores.append(best)
    assert res['cells'] == len(cell_scores) > 0
    assert res['c'] == pytest.approx(np.mean(cell_scores), abs=1e-9)
    assert res['threshold'] == pytest.approx(0.5 * res['c'], abs=1e-12)
    thr = f'{res["threshold"]:.6g}'
    assert f'model.test_cfg.rcnn.score_thr={thr} test_evaluator.score_thr={thr}' in stdout
