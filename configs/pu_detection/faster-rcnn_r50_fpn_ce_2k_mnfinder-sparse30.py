# Baseline (stock cross-entropy: unannotated cells are negatives):
# Faster R-CNN ResNet-50-FPN,
# mnfinder (real fluorescence) with 30% of the objects annotated.
_base_ = [
    '../_base_/models/faster-rcnn_r50_fpn_scratch.py',
    '../_base_/datasets/mnfinder_det_sparse30.py',
    '../_base_/schedules/schedule_sgd_2k.py',
    '../_base_/default_runtime_det.py',
]
custom_imports = dict(imports=['projects.common', 'projects.pu_detection'],
                      allow_failed_imports=False)
model = dict(
    rpn_head=dict(anchor_generator=dict(scales=[2, 4])),  # micronuclei are 2-10 px
    roi_head=dict(bbox_head=dict(num_classes=2)),
    test_cfg=dict(rcnn=dict(max_per_img=1000)))
