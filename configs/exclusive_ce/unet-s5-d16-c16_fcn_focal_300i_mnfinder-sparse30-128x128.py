# Focal-loss peer of the exclusive cross-entropy benchmark: sigmoid focal loss on all
# pixels, in both heads, with mmseg FocalLoss's formula and defaults (gamma 2, alpha 0.5).
# PixelFocalLoss instead of mmseg's FocalLoss, whose CPU branch fails (mmseg 1.2.2).
_base_ = './unet-s5-d16-c16_fcn_ce_300i_mnfinder-sparse30-128x128.py'
custom_imports = dict(imports=['projects.common', 'projects.exclusive_ce'],
                      allow_failed_imports=False)
model = dict(
    decode_head=dict(loss_decode=dict(_delete_=True, type='PixelFocalLoss',
                                      loss_weight=1.0)),
    auxiliary_head=dict(loss_decode=dict(_delete_=True, type='PixelFocalLoss',
                                         loss_weight=0.4)))
