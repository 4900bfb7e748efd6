"""The benchmark's ``cluster`` task (cell GAN): a tiny InfoGAN trained twice (two seeds),
argmax Q scored like ClusteringMetric in tools/test.py, the k-means baselines of Hu et al.
2018 (Table II) and the L2-SVMs of Table I (D features, pixels) recomputed here with
scikit-learn, and lower-is-better entropy verdicts."""
import glob
import json
import os.path as osp
import sys

import numpy as np
import pytest

sys.path.insert(0, osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'tools',
                            'analysis_tools'))
import benchmark  # noqa: E402
from projects.cell_gan.metrics import cluster_scores  # noqa: E402

from conftest import run_folders, run_tool  # noqa: E402

CFG = 'configs/cell_gan/cell-infowgan_res-c16_z32-c5_100e_synthetic-cells.py'
SPEC = '''
task = 'cluster'
seeds = [0, 1]
epochs = 2
metrics = ['purity', 'entropy', 'f_score', 'svm_f_score']
_root = '{data}/'
groups = [dict(dataset='cells', fractions=[1.0], cfg_options={{
    'model.channels': 4, 'model.n_critic': 2, 'train_cfg.val_interval': 1,
    'train_dataloader.batch_size': 4, 'train_dataloader.dataset.indices': 12,
    'default_hooks.visualization.interval': 1000,
    'train_dataloader.dataset.data_root': _root, 'val_dataloader.dataset.data_root': _root,
    'test_dataloader.dataset.data_root': _root}}, rows=[
    dict(name='pixels', role='peer', same_as='infogan', operating_point='pixels'),
    dict(name='hog', role='peer', same_as='infogan', operating_point='hog'),
    dict(name='infogan', config='{cfg}', baseline=['pixels', 'hog']),
])]
headlines = [dict(kind='cell types without labels', dataset='cells', fraction=1.0,
                  metric='purity')]
'''


