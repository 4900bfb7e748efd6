# Baseline (stock cross-entropy: unannotated cells are negatives):
# Faster R-CNN VGG16-FPN (the paper's backbone),
# MITOS-ATYPIA-14 (one annotation per patch on train / val, test intact).
_base_ = [
    '../_base_/models/faster-rcnn_vgg16_fpn_scratch.py',
    '../_base_/datasets/mitos14_det.py',
    '../_base_/schedules/schedule_adam_20e.py',
    '../_base_/default_runtime_det.py',
]
custom_imports = dict(imports=['projects.common', 'projects.pu_detection'],
                      allow_failed_imports=False)
model = dict(
    # mitoses are 32 px boxes: mmdet's 32 px anchors at stride 4 fit; one class
    roi_head=dict(bbox_head=dict(num_classes=1)))
# epoch-based schedule: checkpoint and log per epoch
default_hooks = dict(checkpoint=dict(by_epoch=True, interval=1))
log_processor = dict(by_epoch=True)
