# The CPU config with the paper's augmentation (sect. IV-B): rotations by 0 / 90 / 180 /
# 270 degrees only.
_base_ = './cell-infowgan_res-c16_z32-c5_100e_synthetic-cells.py'
train_dataloader = dict(dataset=dict(pipeline=[
    dict(type='StrictLoadImageFromFile'),
    dict(type='RandomDihedral', rotations=True, flips=False),
    dict(type='PackPatchInputs'),
]))
