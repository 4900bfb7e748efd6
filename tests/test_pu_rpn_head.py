"""PURPNHead: one PU risk over all FPN levels and images; stock RPNHead otherwise."""
import os.path as osp

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.structures import InstanceData

import projects.pu_detection.pu_rpn_head  # noqa: F401  (registers PURPNHead)
from projects.pu_detection.pu_loss import PULoss, pu_risk

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
PU_CONFIG = osp.join(REPO, 'configs', 'pu_detection',
                     'faster-rcnn_r50_fpn_pu_2k_synthetic-sparse30.py')
PRIOR = 0.04
STRIDES = [4, 8, 16, 32, 64]
SIZES = [16, 8, 4, 2, 1]  # feature map sides of a 64x64 image at STRIDES


def _head(type_: str, loss_cls: dict, sampler_num: int = 256, **extra):
    """An RPN head as in mmdet's Faster R-CNN, one 32*stride/4 px square anchor per cell."""
    from mmdet.registry import MODELS
    train_cfg = dict(
        assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.7, neg_iou_thr=0.3,
                      min_pos_iou=0.3, match_low_quality=True, ignore_iof_thr=-1),
        sampler=dict(type='RandomSampler', num=sampler_num, pos_fraction=0.5,
                     neg_pos_ub=-1, add_gt_as_proposals=False),
        allowed_border=-1, pos_weight=-1, debug=False)
    with DefaultScope.overwrite_default_scope('mmdet'):
        return MODELS.build(dict(
            type=type_, in_channels=4, feat_channels=4,
            anchor_generator=dict(type='AnchorGenerator', scales=[8], ratios=[1.0],
                                  strides=STRIDES),
            bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0] * 4,
                            target_stds=[1.0] * 4),
            loss_cls=loss_cls, loss_bbox=dict(type='L1Loss', loss_weight=1.0),
            train_cfg=train_cfg, **extra))


def _batch():
    """Two 64x64 images: one 32x32 cell in image 0, image 1 without annotation."""
    metas = [dict(img_shape=(64, 64), pad_shape=(64, 64), scale_factor=(1.0, 1.0))] * 2
    gts = [InstanceData(bboxes=torch.tensor([[16., 16., 48., 48.]]), labels=torch.tensor([0])),
           InstanceData(bboxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long))]
    return gts, metas


def _targets(head, gts, metas, seed: int):
    torch.manual_seed(seed)  # RandomSampler draws from the global torch generator
    featmap_sizes = [torch.Size([s, s]) for s in SIZES]
    anchors, valid = head.get_anchors(featmap_sizes, metas, device='cpu')
    labels, weights, _, _, avg_factor = head.get_targets(anchors, valid, gts, metas)
    return labels, weights, avg_factor


def _eq12_numpy(c: np.ndarray, label: np.ndarray, w: np.ndarray, prior: float) -> tuple:
    """Brute-force eq. (12) on sigmoid logits c; label 0 = positive, 1 = background.

    Returns (unclamped negative part, positive part); weight-0 samples are left out.
    """
    keep = w > 0
    c, pos = c[keep], label[keep] == 0
    h0 = np.log1p(np.exp(c))  # BCE(c, 0)
    h1 = np.log1p(np.exp(-c))  # BCE(c, 1)
    mean_p_h0 = h0[pos].mean() if pos.any() else 0.0
    mean_p_h1 = h1[pos].mean() if pos.any() else 0.0
    return h0.mean() - prior * mean_p_h0, prior * mean_p_h1


