# Table II model C with the EMA refresh issue 17 replaced (the unfixed version, for the
# benchmark's paired test of item 8): pseudo labels refreshed after iterations 100, 200
# and 300 with a = 0.1, so the target ends as 0.81 y_100 + 0.09 y_200 + 0.1 y_300, i.e.
# the prediction at iteration 100. Everything else is model C
# (scnet_r18-c32_vor-clu-cot_400i_synthetic.py: every 20 iterations with a = 0.5).
_base_ = './scnet_r18-c32_vor-clu-cot_400i_synthetic.py'
custom_hooks = [
    dict(type='EMAPseudoLabelHook', pipeline={{_base_.ema_pipeline}}, interval=100,
         by_epoch=False, mode='whole', momentum=0.1)
]
