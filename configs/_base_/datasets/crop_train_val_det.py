# Detection sets with images larger than 256 px (mnfinder, DSB2018): training on random
# 256x256 crops (a smaller image is kept whole by mmdet's RandomCrop), validation and test
# on whole images. The test loader reads the val split here; every child with a test split
# points it there (mnfinder_det.py, dsb2018_det.py), so that no reported number comes from
# the images used for model selection. Children set data_root.
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
