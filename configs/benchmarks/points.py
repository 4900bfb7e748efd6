# Benchmark spec `points`: nuclei segmentation from one point per nucleus (Lin et al. 2023,
# Table II ablation), plus the fully supervised upper bound.
#   python tools/analysis_tools/benchmark.py configs/benchmarks/points.py --jobs 2 --resume
#   python tools/analysis_tools/benchmark.py configs/benchmarks/points.py --report
# Rows: Voronoi labels only (model A), + cluster labels (B), + co-training with EMA pseudo
# labels (C: vor-clu-cot; -ema100: C with the refresh before issue 17), + colourisation
# (D, the method: vor-clu-cot-color, colour term normalised to 30% of the gradient;
# -eps0.1: the paper's literal weight), and the same network trained on complete masks.
# Each addition is paired with the row before it.
_base_ = ['./_base_/data.py']
task = 'seg'
title = 'what does each part of point-supervised segmentation buy?'
seeds = [0, 1, 2]
iters = 400
metrics = ['Dice_obj', 'AJI', 'PQ', 'SQ', 'DQ', 'pixel_F1']
plot_metric = 'AJI'
notes = """\
Points are the bounding-box centres of every nucleus (the authors' convention); Voronoi and
cluster labels are precomputed by tools/generate_point_labels.py. Synthetic H&E: 48
training / 16 validation / 32 test tiles of 256x256; mnfinder: real fluorescence nuclei
(26 training / 4 validation images from its training-data; the 3 images of its
validation-data are the test set). The fully supervised row reads the complete masks.
"""
data = dict(
    synthetic=_base_.synthetic_data,
    synthetic_points=dict(
        path='data/synthetic_bench/vor_dir/train',
        make='python tools/generate_point_labels.py --root data/synthetic_bench '
        '--splits train --points-from bbox'),
    mnfinder=_base_.mnfinder_data,
    mnfinder_points=dict(
        path='data/mnfinder/vor_dir/train',
        make='python tools/generate_point_labels.py --root data/mnfinder '
        '--splits train --points-from bbox'))
_synthetic_root = _base_.synthetic_root
_cfg = 'configs/point_supervision/scnet_r18-c32_{}_400i_{}.py'


def _rows(ds):
    rows = [
        dict(name='vor', role='peer', config=_cfg.format('vor', ds)),
        dict(name='vor-clu', config=_cfg.format('vor-clu', ds), baseline='vor'),
        dict(name='vor-clu-cot', config=_cfg.format('vor-clu-cot', ds),
             baseline=['vor-clu', 'vor']),
        # model C with the EMA refresh before issue 17 (item 8's unfixed version)
        dict(name='vor-clu-cot-ema100', config=_cfg.format('vor-clu-cot-ema100-m0.1', ds),
             baseline=['vor-clu-cot', 'vor-clu']),
        dict(name='vor-clu-cot-color', config=_cfg.format('vor-clu-cot-color', ds),
             baseline=['vor-clu-cot', 'vor']),
        dict(name='vor-clu-cot-color-eps0.1',
             config=_cfg.format('vor-clu-cot-color-eps0.1', ds),
             baseline=['vor-clu-cot', 'vor-clu-cot-color']),
        dict(name='fullsup', role='peer', config=_cfg.format('fullsup', ds)),
    ]
    if ds == 'mnfinder':
        # grid cut (a run is about half a CPU hour): the full ablation runs on synthetic;
        # mnfinder keeps the peer, model C, model D and the fully supervised ceiling
        rows = [dict(r, baseline=['vor']) if r['name'] == 'vor-clu-cot' else r
                for r in rows if r['name'] not in ('vor-clu', 'vor-clu-cot-ema100',
                                                   'vor-clu-cot-color-eps0.1')]
    return rows


groups = [
    dict(dataset='synthetic', fractions=[1.0], cfg_options=_synthetic_root,
         rows=_rows('synthetic')),
    dict(dataset='mnfinder', fractions=[1.0], rows=_rows('mnfinder')),
]
# the stock alternative for a user with points only: the same network on Voronoi labels
headlines = [
    dict(kind='one point per nucleus (segmentation)', dataset='synthetic', fraction=1.0,
         metric='AJI', peers=['vor']),
    dict(kind='one point per nucleus (segmentation)', dataset='mnfinder', fraction=1.0,
         metric='AJI', peers=['vor']),
]
