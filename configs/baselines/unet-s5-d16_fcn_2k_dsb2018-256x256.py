# Baseline: stock mmseg U-Net (S5-D16, FCN head) on DSB2018 nuclei, from scratch.
# Background / nucleus, 256x256 training crops; whole-image testing with the input padded
# to a multiple of 16 (the U-Net's four down-samplings need it; padding is cropped off).
_base_ = [
    'mmseg::_base_/models/fcn_unet_s5-d16.py',
    '../_base_/datasets/dsb2018_seg.py',
    '../_base_/schedules/schedule_adam_2k.py',
    '../_base_/default_runtime_seg.py',
]
crop_size = (256, 256)
norm_cfg = dict(type='BN', requires_grad=True)  # SyncBN in mmseg's base needs a GPU group
model = dict(
    data_preprocessor=dict(size=crop_size, test_cfg=dict(size_divisor=16)),
    backbone=dict(norm_cfg=norm_cfg),
    decode_head=dict(num_classes=2, norm_cfg=norm_cfg),
    auxiliary_head=dict(num_classes=2, norm_cfg=norm_cfg),
    test_cfg=dict(mode='whole'))
