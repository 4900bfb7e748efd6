"""The negative-pseudo-label configs run through tools/train.py and tools/test.py on tiny
synthetic bags: two rounds of the hook update the training targets exactly as
select_pseudo_labels says, from the model of that moment; the state survives --resume."""
import glob
import json
import os.path as osp
import re

import numpy as np
import pytest
import torch

from conftest import REPO, run_tool

CFG = ('configs/negative_pseudo_labels/'
       'patchcls_mobilenetv2-w05_pl-adaptive-multi-npl_40e_synthetic-bags.py')
LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')
TINY = {'model.backbone.widen_factor': 0.25}


def _options(data: str, epochs: int) -> list:
    opts = [f'train_cfg.max_epochs={epochs}', 'train_dataloader.batch_size=4',
            'train_dataloader.sampler.samples_per_epoch=16',
            'train_dataloader.dataset.pipeline.1.prob=0.0',  # no flips: resume is exact
            'custom_hooks.0.begin=1', 'custom_hooks.0.interval=1', 'custom_hooks.0.batch_size=8',
            'default_hooks.logger.interval=1', 'default_hooks.checkpoint.max_keep_ckpts=5']
    opts += [f'{loader}.dataset.data_root={data}/' for loader in LOADERS]
    return opts + [f'{k}={v}' for k, v in TINY.items()]


def _build(data: str):
    """Model and weak-patch data set of the tiny config, outside any runner."""
    from mmengine.config import Config
    from mmengine.dataset import Compose
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    from projects.negative_pseudo_labels import ProportionBagDataset
    cfg = Config.fromfile(osp.join(REPO, CFG))
    cfg.merge_from_dict(TINY)
    init_default_scope('mmseg')
    model = MODELS.build(cfg.model)
    ds = ProportionBagDataset(ann_file='train.json', data_root=data,
                              pipeline=cfg.test_dataloader.dataset.pipeline)
    ds.pipeline = Compose(cfg.test_dataloader.dataset.pipeline)
    return model, ds


def _probs_from_checkpoint(ckpt: str, data: str, indices: np.ndarray) -> np.ndarray:
    from mmengine.dataset import pseudo_collate
    model, ds = _build(data)
    model.load_state_dict(torch.load(ckpt, map_location='cpu', weights_only=False)['state_dict'])
    model.eval()
    batch = pseudo_collate([ds[int(i)] for i in indices])
    with torch.no_grad():
        out = model.data_preprocessor(batch, False)
        return model(out['inputs'], mode='tensor').softmax(1).numpy()


def _round(work: str, k: int) -> dict:
    with np.load(osp.join(work, f'npl_round_{k}.npz')) as z:
        return {key: z[key] for key in z.files}


