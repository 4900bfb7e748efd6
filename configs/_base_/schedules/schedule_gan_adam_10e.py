# Hu et al. 2018 sect. IV-B: Adam (lr 1e-4, betas 0.5 / 0.9) for G, D and Q; ten epochs,
# one critic iteration per batch (G and Q step after every fifth). The Q step minimises L_Q
# over G and Q (eq. 9); with model.q_shares_trunk=True (the authors' code) add
# 'discriminator' to the auxiliary modules so that the shared trunk follows L_Q too.
_adam = dict(type='OptimWrapper', optimizer=dict(type='Adam', lr=1e-4, betas=(0.5, 0.9)))
optim_wrapper = dict(
    constructor='GANOptimWrapperConstructor',
    generator=_adam,
    discriminator=_adam,
    auxiliary=dict(_adam, modules=['auxiliary', 'generator']))
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=10, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
# Distributed runs (tools/dist_train.sh): G, D and Q are wrapped in DDP one by one, since
# train_step calls them separately; each step leaves some of their parameters unused.
model_wrapper_cfg = dict(type='MMSeparateDistributedDataParallel', broadcast_buffers=False,
                         find_unused_parameters=True)
