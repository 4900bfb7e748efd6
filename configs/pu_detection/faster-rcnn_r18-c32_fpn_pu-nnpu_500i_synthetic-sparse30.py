# CPU benchmark (README, Results): PU with Kiryo et al.'s nnPU step (NeurIPS 2017, Alg. 1)
# in place of the eq. (11) clamp: when the negative part is below 0, ascend on it.
_base_ = './faster-rcnn_r18-c32_fpn_pu_500i_synthetic-sparse30.py'
model = dict(
    rpn_head=dict(loss_cls=dict(nonnegative='nnpu', beta=0.0, gamma=1.0)),
    roi_head=dict(bbox_head=dict(loss_cls=dict(nonnegative='nnpu', beta=0.0, gamma=1.0))))
