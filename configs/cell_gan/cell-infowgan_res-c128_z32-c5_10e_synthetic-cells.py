# The paper's model (sect. IV-B) on synthetic cell crops with known nucleus classes
# (tools/dataset_converters/synthetic_cells.py): validation = Q clustering scores.
_base_ = [
    '../_base_/models/cell-infowgan_res-c128.py',
    '../_base_/datasets/synthetic_cells.py',
    '../_base_/schedules/schedule_gan_adam_10e.py',
    '../_base_/default_runtime_seg.py',
]
custom_imports = dict(imports=['projects.cell_gan'], allow_failed_imports=False)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10, log_metric_by_epoch=False),
    # unsupervised: the last epoch is the model (labels only score it, never select it)
    checkpoint=dict(type='CheckpointHook', by_epoch=True, interval=1, max_keep_ckpts=2),
    visualization=dict(_delete_=True, type='CellGANSampleHook', interval=200, num_rows=8))
