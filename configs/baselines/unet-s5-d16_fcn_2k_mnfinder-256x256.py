# Baseline: stock mmseg U-Net on mnfinder (background / nucleus / micronucleus).
_base_ = [
    'mmseg::_base_/models/fcn_unet_s5-d16.py',
    '../_base_/datasets/mnfinder_seg.py',
    '../_base_/schedules/schedule_adam_2k.py',
    '../_base_/default_runtime_seg.py',
]
crop_size = (256, 256)
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(norm_cfg=norm_cfg),
    decode_head=dict(num_classes=3, norm_cfg=norm_cfg),
    auxiliary_head=dict(num_classes=3, norm_cfg=norm_cfg),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(192, 192)))
