"""PatchClassifier losses (Tokunaga et al. 2020, eqs. 3, 4, 6), the bag data set, the patch
loader and the pool sampler."""
import json
import math
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.registry import init_default_scope
from PIL import Image

import projects.negative_pseudo_labels  # noqa: F401
from projects.negative_pseudo_labels.classifier import (PatchClassifier,
                                                        log_one_minus_softmax,
                                                        multi_negative_loss, positive_loss)
from projects.negative_pseudo_labels.dataset import (LoadPatchFromSlide, PackPatchInputs,
                                                     ProportionBagDataset)
from projects.negative_pseudo_labels.sampler import PseudoLabelSampler

TINY_BACKBONE = dict(type='mmdet.MobileNetV2', widen_factor=0.25, out_indices=(7, ))


def test_log_one_minus_softmax_matches_float64_and_stays_finite():
    z = torch.tensor([[0.3, -1.2, 2.0], [0.0, 0.0, 0.0]])
    ref = torch.log1p(-torch.softmax(z.double(), 1))
    assert torch.allclose(log_one_minus_softmax(z).double(), ref, atol=1e-6)
    # f(0|x) = 1 - 2e-22 rounds to 1 in float32, log(1 - f) = log(2 e^0) - log(e^50 + 2)
    extreme = log_one_minus_softmax(torch.tensor([[50.0, 0.0, 0.0]]))
    assert extreme[0, 0].item() == pytest.approx(math.log(2) - 50.0, abs=1e-4)
    naive = torch.log(1 - torch.softmax(torch.tensor([[50.0, 0.0, 0.0]]), 1))
    assert torch.isinf(naive[0, 0])  # why the stable form is needed


def test_multi_negative_loss_weights_by_hand():
    # C = 4, all logits 0 -> f = 0.25, -log(1 - 0.25) = 0.28768
    # one negative: weight (4 - 1) / 3 = 1 -> 0.28768 (eq. 3 = eq. 4)
    # two negatives: weight 2 / 3, sum 2 * 0.28768 -> 0.38357
    # four negatives: weight 0 -> 0 ; none -> 0
    logits = torch.zeros(4, 4)
    neg = torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]], dtype=torch.bool)
    one = -math.log(0.75)
    expected = [one, 2 / 3 * 2 * one, 0.0, 0.0]
    assert multi_negative_loss(logits, neg).tolist() == pytest.approx(expected, abs=1e-6)


def test_negative_loss_is_minus_log_one_minus_p_not_the_printed_log_log():
    # p = softmax([ln 3, 0]) = (0.75, 0.25); negative on class 0: -log(1 - 0.75) = log 4
    logits = torch.tensor([[math.log(3.0), 0.0]])
    loss = multi_negative_loss(logits, torch.tensor([[True, False]]))
    assert loss.item() == pytest.approx(math.log(4.0), abs=1e-6)
    # the printed eq. (3), -log(1 - log p), would give -log(1 - log 0.75) = -0.2500
    assert abs(loss.item() - (-math.log(1 - math.log(0.75)))) > 1.0


def test_positive_loss_is_cross_entropy_and_zero_without_label():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    loss = positive_loss(logits, torch.tensor([0, -1]))
    assert loss[0].item() == pytest.approx(-math.log(math.exp(2) / (math.exp(2) + 2)), abs=1e-6)
    assert loss[1].item() == 0.0


def _sample(gt: int, idx: int):
    from mmengine.structures import BaseDataElement
    s = BaseDataElement(metainfo=dict(sample_idx=idx))
    s.gt_label = torch.tensor(gt)
    return s


def test_patch_classifier_batch_loss_uses_labels_and_stored_pseudo_labels():
    init_default_scope('mmseg')
    torch.manual_seed(0)
    model = PatchClassifier(TINY_BACKBONE, num_classes=4)
    model.eval()  # batch norm in eval: logits do not depend on the batch
    x = torch.randn(4, 3, 32, 32)
    logits = model(x, mode='tensor').detach().double()
    # store for a training set of 6 patches: index 3 positive 1 and negative {3};
    # index 4 negatives {0, 1}; index 5 nothing; index 0 is labelled (gt 2)
    pos = np.array([2, -1, -1, 1, -1, -1])
    neg = np.zeros((6, 4), bool)
    neg[3, 3] = True
    neg[4, [0, 1]] = True
    neg[0, 0] = True  # ignored: labelled patches never take stored negatives
    model.set_pseudo_labels(pos, neg)
    samples = [_sample(2, 0), _sample(-1, 3), _sample(-1, 4), _sample(-1, 5)]
    losses = model.loss(model(x, mode='tensor'), samples)
    logp = torch.log_softmax(logits, 1)
    log1m = torch.log1p(-torch.softmax(logits, 1))
    # 3 samples carry a label (the last one none): means over 3
    ce = -(logp[0, 2] + logp[1, 1])
    negl = -log1m[1, 3] - (2 / 3) * (log1m[2, 0] + log1m[2, 1])
    assert losses['loss_pos'].item() == pytest.approx((ce / 3).item(), abs=1e-5)
    assert losses['loss_neg'].item() == pytest.approx((negl / 3).item(), abs=1e-5)
    # without a store only gt_label counts: one labelled sample
    plain = PatchClassifier(TINY_BACKBONE, num_classes=4)
    plain.load_state_dict(model.state_dict())
    plain.eval()
    l2 = plain.loss(plain(x, mode='tensor'), samples)
    assert l2['loss_pos'].item() == pytest.approx(-logp[0, 2].item(), abs=1e-5)
    assert l2['loss_neg'].item() == 0.0


