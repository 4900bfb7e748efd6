# A small Faster R-CNN for CPU benchmarks: ResNet-18 of half width (32 base channels) and a
# 64-channel FPN, from scratch (the demo detector's network).
_base_ = './faster-rcnn_r50_fpn_scratch.py'
model = dict(
    backbone=dict(depth=18, base_channels=32),
    neck=dict(in_channels=[32, 64, 128, 256], out_channels=64),
    rpn_head=dict(in_channels=64, feat_channels=64),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=64),
        bbox_head=dict(in_channels=64, fc_out_channels=256)))
