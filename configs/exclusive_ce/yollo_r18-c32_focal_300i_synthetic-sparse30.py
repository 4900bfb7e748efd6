# Focal-loss peer: mmdet's FocalLoss (sigmoid, gamma 2, alpha 0.25) on all cells, averaged
# over the positive cells (mmdet's convention for the focal loss).
_base_ = './yollo_r18-c32_ce_300i_synthetic-sparse30.py'
model = dict(
    bbox_head=dict(
        loss_cls=dict(_delete_=True, type='mmdet.FocalLoss', use_sigmoid=True, gamma=2.0,
                      alpha=0.25, loss_weight=1.0),
        cls_avg_factor='positives'))
