"""tools/analysis_tools/benchmark.py on a toy spec: two runs of a tiny detector (two
seeds), a calibrated operating point that trains nothing, a row that crashes, resume,
report determinism, stale results and bad specs."""
import glob
import json
import os
import os.path as osp
import sys

import numpy as np
import pytest
from mmengine.config import Config

sys.path.insert(0, osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'tools',
                            'analysis_tools'))
import benchmark  # noqa: E402
from projects.common import stats  # noqa: E402

from conftest import TINY_DET, run_folders, run_tool, write_config  # noqa: E402

# TINY_DET with nested SparsifyAnnotations in training and validation (the benchmark sets
# their fraction and seed), two validations for the convergence rule, score_thr 0 so that
# the tiny detector's low scores reach the threshold grid.
TOY = '''
_base_ = './tiny_det.py'
sparsify = dict(type='SparsifyAnnotations', mode='nested', fraction=1.0, seed=0)
train_pipeline = [
    dict(type='StrictLoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    sparsify,
    dict(type='PackDetInputs')]
val_pipeline = [s for t in _base_.test_pipeline
                for s in ([sparsify, t] if t['type'] == 'PackDetInputs' else [t])]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=val_pipeline))
model = dict(test_cfg=dict(rpn=dict(max_per_img=20), rcnn=dict(max_per_img=6,
                                                                score_thr=0.0)))
param_scheduler = []
optim_wrapper = dict(optimizer=dict(lr=0.05))
'''
BROKEN = '''
_base_ = './toy.py'
model = dict(type='NoSuchDetector')
'''
SPEC = '''
task = 'det'
seeds = [0, 1]
iters = 4
val_times = 2
metrics = ['AP', 'F1@0.5', 'F1@calib', 'F1@oracle']
groups = [dict(dataset='tiny', fractions=[0.5], rows=[
    dict(name='stock', role='peer', config='{tmp}/toy.py'),
    dict(name='calibrated', same_as='stock', operating_point='calib', baseline='stock'),
    dict(name='broken', config='{tmp}/broken.py', baseline='stock'),
]), dict(dataset='tiny-retest', fractions=[0.5], retest_of='tiny', rows=[
    dict(name='stock', role='peer', config='{tmp}/toy.py'),
])]
headlines = [dict(kind='toy labels', dataset='tiny', fraction=0.5, metric='F1@0.5')]
'''


def _setup(tmp_path, data: str) -> str:
    write_config(tmp_path, TINY_DET, data, 'tiny_det.py')
    write_config(tmp_path, TOY, data, 'toy.py')
    write_config(tmp_path, BROKEN, data, 'broken.py')
    spec = tmp_path / 'toy_spec.py'
    spec.write_text(SPEC.replace('{tmp}', str(tmp_path)))
    return str(spec)


