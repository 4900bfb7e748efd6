# mnfinder fluorescence nuclei with point labels only (projects/point_supervision): nuclei
# and micronuclei are one class (nucleus); a fluorescence image is its own H-component.
# Labels from the instance bounding-box centres:
#   python tools/generate_point_labels.py --root data/mnfinder --splits train --points-from bbox
# Validation and test both use the validation split (mnfinder's test-data is held out).
_base_ = './synthetic_points.py'
data_root = 'data/mnfinder/'
train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(
    dataset=dict(
        data_root=data_root,
        data_prefix=dict(img_path='img_dir/val', seg_map_path='ann_dir/val',
                         inst_path='inst_dir/val', points_path='points/val')))
test_dataloader = val_dataloader
