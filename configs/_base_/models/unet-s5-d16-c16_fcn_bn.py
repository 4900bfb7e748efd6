# mmseg's U-Net S5-D16 + FCN head at a quarter of the width (base_channels 16 instead of 64)
# for CPU benchmarks; the same architecture otherwise. Children set num_classes.
_base_ = './unet-s5-d16_fcn_bn.py'
model = dict(
    backbone=dict(base_channels=16),
    decode_head=dict(in_channels=16, channels=16),
    auxiliary_head=dict(in_channels=32, channels=16))
