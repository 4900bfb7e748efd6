# 300 iterations (CPU benchmarks of the exclusive cross-entropy study), Adam 1e-3 with poly
# decay (the schedule of schedule_adam_2k.py, shortened); one validation at the end.
_base_ = './schedule_adam_2k.py'
train_cfg = dict(max_iters=300, val_interval=300)
param_scheduler = [
    dict(type='PolyLR', eta_min=1e-5, power=0.9, begin=0, end=300, by_epoch=False)
]
