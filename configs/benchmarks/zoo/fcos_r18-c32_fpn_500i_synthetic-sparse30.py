# Model-zoo peer of configs/benchmarks/det_sparse.py: mmdet's FCOS with its stock losses, on
# synthetic H&E with 30% of the cells annotated.
# mmdet::fcos/fcos_r50_fpn_gn-head-center-normbbox-centeronreg-giou_8xb8-amp-lsj-200e_coco.py
# (its model: ./_base_/fcos_r50_fpn_gn-head-center-normbbox-centeronreg-giou.py) unchanged
# but for the data, the classes, the FPN levels and batch padding below and the network
# shared by every zoo detector here: ResNet-18 of half width (32 base channels) and a
# 64-channel FPN, from scratch (the first `_base_`).
# Full width on a GPU is one line away: make the first `_base_`
#   './_base_/fcos_r50_fpn_gn-head-center-normbbox-centeronreg-giou.py' (ResNet-50,
#   256-channel FPN, ImageNet weights).
_base_ = [
    './_base_/fcos_r18-c32_fpn_scratch.py',
    '../../_base_/datasets/synthetic_det_sparse30.py',
    '../../_base_/schedules/schedule_sgd_500i.py',
    '../../_base_/default_runtime_det.py',
]
# FPN from stride 4 (nuclei are 6-30 px); mmdet: P3-P7 from stride 8. mmdet's regress
# ranges stay: the first level takes every box whose sides lie within 64 px of the location, so
# every cell is learnt on P2.
model = dict(
    # the zoo config pads every batch to 1024x1024 for its large-scale-jitter COCO crops;
    # here tiles keep their size (padded to a multiple of 32), as for every other peer
    data_preprocessor=dict(batch_augments=None),
    neck=dict(start_level=0, num_outs=5),
    bbox_head=dict(num_classes=4, strides=[4, 8, 16, 32, 64]),
    test_cfg=dict(max_per_img=500))
