# Focal exclusive cross-entropy with the settings of the authors' package ece-loss 1.0.0
# (raw logit as the confidence of a sigmoid output, threshold 0.5 * sigmoid((epoch - 50)
# / 10), background sampling 0.5 * sigmoid((epoch - 150) / 10), focal 0.2 / 0.1), its
# 300-epoch constants rescaled to this schedule ('relative_sigmoid': fractions of training);
# no warm-up (the package excludes from the first step).
_base_ = './yollo_r18-c32_ece_300i_synthetic-sparse30.py'
model = dict(
    bbox_head=dict(
        loss_cls=dict(
            confidence='logit', max_threshold=0.5, schedule='relative_sigmoid',
            center=50 / 300, temperature=10 / 300, bg_sampling=0.5,
            bg_schedule='relative_sigmoid', bg_center=150 / 300, bg_temperature=10 / 300,
            use_focal=True, warmup=0.0)))
