# CPU benchmark (README, Results): pu-nnpu-hp-warmup (SGD 0.02) with a bounded H(c, 0) only
# in the RoI head (PULoss(surrogate='sigmoid-h0'): H(c, 0) = 1 - p_bg, the term the nnPU
# step ascends; H(c, k) stays cross-entropy). The fully bounded row (-sigloss) drove every
# RoI to background within 40 iterations, where the saturated sigmoid loss no longer
# pushes the labelled cells up; this row keeps cross-entropy's pull on them and tests only
# the README's hypothesis that the unbounded ascent on E_U H(c, 0) makes SGD diverge.
_base_ = './faster-rcnn_r18-c32_fpn_pu-nnpu-hp-warmup_500i_mnfinder-sparse30.py'
model = dict(roi_head=dict(bbox_head=dict(loss_cls=dict(surrogate='sigmoid-h0'))))
