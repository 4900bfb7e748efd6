# The CPU config without augmentation: c cannot pick up orientation, which the crops'
# classes do not depend on (issue 17, item 11).
_base_ = './cell-infowgan_res-c16_z32-c5_100e_synthetic-cells.py'
train_dataloader = dict(dataset=dict(pipeline=[
    dict(type='StrictLoadImageFromFile'),
    dict(type='RandomDihedral', rotations=False, flips=False),
    dict(type='PackPatchInputs'),
]))