def test_pu_rpn_head_applies_one_clamp_over_all_levels_and_images():
    # every anchor is sampled (341 per image < 1024), so the targets are deterministic.
    head = _head('PURPNHead', dict(type='PULoss', prior=PRIOR, use_sigmoid=True),
                 sampler_num=1024)
    gts, metas = _batch()
    labels, weights, avg_factor = _targets(head, gts, metas, seed=0)
    # Hand-chosen scores. The 32x32 cell matches only level-0 anchors (32 px): a level-1
    # anchor (64 px) centred on it has IoU 32^2/64^2 = 0.25 < 0.3, a negative. Sampled
    # anchors (label weight 1): level 0: 5 positives + 463 unlabeled = 468 (44 anchors with
    # IoU in [0.3, 0.7) are ignored); levels 1-4: 128 + 32 + 8 + 2 = 170 unlabeled.
    # Level 0: positives c = +10 (H(c,0) = softplus(10) = 10.00005), unlabeled c = -10
    # (H(c,0) = 4.5e-5). Level 0 alone: 5 * 10 / 468 - pi * 10 = 0.107 - 0.4 < 0: the
    # clamp of eq. (11) is active there. Levels 1-4: c = +2, H(c,0) = softplus(2) = 2.1269.
    # Whole batch (638 anchors): (50 + 463 * 4.5e-5 + 170 * 2.1269) / 638 - 0.4
    # = 411.6 / 638 - 0.4 = 0.2452 > 0: no clamp; plus pi * mean_P H(c,1) = 0.04 * 4.5e-5.
    scores = []
    for lvl, side in enumerate(SIZES):
        lab = labels[lvl].reshape(2, side, side).float()
        if lvl == 0:
            score = torch.where(lab == 0, 10.0, -10.0)
        else:
            score = torch.full_like(lab, 2.0)
        scores.append(score[:, None].clone().requires_grad_(True))
    bbox_preds = [torch.zeros(2, 4, s, s) for s in SIZES]

    # the head's targets are the test's targets (same seed): precondition of the test
    torch.manual_seed(0)
    losses = head.loss_by_feat(scores, bbox_preds, gts, metas)
    loss = losses['loss_rpn_cls']
    assert loss.dim() == 0

    c = torch.cat([s.detach().permute(0, 2, 3, 1).reshape(-1) for s in scores])
    lab = torch.cat([x.reshape(-1) for x in labels])
    w = torch.cat([x.reshape(-1) for x in weights])
    n_pos = int(((lab == 0) & (w > 0)).sum())
    assert n_pos == 5 and int((w > 0).sum()) == 638  # the counts used above

    # (a) equals pu_risk on the concatenation of all levels and images
    expected = pu_risk(F.softplus(c), F.softplus(-c), lab == 0, PRIOR, weight=w.float())
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    # ... and an independent numpy evaluation of eq. (12)
    neg, pos = _eq12_numpy(c.double().numpy(), lab.numpy(), w.double().numpy(), PRIOR)
    assert neg > 0  # no clamp over the whole batch
    assert loss.item() == pytest.approx(0.2452, abs=2e-4)  # the arithmetic above
    assert loss.item() == pytest.approx(neg + pos, rel=1e-5)

    # (b) the per-level estimator (mmdet's loop) differs: level 0 is clamped alone
    level_neg = []
    per_level = 0.0
    for lvl, side in enumerate(SIZES):
        cl = scores[lvl].detach().permute(0, 2, 3, 1).reshape(-1).double().numpy()
        n, p = _eq12_numpy(cl, labels[lvl].reshape(-1).numpy(),
                           weights[lvl].reshape(-1).double().numpy(), PRIOR)
        level_neg.append(n)
        per_level += max(n, 0.0) + p
    assert level_neg[0] < 0  # clamp active on level 0 only
    assert all(n > 0 for n in level_neg[1:])
    # per level: 0 (clamped level 0) + 4 * softplus(2) = 8.51 (plus ~2e-6); batch: 0.2452
    assert per_level == pytest.approx(4 * float(F.softplus(torch.tensor(2.0))), rel=1e-4)
    assert abs(loss.item() - per_level) > 1.0

    # gradient flows to every level's scores
    loss.backward()
    assert all(s.grad is not None and bool(s.grad.abs().sum() > 0) for s in scores)


