# CPU benchmark (README, Results): pu-nnpu-hp-warmup (SGD 0.02) with Kiryo et al.'s bounded
# sigmoid loss as H in the RoI head (PULoss(surrogate='sigmoid'): H(c, y) = 1 - p_y) instead
# of cross-entropy. Tests the README's hypothesis for the SGD divergence: the nnPU step's
# ascent on E_U H(c, 0) has no ceiling with cross-entropy (the RoI negative part jumped to
# 37 at iteration 140 of seed 0). The RPN keeps cross-entropy (its pi_U of 1e-4 makes it
# plain CE; its nnPU step did not act), so the RoI loss is the only change.
_base_ = './faster-rcnn_r18-c32_fpn_pu-nnpu-hp-warmup_500i_mnfinder-sparse30.py'
model = dict(roi_head=dict(bbox_head=dict(loss_cls=dict(surrogate='sigmoid'))))
