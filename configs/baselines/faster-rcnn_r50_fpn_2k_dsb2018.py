# Baseline: stock mmdet Faster R-CNN R50-FPN on DSB2018 nuclei (one class), from scratch.
_base_ = [
    '../_base_/models/faster-rcnn_r50_fpn_scratch.py',
    '../_base_/datasets/dsb2018_det.py',
    '../_base_/schedules/schedule_sgd_2k.py',
    '../_base_/default_runtime_det.py',
]
model = dict(
    # nuclei are about 8-60 px wide: 16 px anchors at stride 4 (mmdet's default is 32 px)
    rpn_head=dict(anchor_generator=dict(scales=[4])),
    roi_head=dict(bbox_head=dict(num_classes=1)),
    test_cfg=dict(rcnn=dict(max_per_img=1000)))