def _records(path: str) -> list:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def test_benchmark_end_to_end(tmp_path, tiny_synthetic):
    spec = _setup(tmp_path, tiny_synthetic)
    res, work = str(tmp_path / 'results'), str(tmp_path / 'work')
    args = ['tools/analysis_tools/benchmark.py', spec, '--results-dir', res, '--work-dir', work]
    proc = run_tool(args + ['--jobs', '2'], check=False)
    assert proc.returncode == 1, proc.stderr[-3000:]  # the broken row failed...
    assert '6 runs to do, 0 already' in proc.stdout
    assert proc.stdout.count('FAILED') == 2  # ... and did not stop the others
    failures = json.load(open(osp.join(work, 'toy_spec', 'failures.json')))['failures']
    assert sorted(f['key'] for f in failures) == ['tiny/frac50/broken/seed0',
                                                  'tiny/frac50/broken/seed1']
    assert all('rows[2] (broken)' in f['where'] and 'exited with' in f['error']
               for f in failures)

    recs = {r['key']: r for r in _records(osp.join(res, 'runs.jsonl'))}
    retests = {k: recs.pop(k) for k in list(recs) if k.startswith('tiny-retest/')}
    assert sorted(recs) == ['tiny/frac50/stock/seed0', 'tiny/frac50/stock/seed1']
    # the retest group trained nothing: the same checkpoints on (here) the same test set
    # give the same scores, with the source's validation curve
    for key, rec in retests.items():
        src = recs[rec['retest_of']]
        assert key.replace('tiny-retest/', 'tiny/') == rec['retest_of']
        assert rec['metrics'] == src['metrics'] and rec['val_curve'] == src['val_curve']
        child = osp.join(work, 'toy_spec', key.replace('/', '__'))
        assert not glob.glob(osp.join(child, '*.pth')) and rec['cpu_s'] < src['cpu_s']
    for key, rec in recs.items():
        child = osp.join(work, 'toy_spec', key.replace('/', '__'))
        # the child trained with the run's seed and fraction in both sparsifiers
        dumped = Config.fromfile(osp.join(child, 'config.py'))
        for loader in ('train_dataloader', 'val_dataloader'):
            sparse = [t for t in dumped[loader].dataset.pipeline
                      if t['type'] == 'SparsifyAnnotations']
            assert [(t['fraction'], t['seed']) for t in sparse] == [(0.5, rec['seed'])]
        assert dumped.randomness.seed == rec['seed']
        assert [p[0] for p in rec['val_curve']] == [2, 4]
        assert rec['converged'] == stats.converged(rec['val_curve'])
        assert 0 < rec['cpu_s'] < 2 * rec['wall_s']  # one thread per child
        # F1@0.5 and AP agree with CellDetectionMetric run by tools/test.py in the child
        test_dir = osp.join(child, 'test_test')
        ts = run_folders(test_dir)[-1]
        logged = json.load(open(osp.join(test_dir, ts, f'{ts}.json')))
        assert rec['metrics']['F1@0.5'] == pytest.approx(logged['cell/f1'])
        assert rec['metrics']['AP'] == pytest.approx(logged['cell/coco_AP'])
        # per-image counts: one row per test image, pooling them gives the metric
        assert len(rec['per_image']['counts@0.5']) == len(rec['images']) == 2
        for op in ('0.5', 'calib', 'oracle'):
            assert rec['metrics'][f'F1@{op}'] == pytest.approx(
                stats.pooled_f1(np.array(rec['per_image'][f'counts@{op}'])))
        assert rec['extra']['thr@calib'] == pytest.approx(0.5 * rec['extra']['c'])
        # the oracle is the best F1 of the test curve
        curve = np.array(rec['curve_test']['counts'])
        assert rec['metrics']['F1@oracle'] == pytest.approx(
            stats.pooled_f1(curve[:, None, :]).max())

    md = osp.join(res, 'README.md')
    text = open(md).read()
    assert '## tiny, 50% of the training labels' in text
    assert '| `stock` | peer | 2/2 | 4 it |' in text
    assert '`calibrated` − `stock`' in text
    assert '| `broken` | method | 0/2 | - | - |' in text
    # in process from here (faster): --resume has nothing to redo; --report twice gives
    # the same bytes
    args = args[1:]
    assert benchmark.main(args + ['--resume', '--only', 'stock']) == dict(done=0, failed=[],
                                                                          skipped=4)
    before = (open(md, 'rb').read(), open(osp.join(res, 'results.png'), 'rb').read())
    benchmark.main(args + ['--report'])
    benchmark.main(args + ['--report'])
    assert (open(md, 'rb').read(), open(osp.join(res, 'results.png'), 'rb').read()) == before

    # README blocks: this spec's tables for the rows named, and the headline verdicts
    repo = tmp_path / 'repo'
    (repo / 'docs' / 'benchmarks' / 'toy_spec').mkdir(parents=True)
    heads = json.load(open(osp.join(res, 'headlines.json')))['lines']
    assert len(heads) == 1 and heads[0].startswith('| toy labels | tiny, 50% | F1@0.5 | '
                                                   '`calibrated` ')
    (repo / 'docs' / 'benchmarks' / 'toy_spec' / 'headlines.json').write_text(
        json.dumps(dict(lines=heads)))
    (repo / 'README.md').write_text(
        'intro\n<!-- benchmark:headlines -->\nold\n<!-- /benchmark:headlines -->\n'
        '<!-- benchmark:toy_spec rows=stock,calibrated -->\nold\n<!-- /benchmark:toy_spec -->'
        '\nend\n')
    spec_d = benchmark.load_spec(spec)
    spec_d['results_dir'] = res
    tables = benchmark.collect(spec_d, benchmark.read_runs(osp.join(res, 'runs.jsonl')))
    assert benchmark.update_readmes(spec_d, tables, str(repo)) == [str(repo / 'README.md')]
    readme = (repo / 'README.md').read_text()
    assert 'old' not in readme and readme.startswith('intro\n') and readme.endswith('end\n')
    assert heads[0] in readme and '| `stock` | peer | 2/2 | 4 it |' in readme
    assert '`calibrated` − `stock`' in readme and 'broken' not in readme
    assert benchmark.update_readmes(spec_d, tables, str(repo)) == []  # idempotent

    # grid status: 4 of 6 runs done (2 of them retests); the 2 broken runs (never timed)
    # are estimated from the finished training runs with the same budget (4 iterations)
    status = json.load(open(osp.join(res, 'status.json')))
    cpu = [r['cpu_s'] for r in recs.values()]
    assert (status['expected'], status['done'], status['left_unknown']) == (6, 4, 0)
    assert status['cpu_h_done'] == pytest.approx(
        (sum(cpu) + sum(r['cpu_s'] for r in retests.values())) / 3600, abs=0.006)
    assert status['cpu_h_left'] == pytest.approx(2 * np.mean(cpu) / 3600, abs=0.006)
    (repo / 'docs' / 'benchmarks' / 'toy_spec' / 'status.json').write_text(json.dumps(status))
    index = open(benchmark.write_index(str(repo))).read()
    assert f'| [`toy_spec`](toy_spec/README.md) | {status["title"]} | 4/6 | ' in index

    # a changed config makes its results stale: the report names the spec entry
    with open(tmp_path / 'toy.py', 'a') as f:
        f.write('optim_wrapper = dict(optimizer=dict(lr=0.01))\n')
    with pytest.raises(ValueError, match=r'rows\[0\] \(stock\).*another version'):
        benchmark.main(args + ['--report'])
    # a corrupt line is an error with its line number
    with open(osp.join(res, 'runs.jsonl'), 'a') as f:
        f.write('{not json\n')
    with pytest.raises(ValueError, match='runs.jsonl: line 5 is not JSON'):
        benchmark.main(args + ['--report'])


