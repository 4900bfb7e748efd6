"""tools/analysis_tools/npl_ablation.py: train, keep the best validation checkpoint, test it,
and score the pseudo labels against the synthetic bags' hidden labels."""
import json
import os.path as osp
import sys

import numpy as np
import pytest

from conftest import REPO

sys.path.insert(0, osp.join(REPO, 'tools', 'analysis_tools'))
import npl_ablation  # noqa: E402

CFG_DIR = osp.join(REPO, 'configs/negative_pseudo_labels')
SUP = osp.join(CFG_DIR, 'patchcls_mobilenetv2-w05_sup_40e_synthetic-bags.py')
PROP = osp.join(CFG_DIR, 'patchcls_mobilenetv2-w05_pl-adaptive-multi-npl_40e_synthetic-bags.py')


def _tiny(tmp_path, data: str) -> list:
    """Tiny versions of the supervised and the proposed config: 3 epochs, rounds at the
    start of epochs 1 and 2."""
    common = (f"train_cfg = dict(max_epochs=3)\nparam_scheduler = []\n"
              f"model = dict(backbone=dict(widen_factor=0.25))\n"
              f"train_dataloader = dict(batch_size=4, sampler=dict(samples_per_epoch=16), "
              f"dataset=dict(data_root='{data}/'))\n"
              f"val_dataloader = dict(dataset=dict(data_root='{data}/'))\n"
              f"test_dataloader = dict(dataset=dict(data_root='{data}/'))\n")
    paths = []
    for name, base, extra in (
            ('tiny_sup.py', SUP, ''),
            ('tiny_prop.py', PROP, 'custom_hooks = [dict(type="NegativePseudoLabelHook", '
                                   'positive="adaptive", negative="multi", begin=1, '
                                   'interval=1)]\n')):
        path = tmp_path / name
        path.write_text(f"_base_ = '{base}'\n{common}{extra}")
        paths.append(str(path))
    return paths


def test_ablation_shares_stage1_scores_best_checkpoint_and_pseudo_labels(tiny_bags, tmp_path,
                                                                         monkeypatch):
    monkeypatch.setenv('PYTHONWARNINGS', 'ignore')
    work = str(tmp_path / 'abl')
    fig = str(tmp_path / 'fig.png')
    configs = _tiny(tmp_path, tiny_bags)
    out = npl_ablation.main([*configs, '--work-dir', work, '--stage1-epochs', '1',
                             '--figure-bag', 'test_000', '--figure', fig])
    sup, prop = out['rows']
    stage1 = osp.join(work, 'stage1', 'epoch_1.pth')
    for row in (sup, prop):
        # each run resumed from the shared supervised stage: its own log starts at epoch 2
        with open(row['scalars']) as f:
            val = [json.loads(line) for line in f if 'mIoU' in line]
        assert [r['step'] for r in val] == [2, 3]
        # the best checkpoint is the first of those epochs with the highest validation mIoU
        assert row['best_epoch'] == val[int(np.argmax([r['mIoU'] for r in val]))]['step']
        # the metrics are tools/test.py's on that checkpoint
        metrics = npl_ablation.read_test_metrics(osp.join(row['work_dir'], 'test'))
        assert row['metrics']['mIoU'] == metrics['mIoU']
        cfg_text = open(osp.join(row['work_dir'], row['name'] + '.py')).read()
        assert repr(osp.abspath(stage1)) in cfg_text and 'resume = True' in cfg_text
    # resumed from epoch 1, the first round is at the start of epoch 1, as from scratch
    with open(osp.join(prop['work_dir'], 'npl_rounds.json')) as f:
        assert [(r['round'], r['epoch']) for r in json.load(f)] == [(1, 1), (2, 2)]
    assert sup['rounds'] == []
    # pseudo-label precision by hand from the round files and weak_truth.json
    with open(osp.join(tiny_bags, 'weak_truth.json')) as f:
        truth_by_bag = json.load(f)
    with open(osp.join(tiny_bags, 'train.json')) as f:
        bags = json.load(f)['bags']
    truth = np.array([c for b in bags if not b['labelled'] for c in truth_by_bag[b['name']]])
    assert [r['round'] for r in prop['rounds']] == [1, 2]
    for rec in prop['rounds']:
        with np.load(osp.join(prop['work_dir'], f'npl_round_{rec["round"]}.npz')) as z:
            pos, neg = z['positive'], z['negative']
        right = sum(int(p == t) for p, t in zip(pos, truth) if p >= 0)
        assert rec['positive'] == int((pos >= 0).sum())
        if rec['positive']:
            assert rec['positive_precision'] == pytest.approx(right / rec['positive'])
        wrong_neg = sum(int(neg[i, t]) for i, t in enumerate(truth))
        assert rec['negative'] == int(neg.sum())
        if rec['negative']:
            assert rec['negative_precision'] == pytest.approx(1 - wrong_neg / rec['negative'])
    assert osp.isfile(fig) and osp.isfile(osp.join(work, 'npl_rounds.png'))
    with open(osp.join(work, 'npl_ablation.md')) as f:
        assert '| tiny_prop |' in f.read()
    # --resume reuses the finished runs (same configs) without training again
    again = npl_ablation.main([*configs, '--work-dir', work, '--stage1-epochs', '1', '--resume'])
    assert all(r['reused'] for r in again['rows'])
    assert [r['metrics'] for r in again['rows']] == [sup['metrics'], prop['metrics']]


def test_ablation_argument_errors(tmp_path):
    with pytest.raises(ValueError, match='--figure and --figure-bag go together'):
        npl_ablation.main([PROP, '--work-dir', str(tmp_path), '--figure', 'x.png'])
    with pytest.raises(FileNotFoundError, match='best_mIoU_epoch'):
        npl_ablation.best_checkpoint(str(tmp_path))
    # the hook would have to act inside the shared stage
    with pytest.raises(ValueError, match='begins at epoch 24 < --stage1-epochs 30'):
        npl_ablation.main([SUP, PROP, '--work-dir', str(tmp_path), '--stage1-epochs', '30'])
    other = tmp_path / 'other_lr.py'
    other.write_text(f"_base_ = '{PROP}'\noptim_wrapper = dict(optimizer=dict(lr=0.1))\n")
    with pytest.raises(ValueError, match='other_lr.py: optim_wrapper differs'):
        npl_ablation.main([SUP, str(other), '--work-dir', str(tmp_path), '--stage1-epochs',
                           '24'])
