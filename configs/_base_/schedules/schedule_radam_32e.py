# RAdam (the paper's optimiser), constant lr; 32 epochs (of 4096 samples with the synthetic
# bags' sampler), validated every epoch; the checkpoint with the best validation mIoU is
# kept (the paper stops early on the validation loss; the hooks are set in the leaf
# configs, the runtime base owns default_hooks). Pseudo-labelling configs start their
# rounds at epoch 16, after a supervised stage of 16 epochs.
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=32, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = []
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='RAdam', lr=1e-3))
