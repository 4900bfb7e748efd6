# The synthetic detection set with incomplete labels: 30% of the cells of every training and
# validation tile stay annotated (SparsifyAnnotations, nested subsets seeded by file name, the
# same cells every epoch); the test set stays complete. The validation set is incomplete, as
# in the PU-detection protocol (its recall is what the prior sweep maximises).
_base_ = './synthetic_det.py'
sparsify = dict(type='SparsifyAnnotations', mode='nested', fraction=0.3, seed=0)
# SparsifyAnnotations goes right after LoadAnnotations in training (before any random crop)
# and right before PackDetInputs in validation; the test pipeline is left complete.
train_pipeline = [s for t in _base_.train_pipeline
                  for s in ([t, sparsify] if t['type'] == 'LoadAnnotations' else [t])]
val_pipeline = [s for t in _base_.test_pipeline
                for s in ([sparsify, t] if t['type'] == 'PackDetInputs' else [t])]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=val_pipeline))
