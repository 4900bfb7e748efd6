# Fixed-threshold pseudo labelling (Lee 2013; Table 1 "Pseudo Labeling", Table 2 row 1): max
# probability >= 0.95.
# Rounds at epochs 24, 26, ..., 38 after the supervised stage (epochs 0-23).
_base_ = './patchcls_mobilenetv2-w05_sup_40e_synthetic-bags.py'
custom_hooks = [
    dict(type='NegativePseudoLabelHook', positive='fixed', negative=None,
         begin=24, interval=2)
]
