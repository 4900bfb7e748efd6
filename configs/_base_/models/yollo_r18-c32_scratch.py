# YOLLO-style single-scale cell detector (projects/exclusive_ce/yollo.py), the detector of
# the exclusive cross-entropy paper, with the demo network: ResNet-18 of half width (32 base
# channels) + a 64-channel FPN, from scratch. The head sees only the FPN's stride-4 level
# (feat_index=0: 4 px cells, 64 channels, top-down context from strides 8-32) and predicts
# per cell C class logits + a centre offset; every box is 16x16 px (nuclei are 6-30 px wide).
# num_classes=1 is a placeholder: configs set bbox_head.num_classes. The classification loss
# (CE here; focal / exclusive CE in the method configs) is bbox_head.loss_cls.
# YOLLO / YOLLOHead are registered by projects.exclusive_ce: configs using this base import
# it (custom_imports), as the runtime base already defines custom_imports:
#   custom_imports = dict(imports=['projects.common', 'projects.exclusive_ce'],
#                         allow_failed_imports=False)
model = dict(
    type='YOLLO',
    feat_index=0,
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_size_divisor=32),
    backbone=dict(
        type='ResNet',
        depth=18,
        base_channels=32,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        frozen_stages=-1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=False,
        style='pytorch',
        init_cfg=None),
    neck=dict(type='FPN', in_channels=[32, 64, 128, 256], out_channels=64, start_level=0,
              num_outs=4),
    bbox_head=dict(
        type='YOLLOHead',
        num_classes=1,
        in_channels=64,
        feat_channels=64,
        stacked_convs=2,
        stride=4,
        box_size=(16, 16),
        norm_cfg=dict(type='BN', requires_grad=True),
        loss_cls=dict(type='mmdet.CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0),
        loss_offset=dict(type='mmdet.L1Loss', loss_weight=1.0),
        cls_avg_factor='cells'),
    train_cfg=None,
    test_cfg=dict(score_thr=0.05, decode='peak', nms=dict(type='nms', iou_threshold=0.3),
                  max_per_img=500))
# The FPN's stride 8-32 output convs feed nothing (only level 0 is used): distributed
# training must tolerate parameters without gradient.
model_wrapper_cfg = dict(type='MMDistributedDataParallel', find_unused_parameters=True)
