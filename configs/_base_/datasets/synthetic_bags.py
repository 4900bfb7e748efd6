# Proportion bags from the synthetic H&E generator (tools/dataset_converters/synthetic_bags.py):
# 40 labelled + 200 proportion-only training slides, 20 validation and 20 test slides
# (labelled), 32x32 patches. CPU settings: no loader workers, 4096 samples per epoch
# whatever the size of the pseudo-labelled pool.
_base_ = './proportion_bags.py'
data_root = 'data/synthetic_bags/'
train_dataloader = dict(
    batch_size=32, num_workers=0, persistent_workers=False,
    sampler=dict(samples_per_epoch=4096), dataset=dict(data_root=data_root))
val_dataloader = dict(num_workers=0, persistent_workers=False, dataset=dict(data_root=data_root))
test_dataloader = dict(num_workers=0, persistent_workers=False, dataset=dict(data_root=data_root))
