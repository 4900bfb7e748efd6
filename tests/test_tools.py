"""tools/train.py, tools/test.py, resume after torch's weights_only change, CPU DDP."""
import glob
import json
import os
import os.path as osp
import pickle
import re
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import TINY_DET, TINY_SEG, free_port, run_tool, write_config


def _metrics_json(work_dir: str) -> dict:
    """The metrics file mmengine writes at the end of a test run (<timestamp>/<timestamp>.json)."""
    files = sorted(glob.glob(osp.join(work_dir, '*', '*.json')))
    assert files, f'no metrics json in {work_dir}'
    with open(files[-1]) as f:
        return json.load(f)


def test_train_then_test_detector(tmp_path, tiny_synthetic):
    cfg = write_config(tmp_path, TINY_DET, tiny_synthetic, 'tiny_det.py')
    work = str(tmp_path / 'work')
    run_tool(['tools/train.py', cfg, '--work-dir', work])
    # 4 iterations, a checkpoint every 2
    assert osp.isfile(osp.join(work, 'iter_2.pth')) and osp.isfile(osp.join(work, 'iter_4.pth'))

    out = str(tmp_path / 'preds.pkl')
    test_dir = str(tmp_path / 'test')
    run_tool(['tools/test.py', cfg, osp.join(work, 'iter_4.pth'), '--work-dir', test_dir,
              '--out', out, '--show-dir', 'vis',
              '--cfg-options', 'test_evaluator.score_thr=0.0'])
    metrics = _metrics_json(test_dir)
    for key in ('cell/recall', 'cell/precision', 'cell/f1', 'cell/coco_AP'):
        assert key in metrics
    # F1 is the harmonic mean of the pooled recall and precision the metric reports
    r, p = metrics['cell/recall'], metrics['cell/precision']
    assert metrics['cell/f1'] == pytest.approx(2 * r * p / (r + p) if r + p else 0.0, abs=1e-3)
    with open(out, 'rb') as f:
        preds = pickle.load(f)
    # ... and recall / precision are the point matching of the dumped predictions (every
    # score >= 0.0 kept), recounted here with score_sweep at the evaluator's radius
    from mmengine.config import Config
    sys.path.insert(0, osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'tools',
                                'analysis_tools'))
    import score_sweep
    radius = Config.fromfile(cfg).test_evaluator['radius']
    row = score_sweep.sweep(score_sweep.load_predictions(out), [0.0], radius)[0]
    assert row[1] + row[3] > 0  # annotated test cells exist
    assert (r, p) == (pytest.approx(row[4], abs=1e-4), pytest.approx(row[5], abs=1e-4))
    assert len(preds) == 2  # one entry per test image
    assert {osp.basename(p['img_path']) for p in preds} == \
        {osp.basename(p) for p in glob.glob(osp.join(tiny_synthetic, 'img_dir', 'test', '*'))}
    drawn = glob.glob(osp.join(test_dir, '*', 'vis', '*.png'))
    assert len(drawn) == 2

    # the demo's picture tool: TP + FN is the number of annotated cells of that image
    pic = str(tmp_path / 'pic.png')
    # side by side (--compare): the same detector at 0.0 from a calibrate_threshold.py JSON
    # counts what the first panel counts; above every score it finds nothing
    ckpt = osp.join(work, 'iter_4.pth')
    cal = tmp_path / 'calibration.json'
    cal.write_text(json.dumps(dict(c=0.0, threshold=0.0)))
    proc = run_tool(['tools/analysis_tools/draw_detections.py', cfg, ckpt, '--split', 'test',
                     '--index', '1', '--score-thr', '0.0', '--name', 'a',
                     '--compare', 'b', cfg, ckpt, str(cal), '--compare', 'c', cfg, ckpt, '1.01',
                     '--out', pic])
    rows = re.findall(r'\] (\w) (\S+\.png): TP (\d+), FP (\d+), FN (\d+)', proc.stdout)
    assert [r[0] for r in rows] == ['a', 'b', 'c']
    name, tp, fp, fn = rows[0][1], *map(int, rows[0][2:])
    with open(osp.join(tiny_synthetic, 'annotations', 'test.json')) as f:
        coco = json.load(f)
    img_id = next(im['id'] for im in coco['images'] if im['file_name'].endswith(name))
    assert tp + fn == sum(a['image_id'] == img_id for a in coco['annotations'])
    assert rows[1][1:] == rows[0][1:]
    assert tuple(map(int, rows[2][2:])) == (0, 0, tp + fn)
    assert osp.getsize(pic) > 0
    # a bad THR is named before any model runs
    proc = run_tool(['tools/analysis_tools/draw_detections.py', cfg, ckpt, '--compare', 'b',
                     cfg, ckpt, 'nothere.json', '--out', pic], check=False)
    assert proc.returncode != 0
    assert 'b: threshold: nothere.json is neither a threshold nor a JSON file' in proc.stderr


