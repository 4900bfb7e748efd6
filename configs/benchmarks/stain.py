# Benchmark spec `stain`: does HED stain jitter make a detector robust to a stain shift?
#   python tools/analysis_tools/benchmark.py configs/benchmarks/stain.py --jobs 2 --resume
#   python tools/analysis_tools/benchmark.py configs/benchmarks/stain.py --report
# The zoo's stock Faster R-CNN trained on the synthetic H&E set with and without
# RandomStainJitter (Tellez et al. 2018; configs/stain/), tested on the synthetic test tiles
# as generated and on the same tiles in shifted stains (--stain-shift: Ruifrok-Johnston
# vectors, 1.3x hematoxylin, 0.75x eosin).
_base_ = ['./_base_/data.py']
task = 'det'
title = 'does HED stain jitter make a cell detector robust to a stain shift?'
seeds = [0, 1, 2]
iters = 500
metrics = ['AP', 'AP50', 'F1@0.5', 'F1@val']
plot_metric = 'F1@0.5'
notes = """\
Synthetic H&E: 48 training / 16 validation / 32 test tiles of 256x256 (seed 0), all cells
annotated (fraction 100%). `synthetic`: tested on the test tiles as generated;
`synthetic-stain-shift`: the same 32 test tiles (same seeds, same cells) rendered with the
stain-shifted options of `projects.common.synthetic.STAIN_SHIFT`; training and validation
tiles are the unshifted ones in both groups (a model meets a new lab's stain only at test
time). Rows: `faster-rcnn` (no stain augmentation), `hed-jitter` (sigma 0.05, bias 0.05 OD)
and `hed-jitter-strong` (sigma 0.3, bias 0.1 OD).
"""
stain_data = dict(
    path='data/synthetic_bench_stain/annotations/test.json',
    make='python tools/dataset_converters/synthetic.py --out data/synthetic_bench_stain '
    '--num-train 0 --num-val 0 --num-test 32 --size 256 --seed 0 --stain-shift')
data = dict(synthetic=_base_.synthetic_data, synthetic_stain=stain_data)
_root = _base_.synthetic_root
_shifted = dict(_root, test_dataloader=dict(dataset=dict(
    data_root='data/synthetic_bench_stain/')))
_cfg = 'configs/stain/faster-rcnn_r18-c32_fpn_{}_500i_synthetic-sparse30.py'


def _rows():
    return [
        dict(name='faster-rcnn', role='peer',
             config='configs/benchmarks/zoo/faster-rcnn_r18-c32_fpn_500i_synthetic-sparse30.py'),
        dict(name='hed-jitter', config=_cfg.format('hed-jitter'), baseline='faster-rcnn'),
        dict(name='hed-jitter-strong', config=_cfg.format('hed-jitter-strong'),
             baseline='faster-rcnn'),
    ]


groups = [
    dict(dataset='synthetic', fractions=[1.0], cfg_options=_root, rows=_rows()),
    # the same models (retest_of: nothing is trained twice) on the stain-shifted test tiles
    dict(dataset='synthetic-stain-shift', fractions=[1.0], cfg_options=_shifted,
         retest_of='synthetic', rows=_rows()),
]
headlines = []
