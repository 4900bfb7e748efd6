# mnfinder detection with incomplete labels: 30% of the nuclei / micronuclei of every
# training image stay annotated (SparsifyAnnotations on the whole image, before the random
# 256 px crop, seeded by file name: the same objects every epoch).
# The test split (mnfinder's validation-data) stays complete; the val split (training-data
# images held out of training by the converter) gets the same deletion as training (the PU
# protocol's incomplete validation set, used by the prior sweep).
_base_ = './mnfinder_det.py'
sparsify = dict(type='SparsifyAnnotations', mode='nested', fraction=0.3, seed=0)
# SparsifyAnnotations goes right after LoadAnnotations in training (before any random crop)
# and right before PackDetInputs in validation; the test pipeline is left complete.
train_pipeline = [s for t in _base_.train_pipeline
                  for s in ([t, sparsify] if t['type'] == 'LoadAnnotations' else [t])]
val_pipeline = [s for t in _base_.test_pipeline
                for s in ([sparsify, t] if t['type'] == 'PackDetInputs' else [t])]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=val_pipeline))