def test_patch_classifier_errors():
    init_default_scope('mmseg')
    with pytest.raises(ValueError, match='num_classes=1'):
        PatchClassifier(TINY_BACKBONE, num_classes=1)
    model = PatchClassifier(TINY_BACKBONE, num_classes=3)
    with pytest.raises(ValueError, match=r'\(N, 3\)'):
        model.set_pseudo_labels(np.zeros(5), np.zeros((5, 4), bool))
    with pytest.raises(ValueError, match='unknown mode'):
        model(torch.zeros(2, 3, 32, 32), mode='nope')
    model.set_pseudo_labels(np.zeros(2), np.zeros((2, 3), bool))
    with pytest.raises(ValueError, match='sample_idx 7'):
        model.loss(torch.zeros(1, 3), [_sample(-1, 7)])


# ------------------------------------------------------------------------ data
def _layout(root: str, name: str) -> dict:
    with open(osp.join(root, name)) as f:
        return json.load(f)


def test_dataset_arrays_follow_the_bag_file(tiny_bags):
    ds = ProportionBagDataset(ann_file='train.json', data_root=tiny_bags, pipeline=[])
    layout = _layout(tiny_bags, 'train.json')
    bags = layout['bags']
    assert len(ds) == sum(len(b['patches']) for b in bags)
    assert ds.metainfo['classes'] == tuple(layout['metainfo']['classes'])
    expected_gt = [lab for b in bags
                   for lab in (b['labels'] if b['labelled'] else [-1] * len(b['patches']))]
    assert ds.gt_labels.tolist() == expected_gt
    assert ds.bag_labelled.tolist() == [b['labelled'] for b in bags]
    assert np.allclose(ds.bag_ratios, [b['ratio'] for b in bags])
    weak_sizes = [len(b['patches']) for b in bags if not b['labelled']]
    assert len(ds.weak_indices) == sum(weak_sizes)
    assert (ds.gt_labels[ds.weak_indices] == -1).all()
    # one patch, by hand: the 2nd patch of the first bag
    info = ds.get_data_info(1)
    x, y = bags[0]['patches'][1]
    assert (info['x'], info['y'], info['grid']) == (x, y, (y // 32, x // 32))
    assert info['pixel_counts'].tolist() == bags[0]['pixel_counts'][1]
    weak = ProportionBagDataset(ann_file='train.json', data_root=tiny_bags, bags='weak',
                                pipeline=[])
    assert len(weak) == sum(weak_sizes) and not weak.bag_labelled.any()


def test_dataset_errors(tiny_bags):
    with pytest.raises(ValueError, match="bags='some'"):
        ProportionBagDataset(ann_file='train.json', data_root=tiny_bags, bags='some')
    with pytest.raises(ValueError, match='val.json: no patch'):
        ProportionBagDataset(ann_file='val.json', data_root=tiny_bags, bags='weak')
    with pytest.raises(ValueError, match='differ from the config'):
        ProportionBagDataset(ann_file='val.json', data_root=tiny_bags,
                             metainfo=dict(classes=('a', 'b')))


def test_load_patch_crops_the_slide_and_packs(tiny_bags):
    ds = ProportionBagDataset(ann_file='train.json', data_root=tiny_bags, pipeline=[])
    info = ds.get_data_info(5)
    slide = np.asarray(Image.open(info['img_path']).convert('RGB'))
    out = PackPatchInputs()(LoadPatchFromSlide(cache_size=1)(dict(info)))
    x, y = info['x'], info['y']
    assert torch.equal(out['inputs'], torch.from_numpy(
        slide[y:y + 32, x:x + 32].transpose(2, 0, 1).copy()))
    s = out['data_samples']
    assert s.sample_idx == 5 and s.grid == info['grid'] and s.bag_name == info['bag_name']
    assert s.gt_label.item() == info['gt_label']
    assert s.pixel_counts.tolist() == info['pixel_counts'].tolist()
    bad = dict(info, x=info['bag_shape'][1] - 16)
    with pytest.raises(ValueError, match='lies outside the 128x128 image'):
        LoadPatchFromSlide()(bad)


def test_sampler_pool_oversampling_and_epoch_length(tiny_bags):
    ds = ProportionBagDataset(ann_file='train.json', data_root=tiny_bags, pipeline=[])
    sampler = PseudoLabelSampler(ds, seed=0)
    counts = np.bincount(ds.gt_labels[sampler.pool], minlength=4)
    largest = np.bincount(ds.gt_labels[ds.gt_labels >= 0], minlength=4).max()
    present = np.bincount(ds.gt_labels[ds.gt_labels >= 0], minlength=4) > 0
    # every labelled class is repeated up to the largest one; weak patches are absent
    assert (counts[present] == largest).all() and (counts[~present] == 0).all()
    assert len(list(sampler)) == len(sampler.pool)
    sampler.set_epoch(1)
    a = list(sampler)
    sampler.set_epoch(2)
    assert sorted(a) == sorted(list(sampler)) and a != list(sampler)
    fixed = PseudoLabelSampler(ds, seed=0, samples_per_epoch=50)
    assert len(fixed) == 50 and len(list(fixed)) == 50
    # two ranks: disjoint halves of the padded epoch
    r0, r1 = PseudoLabelSampler(ds, seed=0, samples_per_epoch=51), \
        PseudoLabelSampler(ds, seed=0, samples_per_epoch=51)
    for rank, s in enumerate((r0, r1)):
        s.rank, s.world_size = rank, 2
    full = PseudoLabelSampler(ds, seed=0, samples_per_epoch=52)
    assert len(r0) == 26 and list(r0) + list(r1) != []
    assert sorted(list(r0) + list(r1)) == sorted(list(full))
    with pytest.raises(ValueError, match='pool is empty'):
        sampler.set_pool([])
    with pytest.raises(ValueError, match=r'must lie in \[0, '):
        sampler.set_pool([len(ds)])
