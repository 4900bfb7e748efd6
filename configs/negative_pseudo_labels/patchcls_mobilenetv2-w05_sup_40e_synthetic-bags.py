# Supervised only (Table 1, "Supervised"): the labelled slides' patches, rare classes
# oversampled; no pseudo labels.
_base_ = [
    '../_base_/models/patchcls_mobilenetv2-w05.py', '../_base_/datasets/synthetic_bags.py',
    '../_base_/schedules/schedule_radam_40e.py', '../_base_/default_runtime_seg.py'
]
custom_imports = dict(imports=['projects.negative_pseudo_labels'], allow_failed_imports=False)
# Validate every epoch, keep the best validation mIoU (the paper stops early).
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=32, log_metric_by_epoch=True),
    checkpoint=dict(type='CheckpointHook', by_epoch=True, interval=1, max_keep_ckpts=1,
                    save_best='mIoU', rule='greater'),
    visualization=dict(type='SegVisualizationHook', draw=False))
