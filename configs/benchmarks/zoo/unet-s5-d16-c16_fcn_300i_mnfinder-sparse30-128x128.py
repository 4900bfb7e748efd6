# Model-zoo peer of configs/benchmarks/seg_sparse.py: mmseg's U-Net S5-D16 (FCN head) with
# stock cross-entropy, on mnfinder (background / nucleus / micronucleus) with 30% of the
# objects annotated (an unannotated object is background).
# mmseg::_base_/models/fcn_unet_s5-d16.py (the model of
# mmseg::unet/unet-s5-d16_fcn_4xb4-*.py) unchanged but for the data, the classes and the
# network width used on this CPU (base width 16 instead of 64, BN instead of SyncBN, from
# scratch; the first `_base_`).
# Full width on a GPU is one line away: make the first `_base_`
#   '../../_base_/models/unet-s5-d16_fcn_bn.py' (mmseg's width 64).
# The same run as
# configs/exclusive_ce/unet-s5-d16-c16_fcn_ce_300i_mnfinder-sparse30-128x128.py, the
# baseline of the exclusive cross-entropy study (tests/test_configs.py checks it).
_base_ = [
    '../../_base_/models/unet-s5-d16-c16_fcn_bn.py',
    '../../_base_/datasets/mnfinder_seg_sparse30.py',
    '../../_base_/schedules/schedule_adam_300i.py',
    '../../_base_/default_runtime_seg.py',
]
model = dict(
    decode_head=dict(num_classes=3),
    auxiliary_head=dict(num_classes=3),
    data_preprocessor=dict(size=(128, 128)),
    test_cfg=dict(mode='slide', crop_size=(256, 256), stride=(192, 192)))
# 128x128 training crops (CPU budget); inference slides 256x256 windows over whole images.
train_dataloader = dict(dataset=dict(pipeline=[
    dict(t, crop_size=(128, 128)) if t['type'] == 'RandomCrop' else t
    for t in _base_.train_pipeline]))
default_hooks = dict(checkpoint=dict(interval=300))
