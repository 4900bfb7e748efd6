"""The initialisation trap of exclusive cross-entropy (issue 17, item 6), on real heads.

A softmax head starts near the uniform prediction, where the paper's confidence
1 - p(background) is K / (K + 1) for K foreground classes: 2/3 .. 4/5 for K = 2..4, above
the sigmoid schedule's starting threshold sigmoid(0.75 * 0) = 0.5. The literal loss
(``warmup=0``) then drops every unannotated term at step 0, and nothing ever pulls the
foreground probabilities back down. The default loss keeps every term during its warm-up
(the first 10% of training), so at step 0 all unannotated terms are kept whatever the
head. With one foreground class the literal loss is a coin flip at step 0 (confidence
0.5 +- noise against 0.5: 27-68% kept on these binary heads with these seeds), so only the
warm-up, not ``confidence='max_foreground'``, protects binary heads. Heads are mmdet's
Shared2FCBBoxHead, the YOLLOHead and the U-Net's mmseg FCNHead, built through the
registries with their stock initialisation (``init_weights``) and fed random features;
every sample is background (unannotated).
"""
import functools
import logging
import os.path as osp
from typing import Callable, Tuple

import pytest
import torch
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.registry import DefaultScope
from mmengine.structures import InstanceData, PixelData

import projects.exclusive_ce  # noqa: F401  (ExclusiveCrossEntropyLoss, YOLLOHead)
from projects.common.registry import build_in_scope
from projects.exclusive_ce.ece_loss import DEFAULT_WARMUP

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
UNET_DECODE_HEAD = Config.fromfile(
    osp.join(REPO, 'configs', '_base_', 'models', 'unet-s5-d16-c16_fcn_bn.py')
).model.decode_head.to_dict()


def _init(head: torch.nn.Module) -> torch.nn.Module:
    """Stock initialisation (init_cfg), without mmengine's per-parameter INFO log."""
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        head.init_weights()
    finally:
        logger.setLevel(level)
    return head


@functools.lru_cache(maxsize=None)
def _head(head_kind: str, k: int, use_sigmoid: bool) -> Tuple[torch.nn.Module, Callable]:
    """A freshly initialised head with K foreground classes and the default
    ExclusiveCrossEntropyLoss, and a function that runs the head's own loss path on random
    features where every sample is background (unannotated) and returns the ECE module."""
    torch.manual_seed(k)
    ece = dict(type='ExclusiveCrossEntropyLoss', use_sigmoid=use_sigmoid)
    if head_kind == 'Shared2FCBBoxHead':  # mmdet defaults: 256 x 7 x 7 RoI features, 1024 fc
        from mmdet.registry import MODELS
        head = _init(build_in_scope('mmdet', MODELS, dict(
            type='Shared2FCBBoxHead', num_classes=k, loss_cls=ece)))
        n = 64
        feats = torch.randn(n, 256, 7, 7)

        def run() -> torch.nn.Module:
            cls_score, bbox_pred = head(feats)
            head.loss(cls_score, bbox_pred, torch.zeros(n, 5), torch.full((n, ), k),
                      torch.ones(n), torch.zeros(n, 4), torch.zeros(n, 4))
            return head.loss_cls
    elif head_kind == 'YOLLOHead':  # the base config's head: 64 channels, 2 stacked convs
        from mmdet.registry import MODELS
        head = _init(build_in_scope('mmdet', MODELS, dict(
            type='YOLLOHead', num_classes=k, in_channels=64, loss_cls=ece)))
        feats = (torch.randn(2, 64, 16, 16), )
        metas = [dict(img_shape=(64, 64), batch_input_shape=(64, 64))] * 2
        empty = InstanceData(bboxes=torch.zeros(0, 4), labels=torch.zeros(0).long())

        def run() -> torch.nn.Module:
            head.loss_by_feat(*head(feats), [empty, empty], metas)
            return head.loss_cls
    elif head_kind == 'FCNHead':  # the U-Net's decode head; label 0 = background
        from mmseg.registry import MODELS
        from mmseg.structures import SegDataSample
        cfg = dict(UNET_DECODE_HEAD, num_classes=k + 1, loss_decode=dict(ece, background_label=0))
        if use_sigmoid:  # mmseg's binary sigmoid: one output channel
            cfg.update(out_channels=1, threshold=0.5)
        head = _init(build_in_scope('mmseg', MODELS, cfg))
        feats = [torch.randn(2, 16, 32, 32)] * 5  # in_index=4: the U-Net's last stage
        samples = []
        for _ in range(2):
            sample = SegDataSample(metainfo=dict(img_shape=(32, 32)))
            sample.gt_sem_seg = PixelData(data=torch.zeros(1, 32, 32, dtype=torch.long))
            samples.append(sample)

        def run() -> torch.nn.Module:
            with DefaultScope.overwrite_default_scope('mmseg'):
                head.loss_by_feat(head(feats), samples)
            return head.loss_decode
    else:
        raise ValueError(f'unknown head {head_kind!r}')
    return head, run


def _step0(head_kind: str, k: int, use_sigmoid: bool, warmup: float = DEFAULT_WARMUP,
           confidence: str = 'probability') -> float:
    """Share of the unannotated terms kept at step 0 (progress 0, as the hook pushes it
    before the first iteration), with the loss's ``warmup`` and ``confidence`` set."""
    head, run = _head(head_kind, k, use_sigmoid)
    loss = head.loss_decode if head_kind == 'FCNHead' else head.loss_cls
    loss.warmup, loss.confidence = warmup, confidence
    loss.set_progress(0, 0.0)
    with torch.no_grad():
        return float(run().last_kept_fraction)


SOFTMAX = [(h, k) for h in ('Shared2FCBBoxHead', 'YOLLOHead', 'FCNHead') for k in (1, 2, 3, 4)]
# mmseg's sigmoid decode heads are binary (out_channels=1); mmdet's two-stage BBoxHead
# has C + 1 channels and a softmax at test time, so its loss is softmax
SIGMOID = [('YOLLOHead', k) for k in (1, 2, 3, 4)] + [('FCNHead', 1)]


@pytest.mark.parametrize('head_kind,k', SOFTMAX)
def test_default_keeps_the_unannotated_terms_at_step0_softmax(head_kind, k):
    # the requirement is "at least half"; the warm-up keeps every one of them
    assert _step0(head_kind, k, use_sigmoid=False) == 1.0


@pytest.mark.parametrize('head_kind,k', SIGMOID)
def test_default_keeps_the_unannotated_terms_at_step0_sigmoid(head_kind, k):
    assert _step0(head_kind, k, use_sigmoid=True) == 1.0


@pytest.mark.parametrize('head_kind,k', [(h, k) for h, k in SOFTMAX if k >= 2])
def test_literal_loss_still_falls_into_the_trap(head_kind, k):
    # warmup=0 (the paper as written, the package's timing): 1 - p_bg ~ K / (K + 1) >= 2/3
    # at every sample, all >= 0.5 -> nothing kept. This is the state the default avoids.
    assert _step0(head_kind, k, use_sigmoid=False, warmup=0.0) == 0.0


@pytest.mark.parametrize('head_kind,k', [(h, k) for h, k in SOFTMAX if k >= 2])
def test_max_foreground_confidence_avoids_the_trap_without_warmup(head_kind, k):
    # the option confidence='max_foreground': the uniform start gives 1 / (K + 1) <= 1/3,
    # far below 0.5, so all terms are kept even without the warm-up
    assert _step0(head_kind, k, use_sigmoid=False, warmup=0.0,
                  confidence='max_foreground') == 1.0

