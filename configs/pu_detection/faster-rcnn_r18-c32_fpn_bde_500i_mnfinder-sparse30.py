# CPU benchmark (README, Results): BDE baseline in the RPN and the RoI head.
_base_ = './faster-rcnn_r18-c32_fpn_ce_500i_mnfinder-sparse30.py'
bde = dict(temperature=1.0, min_score=0.05, gt_iou_thr=0.5)
model = dict(
    rpn_head=dict(type='BDERPNHead', bde=bde),
    roi_head=dict(type='BDERoIHead', bde=bde))
