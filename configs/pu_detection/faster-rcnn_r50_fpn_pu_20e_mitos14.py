# PU learning (Zhao et al. 2021, eq. 12) in the RPN and the RoI head: unannotated cells are
# unlabeled, not negative.
_base_ = './faster-rcnn_r50_fpn_ce_20e_mitos14.py'
# pi = 0.04 in both stages, the authors' value; pick it per fold with
# tools/analysis_tools/select_prior.py (grid 0.02..0.06, best validation avg_recall).
rpn_prior = 0.04
roi_prior = 0.04
model = dict(
    rpn_head=dict(
        type='PURPNHead',
        loss_cls=dict(_delete_=True, type='PULoss', prior=rpn_prior, use_sigmoid=True)),
    roi_head=dict(bbox_head=dict(
        loss_cls=dict(_delete_=True, type='PULoss', prior=roi_prior, use_sigmoid=False))))
