# mnfinder detection with one annotation per patch (the PU-detection protocol's deletion):
# on a grid of 256 px patches with 64 px overlap over each whole training image, annotations
# are deleted until one is left per patch (before the random 256 px crop; seeded by name).
# The test split (mnfinder's validation-data) stays complete; the val split (training-data
# images held out of training by the converter) gets the same deletion as training (the PU
# protocol's incomplete validation set, used by the prior sweep).
_base_ = './mnfinder_det_sparse30.py'
sparsify = dict(type='SparsifyAnnotations', mode='one_per_patch', patch_size=256, overlap=64,
                seed=0)
# the same pipelines as the 30% base, with this deletion in place of its SparsifyAnnotations
train_pipeline = [sparsify if t['type'] == 'SparsifyAnnotations' else t
                  for t in _base_.train_pipeline]
val_pipeline = [sparsify if t['type'] == 'SparsifyAnnotations' else t
                for t in _base_.val_pipeline]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=val_pipeline))
