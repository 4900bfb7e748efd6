# Faster R-CNN with the PU paper's backbone, VGG16 (13 convs, no BN) + FPN, from scratch.
# VGG16 stages 1..4 have the strides 4, 8, 16, 32 of a ResNet (projects/pu_detection/vgg.py),
# so the R50-FPN anchor strides [4, 8, 16, 32, 64] and RoI strides [4, 8, 16, 32] apply
# unchanged; only the channels differ. ImageNet weights (the paper's; needs a download):
#   model = dict(backbone=dict(init_cfg=dict(
#       type='Pretrained', checkpoint='https://download.pytorch.org/models/vgg16-397923af.pth')))
# ('torchvision://vgg16' is the same file but makes mmengine import torchvision.)
# The VGG16 type is registered by projects.pu_detection: configs using this base import it
# (custom_imports), as the runtime base already defines custom_imports.
_base_ = './faster-rcnn_r50_fpn_scratch.py'
model = dict(
    backbone=dict(_delete_=True, type='VGG16', out_indices=(1, 2, 3, 4), init_cfg=None),
    neck=dict(in_channels=[128, 256, 512, 512]))
