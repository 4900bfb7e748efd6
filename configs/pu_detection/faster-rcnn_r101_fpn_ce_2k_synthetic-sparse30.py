# Baseline (stock cross-entropy: unannotated cells are negatives):
# Faster R-CNN ResNet-101-FPN,
# synthetic H&E with 30% of the cells annotated (test complete).
_base_ = [
    '../_base_/models/faster-rcnn_r101_fpn_scratch.py',
    '../_base_/datasets/synthetic_det_sparse30.py',
    '../_base_/schedules/schedule_sgd_2k.py',
    '../_base_/default_runtime_det.py',
]
custom_imports = dict(imports=['projects.common', 'projects.pu_detection'],
                      allow_failed_imports=False)
model = dict(
    rpn_head=dict(anchor_generator=dict(scales=[2, 4])),  # nuclei are 6-30 px
    roi_head=dict(bbox_head=dict(num_classes=4)),
    test_cfg=dict(rcnn=dict(max_per_img=500)))