def _spec(tmp_path, body: str) -> str:
    p = tmp_path / 'bad.py'
    p.write_text(body)
    return str(p)


@pytest.mark.parametrize('body,match', [
    ("task='det'\ngroups=[dict(dataset='d', rows=[dict(name='a', role='peer', "
     "config='configs/nope.py', iters=4)])]", r"rows\[0\] \(a\): config configs/nope.py not"),
    ("task='det'\nmetrics=['Dice']\ngroups=[]", "'Dice' is not produced by the det"),
    ("task='det'\nseeds=[0]\ngroups=[dict(dataset='d', rows=[dict(name='a', role='peer', "
     "config='configs/benchmarks/det_sparse.py', iters=4)])]", 'at least 2 distinct seeds'),
    ("task='det'\ngroups=[dict(dataset='d', rows=[dict(name='a', role='method', "
     "config='configs/benchmarks/det_sparse.py', iters=4, baseline='zz')])]",
     "'zz' is not another row"),
    ("task='det'\ngroups=[dict(dataset='d', retest_of='e', rows=[dict(name='a', role='peer', "
     "config='configs/benchmarks/det_sparse.py', iters=4)])]",
     r"groups\[0\] \(d\): retest_of 'e' is not another training group"),
    ("task='det'\ngroups=[dict(dataset='d', rows=[dict(name='a', role='peer', "
     "config='configs/benchmarks/det_sparse.py', iters=4)]), dict(dataset='e', "
     "retest_of='d', rows=[dict(name='a', role='peer', config='configs/benchmarks/npl.py', "
     "iters=4)])]", r"rows\[0\] \(a\): a retest row must be a row of 'd'"),
    ("task='det'\nbootstrap='seeds'\ngroups=[dict(dataset='d', rows=[dict(name='a', "
     "role='peer', config='configs/benchmarks/det_sparse.py', iters=4)])]",
     r"bootstrap must be one of \['seeds\+images', 'images'\], got 'seeds'"),
    ("task='det'\nconverge_rule='mean'\ngroups=[dict(dataset='d', rows=[dict(name='a', "
     "role='peer', config='configs/benchmarks/det_sparse.py', iters=4)])]",
     r"converge_rule must be one of \['last', 'best'\], got 'mean'"),
])
def test_bad_specs_name_the_entry(tmp_path, body, match):
    with pytest.raises(benchmark.SpecError, match=match):
        benchmark.load_spec(_spec(tmp_path, body))


