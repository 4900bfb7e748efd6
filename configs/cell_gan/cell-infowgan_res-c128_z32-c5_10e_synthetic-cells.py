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
# Eq. (9): the generator step minimises L_G + lambda2 L_Q (lambda2 weighs the two for G's
# Adam); the Q step (the base schedule's) then updates Q and G on L_Q, as the authors' code.
model = dict(q_loss_in_generator_step=True)
# Augmentation: each crop, each epoch, one of the 8 symmetries of the square. The variants
# *_rot_* (the paper's rotations), *_flip_* (the authors' flips) and *_noaug_* change it.
train_dataloader = dict(dataset=dict(pipeline=[
    dict(type='StrictLoadImageFromFile'),
    dict(type='RandomDihedral', rotations=True, flips=True),
    dict(type='PackPatchInputs'),
]))
