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

CFG = osp.join(REPO, 'configs/negative_pseudo_labels/'
                     'patchcls_mobilenetv2-w05_pl-adaptive-multi-npl_32e_synthetic-bags.py')


def _options(data: str) -> list:
    opts = ['train_cfg.max_epochs=3', 'train_dataloader.batch_size=4',
            'train_dataloader.sampler.samples_per_epoch=16', 'model.backbone.widen_factor=0.25',
            'custom_hooks.0.begin=1', 'custom_hooks.0.interval=1']
    return opts + [f'{k}.dataset.data_root={data}/'
                   for k in ('train_dataloader', 'val_dataloader', 'test_dataloader')]


def test_ablation_scores_best_checkpoint_and_pseudo_labels(tiny_bags, tmp_path, monkeypatch):
    monkeypatch.setenv('PYTHONWARNINGS', 'ignore')
    work = str(tmp_path / 'abl')
    fig = str(tmp_path / 'fig.png')
    out = npl_ablation.main([CFG, '--work-dir', work, '--figure-bag', 'test_000', '--figure',
                             fig, '--cfg-options', *_options(tiny_bags)])
    (row, ) = out['rows']
    # the best checkpoint is the first epoch with the highest validation mIoU
    with open(row['scalars']) as f:
        val = [json.loads(line) for line in f if 'mIoU' in line]
    miou = [r['mIoU'] for r in val]
    assert row['best_epoch'] == int(np.argmax(miou)) + 1
    # the metrics are tools/test.py's on that checkpoint
    metrics = npl_ablation.read_test_metrics(osp.join(row['work_dir'], 'test'))
    assert row['metrics']['mIoU'] == metrics['mIoU']
    # pseudo-label precision by hand from the round files and weak_truth.json
    with open(osp.join(tiny_bags, 'weak_truth.json')) as f:
        truth_by_bag = json.load(f)
    with open(osp.join(tiny_bags, 'train.json')) as f:
        bags = json.load(f)['bags']
    truth = np.array([c for b in bags if not b['labelled'] for c in truth_by_bag[b['name']]])
    assert [r['round'] for r in row['rounds']] == [1, 2]
    for rec in row['rounds']:
        with np.load(osp.join(row['work_dir'], f'npl_round_{rec["round"]}.npz')) as z:
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
        assert osp.basename(CFG)[:-3] in f.read()
    # --resume reuses the finished run (same config) without training again
    again = npl_ablation.main([CFG, '--work-dir', work, '--resume', '--cfg-options',
                               *_options(tiny_bags)])
    assert again['rows'][0]['reused'] and again['rows'][0]['metrics'] == row['metrics']


def test_ablation_argument_errors(tmp_path):
    with pytest.raises(ValueError, match='--figure and --figure-bag go together'):
        npl_ablation.main([CFG, '--work-dir', str(tmp_path), '--figure', 'x.png'])
    with pytest.raises(FileNotFoundError, match='best_mIoU_epoch'):
        npl_ablation.best_checkpoint(str(tmp_path))
