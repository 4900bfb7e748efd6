"""YOLLO detector and head: target assignment, loss values, decoding, a short training run.

Values are worked out by hand in the comments. Notation: s = stride, a GT centre (cx, cy)
goes to cell (i, j) = (floor(cy / s), floor(cx / s)) with offset (cx / s - j, cy / s - i);
softplus(x) = log(1 + e^x) = -log(1 - sigmoid(x)), softplus(-x) = -log(sigmoid(x)):
softplus(0.5) = 0.974077, softplus(1) = 1.313262, softplus(-1) = 0.313262.
"""
import math
import os.path as osp

import pytest
import torch
from mmdet.structures.bbox import HorizontalBoxes
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.runner import Runner
from mmengine.structures import InstanceData

import projects.common  # noqa: F401  (CellDetDataset, CellDetectionMetric, transforms)
from projects.exclusive_ce.yollo import YOLLO, YOLLOHead, valid_cells, yollo_targets

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
BASE_MODEL = osp.join(REPO, 'configs', '_base_', 'models', 'yollo_r18-c32_scratch.py')
SP05, SP1, SPM1 = 0.9740769841801067, 1.3132616875182228, 0.31326168751822286


def _box(cx: float, cy: float, w: float = 10.0, h: float = 6.0) -> list:
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def _gt(centres: list, labels: list) -> InstanceData:
    boxes = torch.tensor([_box(*c) for c in centres], dtype=torch.float32).reshape(-1, 4)
    return InstanceData(bboxes=HorizontalBoxes(boxes), labels=torch.tensor(labels).long())


# ----------------------------------------------------------------------------- targets


def test_single_gt_goes_to_its_cell_with_the_offset_within_the_cell():
    # s = 8, centre (13, 5): cell (floor(5/8), floor(13/8)) = (0, 1), flat 0*3 + 1 = 1;
    # offset (13/8 - 1, 5/8 - 0) = (0.625, 0.625)
    labels, weights, offsets, pos, dropped = yollo_targets(
        torch.tensor([[13., 5.]]), torch.tensor([2]), (2, 3), 8, num_classes=3)
    assert labels.tolist() == [3, 2, 3, 3, 3, 3]  # background = num_classes = 3
    assert weights.tolist() == [1.0] * 6
    assert pos.tolist() == [False, True, False, False, False, False]
    assert offsets[1].tolist() == [0.625, 0.625]
    assert offsets[pos.logical_not()].abs().sum().item() == 0.0
    assert dropped == 0


def test_two_gt_in_one_cell_the_nearer_to_the_cell_centre_wins():
    # s = 8, cell (0, 1) has its centre at (1.5, 0.5) cell units.
    # A (9, 1) -> (1.125, 0.125): d^2 = 0.375^2 * 2 = 0.28125
    # B (13, 5) -> (1.625, 0.625): d^2 = 0.125^2 * 2 = 0.03125 -> B wins (label 1)
    labels, _, offsets, pos, dropped = yollo_targets(
        torch.tensor([[9., 1.], [13., 5.]]), torch.tensor([0, 1]), (2, 3), 8, 3)
    assert labels[1].item() == 1 and offsets[1].tolist() == [0.625, 0.625]
    assert int(pos.sum()) == 1 and dropped == 1
    # C (11, 3) -> (1.375, 0.375): d^2 = 0.03125 too, a tie with B: lowest index wins
    labels, _, offsets, _, dropped = yollo_targets(
        torch.tensor([[11., 3.], [13., 5.]]), torch.tensor([0, 1]), (2, 3), 8, 3)
    assert labels[1].item() == 0 and offsets[1].tolist() == [0.375, 0.375] and dropped == 1
    labels, _, _, _, _ = yollo_targets(
        torch.tensor([[13., 5.], [11., 3.]]), torch.tensor([1, 0]), (2, 3), 8, 3)
    assert labels[1].item() == 1


