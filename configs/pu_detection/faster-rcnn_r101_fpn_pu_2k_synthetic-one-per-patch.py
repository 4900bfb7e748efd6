# PU learning (Zhao et al. 2021, eq. 12) in the RPN and the RoI head: unannotated cells are
# unlabeled, not negative.
_base_ = './faster-rcnn_r101_fpn_ce_2k_synthetic-one-per-patch.py'
# pi per stage measured by tools/analysis_tools/estimate_prior.py (complete annotations of
# the training tiles, proposals of the complete-label demo detector): RPN 0.024, RoI 0.637
rpn_prior = 0.024
roi_prior = 0.64
model = dict(
    rpn_head=dict(
        type='PURPNHead',
        loss_cls=dict(_delete_=True, type='PULoss', prior=rpn_prior, use_sigmoid=True)),
    roi_head=dict(bbox_head=dict(
        loss_cls=dict(_delete_=True, type='PULoss', prior=roi_prior, use_sigmoid=False))))
