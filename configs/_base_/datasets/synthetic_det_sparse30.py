# The synthetic detection set with incomplete labels: 30% of the cells of every training and
# validation tile stay annotated (SparsifyAnnotations, nested subsets seeded by file name, the
# same cells every epoch); the test set stays complete. The validation set is incomplete, as
# in the PU-detection protocol (its recall is what the prior sweep maximises).
_base_ = './synthetic_det.py'
sparsify = dict(type='SparsifyAnnotations', mode='nested', fraction=0.3, seed=0)
train_pipeline = [
    dict(type='StrictLoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    sparsify,
    dict(type='RandomFlip', prob=0.5, direction=['horizontal', 'vertical', 'diagonal']),
    dict(type='PackDetInputs')
]
val_pipeline = [
    dict(type='StrictLoadImageFromFile'),
    dict(type='Resize', scale_factor=1.0),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='LoadPointAnnotations'),
    sparsify,
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor',
                    'gt_points'))
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=val_pipeline))
