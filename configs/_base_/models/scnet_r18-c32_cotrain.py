# Qu et al.'s framework (projects/point_supervision): two SC-Nets co-trained with EMA pseudo
# labels. SC-Net = ResUNet (ResNet-18 encoder at half width, base 32, residual U-Net
# decoder) on the H-component (1 channel) + colourisation U-Net from the nucleus
# probability map to RGB (eq. (8), L2). Loss per net: L_vor + L_clu + alpha L_cot +
# beta L_color (eq. (9)), eta = 1, eps = 0.1. Leaves that import this base must list
# 'projects.point_supervision' in custom_imports (the runtime base defines custom_imports).
# Full-width ResNet-34/50 encoders: encoder=dict(depth=34, base_channels=64), and
# init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet34') for ImageNet weights
# (3-channel input: set in_channels=3 and ExtractHematoxylin(to_rgb=True)).
norm_cfg = dict(type='BN', requires_grad=True)
data_preprocessor = dict(
    type='SegDataPreProcessor', mean=[127.5], std=[127.5], pad_val=0, seg_pad_val=255,
    size_divisor=32)
model = dict(
    type='CoTrainingSegmentor',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='ResUNet',
        in_channels=1,
        encoder=dict(type='ResNet', depth=18, base_channels=32, stem_channels=32,
                     out_indices=(0, 1, 2, 3), norm_cfg=norm_cfg),
        decoder_channels=(256, 128, 64, 32, 16),
        stem_channels=(16, 32),
        norm_cfg=norm_cfg),
    colorization_head=dict(type='ColorizationHead', in_channels=1, out_channels=3,
                           base_channels=16, num_stages=4, loss='l2', norm_cfg=norm_cfg),
    use_voronoi=True,
    use_cluster=True,
    use_cotraining=True,
    eta=1.0,
    eps=0.1,
    test_cfg=dict(mode='slide', crop_size=224, overlap=80, postprocess=True, min_size=20))
