"""PUHeadMixin heads (RetinaNet, ATSS, FCOS; the RPN is in test_pu_rpn_head.py), the errors
for heads without it, and PURoIHead's ground-truth-proposal flags."""
import numpy as np
import pytest
import torch
from mmengine.config import ConfigDict
from mmengine.registry import DefaultScope
from mmengine.structures import InstanceData

import projects.pu_detection  # noqa: F401  (registers the heads)
from projects.pu_detection import PUHeadMixin, PULoss

PRIOR = 0.3
NUM_CLASSES = 2
STRIDES = [8, 16]
SIZES = [8, 4]  # feature map sides of a 64x64 image at STRIDES
ANCHORS = dict(type='AnchorGenerator', ratios=[1.0], octave_base_scale=4, scales_per_octave=1,
               strides=STRIDES)
PU = dict(type='PULoss', prior=PRIOR, use_sigmoid=True)


def _build(cfg: dict):
    from mmdet.registry import MODELS
    with DefaultScope.overwrite_default_scope('mmdet'):
        return MODELS.build(cfg)


def _cfg(kind: str, head_type: str, loss_cls: dict) -> dict:
    """A one-conv head of mmdet's ``kind`` ('retina', 'atss', 'fcos', 'gfl'), 4 channels."""
    common = dict(type=head_type, num_classes=NUM_CLASSES, in_channels=4, stacked_convs=1,
                  feat_channels=4, loss_cls=loss_cls)
    if kind == 'retina':
        return dict(common, anchor_generator=ANCHORS,
                    bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.] * 4,
                                    target_stds=[1.] * 4),
                    loss_bbox=dict(type='L1Loss', loss_weight=1.0),
                    train_cfg=dict(assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5,
                                                 neg_iou_thr=0.4, min_pos_iou=0,
                                                 ignore_iof_thr=-1),
                                   sampler=dict(type='PseudoSampler'), allowed_border=-1,
                                   pos_weight=-1, debug=False))
    atss_train = dict(assigner=dict(type='ATSSAssigner', topk=3), allowed_border=-1,
                      pos_weight=-1, debug=False)
    if kind == 'atss':
        return dict(common, norm_cfg=None, anchor_generator=ANCHORS,
                    bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.] * 4,
                                    target_stds=[0.1, 0.1, 0.2, 0.2]),
                    loss_bbox=dict(type='GIoULoss', loss_weight=2.0),
                    loss_centerness=dict(type='CrossEntropyLoss', use_sigmoid=True,
                                         loss_weight=1.0),
                    train_cfg=atss_train)
    if kind == 'fcos':
        return dict(common, norm_cfg=None, strides=STRIDES,
                    regress_ranges=((-1, 32), (32, 1e8)),
                    loss_bbox=dict(type='IoULoss', loss_weight=1.0),
                    loss_centerness=dict(type='CrossEntropyLoss', use_sigmoid=True,
                                         loss_weight=1.0))
    if kind == 'gfl':
        return dict(common, norm_cfg=None, anchor_generator=ANCHORS, reg_max=4,
                    loss_dfl=dict(type='DistributionFocalLoss', loss_weight=0.25),
                    loss_bbox=dict(type='GIoULoss', loss_weight=2.0), train_cfg=atss_train)
    raise KeyError(kind)


def _batch():
    """Two 64x64 images: two cells (classes 0 and 1) in image 0, one cell in image 1."""
    metas = [dict(img_shape=(64, 64), pad_shape=(64, 64), scale_factor=(1.0, 1.0),
                  batch_input_shape=(64, 64))] * 2
    gts = [InstanceData(bboxes=torch.tensor([[4., 4., 30., 30.], [30., 34., 60., 62.]]),
                        labels=torch.tensor([0, 1])),
           InstanceData(bboxes=torch.tensor([[20., 10., 44., 40.]]), labels=torch.tensor([1]))]
    return gts, metas


def _targets(kind: str, head, outs: tuple, gts, metas) -> tuple:
    """(labels, label weights or None) per level, as the head computes them, flattened
    level by level and, within a level, image by image (mmdet's order)."""
    cls_scores = outs[0]
    sizes = [c.shape[-2:] for c in cls_scores]
    if kind == 'fcos':
        points = head.prior_generator.grid_priors(sizes, dtype=torch.float32, device='cpu')
        labels, _ = head.get_targets(points, gts)  # per level, images concatenated
        return [lab.reshape(-1) for lab in labels], None
    anchors, valid = head.get_anchors(sizes, metas, device='cpu')
    targets = head.get_targets(anchors, valid, gts, metas)
    if kind == 'atss':  # (anchor_list, labels, label_weights, ...)
        labels, weights = targets[1], targets[2]
    else:
        labels, weights = targets[0], targets[1]
    return [x.reshape(-1) for x in labels], [x.reshape(-1) for x in weights]


