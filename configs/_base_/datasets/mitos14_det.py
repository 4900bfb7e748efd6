# MITOS-ATYPIA-14 mitosis detection, the PU-detection protocol (Zhao et al. 2021, sect. 3.1):
#   python tools/dataset_converters/mitos_atypia14.py --root <mitos_atypia_2014_training> \
#       --out data/mitos_atypia14
# 500x500 patches (100 px overlap) of the x40 frames; train / val patches keep one mitosis
# annotation per patch, test patches keep all. Validation and test score whole frames:
# WholeImageDetectionMetric maps the patch boxes back (at most 100 per patch, score > 0.5),
# merges them by NMS and compares them with the frame's annotations.
# Fold k (0..4): set fold below, or on the command line
#   --cfg-options train_dataloader.dataset.ann_file=annotations/train_fold1.json \
#     test_dataloader.dataset.ann_file=annotations/test_fold1.json \
#     test_evaluator.ann_file=data/mitos_atypia14/annotations/frames_test_fold1.json
_base_ = './synthetic_det.py'
data_root = 'data/mitos_atypia14/'
fold = 0
meta_keys = ('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor', 'gt_points',
             'parent', 'offset')
test_pipeline = [
    dict(type='StrictLoadImageFromFile'),
    dict(type='Resize', scale_factor=1.0),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='LoadPointAnnotations'),
    dict(type='PackDetInputs', meta_keys=meta_keys)
]
train_dataloader = dict(
    batch_size=2,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(data_root=data_root, ann_file=f'annotations/train_fold{fold}.json'))
val_dataloader = dict(
    dataset=dict(data_root=data_root, ann_file='annotations/val.json', pipeline=test_pipeline))
test_dataloader = dict(
    dataset=dict(data_root=data_root, ann_file=f'annotations/test_fold{fold}.json',
                 pipeline=test_pipeline))
# A mitosis is found when a predicted box centre lies within 16 px (half the 32 px box) of
# its key point; box IoU >= 0.5 and COCO AP are reported too. avg_recall / avg_precision
# are the paper's table quantities (per-frame means).
val_evaluator = dict(
    type='WholeImageDetectionMetric',
    ann_file=data_root + 'annotations/frames_val.json',
    nms_iou=0.5, patch_score_thr=0.5, max_per_patch=100,
    radius=16.0, score_thr=0.5, max_per_img=1000)
test_evaluator = dict(val_evaluator,
                      ann_file=data_root + f'annotations/frames_test_fold{fold}.json')
