# PU learning (Zhao et al. 2021, eq. 12) in the RPN and the RoI head: unannotated cells are
# unlabeled, not negative.
_base_ = './faster-rcnn_vgg16_fpn_ce_2k_mnfinder-sparse30.py'
# pi: placeholder 0.04; pi is the share of true positives among the *sampled* anchors /
# RoIs, which depends on the data: measure it with tools/analysis_tools/estimate_prior.py
# or sweep it with tools/analysis_tools/select_prior.py.
rpn_prior = 0.04
roi_prior = 0.04
model = dict(
    rpn_head=dict(
        type='PURPNHead',
        loss_cls=dict(_delete_=True, type='PULoss', prior=rpn_prior, use_sigmoid=True)),
    roi_head=dict(bbox_head=dict(
        loss_cls=dict(_delete_=True, type='PULoss', prior=roi_prior, use_sigmoid=False))))
