# CPU benchmark (README, Results): classic PU risk (E_x[H(c,0)] from unlabeled samples only).
# Its pi is the share of positives among the unlabeled samples (the hidden ones), not
# the detection-mode pi:
# RPN 1 hidden of 11938 sampled unlabeled anchors (estimate_prior.py); RoI not measured:
# pi_RoI 0.43 with a labelled share of 0.07-0.25 gives 0.24-0.39.
_base_ = './faster-rcnn_r18-c32_fpn_pu_500i_mnfinder-sparse30.py'
model = dict(
    rpn_head=dict(loss_cls=dict(mode='classic', prior=0.0001)),
    roi_head=dict(bbox_head=dict(loss_cls=dict(mode='classic', prior=0.3))))
