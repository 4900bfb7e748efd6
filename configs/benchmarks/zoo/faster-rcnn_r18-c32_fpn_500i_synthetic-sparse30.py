# Model-zoo peer of configs/benchmarks/det_sparse.py: mmdet's Faster R-CNN with its stock
# losses, on synthetic H&E with 30% of the cells annotated.
# mmdet::_base_/models/faster-rcnn_r50_fpn.py unchanged but for the data, the classes, the
# anchors below and the network shared by every zoo detector here: ResNet-18 of half width
# (32 base channels) and a 64-channel FPN, from scratch (the first `_base_`).
# Full width on a GPU is one line away: make the first `_base_`
#   '../../_base_/models/faster-rcnn_r50_fpn_scratch.py' (ResNet-50, 256-channel FPN,
#   from scratch) or 'mmdet::_base_/models/faster-rcnn_r50_fpn.py' (ImageNet weights).
# The reference stock Faster R-CNN of the benchmarks:
# configs/pu_detection/faster-rcnn_r18-c32_fpn_ce_500i_synthetic-sparse30.py is the same run
# (same resolved model, data, schedule and runtime; tests/test_configs.py checks it).
_base_ = [
    '../../_base_/models/faster-rcnn_r18-c32_fpn_scratch.py',
    '../../_base_/datasets/synthetic_det_sparse30.py',
    '../../_base_/schedules/schedule_sgd_500i.py',
    '../../_base_/default_runtime_det.py',
]
model = dict(
    rpn_head=dict(anchor_generator=dict(scales=[2, 4])),  # nuclei are 6-30 px; mmdet: [8]
    roi_head=dict(bbox_head=dict(num_classes=4)),
    test_cfg=dict(rcnn=dict(max_per_img=500)))
