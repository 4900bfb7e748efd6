# Focal exclusive cross-entropy with the settings of the authors' package ece-loss 1.0.0
# (top-2 logit margin as the confidence, threshold 0.5 * sigmoid((epoch - 50) / 10),
# background sampling 0.5 * sigmoid((epoch - 150) / 10), focal 0.2 / 0.1), its 300-epoch
# constants rescaled to this schedule ('relative_sigmoid': fractions of training); no
# warm-up (the package excludes from the first step).
_base_ = './unet-s5-d16-c16_fcn_ece_300i_synthetic-sparse30-128x128.py'
ece = dict(type='ExclusiveCrossEntropyLoss', background_label=0, confidence='margin',
           max_threshold=0.5, schedule='relative_sigmoid', center=50 / 300,
           temperature=10 / 300, bg_sampling=0.5, bg_schedule='relative_sigmoid',
           bg_center=150 / 300, bg_temperature=10 / 300, use_focal=True, warmup=0.0)
model = dict(
    decode_head=dict(loss_decode=dict(ece, _delete_=True, loss_weight=1.0)),
    auxiliary_head=dict(loss_decode=dict(ece, _delete_=True, loss_weight=0.4)))
