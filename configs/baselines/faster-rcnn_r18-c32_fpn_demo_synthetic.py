# `make demo`: the half-width ResNet-18 Faster R-CNN for 600 iterations (about 11 minutes on
# 2 CPU cores), evaluated once at the end.
_base_ = './faster-rcnn_r18-c32_fpn_2k_synthetic.py'
train_cfg = dict(max_iters=600, val_interval=600)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=100),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=600, milestones=[450, 550],
         gamma=0.1)
]
default_hooks = dict(checkpoint=dict(interval=600))