def test_ignored_gt_and_padding_get_weight_zero():
    # map 4x4 at s = 8 (a 32x32 padded batch), image 17x9 (h x w): valid rows
    # ceil(17/8) = 3, valid columns ceil(9/8) = 2 -> 6 cells of weight 1 before ignoring
    assert valid_cells((17, 9), 8) == (3, 2)
    # positive (5, 12) -> cell (1, 0) = flat 4; ignored (12, 20) -> cell (2, 1) = flat 9;
    # ignored (6, 3) -> cell (0, 0) = flat 0; valid cells left: 1, 4, 5, 8
    labels, weights, _, pos, _ = yollo_targets(
        torch.tensor([[5., 12.]]), torch.tensor([0]), (4, 4), 8, 2, img_shape=(17, 9),
        ignore_centres=torch.tensor([[12., 20.], [6., 3.]]))
    assert torch.nonzero(weights).flatten().tolist() == [1, 4, 5, 8]
    assert torch.nonzero(pos).flatten().tolist() == [4] and labels[4].item() == 0
    # an ignored GT in the cell of a positive makes it neither positive nor negative
    labels, weights, _, pos, _ = yollo_targets(
        torch.tensor([[5., 12.]]), torch.tensor([0]), (4, 4), 8, 2,
        ignore_centres=torch.tensor([[7., 9.]]))
    assert not pos.any() and weights[4].item() == 0.0 and labels[4].item() == 2
    assert weights.sum().item() == 15.0


def test_centre_outside_the_valid_cells_is_clipped_to_the_border_cell():
    # image 16x16 at s = 8 in a 3x3 map: valid cells 2x2; centre (17, 3) (outside the
    # image) -> column floor(17/8) = 2 clipped to 1, offset x (17/8 - 1) = 1.125 -> 1.0
    _, _, offsets, pos, _ = yollo_targets(torch.tensor([[17., 3.]]), torch.tensor([0]),
                                          (3, 3), 8, 1, img_shape=(16, 16))
    assert torch.nonzero(pos).flatten().tolist() == [1]
    assert offsets[1].tolist() == [1.0, 0.375]


def test_bad_gt_labels_raise():
    with pytest.raises(ValueError, match='gt_labels'):
        yollo_targets(torch.tensor([[1., 1.]]), torch.tensor([3]), (2, 2), 4, num_classes=3)


# ----------------------------------------------------------------------------- losses


def _fixed_head(use_sigmoid: bool = True, cls_bias=(0.5, -1.0), **kwargs) -> YOLLOHead:
    """Head with stacked_convs=0 and zero 1x1 weights: every cell's logits are the biases.
    Offsets: sigmoid(0) = 0.5 in x, sigmoid(log(1/3)) = 0.25 in y."""
    loss_cls = kwargs.pop('loss_cls', dict(type='mmdet.CrossEntropyLoss',
                                           use_sigmoid=use_sigmoid, loss_weight=1.0))
    head = YOLLOHead(num_classes=2, in_channels=1, stacked_convs=0, stride=8,
                     loss_cls=loss_cls, **kwargs)
    with torch.no_grad():
        head.conv_cls.weight.zero_()
        head.conv_cls.bias.copy_(torch.tensor(cls_bias))
        head.conv_offset.weight.zero_()
        head.conv_offset.bias.copy_(torch.tensor([0.0, math.log(1 / 3)]))
    return head


def _metas(n: int, img_shapes=None) -> list:
    img_shapes = img_shapes or [(16, 16)] * n
    return [dict(img_shape=s, batch_input_shape=(16, 16), ori_shape=s, scale_factor=(1., 1.))
            for s in img_shapes]


