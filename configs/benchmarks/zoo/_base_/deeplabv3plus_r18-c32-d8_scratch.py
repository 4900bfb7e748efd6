# mmseg's DeepLabV3+ (Chen et al., ECCV 2018; mmseg::_base_/models/deeplabv3plus_r50-d8.py)
# with a small ResNetV1c-18 (stem and base width 32 instead of 64, output stride 8), from
# scratch, BN instead of SyncBN (which needs a GPU process group). Head widths: mmseg's own
# ResNet-18 variant (deeplabv3plus_r18-d8_*: ASPP 128 channels on 512 inputs, auxiliary 64 on
# 256) halved with the backbone; its 12-channel low-level skip kept. Children set num_classes.
_base_ = 'mmseg::_base_/models/deeplabv3plus_r50-d8.py'
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    pretrained=None,
    backbone=dict(depth=18, stem_channels=32, base_channels=32, norm_cfg=norm_cfg),
    decode_head=dict(in_channels=256, channels=64, c1_in_channels=32, c1_channels=12,
                     norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=128, channels=32, norm_cfg=norm_cfg))
