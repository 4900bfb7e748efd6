# The paper's set-up on your own slides (Tokunaga et al. 2020, sect. 5.2): MobileNetV2 with
# ImageNet weights, convolutions frozen (frozen_stages=7: the stem and all inverted-residual
# stages; the last 1x1 conv and the head train), 224x224 patches, RAdam lr 1e-5,
# batch 18, 100 epochs with the best validation mIoU kept. Stage 1: supervised only.
# ImageNet weights: uncomment init_cfg (mmdet's ImageNet MobileNetV2, downloaded once).
_base_ = [
    '../_base_/datasets/proportion_bags.py', '../_base_/default_runtime_seg.py'
]
custom_imports = dict(imports=['projects.negative_pseudo_labels'], allow_failed_imports=False)
num_classes = 5  # e.g. lepidic, acinar, papillary, micropapillary, solid
model = dict(
    type='PatchClassifier',
    backbone=dict(
        type='mmdet.MobileNetV2', out_indices=(7, ), frozen_stages=7,
        # init_cfg=dict(type='Pretrained', checkpoint='open-mmlab://mmdet/mobilenet_v2'),
    ),
    num_classes=num_classes,
    data_preprocessor=dict(type='ImgDataPreprocessor', mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], bgr_to_rgb=False))
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=100, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = []
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='RAdam', lr=1e-5))
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=True),
    checkpoint=dict(type='CheckpointHook', by_epoch=True, interval=1, max_keep_ckpts=1,
                    save_best='mIoU', rule='greater'),
    visualization=dict(type='SegVisualizationHook', draw=False))
