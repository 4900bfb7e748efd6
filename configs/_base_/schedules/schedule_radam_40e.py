# RAdam (the paper's optimiser), batch 32; 40 epochs (of 4096 samples with the synthetic
# bags' sampler), validated every epoch. Two stages, as in the paper: supervised training
# (epochs 0-23, lr 1e-3), then fine-tuning with pseudo labels (epochs 24-39, lr 1e-4; the
# pseudo-labelling configs start their rounds at epoch 24). The supervised config keeps the
# same schedule, so every row trains as long. Hooks (best validation mIoU kept) are set in
# the leaf configs: the runtime base owns default_hooks.
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=40, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = [dict(type='MultiStepLR', by_epoch=True, milestones=[24], gamma=0.1)]
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='RAdam', lr=1e-3))
