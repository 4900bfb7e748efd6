# Classic (non-detection) PU risk, the paper's ablation: E_x[H(c,0)] from the unlabeled
# samples only instead of P u U (eq. 10).
# Its pi is the share of positives among the unlabeled samples (the hidden ones), not
# the detection-mode pi:
# RPN 32 hidden of 17662 sampled unlabeled anchors, RoI 48% of the sampled negatives
# (estimate_prior.py; README, Choices).
_base_ = './faster-rcnn_r101_fpn_pu_2k_synthetic-sparse30.py'
model = dict(
    rpn_head=dict(loss_cls=dict(mode='classic', prior=0.0018)),
    roi_head=dict(bbox_head=dict(loss_cls=dict(mode='classic', prior=0.48))))
