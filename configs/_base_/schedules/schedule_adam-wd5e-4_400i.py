# Qu et al.'s optimiser (Adam, lr 1e-3, weight decay 5e-4, lr x 0.1 in steps) over 400
# iterations for CPU runs: the paper divides the lr by 10 every 30 epochs; here once, at
# two thirds of training. Validation at the end; the last checkpoint is scored (the paper
# keeps the lowest validation loss). Longer runs: --cfg-options train_cfg.max_iters=...
# param_scheduler.0.milestones=[...].
train_cfg = dict(type='IterBasedTrainLoop', max_iters=400, val_interval=400)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = [
    dict(type='MultiStepLR', milestones=[267], gamma=0.1, by_epoch=False)
]
optim_wrapper = dict(
    type='OptimWrapper', optimizer=dict(type='Adam', lr=1e-3, weight_decay=5e-4))