def test_report_compares_what_the_bootstrap_resamples():
    # seed 0: the method is +0.2 Dice_obj on each of 3 images, seed 1: +0.0. Resampling
    # seeds and images: draws 0.0 / 0.1 / 0.2 (p 1/4, 1/2, 1/4), no difference; images
    # alone: always 0.1, better (tests/test_stats.py works both by hand)
    base = {0: [0.3, 0.6, 0.1], 1: [0.5, 0.2, 0.4]}
    meth = {0: [v + 0.2 for v in base[0]], 1: list(base[1])}

    def row(name, role, baselines, values):
        seeds = {s: dict(images=['a', 'b', 'c'], metrics=dict(Dice_obj=float(np.mean(v))),
                         per_image=dict(Dice_obj=[[x, 1] for x in v]))
                 for s, v in values.items()}
        return dict(row=dict(name=name, role=role, baselines=baselines, where=name),
                    seeds=seeds)

    tables = [dict(group=dict(dataset='toy'), fraction=0.3,
                   rows=[row('unet', 'peer', [], base), row('m', 'method', ['unet'], meth)])]
    spec = dict(task='seg', metrics=['Dice_obj'], bootstrap='seeds+images')
    d = benchmark.paired(spec, tables[0]['rows'][1], tables[0]['rows'][0], 'Dice_obj')
    assert (d['diff'], d['lo'], d['hi']) == pytest.approx((0.1, 0.0, 0.2))
    text = '\n'.join(benchmark.resampling_lines(spec, tables))
    assert 'Of the 1 bootstrapped comparisons above, 1 changes its verdict' in text
    assert ('| toy, 30% | `m` − `unet` | Dice_obj | [+0.000, +0.200] no difference | '
            '[+0.100, +0.100] better |') in text
    spec['bootstrap'] = 'images'
    assert '| [+0.100, +0.100] better | [+0.000, +0.200] no difference |' in '\n'.join(
        benchmark.resampling_lines(spec, tables))


def test_headline_takes_complete_rows_and_says_which_did_not_converge():
    """A row with 2 of its 3 seeds does not make the headline, even with the best mean; a
    headline row whose runs did not all converge says how many did."""
    flat, rising = [[80, 0.5], [100, 0.5]], [[80, 0.3], [100, 0.5]]

    def row(name, role, values, curves, seeds=(0, 1, 2)):
        recs = {s: dict(images=['a', 'b'], metrics=dict(Dice_obj=float(np.mean(v))),
                        per_image=dict(Dice_obj=[[x, 1] for x in v]), val_curve=c)
                for s, v, c in zip(seeds, values, curves)}
        return dict(row=dict(name=name, role=role, baselines=['unet'], where=name, seeds=[0, 1, 2],
                             same_as=None), seeds=recs)

    base = [[0.1, 0.3], [0.2, 0.2], [0.3, 0.1]]
    tables = [dict(group=dict(dataset='toy'), fraction=0.3, rows=[
        row('unet', 'peer', base, [flat] * 3),
        row('m', 'method', [[v + 0.5 for v in b] for b in base], [flat, rising, flat]),
        row('half', 'method', [[0.9, 0.9], [0.9, 0.9]], [flat] * 2, seeds=(0, 1))])]
    spec = dict(task='seg', name='toy', path='toy.py', metrics=['Dice_obj'],
                bootstrap='seeds+images', converge_rule='last',
                headlines=[dict(kind='masks', dataset='toy', fraction=0.3, metric='Dice_obj')])
    line, = benchmark.headline_lines(spec, tables)
    # m: 0.7 on every seed (CI 0); unet 0.2; the difference +0.5 in every draw
    assert line.startswith('| masks | toy, 30% | Dice_obj | `m` 0.700 ± 0.000 (2/3 converged) '
                           '| `unet` 0.200 ± 0.000 | +0.500 [+0.500, +0.500] better |'), line


