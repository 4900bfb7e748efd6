# Classic (non-detection) PU risk, the paper's ablation: E_x[H(c,0)] from the unlabeled
# samples only instead of P u U (eq. 10).
_base_ = './faster-rcnn_r101_fpn_pu_2k_mnfinder-sparse30.py'
model = dict(
    rpn_head=dict(loss_cls=dict(mode='classic')),
    roi_head=dict(bbox_head=dict(loss_cls=dict(mode='classic'))))
