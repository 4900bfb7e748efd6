# The CPU config with the authors' augmentation (nu_gan): identity, left-right flip,
# up-down flip and both, no quarter turns.
_base_ = './cell-infowgan_res-c16_z32-c5_100e_synthetic-cells.py'
train_dataloader = dict(dataset=dict(pipeline=[
    dict(type='StrictLoadImageFromFile'),
    dict(type='RandomDihedral', rotations=False, flips=True),
    dict(type='PackPatchInputs'),
]))
