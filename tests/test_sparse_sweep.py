"""tools/analysis_tools/sparse_sweep.py: score vs fraction of annotations (Panteli et al.
2021, sect. 4.1), and the child-run helpers it shares (projects/common/child_runs.py)."""
import csv
import json
import math
import os
import os.path as osp
import sys

import pytest
from mmengine.config import Config

sys.path.insert(0, osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'tools',
                            'analysis_tools'))
import sparse_sweep as ss  # noqa: E402
from projects.common import child_runs  # noqa: E402

from conftest import TINY_DET, run_folders, run_tool, write_config  # noqa: E402

# TINY_DET with a nested SparsifyAnnotations in training. The validation split points to a
# file that does not exist: a child that validated on it (and not on the test split, as the
# sweep must) would crash. val_interval=1 < max_iters=2: the sweep must still validate
# once, at the end. score_thr=0 and a large lr so that the recall is not trivially 0.
TINY_SPARSE = '''
_base_ = './tiny_det.py'
train_pipeline = [
    dict(type='StrictLoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='SparsifyAnnotations', mode='nested', fraction=0.3, seed=0),
    dict(type='PackDetInputs')]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(ann_file='annotations/absent.json'))
test_evaluator = dict(score_thr=0.0)
model = dict(test_cfg=dict(rpn=dict(max_per_img=20), rcnn=dict(max_per_img=6)))
train_cfg = dict(max_iters=2, val_interval=1)
param_scheduler = []
optim_wrapper = dict(optimizer=dict(lr=0.05))
default_hooks = dict(checkpoint=dict(interval=2, max_keep_ckpts=1))
'''
NON_METRIC = ('step', 'data_time', 'time')


def _val_records(child_dir: str) -> list:
    """Validation lines of the newest run's scalars.json, read without the tool's code."""
    path = osp.join(child_dir, run_folders(child_dir)[-1], 'vis_data', 'scalars.json')
    with open(path) as f:
        recs = [json.loads(line) for line in f if line.strip()]
    return [r for r in recs if 'iter' not in r]


def _sparsify_fractions(pipeline: list) -> list:
    return [t['fraction'] for t in pipeline if t['type'] == 'SparsifyAnnotations']