@pytest.mark.parametrize('both_annotated', [True, False])
def test_pu_rpn_head_equals_stock_rpn_head_with_cross_entropy(both_annotated):
    ce = dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0)
    ours, stock = _head('PURPNHead', ce), _head('RPNHead', ce)
    gts, metas = _batch()
    if both_annotated:
        gts[1] = InstanceData(bboxes=torch.tensor([[4., 8., 20., 40.], [30., 30., 62., 50.]]),
                              labels=torch.tensor([0, 0]))
    g = torch.Generator().manual_seed(1)
    scores = [torch.randn(2, 1, s, s, generator=g) * 3 for s in SIZES]
    preds = [torch.randn(2, 4, s, s, generator=g) for s in SIZES]
    # RandomSampler (256 of 341 anchors per image) draws from the global generator:
    # the same seed gives both heads the same sampled anchors.
    torch.manual_seed(7)
    a = ours.loss_by_feat(scores, preds, gts, metas)
    torch.manual_seed(7)
    b = stock.loss_by_feat(scores, preds, gts, metas)
    # with a loss other than PULoss the mixin steps aside: the stock per-level losses
    assert isinstance(b['loss_rpn_cls'], list) and len(b['loss_rpn_cls']) == 5
    assert sum(b['loss_rpn_cls']).item() > 0.1  # random logits of scale 3: non-zero loss
    for key in ('loss_rpn_cls', 'loss_rpn_bbox'):
        assert len(a[key]) == 5
        for x, y in zip(a[key], b[key]):
            assert torch.equal(x, y)
    assert sum(a['loss_rpn_bbox']).item() > 0


def test_pu_rpn_head_with_zero_hidden_prior_equals_stock_cross_entropy():
    # PULoss(hidden_prior=0) is the weighted mean cross-entropy (pu_loss docstring): over
    # the sampled anchors of all levels, sum(BCE) / #sampled. mmdet's RPN (RandomSampler,
    # pos_weight=-1): label weights 0/1 and avg_factor = sum over images of
    # max(#pos, 1) + max(#neg, 1), which is #sampled when every image has a positive (an
    # image without annotation adds a phantom 1 to mmdet's count: 513 for 512 samples).
    ce = dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0)
    pu = dict(type='PULoss', hidden_prior=0.0, use_sigmoid=True)
    ours, stock = _head('PURPNHead', pu), _head('RPNHead', ce)
    gts, metas = _batch()
    gts[1] = InstanceData(bboxes=torch.tensor([[4., 8., 20., 40.]]), labels=torch.tensor([0]))
    g = torch.Generator().manual_seed(3)
    scores = [torch.randn(2, 1, s, s, generator=g) * 3 for s in SIZES]
    preds = [torch.randn(2, 4, s, s, generator=g) for s in SIZES]
    torch.manual_seed(5)
    a = ours.loss_by_feat(scores, preds, gts, metas)
    torch.manual_seed(5)
    b = stock.loss_by_feat(scores, preds, gts, metas)
    assert a['loss_rpn_cls'].dim() == 0  # one value for the batch
    assert a['loss_rpn_cls'].item() == pytest.approx(sum(b['loss_rpn_cls']).item(), rel=1e-6)
    for x, y in zip(a['loss_rpn_bbox'], b['loss_rpn_bbox']):
        assert torch.equal(x, y)


def test_stock_rpn_head_with_pu_loss_names_the_head():
    # mmdet's RPNHead calls loss_cls per level: each call would be clamped on its own
    head = _head('RPNHead', dict(type='PULoss', prior=PRIOR, use_sigmoid=True))
    gts, metas = _batch()
    scores = [torch.zeros(2, 1, s, s) for s in SIZES]
    preds = [torch.zeros(2, 4, s, s) for s in SIZES]
    with pytest.raises(ValueError, match='RPNHead calls loss_cls per FPN level.*PURPNHead'):
        head.loss_by_feat(scores, preds, gts, metas)


