# Focal-loss peer of the exclusive cross-entropy benchmark: mmseg's FocalLoss (sigmoid,
# gamma 2, alpha 0.5: its defaults) on all pixels, in both heads.
_base_ = './unet-s5-d16-c16_fcn_ce_300i_mnfinder-sparse30-128x128.py'
model = dict(
    decode_head=dict(loss_decode=dict(_delete_=True, type='FocalLoss', use_sigmoid=True,
                                      loss_weight=1.0)),
    auxiliary_head=dict(loss_decode=dict(_delete_=True, type='FocalLoss', use_sigmoid=True,
                                         loss_weight=0.4)))
