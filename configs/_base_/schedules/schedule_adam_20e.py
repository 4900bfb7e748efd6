# The PU-detection paper's schedule (Zhao et al. 2021, sect. 3.1): Adam, lr 1e-3, 20 epochs.
# The paper names no decay; we keep the rate constant. Validation after every epoch.
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=20, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=100)
]
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='Adam', lr=1e-3))
auto_scale_lr = dict(enable=False, base_batch_size=16)
