"""Each PU-detection config family trains 2 iterations and is scored on whole frames.

The MITOS-ATYPIA-14 configs run end to end on the converter's tiny fixture: training on
one-annotation-per-patch patches, validation and test through WholeImageDetectionMetric
(patches mapped back to their frames and merged by NMS).
"""
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.runner import Runner

from test_mitos_atypia14 import ARGS, make_root, mitos

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CFG = osp.join(REPO, 'configs', 'pu_detection', 'faster-rcnn_{}_fpn_{}_20e_mitos14.py')


@pytest.fixture(scope='module')
def mitos_data(tmp_path_factory) -> str:
    tmp = tmp_path_factory.mktemp('mitos_train')
    out = str(tmp / 'out')
    assert mitos.main(['--root', make_root(tmp), '--out', out, '--seed', '0', *ARGS]) == 0
    return out + '/'


def _tiny(path: str, data_root: str, work_dir: str) -> Config:
    cfg = Config.fromfile(path)
    ann = data_root + 'annotations/'
    cfg.merge_from_dict({
        'work_dir': work_dir,
        'train_dataloader.dataset.data_root': data_root,
        'train_dataloader.num_workers': 0, 'train_dataloader.persistent_workers': False,
        'train_dataloader.sampler': dict(type='InfiniteSampler', shuffle=True),
        'val_dataloader.dataset.data_root': data_root,
        'val_dataloader.num_workers': 0, 'val_dataloader.persistent_workers': False,
        'test_dataloader.dataset.data_root': data_root,
        'test_dataloader.num_workers': 0, 'test_dataloader.persistent_workers': False,
        'val_evaluator.ann_file': ann + 'frames_val.json',
        'test_evaluator.ann_file': ann + 'frames_test_fold0.json',
        'train_cfg': dict(_delete_=True, type='IterBasedTrainLoop', max_iters=2,
                          val_interval=2),
        'default_hooks.checkpoint': dict(type='CheckpointHook', interval=2, by_epoch=False),
        'default_hooks.logger.interval': 1,
        'log_processor.by_epoch': False,
        'model.train_cfg.rpn.sampler.num': 64,
        'model.train_cfg.rcnn.sampler.num': 32,
        'model.roi_head.bbox_head.fc_out_channels': 32,
        'model.neck.out_channels': 32,
        'model.rpn_head.in_channels': 32, 'model.rpn_head.feat_channels': 32,
        'model.roi_head.bbox_roi_extractor.out_channels': 32,
        'model.roi_head.bbox_head.in_channels': 32,
    })
    return cfg


@pytest.mark.parametrize('backbone,method', [('vgg16', 'ce'), ('r50', 'bde'),
                                             ('vgg16', 'pu'), ('r50', 'pu-classic')])
def test_mitos_config_family_trains_and_scores_whole_frames(backbone, method, mitos_data,
                                                            tmp_path):
    cfg = _tiny(CFG.format(backbone, method), mitos_data, str(tmp_path / 'work'))
    with DefaultScope.overwrite_default_scope('mmdet'):
        torch.manual_seed(0)
        runner = Runner.from_cfg(cfg)
        model = runner.model
        rpn_loss, roi_loss = model.rpn_head.loss_cls, model.roi_head.bbox_head.loss_cls
        expected = dict(ce=('RPNHead', 'CrossEntropyLoss', 'StandardRoIHead'),
                        bde=('BDERPNHead', 'CrossEntropyLoss', 'BDERoIHead'),
                        pu=('PURPNHead', 'PULoss', 'StandardRoIHead'),
                        **{'pu-classic': ('PURPNHead', 'PULoss', 'StandardRoIHead')})[method]
        assert (type(model.rpn_head).__name__, type(rpn_loss).__name__,
                type(model.roi_head).__name__) == expected
        assert type(roi_loss).__name__ == expected[1]
        if method.startswith('pu'):
            assert rpn_loss.prior == roi_loss.prior == 0.04  # the paper's value
            assert rpn_loss.mode == roi_loss.mode == (
                'classic' if method == 'pu-classic' else 'detection')
        before = {k: v.clone() for k, v in model.state_dict().items()}
        runner.train()
        moved = [k for k, v in model.state_dict().items()
                 if v.dtype.is_floating_point and not torch.equal(v, before[k])]
        assert any(k.startswith('backbone.') for k in moved)
        assert any(k.startswith('roi_head.') for k in moved)
        metrics = runner.test()
    # the test fold's frames, scored as whole frames: every key of the paper's tables
    for key in ('avg_recall', 'avg_precision', 'recall', 'precision', 'f1', 'coco_AP'):
        value = metrics[f'cell/{key}']
        assert value == -1.0 if key == 'coco_AP' and value < 0 else 0.0 <= value <= 1.0, key
    assert osp.isfile(str(tmp_path / 'work' / 'iter_2.pth'))
