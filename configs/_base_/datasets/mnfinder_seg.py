# mnfinder fluorescence nuclei as segmentation (background / nucleus / micronucleus), from
#   python tools/dataset_converters/mnfinder.py --root <mnfinder> --out data/mnfinder
_base_ = './synthetic_seg.py'
data_root = 'data/mnfinder/'
metainfo = dict(classes=('background', 'nucleus', 'micronucleus'))
train_dataloader = dict(dataset=dict(data_root=data_root, metainfo=metainfo))
# validation and test both use the validation split (mnfinder's test-data is held out)
val_dataloader = dict(
    dataset=dict(
        data_root=data_root, metainfo=metainfo,
        data_prefix=dict(img_path='img_dir/val', seg_map_path='ann_dir/val',
                         inst_path='inst_dir/val', points_path='points/val')))
test_dataloader = val_dataloader
