# Fixed-threshold pseudo labelling (Lee 2013; Table 1 "Pseudo Labeling", Table 2 row 1): max
# probability >= 0.95.
# Rounds at epochs 16, 18, ..., 30 after the supervised stage (epochs 0-15).
_base_ = './patchcls_mobilenetv2-w05_sup_32e_synthetic-bags.py'
custom_hooks = [
    dict(type='NegativePseudoLabelHook', positive='fixed', negative=None,
         begin=16, interval=2)
]
