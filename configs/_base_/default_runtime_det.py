# Runtime shared by MMHisto detection configs: mmdet's runtime, iteration-based logging,
# checkpoints without optimizer state by default (a Faster R-CNN one is 330 MB with it).
_base_ = 'mmdet::_base_/default_runtime.py'
custom_imports = dict(imports=['projects.common'], allow_failed_imports=False)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=20, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', interval=500, by_epoch=False, max_keep_ckpts=2))
log_processor = dict(type='LogProcessor', window_size=20, by_epoch=False)
# nccl on GPUs; tools/train.py switches to gloo (and CPU DDP) when CUDA is absent.
env_cfg = dict(dist_cfg=dict(backend='nccl'))
randomness = dict(seed=0)
