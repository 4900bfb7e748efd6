# PU learning (Zhao et al. 2021, eq. 12) in the RPN and the RoI head: unannotated cells are
# unlabeled, not negative.
_base_ = './faster-rcnn_r101_fpn_ce_2k_synthetic-sparse30.py'
# pi per stage measured by tools/analysis_tools/estimate_prior.py (complete annotations of
# 16 training tiles, proposals of the complete-label demo detector): RPN 0.236, RoI 0.608
rpn_prior = 0.24
roi_prior = 0.6
model = dict(
    rpn_head=dict(
        type='PURPNHead',
        loss_cls=dict(_delete_=True, type='PULoss', prior=rpn_prior, use_sigmoid=True)),
    roi_head=dict(bbox_head=dict(
        loss_cls=dict(_delete_=True, type='PULoss', prior=roi_prior, use_sigmoid=False))))
