# mnfinder fluorescence nuclei as segmentation (background / nucleus / micronucleus), from
#   python tools/dataset_converters/mnfinder.py --root <mnfinder> --out data/mnfinder
# Splits as in mnfinder_det.py: train / val from mnfinder's training-data, test = its
# validation-data (its test-data is held out).
_base_ = './synthetic_seg.py'
data_root = 'data/mnfinder/'
metainfo = dict(classes=('background', 'nucleus', 'micronucleus'))
train_dataloader = dict(dataset=dict(data_root=data_root, metainfo=metainfo))
val_dataloader = dict(dataset=dict(data_root=data_root, metainfo=metainfo))
test_dataloader = dict(dataset=dict(data_root=data_root, metainfo=metainfo))
