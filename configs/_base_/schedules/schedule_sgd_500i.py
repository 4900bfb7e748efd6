# 500 iterations (CPU benchmarks, the demo): SGD 0.02, 100 iterations of linear warm-up,
# x0.1 at 380 and 460; one validation at the end.
_base_ = './schedule_sgd_2k.py'
train_cfg = dict(max_iters=500, val_interval=500)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=100),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=500, milestones=[380, 460],
         gamma=0.1)
]
