# Adaptive pseudo labelling + negative pseudo labelling (Table 2 row 5).
# Rounds at epochs 24, 26, ..., 38 after the supervised stage (epochs 0-23).
_base_ = './patchcls_mobilenetv2-w05_sup_40e_synthetic-bags.py'
custom_hooks = [
    dict(type='NegativePseudoLabelHook', positive='adaptive', negative='single',
         begin=24, interval=2)
]
