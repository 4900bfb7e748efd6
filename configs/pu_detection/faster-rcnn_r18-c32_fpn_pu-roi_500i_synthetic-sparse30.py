# CPU benchmark (README, Results): PU risk in the RoI head only; the RPN keeps mmdet's
# cross-entropy (its sampled negatives are almost never hidden cells: estimate_prior.py).
_base_ = './faster-rcnn_r18-c32_fpn_ce_500i_synthetic-sparse30.py'
roi_prior = 0.6
model = dict(roi_head=dict(bbox_head=dict(
    loss_cls=dict(_delete_=True, type='PULoss', prior=roi_prior, use_sigmoid=False))))
