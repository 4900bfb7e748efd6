# mnfinder fluorescence nuclei with point labels only (projects/point_supervision): nuclei
# and micronuclei are one class (nucleus); a fluorescence image is its own H-component.
# Labels from the instance bounding-box centres:
#   python tools/generate_point_labels.py --root data/mnfinder --splits train --points-from bbox
# Splits as in mnfinder_det.py: train / val from mnfinder's training-data, test = its
# validation-data (its test-data is held out).
_base_ = './synthetic_points.py'
data_root = 'data/mnfinder/'
train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = dict(dataset=dict(data_root=data_root))
