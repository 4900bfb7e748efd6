# mmdet's Faster R-CNN R50-FPN, offline: trained from scratch (init_cfg=None, no frozen
# stage, BN statistics updated). With ImageNet weights (needs a download), use instead:
#   model = dict(backbone=dict(
#       init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet50'),
#       frozen_stages=1, norm_eval=True))
_base_ = 'mmdet::_base_/models/faster-rcnn_r50_fpn.py'
model = dict(backbone=dict(frozen_stages=-1, norm_eval=False, init_cfg=None))
