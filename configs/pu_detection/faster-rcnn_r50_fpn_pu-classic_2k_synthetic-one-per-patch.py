# Classic (non-detection) PU risk, the paper's ablation: E_x[H(c,0)] from the unlabeled
# samples only instead of P u U (eq. 10).
# Its pi is the share of positives among the unlabeled samples (the hidden ones), not
# the detection-mode pi:
# RPN 56 hidden of 24030 sampled unlabeled anchors (estimate_prior.py); RoI not measured:
# pi_RoI 0.637 with a labelled share of 0-0.25 gives 0.52-0.64.
_base_ = './faster-rcnn_r50_fpn_pu_2k_synthetic-one-per-patch.py'
model = dict(
    rpn_head=dict(loss_cls=dict(mode='classic', prior=0.0023)),
    roi_head=dict(bbox_head=dict(loss_cls=dict(mode='classic', prior=0.6))))
