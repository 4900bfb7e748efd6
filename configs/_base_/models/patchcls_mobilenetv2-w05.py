# Patch classifier of Tokunaga et al. 2020: MobileNetV2 + global pooling + linear head.
# Half width, from scratch, for CPU runs on 32x32 synthetic patches. The paper fine-tunes an
# ImageNet MobileNetV2 with frozen convolutions: see patchcls_mobilenetv2_*_bags-224px.py.
model = dict(
    type='PatchClassifier',
    backbone=dict(type='mmdet.MobileNetV2', widen_factor=0.5, out_indices=(7, )),
    num_classes=4,
    data_preprocessor=dict(type='ImgDataPreprocessor', mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], bgr_to_rgb=False))
