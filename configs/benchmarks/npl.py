# Benchmark spec `npl`: tissue segmentation from class proportions (Tokunaga et al. 2020).
#   python tools/analysis_tools/benchmark.py configs/benchmarks/npl.py --jobs 2 --resume
#   python tools/analysis_tools/benchmark.py configs/benchmarks/npl.py --report
# A patch classifier (MobileNetV2 x0.5) trained on a few labelled slides (supervised), plus
# fixed-threshold pseudo labelling (0.95), plus the paper's adaptive pseudo labelling with
# multi negative pseudo labelling on 200 slides that carry only their class proportions.
# Each run keeps its best validation epoch (the configs' save_best: the paper's early
# stopping) and is tested on 20 completely labelled slides.
task = 'patch'
title = 'do class proportions help a patch classifier beyond its labelled slides?'
seeds = [0, 1, 2]
epochs = 40
metrics = ['mIoU', 'OP', 'PC', 'mAcc']
plot_metric = 'mIoU'
# the run tests its best validation epoch, so what must settle is the best mIoU so far
# (epoch-to-epoch validation mIoU moves by 1-3 points on a plateau)
converge_rule = 'best'
notes = """\
Synthetic H&E slides of 384x384 px in 32x32 patches, four tissue classes (the generator's
region maps): 8 or 40 labelled training slides, 200 slides with class proportions only,
20 validation and 20 test slides (seed 0). The supervised stage is epochs 0-23, the pseudo
labels are renewed every 2 epochs from epoch 24.
"""
_bags = ('python tools/dataset_converters/synthetic_bags.py --out data/{} --num-labelled {} '
         '--num-weak 200 --num-val 20 --num-test 20 --size 384 --patch-size 32 --seed 0')
data = dict(
    bags40=dict(path='data/synthetic_bags/test.json', make=_bags.format('synthetic_bags', 40)),
    bags8=dict(path='data/synthetic_bags_lab8/test.json',
               make=_bags.format('synthetic_bags_lab8', 8)))
_cfg = 'configs/negative_pseudo_labels/patchcls_mobilenetv2-w05_{}_40e_synthetic-bags.py'


def _root(path):
    return dict(train_dataloader=dict(dataset=dict(data_root=path)),
                val_dataloader=dict(dataset=dict(data_root=path)),
                test_dataloader=dict(dataset=dict(data_root=path)))


def _rows():
    return [
        dict(name='supervised', role='peer', config=_cfg.format('sup')),
        dict(name='pl-fixed', config=_cfg.format('pl-fixed'), baseline='supervised'),
        dict(name='pl-adaptive-multi-npl', config=_cfg.format('pl-adaptive-multi-npl'),
             baseline=['supervised', 'pl-fixed']),
    ]


groups = [
    dict(dataset='bags-8-labelled', fractions=[1.0],
         cfg_options=_root('data/synthetic_bags_lab8/'),
         rows=_rows()),
    dict(dataset='bags-40-labelled', fractions=[1.0],
         cfg_options=_root('data/synthetic_bags/'),
         rows=_rows()),
]
headlines = [
    dict(kind='class proportions per slide (tissue segmentation)', dataset='bags-8-labelled',
         fraction=1.0, metric='mIoU'),
    dict(kind='class proportions per slide (tissue segmentation)', dataset='bags-40-labelled',
         fraction=1.0, metric='mIoU'),
]
