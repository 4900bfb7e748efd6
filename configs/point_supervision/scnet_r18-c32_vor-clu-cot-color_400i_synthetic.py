# Qu et al.'s full method (Table II model D): two SC-Nets (ResUNet + colourisation) on the
# two halves of the synthetic training set, L_vor + L_clu + alpha L_cot + beta L_color;
# inference averages the two nets (224 windows, overlap 80).
#
# EMA pseudo labels (eq. (5)): refreshed after iterations 20, 40, ..., 380 with a = 0.5 (19
# refreshes; none after the last step, nothing would train on it). After n refreshes the
# target is sum_j w_j y_j with w = a (1 - a)^k for the prediction k refreshes old and
# (1 - a)^(n-1) for the first: 0.5 y_t + 0.25 y_(t-20) + 0.125 y_(t-40) + ..., so the last
# three predictions (40 iterations) carry 87.5% and the mean age at a refresh is
# 20 (1 - a) / a = 20 iterations. The former setting (every 100 iterations, a = 0.1) left
# 0.81 y_100 + 0.09 y_200 + 0.1 y_300 at the end, i.e. the prediction at iteration 100.
# A refresh costs about 2.8 training iterations here (48 tiles of 256x256): +13% in all.
# The paper: every gamma = 3 epochs with a = 0.1 (interval=3, by_epoch=True, momentum=0.1).
#
# Colour term: normalised to hold 30% of the gradient norms on the segmenter at the start
# (color_share=0.3, re-measured every 10 iterations), fading with the paper's
# (1 - N/Nmax)^2 (re-measuring costs about 17% of the run). The paper's beta =
# 0.1 (1 - N/Nmax)^2 held a median 0.8% of the norms in the first 10 iterations and 0.2% by
# iteration 25 on the synthetic set (README, Choices); it is
# scnet_r18-c32_vor-clu-cot-color-eps0.1_400i_synthetic.py.
_base_ = [
    '../_base_/models/scnet_r18-c32_cotrain.py',
    '../_base_/datasets/synthetic_points.py',
    '../_base_/schedules/schedule_adam-wd5e-4_400i.py',
    '../_base_/default_runtime_seg.py',
]
custom_imports = dict(imports=['projects.common', 'projects.point_supervision'],
                      allow_failed_imports=False)
model = dict(color_share=0.3, grad_share_interval=10)
custom_hooks = [
    dict(type='EMAPseudoLabelHook', pipeline={{_base_.ema_pipeline}}, interval=20,
         by_epoch=False, mode='whole', momentum=0.5)
]
default_hooks = dict(checkpoint=dict(interval=400))
