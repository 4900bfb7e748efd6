# Baseline of the exclusive cross-entropy benchmark (Panteli et al. 2021, sect. 4.3): stock
# mmseg U-Net (S5-D16 at base width 16, FCN head) with cross-entropy, from scratch, on the
# synthetic set (background / nucleus) with 30% of the nuclei annotated; unannotated nuclei are
# background. The ece / focal / focal-ece configs change only the loss.
_base_ = [
    '../_base_/models/unet-s5-d16-c16_fcn_bn.py',
    '../_base_/datasets/synthetic_seg_sparse30.py',
    '../_base_/schedules/schedule_adam_300i.py',
    '../_base_/default_runtime_seg.py',
]
model = dict(
    decode_head=dict(num_classes=2),
    auxiliary_head=dict(num_classes=2),
    data_preprocessor=dict(size=(128, 128)),
    test_cfg=dict(mode='slide', crop_size=(256, 256), stride=(192, 192)))
# 128x128 training crops (CPU budget); inference slides 256x256 windows over whole images.
train_dataloader = dict(dataset=dict(pipeline=[
    dict(t, crop_size=(128, 128)) if t['type'] == 'RandomCrop' else t
    for t in _base_.train_pipeline]))
default_hooks = dict(checkpoint=dict(interval=300))
