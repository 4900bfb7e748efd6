# Detection sets with images larger than 256 px (mnfinder, DSB2018): training on random
# 256x256 crops (a smaller image is kept whole by mmdet's RandomCrop), validation and test
# on whole images. The test loader reads the val split here, for sets with train / val only
# (DSB2018); a set with a test split points it there (mnfinder_det.py). Children set
# data_root.
_base_ = './synthetic_det.py'
train_pipeline = [
    dict(type='StrictLoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomCrop', crop_size=(256, 256), allow_negative_crop=True),
    dict(type='RandomFlip', prob=0.5, direction=['horizontal', 'vertical', 'diagonal']),
    dict(type='PackDetInputs')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(ann_file='annotations/val.json'))
test_dataloader = val_dataloader
