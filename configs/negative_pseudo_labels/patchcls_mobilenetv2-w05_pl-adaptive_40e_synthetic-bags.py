# Adaptive pseudo labelling only (Table 2 row 2): PS_c of eq. (5), no negatives.
# Rounds at epochs 24, 26, ..., 38 after the supervised stage (epochs 0-23).
_base_ = './patchcls_mobilenetv2-w05_sup_40e_synthetic-bags.py'
custom_hooks = [
    dict(type='NegativePseudoLabelHook', positive='adaptive', negative=None,
         begin=24, interval=2)
]
