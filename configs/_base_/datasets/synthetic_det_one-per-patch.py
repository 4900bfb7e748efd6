# The synthetic detection set with one annotation per patch (the PU-detection protocol's
# deletion, Zhao et al. 2021): on a grid of 128 px patches with 32 px overlap over each
# 256 px tile, annotations are deleted until one is left per patch (about 4-9 per tile).
# Training and (incomplete) validation; the test set stays complete.
_base_ = './synthetic_det_sparse30.py'
sparsify = dict(type='SparsifyAnnotations', mode='one_per_patch', patch_size=128, overlap=32,
                seed=0)
# the same pipelines as the 30% base, with this deletion in place of its SparsifyAnnotations
train_pipeline = [sparsify if t['type'] == 'SparsifyAnnotations' else t
                  for t in _base_.train_pipeline]
val_pipeline = [sparsify if t['type'] == 'SparsifyAnnotations' else t
                for t in _base_.val_pipeline]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=val_pipeline))
