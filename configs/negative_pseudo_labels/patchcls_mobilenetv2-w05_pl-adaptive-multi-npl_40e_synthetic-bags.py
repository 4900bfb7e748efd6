# The proposed method (Table 1 "Proposed", Table 2 row 6): adaptive pseudo labelling + multi
# negative pseudo labelling.
# Rounds at epochs 24, 26, ..., 38 after the supervised stage (epochs 0-23).
_base_ = './patchcls_mobilenetv2-w05_sup_40e_synthetic-bags.py'
custom_hooks = [
    dict(type='NegativePseudoLabelHook', positive='adaptive', negative='multi',
         begin=24, interval=2)
]
