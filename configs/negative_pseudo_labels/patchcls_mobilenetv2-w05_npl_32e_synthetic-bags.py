# Negative pseudo labelling only (Table 2 row 3): NS_c of eq. (1), fresh each round.
# Rounds at epochs 16, 18, ..., 30 after the supervised stage (epochs 0-15).
_base_ = './patchcls_mobilenetv2-w05_sup_32e_synthetic-bags.py'
custom_hooks = [
    dict(type='NegativePseudoLabelHook', positive=None, negative='single',
         begin=16, interval=2)
]