def test_two_rounds_follow_the_selection_and_resume(tiny_bags, tmp_path):
    from projects.negative_pseudo_labels import (ProportionBagDataset, select_pseudo_labels,
                                                 training_pool)
    work = str(tmp_path / 'run')
    run_tool(['tools/train.py', CFG, '--work-dir', work, '--cfg-options',
              *_options(tiny_bags, 3)])
    with open(osp.join(work, 'npl_rounds.json')) as f:
        history = json.load(f)
    # rounds at the start of epochs 1 and 2 (begin=1, interval=1)
    assert [(r['round'], r['epoch']) for r in history] == [(1, 1), (2, 2)]

    ds = ProportionBagDataset(ann_file='train.json', data_root=tiny_bags, pipeline=[])
    weak = ds.weak_indices
    r1, r2 = _round(work, 1), _round(work, 2)
    assert r1['indices'].tolist() == weak.tolist()
    # round 2 predicted with the weights at the end of epoch index 1 (epoch_2.pth)
    probs2 = _probs_from_checkpoint(osp.join(work, 'epoch_2.pth'), tiny_bags, weak)
    assert np.allclose(r2['probs'], probs2, atol=1e-5)
    # each bag's labels are exactly select_pseudo_labels on its probabilities; round 2
    # starts from round 1's negatives (multi-NPL)
    for rec, old in ((r1, None), (r2, r1['negative'])):
        for b in np.unique(ds.patch_bag[weak]):
            sel = ds.patch_bag[weak] == b
            pos, neg = select_pseudo_labels(rec['probs'][sel].astype(np.float64),
                                            ds.bag_ratios[b],
                                            None if old is None else old[sel])
            assert pos.tolist() == rec['positive'][sel].tolist()
            assert neg.tolist() == rec['negative'][sel].tolist()
    assert (r2['negative'] | r1['negative'] == r2['negative']).all()
    assert r1['negative'].any(), 'the tiny run should produce negative labels'
    # the logged counts and pool follow from the labels
    for rec, h in ((r1, history[0]), (r2, history[1])):
        classes = list(ds.metainfo['classes'])
        assert [h['positive'][c] for c in classes] == \
            np.bincount(rec['positive'][rec['positive'] >= 0], minlength=4).tolist()
        assert [h['negative'][c] for c in classes] == rec['negative'].sum(0).tolist()
        positive, negative = ds.gt_labels.copy(), np.zeros((len(ds), 4), bool)
        positive[weak], negative[weak] = rec['positive'], rec['negative']
        assert h['pool'] == len(training_pool(positive, negative, 4, True, h['round']))
    # the checkpoint after epoch 2 holds round 2's state
    state = torch.load(osp.join(work, 'epoch_3.pth'), weights_only=False)[
        'negative_pseudo_labels']
    assert state['round'] == 2 and state['last_epoch'] == 2
    assert state['positive'][weak].tolist() == r2['positive'].tolist()
    assert (state['positive'][ds.gt_labels >= 0] == ds.gt_labels[ds.gt_labels >= 0]).all()

    # interrupted after epoch 2 (index 1), resumed: round 2 and the end agree
    work_b = str(tmp_path / 'resumed')
    run_tool(['tools/train.py', CFG, '--work-dir', work_b, '--cfg-options',
              *_options(tiny_bags, 2)])
    assert not osp.exists(osp.join(work_b, 'npl_round_2.npz'))
    run_tool(['tools/train.py', CFG, '--work-dir', work_b, '--resume', '--cfg-options',
              *_options(tiny_bags, 3)])
    rb = _round(work_b, 2)
    assert rb['positive'].tolist() == r2['positive'].tolist()
    assert rb['negative'].tolist() == r2['negative'].tolist()
    assert np.allclose(rb['probs'], r2['probs'], atol=1e-4)
    a = torch.load(osp.join(work, 'epoch_3.pth'), weights_only=False)['state_dict']
    b = torch.load(osp.join(work_b, 'epoch_3.pth'), weights_only=False)['state_dict']
    differ = sum(int((~torch.isclose(a[k].float(), b[k].float(), atol=1e-5)).sum()) for k in a)
    total = sum(v.numel() for v in a.values())
    assert differ / total < 0.01, f'{differ} of {total} weights differ after --resume'

    # tools/test.py scores the test slides; OP recomputed from the checkpoint by hand
    test_dir = str(tmp_path / 'test')
    run_tool(['tools/test.py', CFG, osp.join(work, 'epoch_3.pth'), '--work-dir', test_dir,
              '--cfg-options', *_options(tiny_bags, 3)])
    metrics_file = glob.glob(osp.join(test_dir, '*', '*.json'))
    assert len(metrics_file) == 1
    with open(metrics_file[0]) as f:
        metrics = json.load(f)
    model, _ = _build(tiny_bags)
    test_ds = ProportionBagDataset(ann_file='test.json', data_root=tiny_bags,
                                   pipeline=_build(tiny_bags)[1].pipeline.transforms)
    model.load_state_dict(torch.load(osp.join(work, 'epoch_3.pth'),
                                     weights_only=False)['state_dict'])
    model.eval()
    confusion = np.zeros((4, 4), np.int64)
    from mmengine.dataset import pseudo_collate
    batch = pseudo_collate([test_ds[i] for i in range(len(test_ds))])
    with torch.no_grad():
        pred = model(model.data_preprocessor(batch, False)['inputs']).argmax(1).numpy()
    for i, p in enumerate(pred):
        confusion[:, p] += test_ds.get_data_info(i)['pixel_counts']
    assert metrics['OP'] == pytest.approx(np.trace(confusion) / confusion.sum(), abs=1e-4)


