# ECE as the paper and the ece-loss package time it: exclusion from the first step
# (warmup=0), the loss's behaviour before issue 17. The benchmark compares it with the
# default warm-up (./unet-s5-d16-c16_fcn_ece_300i_synthetic-sparse30-128x128.py).
_base_ = './unet-s5-d16-c16_fcn_ece_300i_synthetic-sparse30-128x128.py'
model = dict(
    decode_head=dict(loss_decode=dict(warmup=0.0)),
    auxiliary_head=dict(loss_decode=dict(warmup=0.0)))
