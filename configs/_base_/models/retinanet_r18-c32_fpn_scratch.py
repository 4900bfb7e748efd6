# mmdet's RetinaNet with the demo network (ResNet-18 of half width, 64-channel FPN), from
# scratch; the FPN starts at stride 4 and the smallest anchors are 8 px (octave base scale 2),
# like the Faster R-CNN baselines' anchors for 6-30 px nuclei (mmdet's: 32 px at stride 8).
_base_ = 'mmdet::_base_/models/retinanet_r50_fpn.py'
model = dict(
    backbone=dict(depth=18, base_channels=32, frozen_stages=-1, norm_eval=False,
                  init_cfg=None),
    neck=dict(in_channels=[32, 64, 128, 256], out_channels=64, start_level=0, num_outs=5),
    bbox_head=dict(
        in_channels=64, feat_channels=64,
        anchor_generator=dict(octave_base_scale=2, strides=[4, 8, 16, 32, 64])))
