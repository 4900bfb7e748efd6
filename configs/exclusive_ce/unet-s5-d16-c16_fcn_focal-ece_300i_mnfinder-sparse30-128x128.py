# Focal exclusive cross-entropy (Panteli et al. 2021, eq. 8): focal re-weighting of the
# unannotated (background) terms only, alpha 0.2 / gamma 0.1 (the authors' package).
_base_ = './unet-s5-d16-c16_fcn_ece_300i_mnfinder-sparse30-128x128.py'
ece = dict(type='ExclusiveCrossEntropyLoss', background_label=0, use_focal=True)
model = dict(
    decode_head=dict(loss_decode=dict(ece, _delete_=True, loss_weight=1.0)),
    auxiliary_head=dict(loss_decode=dict(ece, _delete_=True, loss_weight=0.4)))
