# Proportion bags from the synthetic H&E generator (tools/dataset_converters/synthetic_bags.py):
# 40 labelled + 200 proportion-only training slides, 10 validation and 20 test slides
# (labelled), 32x32 patches. One sample = one patch cropped from its slide (RGB).
dataset_type = 'ProportionBagDataset'
data_root = 'data/synthetic_bags/'
train_pipeline = [
    dict(type='LoadPatchFromSlide'),
    dict(type='RandomFlip', prob=0.75, direction=['horizontal', 'vertical', 'diagonal']),
    dict(type='PackPatchInputs'),
]
test_pipeline = [dict(type='LoadPatchFromSlide'), dict(type='PackPatchInputs')]
# PseudoLabelSampler: labelled patches (rare classes oversampled) until the first round of
# NegativePseudoLabelHook, then labelled + pseudo-labelled; 4096 samples per epoch.
train_dataloader = dict(
    batch_size=32, num_workers=0, persistent_workers=False,
    sampler=dict(type='PseudoLabelSampler', shuffle=True, samples_per_epoch=4096),
    dataset=dict(type=dataset_type, data_root=data_root, ann_file='train.json', bags='all',
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=64, num_workers=0, persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root, ann_file='val.json',
                 pipeline=test_pipeline))
test_dataloader = dict(
    batch_size=64, num_workers=0, persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root, ann_file='test.json',
                 pipeline=test_pipeline))
val_evaluator = dict(type='PatchSegMetric')
test_evaluator = val_evaluator
