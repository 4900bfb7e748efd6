"""tools/analysis_tools/estimate_prior.py: counts of labelled and hidden positives."""
import os.path as osp
import sys

import pytest
import torch
from mmengine.config import Config

from conftest import REPO, TINY_DET

sys.path.insert(0, osp.join(REPO, 'tools', 'analysis_tools'))
import estimate_prior  # noqa: E402


def _config(tmp_path, data: str, fraction: float, rpn_num: int = 64) -> Config:
    path = tmp_path / 'tiny.py'
    path.write_text(TINY_DET.format(repo=REPO, data=data))
    cfg = Config.fromfile(str(path))
    pipeline = [
        dict(type='StrictLoadImageFromFile'),
        dict(type='LoadAnnotations', with_bbox=True),
        dict(type='SparsifyAnnotations', mode='nested', fraction=fraction, seed=0),
        dict(type='RandomFlip', prob=0.5),
        dict(type='PackDetInputs')]
    cfg.merge_from_dict({'train_dataloader.dataset.pipeline': pipeline,
                         'model.train_cfg.rpn.sampler.num': rpn_num,
                         'model.train_cfg.rpn.sampler.pos_fraction': 1.0})
    # the tiny network on the fixture's tiles
    assert cfg.model.backbone.base_channels == 8
    assert cfg.train_dataloader.dataset.data_root == data + '/'
    return cfg


def test_hidden_counts_negatives_that_overlap_a_complete_box():
    neg = torch.tensor([[0., 0., 10., 10.], [20., 20., 30., 30.], [0., 0., 10., 12.]])
    full = torch.tensor([[0., 0., 10., 10.]])
    # IoUs with the complete box: 1, 0, 100/120 = 0.833
    assert estimate_prior._hidden(neg, full, 0.7) == 2
    assert estimate_prior._hidden(neg, full, 0.9) == 1
    assert estimate_prior._hidden(neg, torch.zeros(0, 4), 0.5) == 0


def test_pipelines_drop_random_transforms_and_sparsify_only_in_full():
    pipe = [dict(type='LoadImageFromFile'), dict(type='SparsifyAnnotations', fraction=0.3),
            dict(type='RandomFlip', prob=0.5), dict(type='PackDetInputs')]
    sparse, full = estimate_prior._pipelines(pipe, 'cfg')
    assert [t['type'] for t in sparse] == ['LoadImageFromFile', 'SparsifyAnnotations',
                                           'PackDetInputs']
    assert [t['type'] for t in full] == ['LoadImageFromFile', 'PackDetInputs']
    with pytest.raises(ValueError, match='cfg: the train pipeline has no PackDetInputs'):
        estimate_prior._pipelines(pipe[:2], 'cfg')


def test_complete_labels_have_no_hidden_positive(tmp_path, tiny_synthetic):
    # every anchor is sampled (huge sampler, pos_fraction 1): the counts are deterministic
    full = estimate_prior.estimate(_config(tmp_path, tiny_synthetic, 1.0, 10**7),
                                   repeats=1, progress=False)['rpn']
    assert full['hidden_pos'] == 0  # a negative cannot overlap a GT box at IoU >= 0.7
    assert full['labelled_pos'] > 0
    assert full['prior'] == pytest.approx(full['labelled_pos'] / full['sampled'])
    sparse = estimate_prior.estimate(_config(tmp_path, tiny_synthetic, 0.3, 10**7),
                                     repeats=1, progress=False)['rpn']
    # deleting 70% of the boxes turns their anchors into sampled negatives that the complete
    # annotation calls positive
    assert sparse['labelled_pos'] < full['labelled_pos']
    assert sparse['hidden_pos'] > 0
    assert sparse['prior'] > sparse['labelled_fraction']


def test_roi_head_estimate_with_a_checkpoint(tmp_path, tiny_synthetic):
    cfg = _config(tmp_path, tiny_synthetic, 0.3)
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    ckpt = tmp_path / 'w.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), str(ckpt))
    res = estimate_prior.estimate(cfg, checkpoint=str(ckpt), repeats=2, progress=False)
    n_img = 4  # the fixture's training tiles
    # RandomSampler draws exactly `num` RoIs per image (1000 proposals + GT are enough)
    assert res['roi']['sampled'] == 64 * n_img * 2
    assert res['rpn']['sampled'] == 64 * n_img * 2
    for head in ('rpn', 'roi'):
        r = res[head]
        assert 0 <= r['labelled_fraction'] <= r['prior'] <= 1
        assert r['prior'] == pytest.approx((r['labelled_pos'] + r['hidden_pos']) / r['sampled'])


def test_bad_arguments(tmp_path, tiny_synthetic):
    cfg = _config(tmp_path, tiny_synthetic, 0.3)
    with pytest.raises(ValueError, match='--repeats must be >= 1'):
        estimate_prior.estimate(cfg, repeats=0, progress=False)
    with pytest.raises(FileNotFoundError, match='nowhere.json: --full-ann file not found'):
        estimate_prior.estimate(cfg, full_ann=str(tmp_path / 'nowhere.json'), progress=False)
