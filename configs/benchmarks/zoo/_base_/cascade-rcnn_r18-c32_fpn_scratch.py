# mmdet's Cascade R-CNN (Cai & Vasconcelos, CVPR 2018) with the network every zoo detector
# uses here: ResNet-18 of half width (32 base channels) and a 64-channel FPN, from scratch,
# as configs/_base_/models/faster-rcnn_r18-c32_fpn_scratch.py does for Faster R-CNN (RoI
# heads: fc 256 instead of 1024). Children set classes and anchors.
_base_ = 'mmdet::_base_/models/cascade-rcnn_r50_fpn.py'
model = dict(
    backbone=dict(depth=18, base_channels=32, frozen_stages=-1, norm_eval=False,
                  init_cfg=None),
    neck=dict(in_channels=[32, 64, 128, 256], out_channels=64),
    rpn_head=dict(in_channels=64, feat_channels=64),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=64),
        # three stages: the same width change on each of mmdet's three heads
        bbox_head=[dict(h, in_channels=64, fc_out_channels=256)
                   for h in _base_.model.roi_head.bbox_head]))
