# Adaptive pseudo labelling + negative pseudo labelling (Table 2 row 5).
# Rounds at epochs 16, 18, ..., 30 after the supervised stage (epochs 0-15).
_base_ = './patchcls_mobilenetv2-w05_sup_32e_synthetic-bags.py'
custom_hooks = [
    dict(type='NegativePseudoLabelHook', positive='adaptive', negative='single',
         begin=16, interval=2)
]
