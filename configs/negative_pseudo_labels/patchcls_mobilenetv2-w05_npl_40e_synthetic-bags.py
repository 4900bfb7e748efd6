# Negative pseudo labelling only (Table 2 row 3): NS_c of eq. (1), fresh each round.
# Rounds at epochs 24, 26, ..., 38 after the supervised stage (epochs 0-23).
_base_ = './patchcls_mobilenetv2-w05_sup_40e_synthetic-bags.py'
custom_hooks = [
    dict(type='NegativePseudoLabelHook', positive=None, negative='single',
         begin=24, interval=2)
]
