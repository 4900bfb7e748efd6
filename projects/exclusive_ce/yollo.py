"""YOLLO-style single-scale cell detector (van Rijthoven et al. 2018, "You Only Look on
Lymphocytes Once"), the detector of the exclusive cross-entropy paper (Panteli et al.,
ICCV 2021, Sect. 4 "Architectures"). No public code of YOLLO exists; this is a YOLO-v2-like
reading of it:

* :class:`YOLLO`: an mmdet ``SingleStageDetector`` that passes ONE feature map (the
  backbone / neck output number ``feat_index``) to its head.
* :class:`YOLLOHead`: every cell (i, j) of that map (stride ``stride`` px) predicts class
  logits and a centre offset; all boxes have the fixed size ``box_size``. The
  classification loss comes from the config (cross-entropy, focal, exclusive CE); the
  "unannotated" samples on which the exclusive CE acts are the background cells.
* :func:`yollo_targets`: the target assignment as a plain function (used by the head).

Coordinates: input pixels after the data pipeline, x = column, y = row.
"""
import math
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmcv.ops import batched_nms
from mmdet.models.dense_heads.base_dense_head import BaseDenseHead
from mmdet.models.detectors.single_stage import SingleStageDetector
from mmdet.registry import MODELS as DET_MODELS
from mmdet.structures.bbox import get_box_tensor
from mmdet.utils import reduce_mean
from mmengine.config import ConfigDict
from mmengine.structures import InstanceData
from torch import Tensor

from projects.common.registry import MODELS, build_in_scope, register

__all__ = ['YOLLO', 'YOLLOHead', 'yollo_targets', 'valid_cells']

_DECODES = ('peak', 'nms')
_AVG_FACTORS = ('cells', 'positives')
_DEFAULT_TEST_CFG = dict(score_thr=0.05, decode='peak', nms=dict(type='nms', iou_threshold=0.3),
                         max_per_img=500)


def valid_cells(img_shape: Sequence[int], stride: float) -> Tuple[int, int]:
    """Number of cell rows / columns that overlap the unpadded image ``img_shape`` = (h, w):
    (ceil(h / stride), ceil(w / stride)). Cells beyond them lie in the batch padding."""
    return math.ceil(img_shape[0] / stride), math.ceil(img_shape[1] / stride)


def _cells(centres: Tensor, stride: float, rows: int, cols: int) -> Tuple[Tensor, Tensor]:
    """Cell (i, j) = (floor(cy / stride), floor(cx / stride)) of each (x, y) centre, clipped
    to [0, rows - 1] x [0, cols - 1]."""
    i = torch.floor(centres[:, 1] / stride).long().clamp(0, rows - 1)
    j = torch.floor(centres[:, 0] / stride).long().clamp(0, cols - 1)
    return i, j


