# CPU benchmark (README, Results), the mmdet model-zoo peer: stock RetinaNet (focal loss) with
# the same small network and schedule, mnfinder (real fluorescence) with 30% of the objects
# annotated.
_base_ = [
    '../_base_/models/retinanet_r18-c32_fpn_scratch.py',
    '../_base_/datasets/mnfinder_det_sparse30.py',
    '../_base_/schedules/schedule_sgd_500i.py',
    '../_base_/default_runtime_det.py',
]
model = dict(
    bbox_head=dict(num_classes=2),
    test_cfg=dict(max_per_img=1000))
default_hooks = dict(checkpoint=dict(interval=500))