def test_sigmoid_ce_loss_equals_the_hand_value():
    # 2x2 cells (16x16 input, s = 8), logits (0.5, -1) everywhere, one GT of class 1 at
    # (13, 5) -> cell (0, 1). Positive cell: softplus(0.5) + softplus(1) = 2.287339;
    # each of the 3 background cells: softplus(0.5) + softplus(-1) = 1.287339;
    # total 6.149355; 'cells': / 4 = 1.537339; 'positives': / 1 = 6.149355.
    # Offset: |0.5 - 0.625| + |0.25 - 0.625| = 0.5, over 1 positive.
    x = (torch.zeros(1, 1, 2, 2), )
    for avg, expected in (('cells', 1.5373386717), ('positives', 6.1493546868)):
        head = _fixed_head(cls_avg_factor=avg)
        losses = head.loss_by_feat(*head(x), [_gt([(13, 5)], [1])], _metas(1))
        assert set(losses) == {'loss_cls', 'loss_offset'}
        assert losses['loss_cls'].item() == pytest.approx(expected, rel=1e-5)
        assert losses['loss_offset'].item() == pytest.approx(0.5, rel=1e-6)
    # the same value by a direct torch formula on the expected targets
    logits = torch.tensor([[0.5, -1.0]]).expand(4, 2)
    target = torch.zeros(4, 2)
    target[1, 1] = 1.0
    direct = torch.nn.functional.binary_cross_entropy_with_logits(logits, target,
                                                                  reduction='sum') / 4
    assert direct.item() == pytest.approx(1.5373386717, rel=1e-6)


def test_softmax_ce_loss_equals_the_hand_value():
    # logits (0.5, -1, 0) with background = index 2: lse = log(e^0.5 + e^-1 + 1) = 1.104131
    # positive (class 1): lse + 1 = 2.104131; background: lse - 0 = 1.104131 (x3)
    # -> (2.104131 + 3 * 1.104131) / 4 = 1.354131
    head = _fixed_head(use_sigmoid=False, cls_bias=(0.5, -1.0, 0.0))
    assert head.cls_out_channels == 3
    losses = head.loss_by_feat(*head((torch.zeros(1, 1, 2, 2), )), [_gt([(13, 5)], [1])],
                               _metas(1))
    assert losses['loss_cls'].item() == pytest.approx(1.3541306053, rel=1e-5)


def test_batch_with_padding_and_an_empty_image():
    # image 1 as above (4 valid cells, sum 6.149355); image 2 has no GT and img_shape 8x16
    # in the 16x16 batch: valid cells ceil(8/8) x ceil(16/8) = 1 x 2, two background cells
    # 2 * 1.287339 = 2.574677 -> (6.149355 + 2.574677) / (4 + 2) = 1.454005
    head = _fixed_head()
    losses = head.loss_by_feat(*head((torch.zeros(2, 1, 2, 2), )),
                               [_gt([(13, 5)], [1]), _gt([], [])],
                               _metas(2, [(16, 16), (8, 16)]))
    assert losses['loss_cls'].item() == pytest.approx(1.4540053384, rel=1e-5)
    assert losses['loss_offset'].item() == pytest.approx(0.5, rel=1e-6)


def test_batch_without_gt_has_a_zero_offset_loss_in_the_graph():
    head = _fixed_head()
    losses = head.loss_by_feat(*head((torch.zeros(1, 1, 2, 2), )), [_gt([], [])], _metas(1))
    # only background: 4 cells of 1.287339 / 4
    assert losses['loss_cls'].item() == pytest.approx(SP05 + SPM1, rel=1e-5)
    assert losses['loss_offset'].item() == 0.0
    (losses['loss_cls'] + losses['loss_offset']).backward()
    assert head.conv_offset.bias.grad is not None
    assert head.conv_offset.bias.grad.abs().sum().item() == 0.0


def test_ignored_instances_reach_the_loss():
    # an ignored GT at (4, 12) -> cell (1, 0): 3 background-or-positive cells remain,
    # (2.287339 + 2 * 1.287339) / 3 = 1.620672
    head = _fixed_head()
    ignore = _gt([(4, 12)], [0])
    losses = head.loss_by_feat(*head((torch.zeros(1, 1, 2, 2), )), [_gt([(13, 5)], [1])],
                               _metas(1), [ignore])
    assert losses['loss_cls'].item() == pytest.approx((SP05 + SP1 + 2 * (SP05 + SPM1)) / 3,
                                                      rel=1e-5)


