# Adaptive pseudo labelling only (Table 2 row 2): PS_c of eq. (5), no negatives.
# Rounds at epochs 16, 18, ..., 30 after the supervised stage (epochs 0-15).
_base_ = './patchcls_mobilenetv2-w05_sup_32e_synthetic-bags.py'
custom_hooks = [
    dict(type='NegativePseudoLabelHook', positive='adaptive', negative=None,
         begin=16, interval=2)
]
