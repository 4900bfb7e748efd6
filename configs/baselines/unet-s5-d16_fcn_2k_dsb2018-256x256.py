# Baseline: stock mmseg U-Net (S5-D16, FCN head) on DSB2018 nuclei, from scratch.
# Background / nucleus, 256x256 training crops; whole-image testing with the input padded
# to a multiple of 16 (the U-Net's four down-samplings need it; padding is cropped off).
_base_ = [
    '../_base_/models/unet-s5-d16_fcn_bn.py',
    '../_base_/datasets/dsb2018_seg.py',
    '../_base_/schedules/schedule_adam_2k.py',
    '../_base_/default_runtime_seg.py',
]
model = dict(
    data_preprocessor=dict(test_cfg=dict(size_divisor=16)),
    decode_head=dict(num_classes=2),
    auxiliary_head=dict(num_classes=2),
    test_cfg=dict(mode='whole'))