def test_exclusive_ce_acts_on_the_background_cells():
    import projects.exclusive_ce.ece_loss  # noqa: F401  (registers the loss)
    # ECE without warm-up at progress 0: threshold sigmoid(0.75 * 0) = 0.5. Background
    # cells: column 0 has confidence sigmoid(0.5) = 0.62 >= 0.5 -> dropped; column 1
    # sigmoid(-1) = 0.27 -> kept (softplus(-1)). The positive cell keeps plain CE.
    # (2.287339 + 3 * 0.313262) / 4 = 0.806781 (plain CE: 1.537339).
    head = _fixed_head(loss_cls=dict(type='ExclusiveCrossEntropyLoss', use_sigmoid=True,
                                     warmup=0.0))
    head.loss_cls.set_progress(0, 0.0)
    losses = head.loss_by_feat(*head((torch.zeros(1, 1, 2, 2), )), [_gt([(13, 5)], [1])],
                               _metas(1))
    assert losses['loss_cls'].item() == pytest.approx((SP05 + SP1 + 3 * SPM1) / 4, rel=1e-5)
    losses['loss_cls'].backward()
    # d/db1 of the kept terms: (sigmoid(-1) - 1) + 3 * sigmoid(-1), over 4 cells
    s = 1 / (1 + math.e)
    assert head.conv_cls.bias.grad[1].item() == pytest.approx((s - 1 + 3 * s) / 4, rel=1e-5)
    # the default loss at progress 0 is in its warm-up: plain CE, 1.537339 (see above)
    head = _fixed_head(loss_cls=dict(type='ExclusiveCrossEntropyLoss', use_sigmoid=True))
    head.loss_cls.set_progress(0, 0.0)
    losses = head.loss_by_feat(*head((torch.zeros(1, 1, 2, 2), )), [_gt([(13, 5)], [1])],
                               _metas(1))
    assert losses['loss_cls'].item() == pytest.approx(1.5373386717, rel=1e-5)


def test_wrong_stride_for_the_feature_map_raises():
    head = _fixed_head()  # stride 8, but a 4x4 map for a 16x16 input is stride 4
    with pytest.raises(ValueError, match='stride'):
        head.loss_by_feat(*head((torch.zeros(1, 1, 4, 4), )), [_gt([(13, 5)], [1])],
                          _metas(1))


# ----------------------------------------------------------------------------- decoding


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def _decode_head(**test_cfg) -> tuple:
    """A 3x4 map at s = 4 (12x16 input), 2 classes, boxes 8x6. Class 0 scores: 0.9 at
    (0, 0), 0.8 at (0, 1), 0.6 at (2, 3); class 1: 0.3 at (0, 1), 0.04 at (2, 2); all else
    sigmoid(-10). Offsets 0.5 except (0.25, 0.75) at cells (0, 0) and (0, 1)."""
    head = YOLLOHead(num_classes=2, in_channels=1, stacked_convs=0, stride=4, box_size=(8, 6),
                     test_cfg=test_cfg)
    cls = torch.full((1, 2, 3, 4), -10.0)
    cls[0, 0, 0, 0], cls[0, 0, 0, 1], cls[0, 0, 2, 3] = _logit(0.9), _logit(0.8), _logit(0.6)
    cls[0, 1, 0, 1], cls[0, 1, 2, 2] = _logit(0.3), _logit(0.04)
    off = torch.zeros(1, 2, 3, 4)
    off[0, 0, 0, :2], off[0, 1, 0, :2] = _logit(0.25), _logit(0.75)
    return head, cls, off


# centres: (0, 0) -> ((0 + 0.25) * 4, (0 + 0.75) * 4) = (1, 3) -> box (-3, 0, 5, 6);
# (0, 1) -> (5, 3) -> (1, 0, 9, 6); (2, 3) -> ((3 + 0.5) * 4, (2 + 0.5) * 4) = (14, 10)
# -> (10, 7, 18, 13)
BOX_00, BOX_01, BOX_23 = [-3., 0., 5., 6.], [1., 0., 9., 6.], [10., 7., 18., 13.]


def _assert_boxes(boxes: torch.Tensor, expected: list) -> None:
    # float32 offsets: sigmoid(logit(0.25)) is 0.25 up to ~1e-7
    torch.testing.assert_close(boxes, torch.tensor(expected), rtol=0, atol=1e-5)


def _meta(img_shape=(12, 16), scale_factor=(1.0, 1.0)) -> list:
    return [dict(img_shape=img_shape, scale_factor=scale_factor)]


