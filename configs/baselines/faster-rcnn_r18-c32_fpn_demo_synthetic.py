# `make demo`: the half-width ResNet-18 Faster R-CNN for 500 iterations (about 13 minutes on
# 2 CPU cores), evaluated once at the end.
_base_ = './faster-rcnn_r18-c32_fpn_2k_synthetic.py'
train_cfg = dict(max_iters=500, val_interval=500)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=100),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=500, milestones=[380, 460],
         gamma=0.1)
]
default_hooks = dict(checkpoint=dict(interval=500))
