# CPU benchmark of the PU-detection methods (README, Results): baseline (stock cross-entropy)
# with the small demo network, 500 iterations, mnfinder (real fluorescence) with 30% of the
# objects annotated.
_base_ = [
    '../_base_/models/faster-rcnn_r18-c32_fpn_scratch.py',
    '../_base_/datasets/mnfinder_det_sparse30.py',
    '../_base_/schedules/schedule_sgd_500i.py',
    '../_base_/default_runtime_det.py',
]
custom_imports = dict(imports=['projects.common', 'projects.pu_detection'],
                      allow_failed_imports=False)
model = dict(
    rpn_head=dict(anchor_generator=dict(scales=[2, 4])),  # micronuclei are 2-10 px
    roi_head=dict(bbox_head=dict(num_classes=2)),
    test_cfg=dict(rcnn=dict(max_per_img=1000)))
default_hooks = dict(checkpoint=dict(interval=500))
