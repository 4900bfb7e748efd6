# PU learning (Zhao et al., MICCAI 2021, eq. 12) in both stages of the synthetic-set
# baseline: unannotated cells count as unlabeled, not negative. pi = 0.04 is the authors'
# value (the prior sweep picks it per data set). PURPNHead computes the RPN risk once over
# all FPN levels and images of the batch (mmdet's RPNHead calls loss_cls per level).
_base_ = ['../baselines/faster-rcnn_r50_fpn_2k_synthetic.py']
custom_imports = dict(imports=['projects.common', 'projects.pu_detection'],
                      allow_failed_imports=False)
prior = 0.04
model = dict(
    rpn_head=dict(
        type='PURPNHead',
        loss_cls=dict(_delete_=True, type='PULoss', prior=prior, use_sigmoid=True)),
    roi_head=dict(bbox_head=dict(
        loss_cls=dict(_delete_=True, type='PULoss', prior=prior, use_sigmoid=False))))
