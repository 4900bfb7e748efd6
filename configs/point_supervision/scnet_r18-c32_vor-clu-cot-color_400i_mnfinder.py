# Qu et al.'s full method (Table II model D): two SC-Nets (ResUNet + colourisation) on the
# two halves of the mnfinder training set, L_vor + L_clu + alpha L_cot + beta L_color, EMA pseudo
# labels refreshed every 3 epochs; inference averages the two nets (224 windows, overlap 80).
_base_ = [
    '../_base_/models/scnet_r18-c32_cotrain.py',
    '../_base_/datasets/mnfinder_points.py',
    '../_base_/schedules/schedule_adam-wd5e-4_400i.py',
    '../_base_/default_runtime_seg.py',
]
custom_imports = dict(imports=['projects.common', 'projects.point_supervision'],
                      allow_failed_imports=False)
default_hooks = dict(checkpoint=dict(interval=400))