def _eq12_sigmoid(c: np.ndarray, label: np.ndarray, w: np.ndarray, prior: float) -> float:
    """Eq. (12) in numpy on sigmoid logits c (n, C); label C = background; weights w."""
    keep = w > 0
    c, label, w = c[keep], label[keep], w[keep]
    pos = label < c.shape[1]
    onehot = np.eye(c.shape[1] + 1)[label][:, :c.shape[1]]
    h0 = np.log1p(np.exp(c)).sum(1)  # sum_j BCE(c_j, 0)
    h1 = (np.log1p(np.exp(c)) - onehot * c).sum(1)  # sum_j BCE(c_j, onehot_j)
    mean_x = (w * h0).sum() / w.sum()
    mean_p0 = (w[pos] * h0[pos]).sum() / w[pos].sum()
    mean_p1 = (w[pos] * h1[pos]).sum() / w[pos].sum()
    return max(0.0, mean_x - prior * mean_p0) + prior * mean_p1


@pytest.mark.parametrize('kind,pu_type,stock_type', [('retina', 'PURetinaHead', 'RetinaHead'),
                                                     ('atss', 'PUATSSHead', 'ATSSHead'),
                                                     ('fcos', 'PUFCOSHead', 'FCOSHead')])
def test_pu_head_calls_the_loss_once_over_all_levels(kind, pu_type, stock_type):
    torch.manual_seed(0)
    head = _build(_cfg(kind, pu_type, PU))
    stock = _build(_cfg(kind, stock_type, dict(type='FocalLoss', use_sigmoid=True)))
    stock.load_state_dict(head.state_dict())  # same weights, stock focal loss
    assert isinstance(head, PUHeadMixin) and isinstance(head.loss_cls, PULoss)
    assert head.cls_out_channels == NUM_CLASSES  # sigmoid, as the PULoss says
    feats = [torch.randn(2, 4, s, s) * 3 for s in SIZES]
    outs = head(feats)
    gts, metas = _batch()
    calls = []
    head.loss_cls.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape))
    losses = head.loss_by_feat(*outs, gts, metas)
    # one call with every level's samples of both images: 2 * (8*8 + 4*4) = 160 priors
    assert calls == [torch.Size([160, NUM_CLASSES])]
    assert losses['loss_cls'].dim() == 0

    # independent value: eq. (12) in numpy over the concatenation of all levels
    labels, weights = _targets(kind, head, outs, gts, metas)
    scores = np.concatenate([s.detach().permute(0, 2, 3, 1).reshape(-1, NUM_CLASSES).numpy()
                             for s in outs[0]]).astype(np.float64)
    label = torch.cat(labels).numpy()
    w = np.ones(len(label)) if weights is None else torch.cat(weights).double().numpy()
    assert (label < NUM_CLASSES).sum() >= 2  # the batch has positives to estimate from
    assert losses['loss_cls'].item() == pytest.approx(_eq12_sigmoid(scores, label, w, PRIOR),
                                                      rel=1e-5)
    # the rest of the head is mmdet's: regression (and centerness) losses as the stock head
    ref = stock.loss_by_feat(*outs, gts, metas)
    assert set(ref) == set(losses)
    for key in set(ref) - {'loss_cls'}:
        a = losses[key] if isinstance(losses[key], list) else [losses[key]]
        b = ref[key] if isinstance(ref[key], list) else [ref[key]]
        assert len(a) == len(b) and all(torch.allclose(x, y) for x, y in zip(a, b)), key
    losses['loss_cls'].backward()
    assert all(torch.isfinite(s.grad if s.grad is not None else torch.zeros(1)).all()
               for s in head.parameters())


@pytest.mark.parametrize('kind,stock_type', [('retina', 'RetinaHead'), ('atss', 'ATSSHead'),
                                             ('fcos', 'FCOSHead')])
def test_stock_dense_head_with_pu_loss_raises_naming_the_head(kind, stock_type):
    torch.manual_seed(0)
    head = _build(_cfg(kind, stock_type, PU))
    outs = head([torch.randn(2, 4, s, s) for s in SIZES])
    gts, metas = _batch()
    with pytest.raises(ValueError, match=f'{stock_type} calls loss_cls per FPN level.*'
                                         f'PUHeadMixin'):
        head.loss_by_feat(*outs, gts, metas)


def test_quality_focal_heads_are_not_supported():
    torch.manual_seed(0)
    head = _build(_cfg('gfl', 'GFLHead', PU))
    outs = head([torch.randn(2, 4, s, s) for s in SIZES])
    gts, metas = _batch()
    with pytest.raises(ValueError, match=r'GFLHead passes \(label, score\) targets.*not '
                                         'supported'):
        head.loss_by_feat(*outs, gts, metas)
    from mmdet.models.dense_heads import GFLHead, TOODHead
    for base in (GFLHead, TOODHead):
        with pytest.raises(TypeError, match=f'{base.__name__} has \\(label, score\\)'):
            type(f'PU{base.__name__}', (PUHeadMixin, base), {})


