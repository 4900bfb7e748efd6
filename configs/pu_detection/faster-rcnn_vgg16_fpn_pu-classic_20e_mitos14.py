# Classic (non-detection) PU risk, the paper's ablation: E_x[H(c,0)] from the unlabeled
# samples only instead of P u U (eq. 10).
# Its pi is the share of positives among the unlabeled samples (the hidden ones), not
# the detection-mode pi:
# the paper's ablation keeps its pi (0.04); not measured (MITOS-ATYPIA-14 is not here).
_base_ = './faster-rcnn_vgg16_fpn_pu_20e_mitos14.py'
model = dict(
    rpn_head=dict(loss_cls=dict(mode='classic', prior=0.04)),
    roi_head=dict(bbox_head=dict(loss_cls=dict(mode='classic', prior=0.04))))