def test_bde_rpn_head_with_pu_loss_makes_one_call():
    # BDE with temperature = inf gives every weight 1 (bde.py): BDERPNHead + PULoss must then
    # be PURPNHead + PULoss, one call over all levels (the stock per-level loop would raise)
    pu = dict(type='PULoss', prior=PRIOR, use_sigmoid=True)
    bde = _head('BDERPNHead', pu, bde=dict(temperature=float('inf')))
    ours = _head('PURPNHead', pu)
    gts, metas = _batch()
    g = torch.Generator().manual_seed(2)
    scores = [torch.randn(2, 1, s, s, generator=g) * 3 for s in SIZES]
    preds = [torch.randn(2, 4, s, s, generator=g) for s in SIZES]
    calls = []
    bde.loss_cls.register_forward_pre_hook(lambda module, args: calls.append(len(args[0])))
    torch.manual_seed(4)
    a = bde.loss_by_feat(scores, preds, gts, metas)
    torch.manual_seed(4)
    b = ours.loss_by_feat(scores, preds, gts, metas)
    assert calls == [2 * 341]  # every anchor of every level of both images, once
    assert a['loss_rpn_cls'].item() == pytest.approx(b['loss_rpn_cls'].item(), rel=1e-6)
    assert a['rpn_bde_w'].item() == 1.0


NNPU_HP_CONFIG = osp.join(REPO, 'configs', 'pu_detection',
                         'faster-rcnn_r18-c32_fpn_pu-nnpu-hp_500i_synthetic-sparse30.py')


@pytest.mark.parametrize('config,roi_head', [(PU_CONFIG, 'StandardRoIHead'),
                                             (NNPU_HP_CONFIG, 'PURoIHead')],
                         ids=['pu', 'pu-nnpu-hp-PURoIHead'])
def test_tiny_pu_faster_rcnn_trains_one_step(config, roi_head):
    """Smoke test: a PU config (RPN and RoI head PU), shrunk, does one training step."""
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    cfg = Config.fromfile(config)
    cfg.model.roi_head.type = roi_head
    cfg.merge_from_dict(dict(model=dict(
        backbone=dict(depth=18, base_channels=8),
        neck=dict(in_channels=[8, 16, 32, 64], out_channels=16),
        rpn_head=dict(in_channels=16, feat_channels=16),
        roi_head=dict(bbox_roi_extractor=dict(out_channels=16),
                      bbox_head=dict(in_channels=16, fc_out_channels=32)),
        train_cfg=dict(rpn=dict(sampler=dict(num=64)), rcnn=dict(sampler=dict(num=64))))))
    samples = []
    for boxes, labels in ([[[8., 8., 24., 22.], [30., 34., 46., 50.]], [0, 3]],
                          [torch.zeros(0, 4), []]):  # image 2: no annotation (unlabeled)
        s = DetDataSample(metainfo=dict(img_shape=(64, 64), ori_shape=(64, 64),
                                        scale_factor=(1.0, 1.0)))
        s.gt_instances = InstanceData(bboxes=torch.as_tensor(boxes, dtype=torch.float32),
                                      labels=torch.as_tensor(labels, dtype=torch.long))
        samples.append(s)
    g = torch.Generator().manual_seed(0)
    inputs = [torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8, generator=g)
              for _ in range(2)]
    with DefaultScope.overwrite_default_scope('mmdet'):
        torch.manual_seed(0)
        model = MODELS.build(cfg.model)
        model.init_weights()
        model.train()
        assert type(model.rpn_head).__name__ == 'PURPNHead'
        assert type(model.roi_head).__name__ == roi_head
        assert isinstance(model.rpn_head.loss_cls, PULoss) and model.rpn_head.loss_cls.use_sigmoid
        assert isinstance(model.roi_head.bbox_head.loss_cls, PULoss)
        assert not model.roi_head.bbox_head.loss_cls.use_sigmoid
        data = model.data_preprocessor(dict(inputs=inputs, data_samples=samples), True)
        losses = model(**data, mode='loss')
    total = 0.0
    for name in ('loss_rpn_cls', 'loss_rpn_bbox', 'loss_cls', 'loss_bbox'):
        values = losses[name] if isinstance(losses[name], list) else [losses[name]]
        for v in values:
            assert torch.isfinite(v).all(), name
            total = total + v.sum()
    assert losses['loss_rpn_cls'].item() > 0 and losses['loss_cls'].item() > 0
    total.backward()
    grad = model.rpn_head.rpn_cls.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
