# The synthetic detection set with one annotation per patch (the PU-detection protocol's
# deletion, Zhao et al. 2021): on a grid of 128 px patches with 32 px overlap over each
# 256 px tile, annotations are deleted until one is left per patch (about 4-9 per tile).
# Training and (incomplete) validation; the test set stays complete.
_base_ = './synthetic_det.py'
sparsify = dict(type='SparsifyAnnotations', mode='one_per_patch', patch_size=128, overlap=32,
                seed=0)
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
