# Baseline: stock mmseg U-Net (S5-D16, FCN head) on the synthetic H&E nuclei set, from
# scratch. Background / nucleus, 256x256 crops, whole-image inference on 256x256 tiles.
_base_ = [
    '../_base_/models/unet-s5-d16_fcn_bn.py',
    '../_base_/datasets/synthetic_seg.py',
    '../_base_/schedules/schedule_adam_2k.py',
    '../_base_/default_runtime_seg.py',
]
model = dict(
    decode_head=dict(num_classes=2),
    auxiliary_head=dict(num_classes=2),
    test_cfg=dict(mode='whole'))
