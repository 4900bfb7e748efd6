# mnfinder detection with one annotation per patch (the PU-detection protocol's deletion):
# on a grid of 256 px patches with 64 px overlap over each whole training image, annotations
# are deleted until one is left per patch (before the random 256 px crop; seeded by name).
# mnfinder has no test split here (its test-data is held out): the validation images are
# the test set, complete; the validation loop sees the same images with the same deletion
# as training (the PU protocol's incomplete validation set, used by the prior sweep).
_base_ = './mnfinder_det.py'
sparsify = dict(type='SparsifyAnnotations', mode='one_per_patch', patch_size=256, overlap=64,
                seed=0)
train_pipeline = [
    dict(type='StrictLoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    sparsify,
    dict(type='RandomCrop', crop_size=(256, 256), allow_negative_crop=True),
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
