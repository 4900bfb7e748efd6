# CPU benchmark (README, Results): classic PU risk (E_x[H(c,0)] from unlabeled samples only).
_base_ = './faster-rcnn_r18-c32_fpn_pu_500i_mnfinder-sparse30.py'
model = dict(
    rpn_head=dict(loss_cls=dict(mode='classic')),
    roi_head=dict(bbox_head=dict(loss_cls=dict(mode='classic'))))
