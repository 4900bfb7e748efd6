# Model-zoo peer of configs/benchmarks/det_sparse.py: mmdet's ATSS with its stock losses, on
# synthetic H&E with 30% of the cells annotated.
# mmdet::atss/atss_r50_fpn_1x_coco.py (its model: ./_base_/atss_r50_fpn.py) unchanged but
# for the data, the classes, the FPN levels and anchors below and the network shared by
# every zoo detector here: ResNet-18 of half width (32 base channels) and a 64-channel FPN,
# from scratch (the first `_base_`).
# Full width on a GPU is one line away: make the first `_base_`
#   './_base_/atss_r50_fpn.py' (ResNet-50, 256-channel FPN, ImageNet weights).
_base_ = [
    './_base_/atss_r18-c32_fpn_scratch.py',
    '../../_base_/datasets/synthetic_det_sparse30.py',
    '../../_base_/schedules/schedule_sgd_500i.py',
    '../../_base_/default_runtime_det.py',
]
# FPN from stride 4, 8 px anchors at P2 (nuclei are 6-30 px); mmdet: P3-P7, 64 px anchors
# at P3 (octave_base_scale 8). The same levels and anchor sizes as the RetinaNet peer.
model = dict(
    neck=dict(start_level=0, num_outs=5),
    bbox_head=dict(
        num_classes=4,
        anchor_generator=dict(octave_base_scale=2, strides=[4, 8, 16, 32, 64])),
    test_cfg=dict(max_per_img=500))
