# Model-zoo peer of configs/benchmarks/seg_sparse.py: mmseg's DeepLabV3+ with stock
# cross-entropy, on the synthetic set (background / nucleus) with 30% of the nuclei
# annotated (an unannotated nucleus is background).
# mmseg::_base_/models/deeplabv3plus_r50-d8.py (the model of
# mmseg::deeplabv3plus/deeplabv3plus_r50-d8_*.py) unchanged but for the data, the classes
# and the network width used on this CPU (ResNetV1c-18 of half width, output stride 8, BN
# instead of SyncBN, from scratch; the first `_base_`).
# Full width on a GPU is one line away: make the first `_base_`
#   'mmseg::_base_/models/deeplabv3plus_r50-d8.py' (ResNetV1c-50, ImageNet weights,
#   SyncBN: distributed training).
# Data, schedule, crops and sliding-window inference are those of the U-Net peer.
_base_ = [
    './_base_/deeplabv3plus_r18-c32-d8_scratch.py',
    '../../_base_/datasets/synthetic_seg_sparse30.py',
    '../../_base_/schedules/schedule_adam_300i.py',
    '../../_base_/default_runtime_seg.py',
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
