# mnfinder fluorescence nuclei + micronuclei as detection (COCO), from
#   python tools/dataset_converters/mnfinder.py --root <mnfinder> --out data/mnfinder
# Images are 512-1024 px: training on random 256x256 crops, testing on whole images.
_base_ = './synthetic_det.py'
data_root = 'data/mnfinder/'
train_pipeline = [
    dict(type='StrictLoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomCrop', crop_size=(256, 256), allow_negative_crop=True),
    dict(type='RandomFlip', prob=0.5, direction=['horizontal', 'vertical', 'diagonal']),
    dict(type='PackDetInputs')
]
train_dataloader = dict(
    dataset=dict(data_root=data_root, ann_file='annotations/train.json',
                 pipeline=train_pipeline))
# mnfinder has only training-data and validation-data here (its test-data is held out):
# validation and test both use the validation split.
val_dataloader = dict(dataset=dict(data_root=data_root, ann_file='annotations/val.json'))
test_dataloader = val_dataloader
val_evaluator = dict(type='CellDetectionMetric', radius=6.0, score_thr=0.5, max_per_img=1000,
                     classwise=True)
test_evaluator = val_evaluator
