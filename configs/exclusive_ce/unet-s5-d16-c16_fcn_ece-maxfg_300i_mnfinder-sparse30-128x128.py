# ECE from the first step (warmup=0) with the largest foreground probability as the
# confidence instead of 1 - p(background): at a uniform start it is 1/3 for mnfinder's
# three classes, below the starting threshold 0.5, so no term is dropped at step 0 and no
# cross-entropy warm-up is needed (issue 17 item 6's other remedy).
_base_ = './unet-s5-d16-c16_fcn_ece-nowarmup_300i_mnfinder-sparse30-128x128.py'
model = dict(
    decode_head=dict(loss_decode=dict(confidence='max_foreground')),
    auxiliary_head=dict(loss_decode=dict(confidence='max_foreground')))
