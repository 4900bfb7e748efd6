# Baseline: stock mmseg U-Net on mnfinder (background / nucleus / micronucleus), from scratch;
# sliding-window testing on the 512-1024 px images.
_base_ = [
    '../_base_/models/unet-s5-d16_fcn_bn.py',
    '../_base_/datasets/mnfinder_seg.py',
    '../_base_/schedules/schedule_adam_2k.py',
    '../_base_/default_runtime_seg.py',
]
model = dict(
    decode_head=dict(num_classes=3),
    auxiliary_head=dict(num_classes=3),
    test_cfg=dict(mode='slide', crop_size=(256, 256), stride=(192, 192)))