# ----------------------------------------------------------------------------- end to end
def test_sweep_trains_each_fraction_on_test_split_and_resumes(tmp_path, tiny_synthetic):
    write_config(tmp_path, TINY_DET, tiny_synthetic, 'tiny_det.py')
    cfg = write_config(tmp_path, TINY_SPARSE, tiny_synthetic, 'tiny_sparse.py')
    work = str(tmp_path / 'sweep')
    metric = 'cell/recall'
    args = ['tools/analysis_tools/sparse_sweep.py', cfg, '--work-dir', work, '--metric',
            metric, '--jobs', '2']
    out = run_tool(args + ['--fractions', '1.0', '0.5']).stdout
    assert '2 runs (1 configs x 2 fractions), 2 at a time' in out

    records = {}
    for frac, tag in ((0.5, '50'), (1.0, '100')):
        child = osp.join(work, 'tiny_sparse', f'frac{tag}')
        assert len(run_folders(child)) == 1  # trained exactly once
        dumped = Config.fromfile(osp.join(child, f'tiny_sparse_frac{tag}.py'))
        assert _sparsify_fractions(dumped.train_dataloader.dataset.pipeline) == [frac]
        # validation = the test split and evaluator, with complete labels
        assert dumped.val_dataloader.dataset.ann_file == 'annotations/test.json'
        assert _sparsify_fractions(dumped.val_dataloader.dataset.pipeline) == []
        assert dumped.val_evaluator.score_thr == 0.0
        assert dumped.work_dir == child and dumped.resume is False
        vals = _val_records(child)
        assert [v['step'] for v in vals] == [2]  # one validation, at the end of training
        records[frac] = vals[-1]
        assert f'tiny_sparse at {tag}%: {metric} = {records[frac][metric]:.4f}' in out

    with open(osp.join(work, 'sparse_sweep.json')) as f:
        res = json.load(f)
    assert res['metric'] == metric
    assert [(r['name'], r['fraction']) for r in res['rows']] == [('tiny_sparse', 0.5),
                                                                 ('tiny_sparse', 1.0)]
    for row in res['rows']:
        rec = records[row['fraction']]
        assert row['value'] == rec[metric] and row['reused'] is False
        assert row['metrics'] == {k: v for k, v in rec.items() if k not in NON_METRIC}
        assert row['config'] == cfg
    with open(osp.join(work, 'sparse_sweep.csv')) as f:
        table = list(csv.reader(f))
    assert table[0][:3] == ['name', 'fraction', metric]
    extra = sorted(k for k in records[0.5] if k not in NON_METRIC and k != metric)
    assert table[0][3:] == extra
    for line, frac in zip(table[1:], (0.5, 1.0)):
        assert line[:2] == ['tiny_sparse', str(frac)]
        assert [float(x) for x in line[2:]] == [records[frac][k] for k in [metric] + extra]
    with open(osp.join(work, 'sparse_sweep.png'), 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    # the printed table holds the same values
    assert f'tiny_sparse  {records[0.5][metric]:.4f}  {records[1.0][metric]:.4f}' in out

    # --resume: both reused, nothing retrained, same values
    out = run_tool(args + ['--fractions', '0.5', '1.0', '--resume']).stdout
    assert out.count('(reused)') == 2
    for tag in ('50', '100'):
        assert len(run_folders(osp.join(work, 'tiny_sparse', f'frac{tag}'))) == 1
    with open(osp.join(work, 'sparse_sweep.json')) as f:
        again = json.load(f)['rows']
    assert [(r['value'], r['reused']) for r in again] == [
        (records[0.5][metric], True), (records[1.0][metric], True)]

    # --resume with other --cfg-options: the changed child is retrained (a second run)
    out = run_tool(args + ['--fractions', '1.0', '--resume', '--cfg-options',
                           'test_evaluator.score_thr=0.01']).stdout
    assert 'differs from the finished run: retraining' in out and '(reused)' not in out
    child = osp.join(work, 'tiny_sparse', 'frac100')
    assert len(run_folders(child)) == 2
    assert Config.fromfile(osp.join(child, 'tiny_sparse_frac100.py')).val_evaluator.score_thr \
        == 0.01
    new = _val_records(child)[-1]
    with open(osp.join(work, 'sparse_sweep.json')) as f:
        rows = json.load(f)['rows']
    assert [(r['fraction'], r['value'], r['reused']) for r in rows] == [
        (1.0, new[metric], False)]
    assert len(run_folders(osp.join(work, 'tiny_sparse', 'frac50'))) == 1  # untouched


def test_names_and_jobs_are_checked_before_anything_is_written(tmp_path):
    work = str(tmp_path / 'w')
    for names in (['x'], ['x', 'y', 'z'], ['x', 'x']):
        with pytest.raises(ValueError, match=r'--names must give 2 distinct names'):
            ss.main(['a.py', 'b.py', '--work-dir', work, '--names', *names])
    # default names are the file names: the same name in two folders is an error too
    with pytest.raises(ValueError, match=r"--names must give 2 distinct names, got \['c', 'c'\]"):
        ss.main(['one/c.py', 'two/c.py', '--work-dir', work])
    with pytest.raises(ValueError, match='--jobs and --threads must be >= 1'):
        ss.main(['a.py', '--work-dir', work, '--jobs', '0'])
    assert not osp.exists(work)


# ----------------------------------------------------------------------------- prepare()
def _sp(fraction: float = 0.3, **kw) -> dict:
    return dict(type='SparsifyAnnotations', mode='nested', fraction=fraction, **kw)


def _loader(ann: str, pipeline: list) -> dict:
    return dict(batch_size=1, dataset=dict(type='CellDetDataset', ann_file=ann,
                                           pipeline=pipeline))


def _cfg(train_dataset: dict = None, **kw) -> Config:
    load = dict(type='LoadAnnotations')
    train = dict(batch_size=2, dataset=train_dataset or dict(
        type='CellDetDataset', ann_file='train.json', pipeline=[load, _sp(), dict(type='Pack')]))
    base = dict(
        train_dataloader=train,
        val_dataloader=_loader('val.json', [load, _sp(0.3), dict(type='Pack')]),
        test_dataloader=_loader('test.json', [load, dict(type='Pack')]),
        val_evaluator=dict(type='CellDetectionMetric', score_thr=0.5),
        test_evaluator=dict(type='CellDetectionMetric', score_thr=0.25),
        val_cfg=None, train_cfg=dict(type='IterBasedTrainLoop', max_iters=7, val_interval=2),
        resume=True)
    base.update(kw)
    return Config(base)


def test_prepare_sets_fraction_and_swaps_validation_for_test():
    cfg = _cfg()
    assert ss.prepare(cfg, 0.6, 'c.py') == 1
    assert _sparsify_fractions(cfg.train_dataloader.dataset.pipeline) == [0.6]
    assert cfg.val_dataloader.dataset.ann_file == 'test.json'
    assert _sparsify_fractions(cfg.val_dataloader.dataset.pipeline) == []
    assert cfg.val_evaluator.score_thr == 0.25
    assert cfg.val_cfg == dict(type='ValLoop')
    # one validation, at the end: validate iff iter >= val_begin (mmengine's loop rule)
    assert cfg.train_cfg.val_begin == 7 and cfg.resume is False
    epochs = _cfg(train_cfg=dict(type='EpochBasedTrainLoop', max_epochs=3))
    ss.prepare(epochs, 1.0, 'e.py')
    assert epochs.train_cfg.val_begin == 3
    with pytest.raises(ValueError, match='n.py: train_cfg has neither max_iters nor'):
        ss.prepare(_cfg(train_cfg=None), 0.5, 'n.py')


def test_prepare_walks_dataset_wrappers_scopes_and_nested_transforms():
    inner = dict(type='CellDetDataset', pipeline=[dict(type='Load'), _sp(0.1)])
    repeat = dict(type='RepeatDataset', times=2, dataset=inner)
    cfg = _cfg(repeat)
    assert ss.prepare(cfg, 0.5, 'r.py') == 1
    assert cfg.train_dataloader.dataset.dataset.pipeline[1]['fraction'] == 0.5

    a = dict(type='CellDetDataset', pipeline=[_sp(0.1), dict(type='X'), _sp(0.2)])
    b = dict(type='RepeatDataset', dataset=dict(
        type='CellDetDataset', pipeline=[dict(type='mmdet.SparsifyAnnotations', fraction=0.1)]))
    c = dict(type='CellDetDataset', pipeline=[dict(type='RandomApply', transforms=[_sp(0.9)])])
    d = dict(type='CellDetDataset', pipeline=[dict(type='Load')])
    cfg = _cfg(dict(type='ConcatDataset', datasets=[a, b, c, d]))
    assert ss.prepare(cfg, 0.125, 'k.py') == 4
    ds = cfg.train_dataloader.dataset.datasets
    assert [t.get('fraction') for t in ds[0].pipeline] == [0.125, None, 0.125]
    assert ds[1].dataset.pipeline[0]['fraction'] == 0.125
    assert ds[2].pipeline[0].transforms[0]['fraction'] == 0.125


def test_prepare_errors_name_the_config():
    load, pack = dict(type='LoadAnnotations'), dict(type='Pack')
    plain = dict(type='CellDetDataset', pipeline=[load, pack])
    with pytest.raises(ValueError, match='p.py: no SparsifyAnnotations in the training '
                       'pipeline: nothing to sweep'):
        ss.prepare(_cfg(plain), 0.5, 'p.py')
    patch = dict(type='CellDetDataset', pipeline=[
        load, dict(type='SparsifyAnnotations', mode='one_per_patch', patch_size=128), pack])
    with pytest.raises(ValueError, match="o.py: SparsifyAnnotations mode 'one_per_patch'"):
        ss.prepare(_cfg(patch), 0.5, 'o.py')
    for pipe in ([load, _sp(1.0), pack],
                 [load, dict(type='mmseg.SparsifyAnnotations', fraction=1.0)],
                 [load, dict(type='RandomChoice', transforms=[[_sp(0.5)], [pack]])]):
        bad = _cfg(test_dataloader=_loader('test.json', pipe))
        with pytest.raises(ValueError, match='t.py: the test pipeline sparsifies its labels'):
            ss.prepare(bad, 0.5, 't.py')
    for key in ('test_dataloader', 'test_evaluator'):
        with pytest.raises(ValueError, match=f'm.py: {key} missing'):
            ss.prepare(_cfg(**{key: None}), 0.5, 'm.py')
    for frac in (0.0, -0.1, 1.0001, 2.0, math.nan):
        with pytest.raises(ValueError, match=r'f.py: fraction must lie in \(0, 1\]'):
            ss.prepare(_cfg(), frac, 'f.py')


# ----------------------------------------------------------------------------- tags, table
def test_frac_tag():
    assert [ss.frac_tag(f) for f in (0.1, 0.3, 0.6, 1.0, 0.125, 0.05)] == [
        '10', '30', '60', '100', '12p5', '5']
    # distinct fractions, distinct folders ('%g' would give 12p3457 twice)
    assert ss.frac_tag(0.1234571) == '12p34571' and ss.frac_tag(0.1234574) == '12p34574'


def test_format_table_missing_cells():
    rows = [dict(name='ce', fraction=1.0, value=0.75),
            dict(name='focal-ece', fraction=0.3, value=0.123456),
            dict(name='ce', fraction=0.1, value=0.5)]
    lines = ss.format_table(rows, 'cell/f1').splitlines()
    assert lines[0] == 'cell/f1 on the complete test labels, by fraction of training annotations'
    # columns: config (width 9), then 10%, 30%, 100% (width 6), joined by two spaces
    assert lines[1:] == ['config     10%     30%     100%  ',
                         'ce         0.5000  -       0.7500',
                         'focal-ece  -       0.1235  -     ']


# ----------------------------------------------------------------------------- one child
def test_run_trains_marks_done_reuses_and_retrains(tmp_path, monkeypatch):
    """_run with a stand-in for run_child that writes an mmengine-like scalars.json."""
    child = str(tmp_path / 'c' / 'frac50')
    os.makedirs(child)
    cfg_path = osp.join(child, 'c_frac50.py')
    with open(cfg_path, 'w') as f:
        f.write('a = 1\n')
    calls = []

    def fake_run_child(path, work, env=None):
        calls.append((path, work, env))
        stamp = f'20260101_00000{len(calls)}'
        os.makedirs(osp.join(work, stamp, 'vis_data'))
        recs = [dict(loss=1.0, iter=2, step=2),
                {'cell/f1': 0.1 * len(calls), 'cell/recall': 0.5, 'step': 2, 'time': 0.3}]
        with open(osp.join(work, stamp, 'vis_data', 'scalars.json'), 'w') as f:
            f.write('\n'.join(json.dumps(r) for r in recs) + '\n')

    monkeypatch.setattr(child_runs, 'run_child', fake_run_child)
    job = dict(name='c', config='c.py', fraction=0.5, dir=child, cfg_path=cfg_path)
    row = ss._run(job, 'cell/f1', resume=True, threads=3)
    assert calls == [(cfg_path, child, {'OMP_NUM_THREADS': '3', 'MKL_NUM_THREADS': '3'})]
    assert row['value'] == 0.1 and row['reused'] is False and row['fraction'] == 0.5
    assert row['metrics'] == {'cell/f1': 0.1, 'cell/recall': 0.5}
    with open(osp.join(child, ss.DONE_FILE)) as f:
        done = json.load(f)
    assert done['scalars'] == osp.join(child, '20260101_000001', 'vis_data', 'scalars.json')
    assert done['config_sha256'] == child_runs.sha256_file(cfg_path)

    row = ss._run(job, 'cell/f1', resume=True, threads=1)  # same config: reused
    assert len(calls) == 1 and row['reused'] is True and row['value'] == 0.1
    row = ss._run(job, 'cell/f1', resume=False, threads=1)  # no --resume: retrained
    assert len(calls) == 2 and row['reused'] is False and row['value'] == 0.2

    with open(cfg_path, 'a') as f:  # changed config: retrained
        f.write('b = 2\n')
    assert ss._run(job, 'cell/f1', resume=True, threads=1)['value'] == pytest.approx(0.3)

    def failing(path, work, env=None):
        raise RuntimeError('child failed')

    monkeypatch.setattr(child_runs, 'run_child', failing)
    with open(cfg_path, 'a') as f:
        f.write('c = 3\n')
    with pytest.raises(RuntimeError, match='child failed'):
        ss._run(job, 'cell/f1', resume=True, threads=1)
    # the stale done file is gone: a later --resume does not take the old run as finished
    assert not osp.exists(osp.join(child, ss.DONE_FILE))


def test_merge_joins_sweeps_and_rejects_clashes(tmp_path, capsys):
    def sweep(name, rows, metric='cell/f1'):
        path = tmp_path / f'{name}.json'
        path.write_text(json.dumps(dict(metric=metric, rows=[
            dict(name=n, fraction=f, value=v, metrics={metric: v}) for n, f, v in rows])))
        return str(path)

    a = sweep('a', [('ce', 0.1, 0.2), ('ce', 1.0, 0.8)])
    b = sweep('b', [('pkg', 0.1, 0.5)])
    out = str(tmp_path / 'merged')
    res = ss.main(['--merge', a, b, '--work-dir', out])
    assert [(r['name'], r['fraction'], r['value']) for r in res['rows']] == [
        ('ce', 0.1, 0.2), ('ce', 1.0, 0.8), ('pkg', 0.1, 0.5)]
    with open(osp.join(out, 'sparse_sweep.csv')) as f:
        rows = list(csv.reader(f))
    assert rows[0][:3] == ['name', 'fraction', 'cell/f1'] and len(rows) == 4
    table = [line.split() for line in capsys.readouterr().out.splitlines()[1:4]]
    assert table == [['config', '10%', '100%'], ['ce', '0.2000', '0.8000'],
                     ['pkg', '0.5000', '-']]  # pkg has no 100% run
    with pytest.raises(ValueError, match='also'):
        ss.main(['--merge', a, a, '--work-dir', out])
    with pytest.raises(ValueError, match='differs'):
        ss.main(['--merge', a, sweep('c', [('x', 0.1, 0.1)], metric='cell/recall'),
                 '--work-dir', out])
    with pytest.raises(ValueError, match='not configs'):
        ss.main(['some_config.py', '--merge', a, '--work-dir', out])
