# mmdet's ATSS (./atss_r50_fpn.py) with the network every zoo detector uses here: ResNet-18
# of half width (32 base channels) and a 64-channel FPN, from scratch (as
# configs/_base_/models/retinanet_r18-c32_fpn_scratch.py). Children set classes and anchors.
_base_ = './atss_r50_fpn.py'
model = dict(
    backbone=dict(depth=18, base_channels=32, frozen_stages=-1, norm_eval=False,
                  init_cfg=None),
    neck=dict(in_channels=[32, 64, 128, 256], out_channels=64),
    bbox_head=dict(in_channels=64, feat_channels=64))
