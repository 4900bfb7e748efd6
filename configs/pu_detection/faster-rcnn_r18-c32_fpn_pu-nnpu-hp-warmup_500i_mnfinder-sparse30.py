# CPU benchmark (README, Results): pu-nnpu-hp with pi_U ramped linearly from 0 (plain
# cross-entropy) over the first half of training in both heads. pi_U is the hidden share of
# the sampled negatives of a *trained* detector; early proposals are random boxes with
# far fewer hidden cells, and a fixed pi_U from iteration 0 made the nnPU step act from the
# start (pu-nnpu-hp on synthetic 30%, seed 0: every RoI scored 0.474, AP50 0.017).
# PULossHook pushes the iteration the ramp reads and logs each loss's negative part.
_base_ = './faster-rcnn_r18-c32_fpn_pu-nnpu-hp_500i_mnfinder-sparse30.py'
model = dict(
    rpn_head=dict(loss_cls=dict(hidden_prior_warmup_iters=250)),
    roi_head=dict(bbox_head=dict(loss_cls=dict(hidden_prior_warmup_iters=250))))
custom_hooks = [dict(type='PULossHook')]
