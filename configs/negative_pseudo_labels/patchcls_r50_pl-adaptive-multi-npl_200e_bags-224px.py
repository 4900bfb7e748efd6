# As the MobileNetV2 config with a ResNet-50 backbone (mmseg's ResNetV1c would need its
# own weights; this is torchvision's layout). ImageNet weights: uncomment init_cfg.
_base_ = './patchcls_mobilenetv2_pl-adaptive-multi-npl_200e_bags-224px.py'
model = dict(backbone=dict(
    _delete_=True, type='ResNet', depth=50, out_indices=(3, ), frozen_stages=4,
    norm_eval=True,
    # init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet50'),
))