def _state(path: str) -> dict:
    return torch.load(path, map_location='cpu', weights_only=False)


def test_resume_continues_like_uninterrupted_run(tmp_path, tiny_synthetic):
    cfg = write_config(tmp_path, TINY_SEG, tiny_synthetic, 'tiny_seg.py')
    full, part = str(tmp_path / 'full'), str(tmp_path / 'part')
    run_tool(['tools/train.py', cfg, '--work-dir', full])
    # interrupted run: stop after 2 of the 4 iterations (same schedule, max_iters reached)
    run_tool(['tools/train.py', cfg, '--work-dir', part,
              '--cfg-options', 'train_cfg.max_iters=2'])
    ckpt2 = osp.join(part, 'iter_2.pth')

    # torch >= 2.6 refuses mmengine's checkpoints with its default weights_only=True ...
    with pytest.raises(Exception, match='weights_only|Unsupported global'):
        torch.load(ckpt2, map_location='cpu')
    # ... and the resumed run (auto: latest checkpoint in the work dir) still works
    proc = run_tool(['tools/train.py', cfg, '--work-dir', part, '--resume'])
    assert 'resumed epoch: 0, iter: 2' in proc.stdout + proc.stderr

    a, b = _state(osp.join(full, 'iter_4.pth')), _state(osp.join(part, 'iter_4.pth'))
    assert b['meta']['iter'] == 4
    assert a['state_dict'].keys() == b['state_dict'].keys()
    for k in a['state_dict']:
        torch.testing.assert_close(a['state_dict'][k], b['state_dict'][k], rtol=1e-5, atol=1e-6,
                                   msg=f'{k} differs after resume')
    # the weights did move during iterations 3-4 (the comparison above is not vacuous)
    c = _state(ckpt2)
    assert any(not torch.equal(c['state_dict'][k], a['state_dict'][k])
               for k in a['state_dict'] if a['state_dict'][k].is_floating_point())
    # the optimizer state was restored, not restarted: Adam's step count is 4, not 2
    steps = [s['step'] for s in b['optimizer']['state'].values()]
    assert steps and all(float(s) == 4 for s in steps)


def test_resume_from_named_checkpoint_and_load_from(tmp_path, tiny_synthetic):
    cfg = write_config(tmp_path, TINY_SEG, tiny_synthetic, 'tiny_seg.py')
    part = str(tmp_path / 'part')
    run_tool(['tools/train.py', cfg, '--work-dir', part, '--cfg-options', 'train_cfg.max_iters=2'])
    other = str(tmp_path / 'other')
    proc = run_tool(['tools/train.py', cfg, '--work-dir', other, '--resume',
                     osp.join(part, 'iter_2.pth')])
    assert 'resumed epoch: 0, iter: 2' in proc.stdout + proc.stderr
    assert _state(osp.join(other, 'iter_4.pth'))['meta']['iter'] == 4
    # tools/test.py loads the same checkpoint (load_from path of mmengine)
    run_tool(['tools/test.py', cfg, osp.join(part, 'iter_2.pth'), '--work-dir',
              str(tmp_path / 't')])
    metrics = _metrics_json(str(tmp_path / 't'))
    assert 0.0 <= metrics['nuclei/pixel_acc'] <= 1.0 and 'nuclei/aji' in metrics


def test_ddp_two_ranks_gloo_on_cpu(tmp_path, tiny_synthetic):
    cfg = write_config(tmp_path, TINY_SEG, tiny_synthetic, 'tiny_seg.py')
    work = str(tmp_path / 'ddp')
    proc = run_tool(['-m', 'torch.distributed.run', '--nproc_per_node=2',
                     f'--master_port={free_port()}', 'tools/train.py', cfg, '--launcher',
                     'pytorch', '--work-dir', work, '--cfg-options', 'train_cfg.max_iters=2'],
                    timeout=900)
    log = proc.stdout + proc.stderr
    assert 'Distributed training: True' in log
    assert 'world_size: 2' in log or 'GPU number: 2' in log
    ckpt = _state(osp.join(work, 'iter_2.pth'))
    assert ckpt['meta']['iter'] == 2


