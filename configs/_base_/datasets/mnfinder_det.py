# mnfinder fluorescence nuclei + micronuclei as detection (COCO), from
#   python tools/dataset_converters/mnfinder.py --root <mnfinder> --out data/mnfinder
# Images are 512-1024 px. Splits: train and val (4 training-data images held out by the
# converter's --val-from-train) from mnfinder's training-data, test = its validation-data
# (its test-data is held out): thresholds and best checkpoints are chosen on val, never on
# the images reported on.
_base_ = './crop_train_val_det.py'
data_root = 'data/mnfinder/'
train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = dict(dataset=dict(data_root=data_root, ann_file='annotations/test.json'))
val_evaluator = dict(type='CellDetectionMetric', radius=6.0, score_thr=0.5, max_per_img=1000,
                     classwise=True, exclusive_recall=True)
test_evaluator = val_evaluator