def test_published_specs_load():
    for path in sorted(glob.glob(osp.join(benchmark.REPO, 'configs', 'benchmarks', '*.py'))):
        spec = benchmark.load_spec(path)
        assert all(len(r['seeds']) >= 3 for g in spec['groups'] for r in g['rows']), path


def test_seg_evaluator_by_hand(tmp_path):
    """evaluate_seg on predictions written by hand in tools/test.py's dump format."""
    import pickle

    import torch
    gt = torch.zeros((3, 1, 8, 8), dtype=torch.long)
    pred = torch.zeros_like(gt)
    gt[0, 0, :4, :4] = 1  # image 1: a 4x4 nucleus found exactly
    pred[0, 0, :4, :4] = 1
    gt[1, 0, :4, :4] = 1  # image 2: half of it found (8 of 16 px): IoU 0.5
    pred[1, 0, :4, :2] = 1
    # image 3: no object at all (weight 0 in every object mean)
    raw = [dict(img_path=f'im{i}.png', gt_sem_seg=dict(data=gt[i]),
                pred_sem_seg=dict(data=pred[i])) for i in range(3)]
    path = tmp_path / 'preds.pkl'
    with open(path, 'wb') as f:
        pickle.dump(raw, f)
    cfg = Config(dict(test_evaluator=dict(type='NucleiMetric', min_size=0)))
    out = benchmark.evaluate_seg(cfg, None, str(path))
    # Dice_obj: image 1 -> 1, image 2 -> 2*8 / (16 + 8) = 2/3 ; mean over images 1-2 = 5/6
    # AJI: 16/16 and 8/16 -> 0.75 ; PQ: image 2's IoU 0.5 is not a match (> 0.5 needed):
    # TP 0, FP 1, FN 1 -> PQ 0 ; mean (1 + 0) / 2 = 0.5
    assert out['metrics']['Dice_obj'] == pytest.approx(5 / 6)
    assert out['metrics']['AJI'] == pytest.approx(0.75)
    assert out['metrics']['PQ'] == pytest.approx(0.5)
    assert [w for _, w in out['per_image']['PQ']] == [1.0, 1.0, 0.0]
    assert out['images'] == ['im0.png', 'im1.png', 'im2.png']
    # the per-image terms reproduce the set-level values (what the paired test resamples)
    for key in ('Dice_obj', 'AJI', 'PQ'):
        assert stats.masked_mean(np.array(out['per_image'][key])) == pytest.approx(
            out['metrics'][key])


def test_model_index_is_read_by_mim(tmp_path):
    """--report's models.json -> configs/<folder>/metafile.yml + model-index.yml, in the
    format mim's own reader (modelindex) and its search table (convert2df) accept."""
    from mim.commands.search import convert2df
    from modelindex.load_model_index import load
    (tmp_path / 'configs' / 'pu_detection').mkdir(parents=True)
    (tmp_path / 'projects').mkdir()
    out = tmp_path / 'docs' / 'benchmarks' / 'det_sparse'
    out.mkdir(parents=True)
    cfg = 'configs/pu_detection/faster-rcnn_r18-c32_fpn_pu_500i_synthetic-sparse30.py'
    models = [dict(config=cfg, task='det', spec='det_sparse', dataset=ds, train_dataset=ds,
                   budget=['iters', 500], seeds=3, metrics={'AP': ap, 'F1@0.5': f1})
              for ds, ap, f1 in (('synthetic-labels30', 0.41, 0.8), ('synthetic-labels10',
                                                                      0.3, 0.7))]
    (out / 'models.json').write_text(json.dumps(dict(models=models)))
    written = benchmark.write_model_index(str(tmp_path))
    assert sorted(osp.relpath(p, tmp_path) for p in written) == [
        'configs/pu_detection/metafile.yml', 'model-index.yml']
    index = load(str(tmp_path / 'model-index.yml'))
    table = convert2df(index)
    name = 'faster-rcnn_r18-c32_fpn_pu_500i_synthetic-sparse30'
    assert list(table.index) == [name]
    row = table.loc[name]
    assert row['config'] == cfg
    # one Results entry per data set, sorted by name: the labels10 entry comes first
    assert index.models[0].results[0].dataset == 'synthetic-labels10'
    assert index.models[0].results[1].metrics == {'AP': 0.41, 'F1@0.5': 0.8}
    # written twice: the same bytes
    before = [open(p, 'rb').read() for p in written]
    benchmark.write_model_index(str(tmp_path))
    assert [open(p, 'rb').read() for p in written] == before


