# The proposed method on your own slides: the supervised stage (epochs 0-99, as in
# patchcls_mobilenetv2_sup_100e_bags-224px.py), then adaptive pseudo labelling + multi
# negative pseudo labelling, one round every 10 epochs (the paper repeats rounds until the
# validation loss converges; it does not give the round length).
_base_ = './patchcls_mobilenetv2_sup_100e_bags-224px.py'
train_cfg = dict(max_epochs=200)
custom_hooks = [
    dict(type='NegativePseudoLabelHook', positive='adaptive', negative='multi',
         begin=100, interval=10, batch_size=64)
]
