# CPU set-up of the README's results: the paper's model at 16 channels (G / D / Q) for 100
# epochs of on-the-fly augmented crops (4,300 critic, 860 generator and Q iterations at
# batch 64): 2 CPU cores cannot run the 128-channel model long enough.
_base_ = './cell-infowgan_res-c128_z32-c5_10e_synthetic-cells.py'
model = dict(channels=16)
train_cfg = dict(max_epochs=100, val_interval=5)
default_hooks = dict(visualization=dict(interval=500))
