# Classic (non-detection) PU risk, the paper's ablation: E_x[H(c,0)] from the unlabeled
# samples only instead of P u U (eq. 10).
# Its pi is the share of positives among the unlabeled samples (the hidden ones), not
# the detection-mode pi:
# RPN 1 hidden of 11938 sampled unlabeled anchors (estimate_prior.py); RoI not measured:
# pi_RoI 0.43 with a labelled share of 0.07-0.25 gives 0.24-0.39.
_base_ = './faster-rcnn_vgg16_fpn_pu_2k_mnfinder-sparse30.py'
model = dict(
    rpn_head=dict(loss_cls=dict(mode='classic', prior=0.0001)),
    roi_head=dict(bbox_head=dict(loss_cls=dict(mode='classic', prior=0.3))))
