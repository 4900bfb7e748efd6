# Exclusive cross-entropy (Panteli et al. 2021, eq. 7) as the classification loss of both
# Faster R-CNN stages (sigmoid RPN, softmax RoI head): background samples are the
# unannotated, weak-negative terms; threshold schedule by ExclusivityScheduleHook. The
# stock-loss peer is ../pu_detection/faster-rcnn_r18-c32_fpn_ce_500i_synthetic-sparse30.py.
_base_ = '../pu_detection/faster-rcnn_r18-c32_fpn_ce_500i_synthetic-sparse30.py'
custom_imports = dict(imports=['projects.common', 'projects.exclusive_ce'],
                      allow_failed_imports=False)
model = dict(
    rpn_head=dict(loss_cls=dict(_delete_=True, type='ExclusiveCrossEntropyLoss',
                                use_sigmoid=True)),
    roi_head=dict(bbox_head=dict(loss_cls=dict(_delete_=True, type='ExclusiveCrossEntropyLoss',
                                               use_sigmoid=False))))
custom_hooks = [dict(type='ExclusivityScheduleHook')]
