# Exclusive cross-entropy (Panteli et al. 2021, eq. 7) as the cell classification loss:
# cells without an annotated centre are the unannotated, weak-negative terms; the
# threshold follows the paper's sigmoid schedule after the loss's default warm-up (no
# exclusion in the first 10% of training; ExclusivityScheduleHook pushes the progress).
_base_ = './yollo_r18-c32_ce_300i_synthetic-sparse30.py'
model = dict(
    bbox_head=dict(
        loss_cls=dict(_delete_=True, type='ExclusiveCrossEntropyLoss', use_sigmoid=True)))
custom_hooks = [dict(type='ExclusivityScheduleHook')]
