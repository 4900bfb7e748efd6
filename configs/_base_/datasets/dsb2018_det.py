# 2018 Data Science Bowl nuclei as detection (COCO, one class 'nucleus'), from
#   python tools/dataset_converters/dsb2018.py --root <stage1_train> --out data/dsb2018
# Image sizes vary (256x256 up to 1040x1388). The converter splits stage1_train into
# train / val / test (seeded, 80 / 10 / 10 by default; plus 'unlabeled', images without
# annotation): thresholds and best checkpoints are chosen on val, never on the test images
# reported on.
_base_ = './crop_train_val_det.py'
data_root = 'data/dsb2018/'
train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = dict(dataset=dict(data_root=data_root, ann_file='annotations/test.json'))
# Point matching within 12 px: about the median nucleus radius (the stardist DSB2018 sample
# has a median equivalent diameter of 24 px). Up to ~400 nuclei per image.
val_evaluator = dict(type='CellDetectionMetric', radius=12.0, score_thr=0.5, max_per_img=1000)
test_evaluator = val_evaluator
