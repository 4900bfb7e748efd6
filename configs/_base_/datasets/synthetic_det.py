# Synthetic H&E cell detection (tools/dataset_converters/synthetic.py; COCO layout).
# Classes come from the annotation file's categories (CellDetDataset).
dataset_type = 'CellDetDataset'
data_root = 'data/synthetic/'
backend_args = None

train_pipeline = [
    dict(type='StrictLoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomFlip', prob=0.5, direction=['horizontal', 'vertical', 'diagonal']),
    dict(type='PackDetInputs')
]
# Annotations are loaded after any resize so that the ground truth stays in the original
# image coordinates, where CellDetectionMetric compares it with the (rescaled) predictions.
test_pipeline = [
    dict(type='StrictLoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale_factor=1.0),  # native resolution; sets scale_factor
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='LoadPointAnnotations'),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor',
                    'gt_points'))
]


def _dataset(split, pipeline, test_mode):
    return dict(
        type=dataset_type,
        data_root=data_root,
        ann_file=f'annotations/{split}.json',
        data_prefix=dict(img='images/'),
        test_mode=test_mode,
        pipeline=pipeline,
        backend_args=backend_args)


train_dataloader = dict(
    batch_size=4,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    batch_sampler=dict(type='AspectRatioBatchSampler'),
    # images without annotation are kept: they are unlabeled data, not junk
    dataset=dict(_dataset('train', train_pipeline, False),
                 filter_cfg=dict(filter_empty_gt=False)))
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=_dataset('val', test_pipeline, True))
test_dataloader = dict(val_dataloader, dataset=_dataset('test', test_pipeline, True))
# Point matching within 8 px (about a nucleus radius at this scale), IoU matching, COCO AP.
val_evaluator = dict(type='CellDetectionMetric', radius=8.0, score_thr=0.5, max_per_img=500)
test_evaluator = val_evaluator