def test_retest_may_change_only_the_test_set(tmp_path):
    zoo = 'configs/benchmarks/zoo/faster-rcnn_r18-c32_fpn_500i_synthetic-sparse30.py'
    body = (f"task='det'\ngroups=[dict(dataset='d', rows=[dict(name='a', role='peer', "
            f"config='{zoo}', iters=4)]), dict(dataset='e', retest_of='d', cfg_options="
            "{opts}, rows=[dict(name='a', role='peer', config='" + zoo + "', iters=4)])]")

    def check(opts: str) -> None:
        spec = benchmark.load_spec(_spec(tmp_path, body.format(opts=opts)))
        for run in benchmark.expected_runs(spec, datasets=['e']):
            cfg, _ = benchmark.prepare_config(spec, run['group'], run['row'],
                                              run['fraction'], run['seed'])
            benchmark._check_same_training(spec, run, cfg)

    check("{'test_dataloader.dataset.data_root': 'data/elsewhere/'}")  # a test set: fine
    with pytest.raises(benchmark.SpecError, match=r"groups\[1\] \(e\): retest_of 'd', but "
                       r"its options change more than the test set \(\['optim_wrapper'\]\)"):
        check("{'optim_wrapper.optimizer.lr': 0.5}")


def test_run_selection_by_row_fraction_data_set_and_seed(tmp_path):
    zoo = 'configs/benchmarks/zoo/faster-rcnn_r18-c32_fpn_500i_synthetic-sparse30.py'
    body = (f"task='det'\nseeds=[0, 1, 2]\ngroups=[dict(dataset='d', fractions=[0.3, 1.0], "
            f"rows=[dict(name='a', role='peer', config='{zoo}', iters=4), dict(name='b', "
            f"config='{zoo}', iters=4, baseline='a', fractions=[1.0])]), dict(dataset='e', "
            f"retest_of='d', rows=[dict(name='a', role='peer', config='{zoo}', iters=4)])]")
    spec = benchmark.load_spec(_spec(tmp_path, body))

    def keys(**kw):
        return [r['key'] for r in benchmark.expected_runs(spec, **kw)]

    assert keys(only=['b', 'a'], fractions=[1.0], datasets=['d'], seeds=[2, 0]) == [
        'd/frac100/b/seed2', 'd/frac100/b/seed0', 'd/frac100/a/seed2', 'd/frac100/a/seed0']
    # retests come after every training; a seed no row has selects nothing
    assert keys(only=['a'], fractions=[1.0], seeds=[1, 5]) == ['d/frac100/a/seed1',
                                                               'e/frac100/a/seed1']
    with pytest.raises(benchmark.SpecError, match=r'--seeds \[7\]: no row has these seeds'):
        benchmark.main([_spec(tmp_path, body), '--report', '--seeds', '7'])


def test_headlines_run_from_the_most_labels_to_none(tmp_path):
    """The root README's headlines follow the kinds of label (sparse boxes / masks,
    points, proportions, nothing), then any other spec by name."""
    for name in ('cellgan', 'zz_other', 'npl', 'aa_other', 'points', 'seg_sparse',
                 'det_sparse'):
        d = tmp_path / 'docs' / 'benchmarks' / name
        d.mkdir(parents=True)
        (d / 'headlines.json').write_text(json.dumps(dict(lines=[f'| {name} |'])))
    (tmp_path / 'README.md').write_text('<!-- benchmark:headlines -->\n'
                                        '<!-- /benchmark:headlines -->\n')
    benchmark.update_readmes(dict(name='toy'), [], str(tmp_path))
    lines = (tmp_path / 'README.md').read_text().splitlines()[3:-1]
    assert lines == ['| det_sparse |', '| seg_sparse |', '| points |', '| npl |',
                     '| cellgan |', '| aa_other |', '| zz_other |']