def test_dist_train_and_test_scripts_run(tmp_path, tiny_synthetic):
    cfg = write_config(tmp_path, TINY_SEG, tiny_synthetic, 'tiny_seg.py')
    work = str(tmp_path / 'ddp_sh')
    repo = osp.dirname(osp.dirname(osp.abspath(__file__)))
    env = dict(os.environ, PYTHON=sys.executable, PORT=str(free_port()), OMP_NUM_THREADS='1')
    proc = subprocess.run(
        ['bash', 'tools/dist_train.sh', cfg, '2', '--work-dir', work, '--cfg-options',
         'train_cfg.max_iters=1', 'default_hooks.checkpoint.interval=1'],
        cwd=repo, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert _state(osp.join(work, 'iter_1.pth'))['meta']['iter'] == 1

    # tools/dist_test.sh: both ranks evaluate, the metrics are gathered on rank 0
    test_dir = str(tmp_path / 'ddp_test')
    proc = subprocess.run(
        ['bash', 'tools/dist_test.sh', cfg, osp.join(work, 'iter_1.pth'), '2', '--work-dir',
         test_dir], cwd=repo, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    metrics = _metrics_json(test_dir)
    # gathered over the two ranks = one process over the whole test set
    single = str(tmp_path / 'single_test')
    run_tool(['tools/test.py', cfg, osp.join(work, 'iter_1.pth'), '--work-dir', single])
    reference = _metrics_json(single)
    keys = [k for k in reference if k.startswith('nuclei/')]
    assert 'nuclei/aji' in keys and 'nuclei/pixel_acc' in keys
    for key in keys:
        assert metrics[key] == pytest.approx(reference[key], rel=1e-6, abs=1e-9), key


def test_unknown_component_is_named(tmp_path, tiny_synthetic):
    cfg = write_config(tmp_path, TINY_SEG + "\nmodel = dict(decode_head=dict(type='NoSuchHead'))\n",
                       tiny_synthetic, 'bad.py')
    proc = run_tool(['tools/train.py', cfg, '--work-dir', str(tmp_path / 'w')], check=False)
    assert proc.returncode != 0
    assert 'NoSuchHead is not in the' in proc.stderr


def test_missing_config_and_checkpoint_are_named(tmp_path, tiny_synthetic):
    proc = run_tool(['tools/train.py', str(tmp_path / 'nope.py')], check=False)
    assert proc.returncode != 0 and 'nope.py: config file not found' in proc.stderr
    cfg = write_config(tmp_path, TINY_SEG, tiny_synthetic, 'tiny_seg.py')
    proc = run_tool(['tools/test.py', cfg, str(tmp_path / 'missing.pth')], check=False)
    assert proc.returncode != 0 and 'missing.pth: checkpoint file not found' in proc.stderr
    proc = run_tool(['tools/train.py', cfg, '--resume', str(tmp_path / 'gone.pth')], check=False)
    assert proc.returncode != 0 and 'gone.pth: checkpoint to resume from not found' in proc.stderr


def test_mim_train_and_test_run_our_configs(tmp_path, tiny_synthetic):
    """`mim train/test mmdet CONFIG --gpus 0` runs mmdet's own tools on our configs; the
    checkpoint loads there too, because the config's custom_imports applies the fix."""
    mim = shutil.which('mim', path=osp.dirname(sys.executable))
    assert mim is not None, 'openmim is a runtime requirement: mim must be installed'
    cfg = write_config(tmp_path, TINY_DET, tiny_synthetic, 'tiny_det.py')
    work, test_dir = str(tmp_path / 'mim'), str(tmp_path / 'mim_test')
    run_tool([mim, 'train', 'mmdet', cfg, '--gpus', '0', '--work-dir', work], cwd=str(tmp_path))
    assert _state(osp.join(work, 'iter_4.pth'))['meta']['iter'] == 4
    run_tool([mim, 'test', 'mmdet', cfg, '--checkpoint', osp.join(work, 'iter_4.pth'),
              '--gpus', '0', '--work-dir', test_dir], cwd=str(tmp_path))
    assert 'cell/f1' in _metrics_json(test_dir)
