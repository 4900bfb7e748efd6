# CPU benchmark (README, Results): PU risk (eq. 12) in the RPN and the RoI head.
_base_ = './faster-rcnn_r18-c32_fpn_ce_500i_mnfinder-sparse30.py'
# pi per stage: RPN 0.22 measured by tools/analysis_tools/estimate_prior.py (complete
# annotations of the training images); RoI 0.6 taken from the synthetic set at the same 30%
# sparsity (measuring it needs a trained detector's proposals; README, Results)
rpn_prior = 0.22
roi_prior = 0.6
model = dict(
    rpn_head=dict(
        type='PURPNHead',
        loss_cls=dict(_delete_=True, type='PULoss', prior=rpn_prior, use_sigmoid=True)),
    roi_head=dict(bbox_head=dict(
        loss_cls=dict(_delete_=True, type='PULoss', prior=roi_prior, use_sigmoid=False))))
