# CPU benchmark (README, Results): classic PU risk (E_x[H(c,0)] from unlabeled samples only).
# Its pi is the share of positives among the unlabeled samples (the hidden ones), not
# the detection-mode pi:
# RPN 32 hidden of 17662 sampled unlabeled anchors, RoI 48% of the sampled negatives
# (estimate_prior.py; README, Choices).
_base_ = './faster-rcnn_r18-c32_fpn_pu_500i_synthetic-sparse30.py'
model = dict(
    rpn_head=dict(loss_cls=dict(mode='classic', prior=0.0018)),
    roi_head=dict(bbox_head=dict(loss_cls=dict(mode='classic', prior=0.48))))
