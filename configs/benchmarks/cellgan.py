# Benchmark spec `cellgan`: cell types without any label (Hu et al. 2018, Table II).
#   python tools/analysis_tools/benchmark.py configs/benchmarks/cellgan.py --jobs 2 --resume
#   python tools/analysis_tools/benchmark.py configs/benchmarks/cellgan.py --report
# Rows: the InfoGAN as issue 17 left it (the generator step minimises L_G + lambda2 L_Q,
# crops under the 8 symmetries of the square), the same model with L_Q in the Q step only
# (the package before issue 17). (`_noaug` and the other variant configs are not in the
# grid: a run is about half a CPU hour.) Peers: the paper's k-means
# baselines on raw pixels and on HOG, computed in each run on the same test crops with the
# run's seed (they train nothing: same_as rows).
task = 'cluster'
title = 'does the InfoGAN find cell types better than k-means on pixels or HOG?'
seeds = [0, 1, 2]
epochs = 100
metrics = ['purity', 'entropy', 'f_score']
plot_metric = 'purity'
notes = """\
Synthetic H&E cell crops (32x32, segmented by the paper's pipeline; tumour, lymphocyte,
stromal, mitosis) of tools/dataset_converters/synthetic_cells.py. Argmax Q (5 categories)
of the last epoch on the labelled test crops; no label is used in training or model
selection. k-means: K = 5, k-means++ with 10 restarts, fitted on the training crops.
Entropy: lower is better (the verdicts read it so).
"""
data = dict(synthetic_cells=dict(
    path='data/synthetic_cells/test/cells.json',
    make='python tools/dataset_converters/synthetic_cells.py --out data/synthetic_cells'))
_cfg = 'configs/cell_gan/cell-infowgan_res-c16_z32-c5{}_100e_synthetic-cells.py'
groups = [
    dict(dataset='synthetic_cells', fractions=[1.0], rows=[
        dict(name='kmeans-pixels', role='peer', same_as='infogan',
             operating_point='kmeans_pixels'),
        dict(name='kmeans-hog', role='peer', same_as='infogan', operating_point='kmeans_hog'),
        dict(name='infogan', config=_cfg.format(''),
             baseline=['kmeans-pixels', 'kmeans-hog', 'infogan-lq-in-qstep']),
        dict(name='infogan-lq-in-qstep', config=_cfg.format('_lq-in-qstep'),
             baseline=['kmeans-pixels']),
    ]),
]
headlines = [
    dict(kind='cell types without labels (clustering)', dataset='synthetic_cells',
         fraction=1.0, metric='purity'),
]
