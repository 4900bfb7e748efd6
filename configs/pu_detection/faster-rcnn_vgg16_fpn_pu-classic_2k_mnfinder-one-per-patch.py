# Classic (non-detection) PU risk, the paper's ablation: E_x[H(c,0)] from the unlabeled
# samples only instead of P u U (eq. 10).
# Its pi is the share of positives among the unlabeled samples (the hidden ones), not
# the detection-mode pi:
# RPN 5 hidden of 14366 sampled unlabeled anchors (estimate_prior.py); RoI not measured:
# the sparse30 value (fewer labels leave more hidden objects: a low estimate).
_base_ = './faster-rcnn_vgg16_fpn_pu_2k_mnfinder-one-per-patch.py'
model = dict(
    rpn_head=dict(loss_cls=dict(mode='classic', prior=0.00035)),
    roi_head=dict(bbox_head=dict(loss_cls=dict(mode='classic', prior=0.3))))