def yollo_targets(gt_centres: Tensor, gt_labels: Tensor, featmap_size: Tuple[int, int],
                  stride: float, num_classes: int,
                  img_shape: Optional[Sequence[int]] = None,
                  ignore_centres: Optional[Tensor] = None) -> Tuple[Tensor, ...]:
    """Per-cell targets of one image for :class:`YOLLOHead` (cells flattened row-major,
    index i * W + j, the order of ``score.permute(1, 2, 0).reshape(-1, C)``).

    * A GT centre (cx, cy) falls in cell (i, j) = (floor(cy / s), floor(cx / s)), clipped
      to the valid cells (those overlapping the unpadded ``img_shape``, see
      :func:`valid_cells`; the whole map if ``img_shape`` is None). Its offset target is
      (cx / s - j, cy / s - i), clipped to [0, 1] (only a clipped centre is outside).
    * Several GT centres in one cell: the one nearest the cell centre (j + 0.5, i + 0.5)
      (in cell units) wins, ties to the lowest GT index; the others are dropped.
    * Every other cell is background, label ``num_classes`` (the "unannotated" cells).
    * Weight 0 ("don't care", in no loss): cells in the padding (outside ``img_shape``)
      and cells holding an ignored GT centre; an ignored GT overrides a positive in its
      cell (mmdet's ignore semantics: neither positive nor negative). Weight 1 elsewhere.

    Returns ``(labels (HW,) long, weights (HW,) float, offset_targets (HW, 2) float,
    pos_mask (HW,) bool, num_dropped int)``, on the device of ``gt_centres``.
    """
    rows, cols = int(featmap_size[0]), int(featmap_size[1])
    device = gt_centres.device
    n = rows * cols
    if gt_centres.dim() != 2 or gt_centres.size(1) != 2:
        raise ValueError(f'gt_centres: expected shape (N, 2), got {tuple(gt_centres.shape)}')
    if gt_labels.numel() != gt_centres.size(0):
        raise ValueError(f'gt_labels: {gt_labels.numel()} labels for '
                         f'{gt_centres.size(0)} centres')
    if gt_labels.numel() and (gt_labels.min() < 0 or gt_labels.max() >= num_classes):
        raise ValueError(f'gt_labels: expected labels in [0, {num_classes - 1}] '
                         f'(num_classes={num_classes}), got {gt_labels.tolist()}')
    if not torch.isfinite(gt_centres).all():
        raise ValueError('gt_centres: NaN or infinite coordinates')

    v_rows, v_cols = rows, cols
    if img_shape is not None:
        v_rows, v_cols = (min(v, m) for v, m in zip(valid_cells(img_shape, stride),
                                                      (rows, cols)))
    labels = torch.full((n, ), num_classes, dtype=torch.long, device=device)
    weights = torch.zeros((rows, cols), dtype=torch.float32, device=device)
    weights[:v_rows, :v_cols] = 1.0
    weights = weights.view(-1)
    offsets = torch.zeros((n, 2), dtype=torch.float32, device=device)
    pos = torch.zeros(n, dtype=torch.bool, device=device)
    num_dropped = 0

    if gt_centres.size(0):
        g = gt_centres.float() / stride  # cell units
        i, j = _cells(gt_centres.float(), stride, v_rows, v_cols)
        flat = i * cols + j
        dist2 = (g[:, 0] - (j + 0.5)) ** 2 + (g[:, 1] - (i + 0.5)) ** 2
        # nearest first (stable: ties keep GT order), then grouped by cell (stable)
        order = torch.sort(dist2, stable=True)[1]
        order = order[torch.sort(flat[order], stable=True)[1]]
        first = torch.ones_like(order, dtype=torch.bool)
        first[1:] = flat[order][1:] != flat[order][:-1]
        win = order[first]
        num_dropped = int(order.numel() - win.numel())
        cells = flat[win]
        labels[cells] = gt_labels[win].long()
        pos[cells] = True
        offsets[cells, 0] = (g[win, 0] - j[win]).clamp(0.0, 1.0)
        offsets[cells, 1] = (g[win, 1] - i[win]).clamp(0.0, 1.0)

    if ignore_centres is not None and ignore_centres.numel():
        ii, ij = _cells(ignore_centres.reshape(-1, 2).float(), stride, v_rows, v_cols)
        cells = ii * cols + ij
        weights[cells] = 0.0
        pos[cells] = False
        labels[cells] = num_classes
        offsets[cells] = 0.0
    return labels, weights, offsets, pos, num_dropped


def _centres_of(instances: Optional[InstanceData]) -> Tensor:
    """(N, 2) box centres of ``instances.bboxes`` (mmdet boxes or an xyxy tensor)."""
    boxes = get_box_tensor(instances.bboxes).reshape(-1, 4)
    return torch.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], 1)


