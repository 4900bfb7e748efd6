# BDE baseline (box density energy, projects/pu_detection/README.md): background samples
# covered by confident regressed boxes are down-weighted, in the RPN and the RoI head.
_base_ = './faster-rcnn_r101_fpn_ce_2k_synthetic-sparse30.py'
bde = dict(temperature=1.0, min_score=0.05, gt_iou_thr=0.5)
model = dict(
    rpn_head=dict(type='BDERPNHead', bde=bde),
    roi_head=dict(type='BDERoIHead', bde=bde))
