# Baseline: Faster R-CNN with the PU paper's backbone, VGG16 (13 convs, no BN) + FPN, on the
# synthetic H&E cell detection set, from scratch. VGG16 stages 1..4 have the strides
# 4, 8, 16, 32 of a ResNet (projects/pu_detection/vgg.py), so the R50-FPN anchor strides
# [4, 8, 16, 32, 64] and RoI strides [4, 8, 16, 32] apply unchanged; only the channels differ.
# ImageNet weights (the paper's; needs a download) in place of init_cfg=None:
#   init_cfg=dict(type='Pretrained',
#                 checkpoint='https://download.pytorch.org/models/vgg16-397923af.pth')
# ('torchvision://vgg16' is the same file but makes mmengine import torchvision.)
_base_ = '../baselines/faster-rcnn_r50_fpn_2k_synthetic.py'
custom_imports = dict(imports=['projects.common', 'projects.pu_detection'],
                      allow_failed_imports=False)
model = dict(
    backbone=dict(_delete_=True, type='VGG16', out_indices=(1, 2, 3, 4), init_cfg=None),
    neck=dict(in_channels=[128, 256, 512, 512]))
