# Exclusive cross-entropy (Panteli et al. 2021, eq. 7) in both U-Net heads: background
# pixels (label 0) are the unannotated, weak-negative terms; the threshold follows the
# paper's sigmoid schedule after the loss's default warm-up (no exclusion in the first 10%
# of training); ExclusivityScheduleHook pushes the training progress.
_base_ = './unet-s5-d16-c16_fcn_ce_300i_mnfinder-sparse30-128x128.py'
custom_imports = dict(imports=['projects.common', 'projects.exclusive_ce'],
                      allow_failed_imports=False)
ece = dict(type='ExclusiveCrossEntropyLoss', background_label=0)
model = dict(
    decode_head=dict(loss_decode=dict(ece, _delete_=True, loss_weight=1.0)),
    auxiliary_head=dict(loss_decode=dict(ece, _delete_=True, loss_weight=0.4)))
custom_hooks = [dict(type='ExclusivityScheduleHook')]