def test_two_benchmarks_build_a_missing_data_set_once(tmp_path):
    """Two benchmarks started together (the usual two-core set-up) must not both run a data
    set's ``make``: the converters refuse a non-empty folder, so the second one used to fail.
    A ``make`` that fails leaves no half-written folder behind."""
    import threading
    out = tmp_path / 'data' / 'made'
    make = ('python -c "import os, sys, time; os.makedirs(sys.argv[1]); time.sleep(0.5); '
            'open(os.path.join(sys.argv[1], \'n\'), \'a\').write(\'x\')" ' + str(out))
    spec = dict(path='spec.py', data=dict(made=dict(path=str(out), make=make)))
    errors = []

    def build():
        try:
            benchmark.ensure_data(spec)
        except Exception as e:  # noqa: BLE001 (reported below)
            errors.append(e)

    threads = [threading.Thread(target=build) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert (out / 'n').read_text() == 'x'  # made once

    bad = tmp_path / 'data' / 'bad'
    spec = dict(path='spec.py', data=dict(bad=dict(
        path=str(bad), make=f'python -c "import os, sys; os.makedirs(sys.argv[1]); '
        f'sys.exit(3)" {bad}')))
    with pytest.raises(RuntimeError, match=r'spec.py: data bad: .* exit status 3'):
        benchmark.ensure_data(spec)
    assert not bad.exists()


def test_patch_evaluator_by_hand(tmp_path):
    """evaluate_patch (the npl spec) on tools/test.py's dump of a patch classifier: the class
    names come from the test split's bag file (the metric refused to run without them)."""
    import pickle

    import torch

    from projects.negative_pseudo_labels.bags import write_bag_json
    classes = ('tumour', 'stroma', 'necrosis')
    # (bag, grid cell, gt, pred): bag a (0,0) (0,1); bag b (2,2) (1,1) (2,0)
    patches = [('a', (0, 0), 0, 0), ('a', (0, 1), 0, 1), ('b', (0, 0), 2, 2),
               ('b', (0, 1), 1, 1), ('b', (1, 0), 2, 0)]
    bags = []
    for name in ('a', 'b'):
        mine = [p for p in patches if p[0] == name]
        labels = [g for _, _, g, _ in mine]
        bags.append(dict(name=name, img_path=f'{name}.png', mask_path=f'{name}_mask.png',
                         labelled=True, height=8, width=8,
                         ratio=(np.bincount(labels, minlength=3) / len(labels)).tolist(),
                         patches=[[4 * c, 4 * r] for _, (r, c), _, _ in mine],
                         labels=labels,
                         pixel_counts=[(16 * np.eye(3, dtype=int)[g]).tolist() for g in labels]))
    write_bag_json(str(tmp_path / 'test.json'), classes, 4, bags)
    # the dump has no pixel counts: the metric scores patch labels
    raw = [dict(bag_name=b, grid=g, patch_size=4, img_shape=(4, 4), bag_shape=(8, 8),
                pred_label=torch.tensor([p]), gt_label=torch.tensor(t))
           for b, g, t, p in patches]
    path = tmp_path / 'preds.pkl'
    with open(path, 'wb') as f:
        pickle.dump(raw, f)
    cfg = Config(dict(test_evaluator=dict(type='PatchSegMetric'),
                      test_dataloader=dict(dataset=dict(data_root=str(tmp_path),
                                                        ann_file='test.json'))))
    out = benchmark.evaluate_patch(cfg, None, str(path))
    # confusion (rows gt) [[1,1,0],[0,1,0],[1,0,1]]: OP 3/5; IoU 1/3, 1/2, 1/2 -> mIoU 4/9;
    # precision 1/2, 1/2, 1 -> PC 2/3; recall 1/2, 1, 1/2 -> mAcc 2/3
    assert out['metrics'] == pytest.approx(dict(OP=3 / 5, PC=2 / 3, mAcc=2 / 3, mIoU=4 / 9))
    assert out['images'] == ['a', 'b']
    assert out['per_image']['confusion'] == [[1, 1, 0, 0, 0, 0, 0, 0, 0],
                                             [0, 0, 0, 0, 1, 0, 1, 0, 1]]


def test_plan_lists_missing_and_stale_runs_with_their_estimated_cost(tmp_path, capsys):
    zoo = 'configs/benchmarks/zoo/faster-rcnn_r18-c32_fpn_500i_synthetic-sparse30.py'
    body = (f"task='det'\nseeds=[0, 1]\ngroups=[dict(dataset='d', fractions=[0.3], rows=["
            f"dict(name='a', role='peer', config='{zoo}', iters=4), dict(name='b', "
            f"config='{zoo}', iters=4, baseline='a'), dict(name='c', config='{zoo}', "
            f"iters=8, baseline='a')]), dict(dataset='e', fractions=[0.3], rows=["
            f"dict(name='a', role='peer', config='{zoo}', iters=4)])]")
    path = _spec(tmp_path, body)
    spec = benchmark.load_spec(path)
    spec['results_dir'] = str(tmp_path / 'results')
    run = next(r for r in benchmark.expected_runs(spec) if r['key'] == 'd/frac30/a/seed0')
    _, sha = benchmark.prepare_config(spec, run['group'], run['row'], 0.3, 0)

    def rec(key, row, cpu_s, sha):
        return dict(key=key, row=row, dataset=key.split('/')[0], cpu_s=cpu_s, retest_of=None,
                    budget=['iters', 4], config_sha256=sha)
    os.makedirs(spec['results_dir'])
    with open(osp.join(spec['results_dir'], 'runs.jsonl'), 'w') as f:
        for r in (rec('d/frac30/a/seed0', 'a', 600.0, sha),      # done: skipped
                  rec('d/frac30/a/seed1', 'a', 1200.0, 'old'),   # stale: to do again
                  rec('e/frac30/a/seed0', 'a', 60.0, 'x')):      # other data set, stale
            f.write(json.dumps(r) + '\n')
    out = benchmark.plan(spec)
    # a on d: its own runs on d (600, 1200 s); b on d: no run of b, so the runs with its
    # budget on d (a's: 900 s); c (8 iterations): nothing comparable; a on e: its run on e
    assert [(t['key'], t['stale'], t['cpu_s']) for t in out['todo']] == [
        ('d/frac30/a/seed1', True, 900.0), ('d/frac30/b/seed0', False, 900.0),
        ('d/frac30/b/seed1', False, 900.0), ('d/frac30/c/seed0', False, None),
        ('d/frac30/c/seed1', False, None), ('e/frac30/a/seed0', True, 60.0),
        ('e/frac30/a/seed1', False, 60.0)]
    assert out['cpu_h'] == pytest.approx((900 * 3 + 60 * 2) / 3600) and out['unknown'] == 2
    printed = capsys.readouterr().out
    assert '7 run(s) to do, about 0.8 CPU core-hours + 2 run(s) with no estimate' in printed
    assert 'd/frac30/a/seed1' in printed and 'stale' in printed


def test_calibrated_counts_hand_values_and_no_detected_cell():
    # test set: one image, 3 cells; predictions scored 0.9 / 0.4 / 0.2, the first two on
    # cells: at threshold t the counts are (tp, fp, fn) of the predictions >= t
    def test_counts(thr: float) -> np.ndarray:
        kept = [(s, hit) for s, hit in ((0.9, True), (0.4, True), (0.2, False)) if s >= thr]
        tp = sum(hit for _, hit in kept)
        return np.array([[tp, len(kept) - tp, 3 - tp]])

    cell = dict(gt=np.array([[10., 10.], [40., 40.]]))
    # validation: the two annotated cells score 0.6 (within 5 px) and 0 (nearest box 20 px
    # away) -> c = 0.3, threshold 0.15: all three test predictions kept
    val = [dict(cell, pred=np.array([[12., 10.], [60., 40.]]), scores=np.array([0.6, 0.8]))]
    c, thr, counts = benchmark.calibrated_counts(val, 5.0, test_counts)
    assert (c, thr) == (pytest.approx(0.3), pytest.approx(0.15))
    assert counts.tolist() == [[2, 1, 1]]
    # no annotated validation cell has a detection: c = 0, no threshold, nothing kept
    empty = [dict(cell, pred=np.zeros((0, 2)), scores=np.zeros(0))]
    c, thr, counts = benchmark.calibrated_counts(empty, 5.0, test_counts)
    assert (c, thr, counts.tolist()) == (0.0, None, [[0, 0, 3]])
    assert stats.pooled_f1(counts[None]) == 0.0