def test_peak_decoding():
    # class 0: (0, 1) (0.8) is not the max of its 3x3 window ((0, 0) has 0.9); class 1:
    # (0, 1) (0.3) is a peak of class 1; 0.04 is below score_thr 0.05
    head, cls, off = _decode_head(decode='peak')
    res = head.predict_by_feat(cls, off, _meta())[0]
    _assert_boxes(res.bboxes, [BOX_00, BOX_23, BOX_01])
    assert res.scores.tolist() == pytest.approx([0.9, 0.6, 0.3], rel=1e-6)
    assert res.labels.tolist() == [0, 0, 1]


def test_nms_decoding_is_per_class():
    # IoU((−3,0,5,6), (1,0,9,6)) = (4*6) / (48 + 48 - 24) = 1/3 > 0.3: class 0's 0.8 is
    # suppressed by its 0.9; class 1's 0.3 (same box) is not (another class)
    head, cls, off = _decode_head(decode='nms', nms=dict(type='nms', iou_threshold=0.3))
    res = head.predict_by_feat(cls, off, _meta())[0]
    _assert_boxes(res.bboxes, [BOX_00, BOX_23, BOX_01])
    assert res.scores.tolist() == pytest.approx([0.9, 0.6, 0.3], rel=1e-6)
    assert res.labels.tolist() == [0, 0, 1]
    # at IoU threshold 0.4 the 0.8 survives
    head, cls, off = _decode_head(decode='nms', nms=dict(type='nms', iou_threshold=0.4))
    res = head.predict_by_feat(cls, off, _meta())[0]
    assert res.scores.tolist() == pytest.approx([0.9, 0.8, 0.6, 0.3], rel=1e-6)
    _assert_boxes(res.bboxes[1:2], [BOX_01])
    # nms_pre=2 keeps the candidates 0.9 and 0.8 before NMS, which then drops the 0.8
    head, cls, off = _decode_head(decode='nms', nms_pre=2)
    res = head.predict_by_feat(cls, off, _meta())[0]
    assert res.scores.tolist() == pytest.approx([0.9], rel=1e-6)


def test_decoding_limits_padding_and_rescale():
    head, cls, off = _decode_head(decode='peak', max_per_img=2)
    res = head.predict_by_feat(cls, off, _meta())[0]
    assert res.scores.tolist() == pytest.approx([0.9, 0.6], rel=1e-6)
    # img_shape 8x12 in the 12x16 batch: valid cells 2 x 3, so (2, 3) is padding
    head, cls, off = _decode_head(decode='peak')
    res = head.predict_by_feat(cls, off, _meta(img_shape=(8, 12)))[0]
    assert res.scores.tolist() == pytest.approx([0.9, 0.3], rel=1e-6)
    # scale_factor (w 2, h 0.5): x / 2, y / 0.5 -> (-3, 0, 5, 6) -> (-1.5, 0, 2.5, 12)
    res = head.predict_by_feat(cls, off, _meta(scale_factor=(2.0, 0.5)), rescale=True)[0]
    _assert_boxes(res.bboxes[:1], [[-1.5, 0.0, 2.5, 12.0]])
    # score_thr 0.65 keeps only 0.9
    res = head.predict_by_feat(cls, off, _meta(), cfg=dict(score_thr=0.65))[0]
    assert res.scores.tolist() == pytest.approx([0.9], rel=1e-6)


def test_softmax_scores_drop_the_background_column():
    # logits (log 2, 0, 0): softmax (0.5, 0.25, 0.25) -> class scores (0.5, 0.25)
    head = YOLLOHead(num_classes=2, in_channels=1, stacked_convs=0,
                     loss_cls=dict(type='mmdet.CrossEntropyLoss', use_sigmoid=False))
    scores = head.class_scores(torch.tensor([math.log(2), 0.0, 0.0]).view(3, 1, 1))
    assert scores.flatten().tolist() == pytest.approx([0.5, 0.25], rel=1e-6)


# ----------------------------------------------------------------------------- config errors


