# mnfinder fluorescence nuclei + micronuclei as detection (COCO), from
#   python tools/dataset_converters/mnfinder.py --root <mnfinder> --out data/mnfinder
# Images are 512-1024 px. mnfinder's test-data is held out: val serves as test.
_base_ = './crop_train_val_det.py'
data_root = 'data/mnfinder/'
train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
val_evaluator = dict(type='CellDetectionMetric', radius=6.0, score_thr=0.5, max_per_img=1000,
                     classwise=True, exclusive_recall=True)
test_evaluator = val_evaluator