@register(MODELS)
class YOLLO(SingleStageDetector):
    """Single-stage detector whose head sees one feature map: output ``feat_index`` of the
    backbone (+ neck). Same arguments as mmdet's ``SingleStageDetector`` plus
    ``feat_index``; loss / predict / _forward are mmdet's."""

    def __init__(self, *args, feat_index: int = 0, **kwargs) -> None:
        if isinstance(feat_index, bool) or not isinstance(feat_index, int):
            raise ValueError(f'feat_index: expected an int, got {feat_index!r}')
        super().__init__(*args, **kwargs)
        self.feat_index = feat_index

    def extract_feat(self, batch_inputs: Tensor) -> Tuple[Tensor]:
        """A 1-tuple: the backbone (+ neck) output number ``feat_index``."""
        x = self.backbone(batch_inputs)
        if self.with_neck:
            x = self.neck(x)
        if isinstance(x, Tensor):
            x = (x, )
        if not -len(x) <= self.feat_index < len(x):
            raise ValueError(f'feat_index: {self.feat_index} is out of range for the '
                             f'{len(x)} feature maps of the backbone/neck')
        return (x[self.feat_index], )


@register(MODELS)
class YOLLOHead(BaseDenseHead):
    """YOLLO head: one feature map, per cell class logits + a centre offset, fixed-size
    boxes.

    Args:
        num_classes: number of foreground classes C.
        in_channels: channels of the input feature map.
        feat_channels: channels of the ``stacked_convs`` 3x3 ConvModules (conv-norm-ReLU).
        stacked_convs: number of those convs (0: the 1x1 output convs see the input).
        stride: stride s of the feature map in input pixels (cell size).
        box_size: (w, h) of every predicted box in input pixels.
        norm_cfg: norm of the stacked convs.
        loss_cls: classification loss (mmdet ``loss_cls`` contract). ``use_sigmoid=True``:
            C logits per cell, background = all-zero target (label C); otherwise C + 1
            logits with background = index C (softmax).
        loss_offset: regression loss on the offsets sigmoid(logit) in [0, 1]^2.
        cls_avg_factor: ``'cells'``: classification loss divided by the number of cells of
            weight 1 in the batch; ``'positives'``: by max(1, number of positive cells)
            (mmdet's RetinaNet / focal-loss convention).
        test_cfg: ``score_thr`` (0.05; keep score > thr), ``decode`` (``'peak'``: cells that
            are the maximum of their class score in their 3x3 neighbourhood, or ``'nms'``:
            mmcv ``batched_nms`` per class with ``nms``, default
            ``dict(type='nms', iou_threshold=0.3)``), ``max_per_img`` (500), ``nms_pre``
            (-1 = all; 'nms' only: highest-scoring candidates kept before NMS).

    ``forward`` returns ``(cls_score (B, C[+1], H, W), offset_pred (B, 2, H, W))`` (logits;
    offset channels x, y). See :meth:`loss_by_feat` and :meth:`predict_by_feat` for the
    loss and the decoding.
    """

    def __init__(self,
                 num_classes: int,
                 in_channels: int,
                 feat_channels: int = 64,
                 stacked_convs: int = 2,
                 stride: Union[int, float] = 4,
                 box_size: Sequence[float] = (16, 16),
                 norm_cfg: Optional[dict] = dict(type='BN'),
                 loss_cls: dict = dict(type='mmdet.CrossEntropyLoss', use_sigmoid=True,
                                       loss_weight=1.0),
                 loss_offset: dict = dict(type='mmdet.L1Loss', loss_weight=1.0),
                 cls_avg_factor: str = 'cells',
                 train_cfg: Optional[dict] = None,
                 test_cfg: Optional[dict] = None,
                 init_cfg: Optional[dict] = dict(
                     type='Normal', layer='Conv2d', std=0.01,
                     override=dict(type='Normal', name='conv_cls', std=0.01,
                                   bias_prob=0.01))) -> None:
        super().__init__(init_cfg=init_cfg)
        for name, value in (('num_classes', num_classes), ('in_channels', in_channels),
                            ('feat_channels', feat_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f'{name}: expected a positive int, got {value!r}')
        if isinstance(stacked_convs, bool) or not isinstance(stacked_convs, int) \
                or stacked_convs < 0:
            raise ValueError(f'stacked_convs: expected a non-negative int, got '
                             f'{stacked_convs!r}')
        if isinstance(stride, bool) or not isinstance(stride, (int, float)) \
                or not math.isfinite(stride) or stride <= 0:
            raise ValueError(f'stride: expected a positive number, got {stride!r}')
        try:
            box_w, box_h = (float(v) for v in box_size)
        except (TypeError, ValueError):
            raise ValueError(f'box_size: expected (w, h), got {box_size!r}') from None
        if not (math.isfinite(box_w) and math.isfinite(box_h) and box_w > 0 and box_h > 0):
            raise ValueError(f'box_size: expected positive (w, h), got {box_size!r}')
        if cls_avg_factor not in _AVG_FACTORS:
            raise ValueError(f'cls_avg_factor: expected one of {_AVG_FACTORS}, got '
                             f'{cls_avg_factor!r}')
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.feat_channels = feat_channels
        self.stacked_convs = stacked_convs
        self.stride = stride
        self.box_size = (box_w, box_h)
        self.cls_avg_factor = cls_avg_factor
        self.train_cfg = train_cfg
        self.test_cfg = self._check_test_cfg(test_cfg)
        self.use_sigmoid_cls = bool(loss_cls.get('use_sigmoid', False))
        self.cls_out_channels = num_classes if self.use_sigmoid_cls else num_classes + 1
        self.loss_cls = build_in_scope('mmdet', DET_MODELS, loss_cls)
        self.loss_offset = build_in_scope('mmdet', DET_MODELS, loss_offset)
        self.num_dropped_gt = 0  # GT centres dropped (cell taken) in the last loss call

        convs = []
        for k in range(stacked_convs):
            convs.append(ConvModule(in_channels if k == 0 else feat_channels, feat_channels,
                                    3, padding=1, norm_cfg=norm_cfg))
        self.convs = nn.Sequential(*convs)
        out_in = feat_channels if stacked_convs else in_channels
        self.conv_cls = nn.Conv2d(out_in, self.cls_out_channels, 1)
        self.conv_offset = nn.Conv2d(out_in, 2, 1)

    @staticmethod
    def _check_test_cfg(test_cfg: Optional[dict]) -> ConfigDict:
        """``test_cfg`` merged over the defaults; ValueError naming a bad key."""
        cfg = ConfigDict(_DEFAULT_TEST_CFG)
        cfg.update(test_cfg or {})
        if cfg.decode not in _DECODES:
            raise ValueError(f'test_cfg.decode: expected one of {_DECODES}, got '
                             f'{cfg.decode!r}')
        if not isinstance(cfg.score_thr, (int, float)) or not 0 <= cfg.score_thr < 1:
            raise ValueError(f'test_cfg.score_thr: expected a number in [0, 1), got '
                             f'{cfg.score_thr!r}')
        if isinstance(cfg.max_per_img, bool) or not isinstance(cfg.max_per_img, int) \
                or cfg.max_per_img < 1:
            raise ValueError(f'test_cfg.max_per_img: expected a positive int, got '
                             f'{cfg.max_per_img!r}')
        return cfg

    def forward(self, x: Tuple[Tensor]) -> Tuple[Tensor, Tensor]:
        """``x``: a 1-tuple (one feature map) -> (class logits, offset logits)."""
        if isinstance(x, Tensor):
            x = (x, )
        if len(x) != 1:
            raise ValueError(f'{type(self).__name__}: expected one feature map, got '
                             f'{len(x)} (use the YOLLO detector, which selects one with '
                             f'feat_index)')
        feat = self.convs(x[0])
        return self.conv_cls(feat), self.conv_offset(feat)

    def _check_featmap(self, featmap_size: Tuple[int, int], img_meta: dict) -> None:
        """ValueError naming ``stride`` when the map does not match the padded input."""
        shape = img_meta.get('batch_input_shape')
        if shape is None:
            return
        for size, length in zip(featmap_size, shape):
            if size not in (math.floor(length / self.stride), math.ceil(length / self.stride)):
                raise ValueError(
                    f'stride: a {tuple(shape)} input at stride {self.stride} gives a map of '
                    f'about {tuple(math.ceil(v / self.stride) for v in shape)} cells, the '
                    f'feature map is {tuple(featmap_size)}: set the head stride to the '
                    f'stride of the selected feature map')

    def get_targets(self, featmap_size: Tuple[int, int], batch_gt_instances: List[InstanceData],
                    batch_img_metas: List[dict],
                    batch_gt_instances_ignore: Optional[list] = None,
                    device: Optional[torch.device] = None) -> Tuple[Tensor, ...]:
        """Batch targets of :func:`yollo_targets`, concatenated image after image:
        (labels, weights, offset_targets, pos_mask, num_dropped)."""
        if batch_gt_instances_ignore is None:
            batch_gt_instances_ignore = [None] * len(batch_gt_instances)
        out = []
        for gt, ign, meta in zip(batch_gt_instances, batch_gt_instances_ignore,
                                 batch_img_metas):
            self._check_featmap(featmap_size, meta)
            centres = _centres_of(gt).to(device)
            ign_centres = _centres_of(ign).to(device) if ign is not None and len(ign) else None
            out.append(yollo_targets(centres, gt.labels.to(device), featmap_size, self.stride,
                                     self.num_classes, meta.get('img_shape'), ign_centres))
        labels, weights, offsets, pos, dropped = zip(*out)
        return (torch.cat(labels), torch.cat(weights), torch.cat(offsets), torch.cat(pos),
                sum(dropped))

    def loss_by_feat(self, cls_scores: Tensor, offset_preds: Tensor,
                     batch_gt_instances: List[InstanceData], batch_img_metas: List[dict],
                     batch_gt_instances_ignore: Optional[list] = None) -> dict:
        """``loss_cls`` over all cells of the batch in one call, ``loss_offset`` on the
        positive cells.

        loss_cls = loss_cls(scores (N, C[+1]), labels (N,), weights (N,), avg_factor=A)
        with N = B*H*W cells and A = sum of the weights ('cells') or max(1, #positives)
        ('positives'); loss_offset = loss_offset(sigmoid(offset logits), offset targets,
        avg_factor=max(1, #positives)) on the positive cells (with mmdet's L1Loss:
        sum over positives and both coordinates of |sigmoid(t) - target| / #positives).
        A batch without positives gives loss_offset = 0 * sum(offset logits) (in the graph).
        Both avg factors are averaged over processes (mmdet ``reduce_mean``).
        """
        if isinstance(cls_scores, (list, tuple)):
            cls_scores, offset_preds = cls_scores[0], offset_preds[0]
        featmap_size = tuple(cls_scores.shape[-2:])
        labels, weights, offset_targets, pos, dropped = self.get_targets(
            featmap_size, batch_gt_instances, batch_img_metas, batch_gt_instances_ignore,
            device=cls_scores.device)
        self.num_dropped_gt = dropped
        scores = cls_scores.permute(0, 2, 3, 1).reshape(-1, self.cls_out_channels)
        offsets = offset_preds.permute(0, 2, 3, 1).reshape(-1, 2)
        num_pos = pos.sum().float()
        pos_factor = reduce_mean(num_pos).clamp(min=1.0).item()
        if self.cls_avg_factor == 'cells':
            cls_factor = reduce_mean(weights.sum()).clamp(min=1.0).item()
        else:
            cls_factor = pos_factor
        loss_cls = self.loss_cls(scores, labels, weights, avg_factor=cls_factor)
        if bool(pos.any()):
            loss_offset = self.loss_offset(offsets[pos].sigmoid(), offset_targets[pos],
                                           avg_factor=pos_factor)
        else:
            loss_offset = offsets.sum() * 0.0
        return dict(loss_cls=loss_cls, loss_offset=loss_offset)

    def class_scores(self, cls_score: Tensor) -> Tensor:
        """Per-class probabilities (C, H, W) of one image's logits: sigmoid, or softmax
        without the background column."""
        if self.use_sigmoid_cls:
            return cls_score.sigmoid()
        return cls_score.softmax(dim=0)[:self.num_classes]

    def predict_by_feat(self, cls_scores: Tensor, offset_preds: Tensor,
                        batch_img_metas: Optional[List[dict]] = None,
                        cfg: Optional[dict] = None, rescale: bool = False,
                        with_nms: bool = True) -> List[InstanceData]:
        """Boxes of every image: ``InstanceData(bboxes (K, 4) xyxy, scores (K,), labels (K,))``.

        Score of class c at cell (i, j): sigmoid / softmax (background column dropped);
        cells outside the unpadded ``img_shape`` are never detections. Candidates: score >
        ``score_thr`` and, for decode='peak', score == max of its class's 3x3
        neighbourhood (max-pool; equal neighbours are both kept); decode='nms': mmcv
        ``batched_nms`` per class (skipped if ``with_nms`` is False). Centre
        ((j + sigmoid(o_x)) * s, (i + sigmoid(o_y)) * s); box = centre -/+ box_size / 2,
        NOT clipped to the image, so that box centres (the predicted points of
        CellDetectionMetric) stay the predicted centres. Sorted by score (descending), at
        most ``max_per_img``. ``rescale``: coordinates divided by the meta
        ``scale_factor`` (w, h), like mmdet's heads.
        """
        if isinstance(cls_scores, (list, tuple)):
            cls_scores, offset_preds = cls_scores[0], offset_preds[0]
        cfg = self.test_cfg if cfg is None else self._check_test_cfg(cfg)
        if batch_img_metas is None:
            batch_img_metas = [{} for _ in range(cls_scores.size(0))]
        results = []
        for b, meta in enumerate(batch_img_metas):
            results.append(self._predict_single(cls_scores[b], offset_preds[b], meta, cfg,
                                                rescale, with_nms))
        return results

    def _predict_single(self, cls_score: Tensor, offset_pred: Tensor, meta: dict,
                        cfg: ConfigDict, rescale: bool, with_nms: bool) -> InstanceData:
        scores = self.class_scores(cls_score).clone()  # (C, H, W)
        rows, cols = scores.shape[-2:]
        if meta.get('img_shape') is not None:
            v_rows, v_cols = valid_cells(meta['img_shape'], self.stride)
            scores[:, v_rows:, :] = -1.0
            scores[:, :, v_cols:] = -1.0
        keep = scores > cfg.score_thr
        if cfg.decode == 'peak':
            keep &= scores == F.max_pool2d(scores[None], 3, stride=1, padding=1)[0]
        c, i, j = keep.nonzero(as_tuple=True)
        s = scores[c, i, j]
        off = offset_pred.sigmoid()
        cx = (j.to(s.dtype) + off[0, i, j]) * self.stride
        cy = (i.to(s.dtype) + off[1, i, j]) * self.stride
        half_w, half_h = self.box_size[0] / 2, self.box_size[1] / 2
        boxes = torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dim=1)
        if cfg.decode == 'nms' and with_nms:
            nms_pre = cfg.get('nms_pre', -1)
            if 0 < nms_pre < s.numel():
                top = torch.topk(s, nms_pre)[1]
                boxes, s, c = boxes[top], s[top], c[top]
            _, kept = batched_nms(boxes, s, c, cfg.nms)
            order = kept[:cfg.max_per_img]
        else:
            order = torch.sort(s, descending=True, stable=True)[1][:cfg.max_per_img]
        boxes, s, c = boxes[order], s[order], c[order]
        if rescale and meta.get('scale_factor') is not None:
            sw, sh = meta['scale_factor'][:2]
            boxes = boxes / boxes.new_tensor([sw, sh, sw, sh])
        result = InstanceData()
        result.bboxes = boxes
        result.scores = s
        result.labels = c.long()
        return result
