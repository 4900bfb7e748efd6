# The CPU config with a 4-way code (one per class) and no augmentation.
_base_ = './cell-infowgan_res-c16_z32-c5_noaug_100e_synthetic-cells.py'
model = dict(num_categories=4)