@pytest.mark.parametrize('kwargs,name', [
    (dict(stride=0), 'stride'), (dict(stride=-4), 'stride'),
    (dict(box_size=(0, 16)), 'box_size'), (dict(box_size=(16, )), 'box_size'),
    (dict(box_size=(16, -1)), 'box_size'), (dict(cls_avg_factor='pixels'), 'cls_avg_factor'),
    (dict(stacked_convs=-1), 'stacked_convs'), (dict(num_classes=0), 'num_classes'),
    (dict(test_cfg=dict(decode='argmax')), 'test_cfg.decode'),
    (dict(test_cfg=dict(score_thr=1.5)), 'test_cfg.score_thr'),
    (dict(test_cfg=dict(max_per_img=0)), 'test_cfg.max_per_img'),
])
def test_bad_head_arguments_raise_naming_the_argument(kwargs, name):
    args = dict(num_classes=2, in_channels=4)
    args.update(kwargs)
    with pytest.raises(ValueError, match=name.replace('.', r'\.')):
        YOLLOHead(**args)


def test_feat_index_selects_one_map_and_is_checked():
    cfg = Config.fromfile(BASE_MODEL).model
    cfg.bbox_head.update(num_classes=2, stacked_convs=0)
    with DefaultScope.overwrite_default_scope('mmdet'):
        args = {k: v for k, v in cfg.items() if k not in ('type', 'feat_index')}
        model = YOLLO(**args)
        feats = model.extract_feat(torch.zeros(1, 3, 64, 64))
        assert len(feats) == 1 and tuple(feats[0].shape) == (1, 64, 16, 16)  # stride 4
        model.feat_index = 4  # the FPN gives 4 maps
        with pytest.raises(ValueError, match='feat_index'):
            model.extract_feat(torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match='feat_index'):
        YOLLO(**args, feat_index='0')


# ----------------------------------------------------------------------------- training


TRAIN_CFG = '''
_base_ = ['{base}', '{repo}/configs/_base_/datasets/synthetic_det.py',
          '{repo}/configs/_base_/schedules/schedule_sgd_500i.py',
          '{repo}/configs/_base_/default_runtime_det.py']
custom_imports = dict(imports=['projects.common', 'projects.exclusive_ce'],
                      allow_failed_imports=False)
data_root = '{data}/'
model = dict(backbone=dict(base_channels=8), neck=dict(in_channels=[8, 16, 32, 64],
             out_channels=16), bbox_head=dict(num_classes=4, in_channels=16, feat_channels=16))
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root))
val_dataloader = dict(num_workers=0, persistent_workers=False, dataset=dict(data_root=data_root))
test_dataloader = dict(num_workers=0, persistent_workers=False,
                       dataset=dict(data_root=data_root))
train_cfg = dict(max_iters=2, val_interval=100)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=100))
'''


def test_smoke_two_training_iterations_and_a_validation(tiny_synthetic, tmp_path):
    path = tmp_path / 'yollo_tiny.py'
    path.write_text(TRAIN_CFG.format(base=BASE_MODEL, repo=REPO, data=tiny_synthetic))
    cfg = Config.fromfile(str(path))
    cfg.work_dir = str(tmp_path / 'work')
    with DefaultScope.overwrite_default_scope('mmdet'):
        torch.manual_seed(0)
        runner = Runner.from_cfg(cfg)
        assert type(runner.model).__name__ == 'YOLLO'
        assert type(runner.model.bbox_head).__name__ == 'YOLLOHead'
        before = runner.model.bbox_head.conv_cls.weight.detach().clone()
        runner.train()
        assert not torch.equal(before, runner.model.bbox_head.conv_cls.weight)
        hub = runner.message_hub
        for key in ('train/loss', 'train/loss_cls', 'train/loss_offset'):
            assert math.isfinite(hub.get_scalar(key).current()), key
        metrics = runner.val()
    # pooled F1 = 2 tp / (2 tp + fp + fn) is the harmonic mean of recall and precision
    # (0 when both are 0; the validation tiles have cells, so recall is defined)
    r, p = metrics['cell/recall'], metrics['cell/precision']
    assert metrics['cell/f1'] == pytest.approx(2 * p * r / (p + r) if p + r else 0.0)
    assert {'cell/box_f1', 'cell/coco_AP'} <= set(metrics)
