# Synthetic H&E nuclei segmentation (tools/dataset_converters/synthetic.py; mmseg layout):
# semantic background / nucleus, instance maps and points for object-level metrics.
dataset_type = 'NucleiSegDataset'
data_root = 'data/synthetic/'
crop_size = (256, 256)
train_pipeline = [
    dict(type='StrictLoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='RandomFlip', prob=0.5, direction=['horizontal', 'vertical']),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='StrictLoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='LoadInstanceAnnotations'),
    dict(type='PackSegInputs',
         meta_keys=('img_path', 'seg_map_path', 'ori_shape', 'img_shape', 'pad_shape',
                    'scale_factor', 'flip', 'flip_direction', 'reduce_zero_label',
                    'gt_instance_map'))
]


def _split(split, pipeline, test_mode):
    return dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(
            img_path=f'img_dir/{split}', seg_map_path=f'ann_dir/{split}',
            inst_path=f'inst_dir/{split}', points_path=f'points/{split}'),
        test_mode=test_mode,
        pipeline=pipeline)


train_dataloader = dict(
    batch_size=4,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=_split('train', train_pipeline, False))
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=_split('val', test_pipeline, True))
test_dataloader = dict(val_dataloader, dataset=_split('test', test_pipeline, True))
val_evaluator = [
    dict(type='IoUMetric', iou_metrics=['mIoU', 'mDice']),
    dict(type='NucleiMetric', min_size=10),
]
test_evaluator = val_evaluator
