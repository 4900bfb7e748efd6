"""tools/analysis_tools/score_sweep.py on hand-made predictions."""
import json
import os.path as osp
import pickle
import sys

import numpy as np
import pytest

from conftest import REPO

sys.path.insert(0, osp.join(REPO, 'tools', 'analysis_tools'))
import score_sweep  # noqa: E402


def _write(path, entries):
    with open(path, 'wb') as f:
        pickle.dump(entries, f)
    return str(path)


def _entry(gt_points, boxes, scores):
    return dict(img_path=f'/x/img{len(scores)}.png', gt_points=np.asarray(gt_points, float),
                pred_instances=dict(bboxes=np.asarray(boxes, float).reshape(-1, 4),
                                    scores=np.asarray(scores, float),
                                    labels=np.zeros(len(scores), int)))


def test_sweep_counts_by_hand(tmp_path):
    # GT at (10, 10) and (50, 50). Predictions (box centres): (10, 11) score 0.9 -> matches
    # GT 1; (90, 90) score 0.6 -> nothing near; (50, 49) score 0.4 -> matches GT 2.
    e = _entry([[10, 10], [50, 50]],
               [[6, 7, 14, 15], [86, 86, 94, 94], [46, 45, 54, 53]], [0.9, 0.6, 0.4])
    path = _write(tmp_path / 'p.pkl', [e])
    out_json = str(tmp_path / 's.json')
    summary = score_sweep.main(['a=' + path, '--radius', '5', '--thresholds', '0.3', '0.5',
                                '0.95', '--out-json', out_json,
                                '--out-png', str(tmp_path / 's.png')])['a']
    # t=0.5: tp 1 (0.9), fp 1 (0.6), fn 1 -> recall 0.5, precision 0.5, F1 0.5
    assert (summary['recall'], summary['precision'], summary['f1']) == (0.5, 0.5, 0.5)
    # t=0.3: tp 2, fp 1, fn 0 -> recall 1, precision 2/3, F1 = 4 / 5 = 0.8 (the best)
    assert summary['best_threshold'] == 0.3
    assert summary['best_f1'] == pytest.approx(0.8)
    assert summary['best_precision'] == pytest.approx(2 / 3)
    rows = json.load(open(out_json))['rows']['a']
    # t=0.95: no prediction kept -> tp 0, fp 0, fn 2: recall 0, precision 1 (nothing claimed)
    assert [(r['tp'], r['fp'], r['fn']) for r in rows] == [(2, 1, 0), (1, 1, 1), (0, 0, 2)]
    assert rows[2]['recall'] == 0.0 and rows[2]['f1'] == 0.0
    with open(tmp_path / 's.png', 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'


def test_boxes_give_gt_points_when_points_are_absent(tmp_path):
    e = _entry([[0, 0]], [[6, 6, 14, 14]], [0.8])
    e.pop('gt_points')
    e['gt_instances'] = dict(bboxes=np.array([[5., 5., 15., 15.]]), labels=np.array([0]))
    images = score_sweep.load_predictions(_write(tmp_path / 'p.pkl', [e]))
    assert images[0]['gt'].tolist() == [[10.0, 10.0]]
    table = score_sweep.sweep(images, [0.5], radius=1.0)
    assert table[0, 1:4].tolist() == [1, 0, 0]


def test_bad_input_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='nowhere.pkl: prediction file not found'):
        score_sweep.load_predictions(str(tmp_path / 'nowhere.pkl'))
    empty = _write(tmp_path / 'empty.pkl', [])
    with pytest.raises(ValueError, match='empty.pkl: expected a non-empty list'):
        score_sweep.load_predictions(empty)
    e = _entry([[1, 1]], [[0, 0, 2, 2]], [0.5])
    e.pop('gt_points')
    with pytest.raises(ValueError, match='no gt_points or gt_instances'):
        score_sweep.load_predictions(_write(tmp_path / 'nogt.pkl', [e]))
    with pytest.raises(ValueError, match='expected NAME=PREDICTIONS.pkl'):
        score_sweep.main([str(tmp_path / 'nogt.pkl')])


def test_own_threshold_per_detector(tmp_path):
    # the predictions of test_sweep_counts_by_hand; 'cal' is read at its own threshold 0.3
    # (from a calibrate_threshold.py JSON): tp 2, fp 1, fn 0 -> F1 0.8; 'fix' at 0.5 -> 0.5
    e = _entry([[10, 10], [50, 50]],
               [[6, 7, 14, 15], [86, 86, 94, 94], [46, 45, 54, 53]], [0.9, 0.6, 0.4])
    path = _write(tmp_path / 'p.pkl', [e])
    cal = tmp_path / 'calibration.json'
    cal.write_text(json.dumps(dict(c=0.6, threshold=0.3)))
    out = score_sweep.main([f'fix={path}', f'cal={path}@{cal}', f'num={path}@0.95',
                            '--radius', '5', '--thresholds', '0.5'])
    assert (out['fix']['threshold'], out['fix']['f1']) == (0.5, 0.5)
    assert (out['cal']['threshold'], out['cal']['f1']) == (0.3, pytest.approx(0.8))
    assert (out['num']['threshold'], out['num']['f1']) == (0.95, 0.0)
    with pytest.raises(FileNotFoundError, match='nothere.json is neither a threshold'):
        score_sweep.main([f'x={path}@{tmp_path}/nothere.json'])