def test_hook_refuses_iteration_loops_and_other_samplers(tiny_bags, tmp_path):
    base = osp.join(REPO, CFG)
    for name, body, message in (
            ('iter.py', "train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', "
                        "max_iters=2, val_interval=2)",
             'rounds are counted in epochs'),
            ('sampler.py', "train_dataloader = dict(sampler=dict(_delete_=True, "
                           "type='DefaultSampler', shuffle=True))",
             "set train_dataloader.sampler = dict\\(type='PseudoLabelSampler'\\)")):
        path = tmp_path / name
        path.write_text(f"_base_ = '{base}'\n{body}\n")
        opts = [o for o in _options(tiny_bags, 1)
                if not o.startswith(('train_cfg', 'train_dataloader.sampler'))]
        work = str(tmp_path / f'work_{name[:-3]}')
        proc = run_tool(['tools/train.py', str(path), '--work-dir', work, '--cfg-options', *opts],
                        check=False)
        assert proc.returncode != 0
        assert re.search(message, proc.stderr + proc.stdout), proc.stderr[-2000:]


def test_hook_arguments_are_checked():
    from projects.negative_pseudo_labels import NegativePseudoLabelHook
    with pytest.raises(ValueError, match='both None'):
        NegativePseudoLabelHook(positive=None, negative=None)
    with pytest.raises(ValueError, match="positive='soft'"):
        NegativePseudoLabelHook(positive='soft')
    with pytest.raises(ValueError, match='threshold=1.5'):
        NegativePseudoLabelHook(positive='fixed', threshold=1.5)


def test_round_under_ddp_gathers_every_rank_share(tiny_bags, tmp_path):
    """Two gloo ranks each predict half of the weak patches; the gathered probabilities
    are the model's on every patch, in training-set order, and both ranks agree."""
    from conftest import free_port

    from projects.negative_pseudo_labels import ProportionBagDataset, select_pseudo_labels
    work = str(tmp_path / 'ddp')
    proc = run_tool(['-m', 'torch.distributed.run', '--nproc_per_node=2',
                     f'--master_port={free_port()}', 'tools/train.py', CFG, '--launcher',
                     'pytorch', '--work-dir', work, '--cfg-options', *_options(tiny_bags, 2)],
                    timeout=900)
    log = proc.stdout + proc.stderr
    assert 'Distributed training: True' in log
    assert 'world_size: 2' in log or 'GPU number: 2' in log
    ds = ProportionBagDataset(ann_file='train.json', data_root=tiny_bags, pipeline=[])
    weak = ds.weak_indices
    r1 = _round(work, 1)
    probs = _probs_from_checkpoint(osp.join(work, 'epoch_1.pth'), tiny_bags, weak)
    assert r1['indices'].tolist() == weak.tolist()
    assert np.allclose(r1['probs'], probs, atol=1e-5)
    for b in np.unique(ds.patch_bag[weak]):
        sel = ds.patch_bag[weak] == b
        pos, _ = select_pseudo_labels(r1['probs'][sel].astype(np.float64), ds.bag_ratios[b])
        assert pos.tolist() == r1['positive'][sel].tolist()
    state = torch.load(osp.join(work, 'epoch_2.pth'), weights_only=False)[
        'negative_pseudo_labels']
    assert state['positive'][weak].tolist() == r1['positive'].tolist()
