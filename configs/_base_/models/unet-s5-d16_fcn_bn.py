# mmseg's U-Net S5-D16 with an FCN head, with BN instead of SyncBN (which needs a GPU
# process group); 256x256 inputs. Children set num_classes.
_base_ = 'mmseg::_base_/models/fcn_unet_s5-d16.py'
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    data_preprocessor=dict(size=(256, 256)),
    backbone=dict(norm_cfg=norm_cfg),
    decode_head=dict(norm_cfg=norm_cfg),
    auxiliary_head=dict(norm_cfg=norm_cfg))
