# mmdet's Faster R-CNN R101-FPN, from scratch. ImageNet weights (needs a download):
#   model = dict(backbone=dict(
#       init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet101'),
#       frozen_stages=1, norm_eval=True))
_base_ = './faster-rcnn_r50_fpn_scratch.py'
model = dict(backbone=dict(depth=101))
