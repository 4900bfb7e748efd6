# Synthetic cell crops for the cell GAN (Hu et al. 2018), written by
#   python tools/dataset_converters/synthetic_cells.py --out data/synthetic_cells
# 32x32 RGB crops of nuclei segmented by the paper's pipeline; gt_label = ground-truth class
# (tumour, lymphocyte, stromal, mitosis; -1 = background), used only by ClusteringMetric.
# Training augmentation: horizontal flip (the authors' code) x 90/180/270 degree rotations
# (the paper) = the 8 symmetries of the square, equally likely. Crops are packed in the loader's BGR
# order; the model's data preprocessor turns them into RGB in [-1, 1].
dataset_type = 'CellCropDataset'
data_root = 'data/synthetic_cells/'
train_pipeline = [
    dict(type='StrictLoadImageFromFile'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='RandomRot90', prob=0.75),
    dict(type='PackPatchInputs'),
]
test_pipeline = [
    dict(type='StrictLoadImageFromFile'),
    dict(type='PackPatchInputs'),
]
train_dataloader = dict(
    batch_size=64, num_workers=0, persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=True),  # the GAN schedule counts epochs
    dataset=dict(type=dataset_type, data_root=data_root, ann_file='train/cells.json',
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=64, num_workers=0, persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root, ann_file='val/cells.json',
                 pipeline=test_pipeline))
test_dataloader = dict(
    batch_size=64, num_workers=0, persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root, ann_file='test/cells.json',
                 pipeline=test_pipeline))
val_evaluator = dict(type='ClusteringMetric')
test_evaluator = val_evaluator
