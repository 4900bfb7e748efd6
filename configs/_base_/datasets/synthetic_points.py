# Synthetic H&E nuclei with point labels only (projects/point_supervision). The Voronoi and
# cluster labels are precomputed from the instance bounding-box centres (the authors'
# convention) by
#   python tools/generate_point_labels.py --root data/synthetic --splits train --points-from bbox
# (vor_dir/, clu_dir/); drop label_dir to compute them from points/<split>/*.csv on the fly.
# Training: H-component input, the RGB image kept as the colourisation target, random zoom,
# 224 crops, the 8 flips / 90-degree rotations. gt_seg_map is loaded only for the fully
# supervised upper bound (point-supervised models never read it). Test: whole images,
# sliding windows inside the model, NucleiMetric (Acc, F1, Dice_obj, AJI).
_base_ = './synthetic_seg.py'
crop_size = (224, 224)
h_method = 'macenko'
train_pipeline = [
    dict(type='StrictLoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='BinarizeSegMap'),
    dict(type='LoadPointAnnotations'),
    dict(type='PointsToVoronoiLabel', label_dir='vor_dir'),
    dict(type='PointsToClusterLabel', label_dir='clu_dir'),
    dict(type='ExtractHematoxylin', method=h_method, keep_key='gt_color'),
    dict(type='AddSourceIndex', extra_keys=['gt_color']),
    dict(type='RandomZoom', ratio_range=(0.8, 1.25)),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='RandomRot90Flip'),
    dict(type='PackCoTrainingInputs', color_key='gt_color'),
]
test_pipeline = [
    dict(type='StrictLoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='BinarizeSegMap'),
    dict(type='LoadInstanceAnnotations'),
    dict(type='ExtractHematoxylin', method=h_method),
    dict(type='PackSegInputs',
         meta_keys=('img_path', 'seg_map_path', 'ori_shape', 'img_shape', 'pad_shape',
                    'scale_factor', 'flip', 'flip_direction', 'reduce_zero_label',
                    'gt_instance_map'))
]
# the EMA refresh predicts whole training images: the test pipeline without labels
ema_pipeline = [
    dict(type='StrictLoadImageFromFile'),
    dict(type='ExtractHematoxylin', method=h_method),
    dict(type='PackSegInputs', meta_keys=('img_path', 'ori_shape', 'img_shape')),
]
metainfo = dict(classes=('background', 'nucleus'))
train_dataloader = dict(batch_size=4, dataset=dict(metainfo=metainfo, pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(metainfo=metainfo, pipeline=test_pipeline))
test_dataloader = dict(dataset=dict(metainfo=metainfo, pipeline=test_pipeline))
val_evaluator = [dict(type='NucleiMetric', min_size=20)]
test_evaluator = val_evaluator
# EMA pseudo labels (eq. (5), a = 0.1 as the authors' code) refreshed every 100 iterations
# with one whole-image forward per image (CPU runs: 3 refreshes in 400 iterations). The
# paper refreshes every gamma = 3 epochs of 250x250 patches: interval=3, by_epoch=True.
custom_hooks = [dict(type='EMAPseudoLabelHook', pipeline=ema_pipeline, interval=100,
                     by_epoch=False, mode='whole', momentum=0.1)]
