# 2018 Data Science Bowl nuclei (mixed fluorescence / brightfield / H&E) as segmentation
# (background / nucleus), from
#   python tools/dataset_converters/dsb2018.py --root <stage1_train> --out data/dsb2018
# Pipelines are the synthetic set's. Image sizes vary (stage1_train: 256x256 up to
# 1040x1388, no side below 256): RandomCrop(256) of synthetic_seg.py is therefore always a
# full 256x256 crop; on a smaller image mmseg's RandomCrop returns the whole image (it never
# fails) and the model's data_preprocessor (size=(256, 256)) pads it, labels with 255.
# Testing is on whole images: the U-Net config pads them to a multiple of 16
# (data_preprocessor test_cfg size_divisor=16) and the padding is cropped off again.
_base_ = './synthetic_seg.py'
data_root = 'data/dsb2018/'
# Splits as in dsb2018_det.py: the converter splits stage1_train into train / val / test
# (plus 'unlabeled', which has no annotation files); best checkpoints are chosen on val and
# test is only reported on. The base loaders read img_dir/{train,val,test} etc.
train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = dict(dataset=dict(data_root=data_root))
