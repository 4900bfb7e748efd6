# Benchmark spec `cellgan`: cell types without any label (Hu et al. 2018, Table II).
#   python tools/analysis_tools/benchmark.py configs/benchmarks/cellgan.py --jobs 2 --resume
#   python tools/analysis_tools/benchmark.py configs/benchmarks/cellgan.py --report
# Rows: the InfoGAN as issue 17 left it (the generator step minimises L_G + lambda2 L_Q,
# crops under the 8 symmetries of the square); the same model with L_Q in the Q step only
# (the package before issue 17); 4 categories instead of 5; no augmentation. (The c2, rot
# and flip variant configs are not in the grid: a run is about half a CPU hour.) Peers: the
# paper's baselines by feature, computed in each run on the same crops with the run's seed
# (they train nothing: same_as rows): raw pixels and HOG, clustered by k-means (Table II:
# against argmax Q) and classified by an L2-SVM trained on the labelled training crops
# (Table I: against the SVM on D features).
task = 'cluster'
title = 'do the InfoGAN\'s clusters and features beat raw pixels and HOG?'
seeds = [0, 1, 2]
epochs = 100
metrics = ['purity', 'entropy', 'f_score', 'svm_f_score']
plot_metric = 'purity'
notes = """\
Synthetic H&E cell crops (32x32, segmented by the paper's pipeline; tumour, lymphocyte,
stromal, mitosis) of tools/dataset_converters/synthetic_cells.py. Argmax Q (5 categories)
of the last epoch on the labelled test crops; no label is used in training or model
selection. k-means: K = 5, k-means++ with 10 restarts, fitted on the training crops.
Entropy: lower is better (the verdicts read it so); purity cannot fall when K grows, so
`infogan-c4` (K = 4) is compared on purity against K = 5 rows at a disadvantage. `svm_f_score` (Table I): an L2-SVM
(LinearSVC, C = 1, standardised features) trained on the labelled training crops, the
only use of labels; support-weighted F-score on the labelled test crops.
"""
data = dict(synthetic_cells=dict(
    path='data/synthetic_cells/test/cells.json',
    make='python tools/dataset_converters/synthetic_cells.py --out data/synthetic_cells'))
_cfg = 'configs/cell_gan/cell-infowgan_res-c16_z32-c5{}_100e_synthetic-cells.py'
groups = [
    dict(dataset='synthetic_cells', fractions=[1.0], rows=[
        dict(name='pixels', role='peer', same_as='infogan', operating_point='pixels'),
        dict(name='hog', role='peer', same_as='infogan', operating_point='hog'),
        dict(name='infogan', config=_cfg.format(''),
             baseline=['pixels', 'hog', 'infogan-lq-in-qstep']),
        dict(name='infogan-lq-in-qstep', config=_cfg.format('_lq-in-qstep'),
             baseline=['pixels']),
        # issue 17 item 11: which setting closes the gap to k-means? As many categories
        # as classes (4), and no rotation / flip augmentation (c need not encode pose)
        dict(name='infogan-c4', config=_cfg.replace('-c5{}', '-c4'),
             baseline=['infogan', 'pixels']),
        dict(name='infogan-noaug', config=_cfg.format('_noaug'),
             baseline=['infogan', 'pixels']),
    ]),
]
headlines = [
    dict(kind='cell types without labels (clustering)', dataset='synthetic_cells',
         fraction=1.0, metric='purity'),
    dict(kind='cell features learnt without labels (L2-SVM on them)',
         dataset='synthetic_cells', fraction=1.0, metric='svm_f_score'),
]
