# Proportion bags (docs/data_layout.md) written by tools/dataset_converters/proportion_bags.py
# from your slides: region masks for the labelled ones, a CSV of class percentages for the
# others (Tokunaga et al. 2020 use 224x224 patches at 10x). One sample = one patch cropped
# from its slide (RGB). The classes come from the bag files; set model.num_classes to match.
# PseudoLabelSampler: the labelled patches (rare classes oversampled) until the first round
# of NegativePseudoLabelHook, then labelled + pseudo-labelled ones.
dataset_type = 'ProportionBagDataset'
data_root = 'data/proportion_bags/'
train_pipeline = [
    dict(type='LoadPatchFromSlide'),
    dict(type='RandomFlip', prob=0.75, direction=['horizontal', 'vertical', 'diagonal']),
    dict(type='PackPatchInputs'),
]
test_pipeline = [dict(type='LoadPatchFromSlide'), dict(type='PackPatchInputs')]
train_dataloader = dict(
    batch_size=18, num_workers=2, persistent_workers=True,
    sampler=dict(type='PseudoLabelSampler', shuffle=True),
    dataset=dict(type=dataset_type, data_root=data_root, ann_file='train.json', bags='all',
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=64, num_workers=2, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root, ann_file='val.json',
                 pipeline=test_pipeline))
test_dataloader = dict(
    batch_size=64, num_workers=2, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root, ann_file='test.json',
                 pipeline=test_pipeline))
val_evaluator = dict(type='PatchSegMetric')
test_evaluator = val_evaluator