def test_mixin_with_another_loss_is_the_stock_head():
    torch.manual_seed(0)
    focal = dict(type='FocalLoss', use_sigmoid=True)
    head, stock = _build(_cfg('retina', 'PURetinaHead', focal)), _build(
        _cfg('retina', 'RetinaHead', focal))
    stock.load_state_dict(head.state_dict())
    outs = head([torch.randn(2, 4, s, s) for s in SIZES])
    gts, metas = _batch()
    a, b = head.loss_by_feat(*outs, gts, metas), stock.loss_by_feat(*outs, gts, metas)
    assert len(a['loss_cls']) == len(b['loss_cls']) == 2  # per level, as mmdet
    assert all(torch.equal(x, y) for x, y in zip(a['loss_cls'], b['loss_cls']))


def _roi_head(head_type: str, loss_cls: dict):
    return _build(dict(
        type=head_type,
        bbox_roi_extractor=dict(type='SingleRoIExtractor',
                                roi_layer=dict(type='RoIAlign', output_size=2, sampling_ratio=0),
                                out_channels=4, featmap_strides=[4]),
        bbox_head=dict(type='Shared2FCBBoxHead', in_channels=4, fc_out_channels=8,
                       roi_feat_size=2, num_classes=1,
                       bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.] * 4,
                                       target_stds=[0.1, 0.1, 0.2, 0.2]),
                       reg_class_agnostic=False, loss_cls=loss_cls,
                       loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
        train_cfg=ConfigDict(
            assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.5,
                          min_pos_iou=0.5, match_low_quality=False, ignore_iof_thr=-1),
            sampler=dict(type='RandomSampler', num=512, pos_fraction=0.25, neg_pos_ub=-1,
                         add_gt_as_proposals=True),
            pos_weight=-1, debug=False)))


def _eq12_softmax(logits: np.ndarray, label: np.ndarray, prior: float,
                  excluded: np.ndarray) -> float:
    """Eq. (12) on softmax logits (n, 2), label 1 = background; ``excluded`` positives are
    kept in E_x and left out of the positive means."""
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    h0, h1 = -logp[:, 1], -logp[:, 0]
    pos = (label == 0) & ~excluded
    return max(0.0, h0.mean() - prior * h0[pos].mean()) + prior * h1[pos].mean()


def test_pu_roi_head_leaves_gt_proposals_out_of_the_positive_means():
    from mmdet.structures import DetDataSample
    torch.manual_seed(0)
    head = _roi_head('PURoIHead', dict(type='PULoss', prior=0.5))
    gt_boxes = torch.tensor([[4., 4., 20., 20.], [30., 30., 50., 46.]])
    sample = DetDataSample(metainfo=dict(img_shape=(64, 64), pad_shape=(64, 64),
                                         scale_factor=(1.0, 1.0)))
    sample.gt_instances = InstanceData(bboxes=gt_boxes, labels=torch.tensor([0, 0]))
    # proposals: one on the first cell (IoU 0.77, a positive), three on background
    proposals = torch.tensor([[5., 5., 21., 19.], [40., 2., 60., 20.], [2., 40., 20., 60.],
                              [50., 50., 63., 63.]])
    x = (torch.randn(1, 4, 16, 16), )
    seen = {}
    forward = head._bbox_forward

    def record_rois(feats, rois):
        seen['rois'] = rois
        return forward(feats, rois)

    head._bbox_forward = record_rois
    head.bbox_head.loss_cls.register_forward_pre_hook(
        lambda module, args: seen.update(scores=args[0].detach(), labels=args[1]))
    losses = head.loss(x, [InstanceData(bboxes=proposals.clone())], [sample])
    # 6 sampled RoIs (all of them: 2 ground-truth boxes + 4 proposals), 3 positives; the
    # ground-truth rows are recognised here by their boxes, independently of pos_is_gt
    boxes = seen['rois'][:, 1:]
    is_gt = (boxes[:, None, :] == gt_boxes[None]).all(-1).any(1).numpy()
    label = seen['labels'].numpy()
    assert len(label) == 6 and is_gt.sum() == 2 and (label == 0).sum() == 3
    logits = seen['scores'].double().numpy()
    expected = _eq12_softmax(logits, label, 0.5, excluded=is_gt)
    assert losses['loss_cls'].item() == pytest.approx(expected, rel=1e-5)
    # the stock head's value (ground-truth boxes in the positive means) is another number
    everything = _eq12_softmax(logits, label, 0.5, excluded=np.zeros(6, bool))
    assert abs(expected - everything) > 1e-4
