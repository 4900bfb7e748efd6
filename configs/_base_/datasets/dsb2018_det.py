# 2018 Data Science Bowl nuclei as detection (COCO, one class 'nucleus'), from
#   python tools/dataset_converters/dsb2018.py --root <stage1_train> --out data/dsb2018
# Image sizes vary (256x256 up to 1040x1388): training on random 256x256 crops (a smaller
# image is kept whole by mmdet's RandomCrop), testing on whole images.
_base_ = './synthetic_det.py'
data_root = 'data/dsb2018/'
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
# The converter writes train / val only (plus 'unlabeled', images without annotation):
# the val split serves as test.
val_dataloader = dict(dataset=dict(data_root=data_root, ann_file='annotations/val.json'))
test_dataloader = val_dataloader
# Point matching within 12 px: about the median nucleus radius (the stardist DSB2018 sample
# has a median equivalent diameter of 24 px). Up to ~400 nuclei per image.
val_evaluator = dict(type='CellDetectionMetric', radius=12.0, score_thr=0.5, max_per_img=1000)
test_evaluator = val_evaluator