def test_cluster_benchmark(tmp_path, tiny_cells):
    import torch
    from mmengine.config import Config
    from sklearn.cluster import KMeans
    from sklearn.metrics import f1_score
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    from projects.cell_gan.evaluation import load_model, read_cells
    spec = tmp_path / 'cells_spec.py'
    spec.write_text(SPEC.format(data=tiny_cells, cfg=CFG))
    res, work = str(tmp_path / 'results'), str(tmp_path / 'work')
    run_tool(['tools/analysis_tools/benchmark.py', str(spec), '--results-dir', res,
              '--work-dir', work, '--jobs', '2'])
    recs = [json.loads(line) for line in open(osp.join(res, 'runs.jsonl'))]
    assert sorted(r['key'] for r in recs) == ['cells/frac100/infogan/seed0',
                                              'cells/frac100/infogan/seed1']
    train = read_cells(osp.join(tiny_cells, 'train', 'cells.json'), 32, progress=False)
    test = read_cells(osp.join(tiny_cells, 'test', 'cells.json'), 32, progress=False)
    lab, lab_tr = test['labels'] >= 0, train['labels'] >= 0

    def svm_f1(f_tr, f_te, seed):  # Table I: standardised features, L2-SVM, C = 1
        scale = StandardScaler().fit(f_tr[lab_tr])
        svm = LinearSVC(C=1.0, max_iter=10000, random_state=seed)
        svm.fit(scale.transform(f_tr[lab_tr]), train['labels'][lab_tr])
        return f1_score(test['labels'][lab], svm.predict(scale.transform(f_te[lab])),
                        average='weighted', zero_division=0)

    for rec in recs:
        # argmax Q: the scores tools/test.py logged in the child
        test_dir = osp.join(work, 'cells_spec', rec['key'].replace('/', '__'), 'test_test')
        ts = run_folders(test_dir)[-1]
        logged = json.load(open(osp.join(test_dir, ts, f'{ts}.json')))
        for m in ('purity', 'entropy', 'f_score'):
            assert rec['metrics'][m] == pytest.approx(logged[m])
        assert len(rec['per_image']['pairs']) == lab.sum()
        # k-means on raw pixels, K = 5 categories, the run's seed, fitted on the training
        # crops (scikit-learn directly)
        flat = lambda c: c.reshape(len(c), -1).astype(np.float32) / 255.0  # noqa: E731
        km = KMeans(5, init='k-means++', n_init=10, random_state=rec['seed'])
        km.fit(flat(train['crops']))
        want = cluster_scores(km.predict(flat(test['crops']))[lab], test['labels'][lab])
        for m in ('purity', 'entropy', 'f_score'):
            assert rec['metrics'][f'{m}@kmeans_pixels'] == pytest.approx(want[m])
        assert rec['metrics']['svm_f_score@svm_pixels'] == pytest.approx(
            svm_f1(flat(train['crops']), flat(test['crops']), rec['seed']))
        # the L2-SVM on the run's D features (sect. IV-C: each critic block's output
        # max-pooled to 4x4), from its checkpoint
        child = osp.join(work, 'cells_spec', rec['key'].replace('/', '__'))
        model = load_model(Config.fromfile(osp.join(child, 'config.py')),
                           osp.join(child, rec['checkpoint']))

        def forward(crops, head):
            x = torch.from_numpy(crops[..., ::-1].copy()).permute(0, 3, 1, 2)
            with torch.no_grad():
                x = model.data_preprocessor(dict(inputs=list(x)), False)['inputs']
                return getattr(model, head)(x).numpy()

        d_features = lambda c: forward(c, 'extract_features')  # noqa: E731
        assert set(rec['extra']) == {'svm_warnings@pixels', 'svm_warnings@hog',
                                     'svm_warnings@d', 'orientation_agreement',
                                     'orientation_chance', 'orientation_all_agree'}
        # item 11's diagnostics: k-means on Q's own features; argmax Q of each test crop
        # under the 7 other symmetries of the square (np.rot90 / np.fliplr here)
        km = KMeans(5, init='k-means++', n_init=10, random_state=rec['seed'])
        km.fit(forward(train['crops'], 'q_features'))
        want = cluster_scores(km.predict(forward(test['crops'], 'q_features'))[lab],
                              test['labels'][lab])
        assert rec['metrics']['purity@kmeans_q'] == pytest.approx(want['purity'])
        views = [forward(np.stack([np.rot90(f(c), r) for c in test['crops']]), 'q_logits')
                 .argmax(1) for f in (lambda c: c, np.fliplr) for r in range(4)]
        same = np.array([v == views[0] for v in views[1:]])
        assert rec['extra']['orientation_agreement'] == pytest.approx(same.mean())
        assert rec['extra']['orientation_all_agree'] == pytest.approx(same.all(0).mean())
        p = np.bincount(np.concatenate(views)) / (8 * len(test['crops']))
        assert rec['extra']['orientation_chance'] == pytest.approx((p ** 2).sum())
        assert rec['metrics']['svm_f_score'] == pytest.approx(
            svm_f1(d_features(train['crops']), d_features(test['crops']), rec['seed']))
        # validated after each epoch; mmengine logs the iteration (3 per epoch: 12 crops,
        # batch 4)
        assert [p[0] for p in rec['val_curve']] == [3, 6]
    text = open(osp.join(res, 'README.md')).read()
    assert '`infogan` − `pixels`' in text and '`infogan` − `hog`' in text
    # k-means / SVM on the raw crops train nothing: no budget, no convergence of their own
    assert '| `pixels` | peer | 2/2 | n/a | n/a |' in text
    assert '| `infogan` | method | 2/2 | 2 ep |' in text
    # the entropy verdict reads lower as better
    tables = benchmark.collect(benchmark.load_spec(str(spec)),
                               benchmark.read_runs(osp.join(res, 'runs.jsonl')))
    rows = {r['row']['name']: r for r in tables[0]['rows']}
    d = benchmark.paired(benchmark.load_spec(str(spec)), rows['infogan'],
                         rows['pixels'], 'entropy')
    line = next(x for x in text.splitlines() if x.startswith('| `infogan` − `pixels`'))
    if d['lo'] > 0:
        assert 'worse' in line.split('|')[3]
    elif d['hi'] < 0:
        assert 'better' in line.split('|')[3]
    # each baseline row shows its own feature's scores, not the InfoGAN's
    for seed, rec in rows['pixels']['seeds'].items():
        assert rec['metrics']['purity'] == rec['metrics']['purity@kmeans_pixels']
        assert rec['metrics']['svm_f_score'] == rec['metrics']['svm_f_score@svm_pixels']
    assert glob.glob(osp.join(res, 'results.png'))
    assert '| `infogan` | 2/2 |' in text.split('## What does the categorical code encode?')[1]

    # the raw-crop baselines are shared by runs with the same crops, K and seed; each run
    # keeps its own argmax Q: every crop in cluster 0 scores the majority class's share
    import pickle

    import torch
    child = osp.join(work, 'cells_spec', recs[0]['key'].replace('/', '__'))
    cfg = Config.fromfile(osp.join(child, 'config.py'))
    raw = pickle.load(open(osp.join(child, 'test_test', 'test_preds.pkl'), 'rb'))
    for sample in raw:
        sample['pred_label'] = torch.tensor(0)
    one = str(tmp_path / 'one_cluster.pkl')
    pickle.dump(raw, open(one, 'wb'))
    first = benchmark.evaluate_cluster(cfg, None, osp.join(child, 'test_test', 'test_preds.pkl'))
    second = benchmark.evaluate_cluster(cfg, None, one)
    assert first['metrics']['purity'] == pytest.approx(recs[0]['metrics']['purity'])
    assert second['metrics']['purity'] == pytest.approx(
        np.bincount(test['labels'][lab]).max() / lab.sum())
    assert second['metrics']['purity@kmeans_hog'] == first['metrics']['purity@kmeans_hog']

    # --rescore: a record made before the evaluator measured the diagnostics gets them
    # back from the run folder, in place, and nothing else changes ...
    path = osp.join(res, 'runs.jsonl')
    lines = open(path).read().splitlines()
    old = json.loads(lines[0])
    stripped = dict(old, extra={k: v for k, v in old['extra'].items()
                                if not k.startswith('orientation')},
                    metrics={k: v for k, v in old['metrics'].items() if '@kmeans_q' not in k})
    open(path, 'w').write('\n'.join([json.dumps(stripped)] + lines[1:]) + '\n')
    args = [str(spec), '--results-dir', res, '--work-dir', work]
    assert benchmark.main(args + ['--rescore']) == dict(rescored=2)
    again = [json.loads(line) for line in open(path)]
    assert [r['key'] for r in again] == [r['key'] for r in recs]
    assert again[0]['extra'] == old['extra'] and again[0]['metrics'] == pytest.approx(
        old['metrics'])
    # ... and a record whose numbers the evaluator does not reproduce is named in the
    # error and left as it was (the other one is rescored)
    again[1]['metrics']['purity'] += 0.1
    open(path, 'w').write(''.join(json.dumps(r) + '\n' for r in again))
    with pytest.raises(ValueError, match=rf'{again[1]["key"]} .*changes purity.*1 record'):
        benchmark.main(args + ['--rescore'])
    assert benchmark.read_runs(path) == {r['key']: r for r in again}
