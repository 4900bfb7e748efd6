# Baseline: stock mmdet Faster R-CNN R50-FPN on mnfinder (nucleus, micronucleus), from scratch.
_base_ = [
    '../_base_/models/faster-rcnn_r50_fpn_scratch.py',
    '../_base_/datasets/mnfinder_det.py',
    '../_base_/schedules/schedule_sgd_2k.py',
    '../_base_/default_runtime_det.py',
]
model = dict(
    # micronuclei are 2-10 px, nuclei 20-60 px: anchors of 8 px at stride 4 and up
    rpn_head=dict(anchor_generator=dict(scales=[2, 4])),
    roi_head=dict(bbox_head=dict(num_classes=2)),
    test_cfg=dict(rcnn=dict(max_per_img=1000)))
