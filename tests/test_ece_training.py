"""The exclusive cross-entropy configs run through tools/train.py and tools/test.py (tiny
networks, tiny synthetic data); the logged threshold follows the paper's schedule."""
import glob
import json
import os.path as osp

import pytest

from conftest import REPO, run_tool
from projects.exclusive_ce.ece_loss import anneal

SEG_CFG = 'configs/exclusive_ce/unet-s5-d16-c16_fcn_ece_300i_synthetic-sparse30-128x128.py'
DET_CFG = 'configs/exclusive_ce/yollo_r18-c32_focal-ece_300i_synthetic-sparse30.py'
LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')


def _options(data: str, iters: int) -> list:
    opts = [f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={iters}',
            f'default_hooks.checkpoint.interval={iters}', 'default_hooks.logger.interval=1',
            f'param_scheduler.0.end={iters}', 'train_dataloader.batch_size=2']
    for loader in LOADERS:
        opts += [f'{loader}.dataset.data_root={data}/', f'{loader}.num_workers=0',
                 f'{loader}.persistent_workers=False']
    return opts


def _train_lines(work: str) -> list:
    path, = glob.glob(osp.join(work, '*', 'vis_data', 'scalars.json'))
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def test_unet_ece_trains_and_logs_the_sigmoid_schedule(tiny_synthetic, tmp_path):
    work = str(tmp_path / 'seg')
    tiny = ['model.backbone.base_channels=4', 'model.decode_head.in_channels=4',
            'model.decode_head.channels=4', 'model.auxiliary_head.in_channels=8',
            'model.auxiliary_head.channels=4', 'model.data_preprocessor.size=(32,32)',
            'model.test_cfg.crop_size=(64,64)', 'model.test_cfg.stride=(64,64)']
    crop = 'train_dataloader.dataset.pipeline.4.crop_size=(32,32)'
    run_tool(['tools/train.py', SEG_CFG, '--work-dir', work, '--cfg-options',
              *_options(tiny_synthetic, 4), *tiny, crop])
    records = _train_lines(work)
    train = [r for r in records if 'iter' in r]
    assert [r['iter'] for r in train] == [1, 2, 3, 4]
    for r in train:
        # iteration k runs at progress (k - 1) / 4: rho = sigmoid(0.75 * progress); the
        # default warm-up (progress < 0.1) covers iteration 1 only, where every term is kept
        assert r['ece_threshold'] == pytest.approx(
            anneal('sigmoid', 0.75, progress=(r['iter'] - 1) / 4), abs=1e-4)
        assert r['ece_warmup'] == (1.0 if r['iter'] == 1 else 0.0)
        assert r['decode.loss_ece'] > 0 and r['aux.loss_ece'] > 0
    assert train[0]['ece_kept'] == 1.0
    assert 'nuclei/pixel_f1' in records[-1] and 'mDice' in records[-1]
    proc = run_tool(['tools/test.py', SEG_CFG, osp.join(work, 'iter_4.pth'), '--work-dir',
                     str(tmp_path / 'seg_test'), '--cfg-options', *_options(tiny_synthetic, 4),
                     *tiny, crop])
    assert 'nuclei/dice_obj' in proc.stdout + proc.stderr


def test_yollo_focal_ece_trains_and_tests(tiny_synthetic, tmp_path):
    work = str(tmp_path / 'det')
    tiny = ['model.backbone.base_channels=8', 'model.neck.in_channels=[8,16,32,64]',
            'model.neck.out_channels=16', 'model.bbox_head.in_channels=16',
            'model.bbox_head.feat_channels=16']
    run_tool(['tools/train.py', DET_CFG, '--work-dir', work, '--cfg-options',
              *_options(tiny_synthetic, 3), *tiny])
    train = [r for r in _train_lines(work) if 'iter' in r]
    assert [r['iter'] for r in train] == [1, 2, 3]
    for r in train:
        assert r['ece_threshold'] == pytest.approx(
            anneal('sigmoid', 0.75, progress=(r['iter'] - 1) / 3), abs=1e-4)
        assert r['ece_warmup'] == (1.0 if r['iter'] == 1 else 0.0)
        assert r['loss_cls'] > 0 and r['loss_offset'] >= 0
    assert train[0]['ece_kept'] == 1.0
    proc = run_tool(['tools/test.py', DET_CFG, osp.join(work, 'iter_3.pth'), '--work-dir',
                     str(tmp_path / 'det_test'), '--cfg-options',
                     *_options(tiny_synthetic, 3), *tiny])
    assert 'cell/f1' in proc.stdout + proc.stderr
