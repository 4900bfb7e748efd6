# Qu et al.'s full method (Table II model D): two SC-Nets (ResUNet + colourisation) on the
# two halves of the mnfinder training set, L_vor + L_clu + alpha L_cot + beta L_color;
# inference averages the two nets (224 windows, overlap 80).
#
# EMA pseudo labels (eq. (5)): refreshed after iterations 80, 160, 240, 320 with a = 0.5
# (none after the last step, nothing would train on it). After n refreshes the target is
# sum_j w_j y_j with w = a (1 - a)^k for the prediction k refreshes old and (1 - a)^(n-1)
# for the first: at the end 0.5 y_320 + 0.25 y_240 + 0.125 y_160 + 0.125 y_80, where the
# former setting (every 100 iterations, a = 0.1) left 0.81 y_100 + 0.09 y_200 + 0.1 y_300,
# i.e. the prediction at iteration 100, and wasted a 4th refresh after iteration 400.
# Every 80, not every 20 as on the synthetic set: a refresh predicts the 30 whole images
# (512-1024 px) and costs about 34 training iterations, so 4 refreshes add 34% (the
# former cost); every 20 iterations would add 160%.
# The paper: every gamma = 3 epochs with a = 0.1 (interval=3, by_epoch=True, momentum=0.1).
#
# Colour term: normalised to hold 30% of the gradient norms on the segmenter at the start
# (color_share=0.3, re-measured every 10 iterations), fading with the paper's
# (1 - N/Nmax)^2 (re-measuring costs about 17% of the run). The paper's beta =
# 0.1 (1 - N/Nmax)^2 held a median 0.8% of the norms in the first 10 iterations and 0.2% by
# iteration 25 on the synthetic set (README, Choices); it is
# scnet_r18-c32_vor-clu-cot-color-eps0.1_400i_mnfinder.py.
_base_ = [
    '../_base_/models/scnet_r18-c32_cotrain.py',
    '../_base_/datasets/mnfinder_points.py',
    '../_base_/schedules/schedule_adam-wd5e-4_400i.py',
    '../_base_/default_runtime_seg.py',
]
custom_imports = dict(imports=['projects.common', 'projects.point_supervision'],
                      allow_failed_imports=False)
model = dict(color_share=0.3, grad_share_interval=10)
custom_hooks = [
    dict(type='EMAPseudoLabelHook', pipeline={{_base_.ema_pipeline}}, interval=80,
         by_epoch=False, mode='whole', momentum=0.5)
]
default_hooks = dict(checkpoint=dict(interval=400))
