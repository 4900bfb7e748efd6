# Focal exclusive cross-entropy (Panteli et al. 2021, eq. 8) in both Faster R-CNN stages:
# focal re-weighting of the unannotated terms only (alpha 0.2, gamma 0.1: the authors'
# package).
_base_ = './faster-rcnn_r18-c32_fpn_ece_500i_mnfinder-sparse30.py'
model = dict(
    rpn_head=dict(loss_cls=dict(use_focal=True)),
    roi_head=dict(bbox_head=dict(loss_cls=dict(use_focal=True))))
