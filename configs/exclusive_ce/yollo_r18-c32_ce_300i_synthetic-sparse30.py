# Baseline of the exclusive cross-entropy benchmark (Panteli et al. 2021, sect. 4.4): the
# YOLLO-style detector (ResNet-18 of half width + FPN, stride-4 cells, 16 px boxes) with
# sigmoid cross-entropy over all cells, from scratch, on the synthetic set with 30% of the
# cells annotated (cells without an annotated centre are background). The focal / ece /
# focal-ece configs change only the classification loss.
_base_ = [
    '../_base_/models/yollo_r18-c32_scratch.py',
    '../_base_/datasets/synthetic_det_sparse30.py',
    '../_base_/schedules/schedule_adam_300i.py',
    '../_base_/default_runtime_det.py',
]
custom_imports = dict(imports=['projects.common', 'projects.exclusive_ce'],
                      allow_failed_imports=False)
model = dict(bbox_head=dict(num_classes=4))
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=300))
