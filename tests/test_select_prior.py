"""tools/analysis_tools/select_prior.py: the pi sweep of Zhao et al. 2021, sect. 3.2."""
import json
import math
import os
import os.path as osp
import sys

import pytest
from mmengine.config import Config

sys.path.insert(0, osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'tools',
                            'analysis_tools'))
import select_prior as sp  # noqa: E402
from projects.common import child_runs  # noqa: E402

from conftest import TINY_DET, run_folders, run_tool, write_config  # noqa: E402

# TINY_DET with PU in both stages (as the configs in configs/pu_detection/*_pu_*.py).
# Two iterations at a constant lr that moves the weights, so that the two priors give
# different detections; val_interval=5 does not divide max_iters=2: mmengine validates at
# the last iteration anyway (the tool relies on that).
TINY_PU = '''
_base_ = './tiny_det.py'
custom_imports = dict(imports=['projects.common', 'projects.pu_detection'],
                      allow_failed_imports=False)
prior = 0.04
model = dict(
    rpn_head=dict(type='PURPNHead',
                  loss_cls=dict(_delete_=True, type='PULoss', prior=prior, use_sigmoid=True)),
    roi_head=dict(bbox_head=dict(
        loss_cls=dict(_delete_=True, type='PULoss', prior=prior, use_sigmoid=False))),
    test_cfg=dict(rpn=dict(max_per_img=20), rcnn=dict(max_per_img=6)))
train_cfg = dict(max_iters=2, val_interval=5)
param_scheduler = []
optim_wrapper = dict(optimizer=dict(lr=0.05))
default_hooks = dict(checkpoint=dict(interval=2, max_keep_ckpts=1))
'''


def _pu_config(tmp_path, data: str) -> str:
    write_config(tmp_path, TINY_DET, data, 'tiny_det.py')
    return write_config(tmp_path, TINY_PU, data, 'tiny_pu.py')


def _last_val_independent(child_dir: str) -> dict:
    """The newest run's last validation line, read without the tool's code."""
    path = osp.join(child_dir, run_folders(child_dir)[-1], 'vis_data', 'scalars.json')
    with open(path) as f:
        recs = [json.loads(line) for line in f if line.strip()]
    return [r for r in recs if 'iter' not in r][-1]


# ----------------------------------------------------------------------------- end to end
def test_select_prior_trains_each_prior_selects_argmax_and_resumes(tmp_path, tiny_synthetic):
    cfg = _pu_config(tmp_path, tiny_synthetic)
    work = str(tmp_path / 'sweep')
    metric = 'cell/recall'
    proc = run_tool(['tools/analysis_tools/select_prior.py', cfg, '--work-dir', work,
                     '--priors', '0.05', '0.02', '--metric', metric,
                     '--cfg-options', 'val_evaluator.score_thr=0.0'])
    out = proc.stdout
    assert '(1/2) prior 0.02: training' in out and '(2/2) prior 0.05: training' in out

    records = {}
    for prior in (0.02, 0.05):
        child = osp.join(work, f'prior_{prior}')
        assert len(run_folders(child)) == 1  # exactly one child run per prior
        assert osp.isfile(osp.join(child, 'iter_2.pth'))
        dumped = Config.fromfile(osp.join(child, f'tiny_pu_prior{prior}.py'))
        assert dumped.model.rpn_head.loss_cls.prior == prior
        assert dumped.model.roi_head.bbox_head.loss_cls.prior == prior
        assert dumped.val_evaluator.score_thr == 0.0  # --cfg-options reached the child
        assert dumped.work_dir == child
        records[prior] = _last_val_independent(child)
        assert records[prior]['step'] == 2  # the final validation, at max_iters

    with open(osp.join(work, 'select_prior.json')) as f:
        res = json.load(f)
    assert res['metric'] == metric and res['config'] == osp.abspath(cfg)
    assert [r['prior'] for r in res['rows']] == [0.02, 0.05]
    for row in res['rows']:
        rec = records[row['prior']]
        assert row['value'] == rec[metric]
        assert row['metrics'] == {k: v for k, v in rec.items()
                                  if k not in ('step', 'data_time', 'time')}
    # argmax, ties to the smaller prior, computed here from the children's own files
    v2, v5 = records[0.02][metric], records[0.05][metric]
    expected = 0.05 if v5 > v2 else 0.02
    assert res['selected_prior'] == expected
    assert f'selected prior: {expected}' in out

    with open(osp.join(work, 'select_prior.csv')) as f:
        lines = f.read().splitlines()
    assert lines[0].split(',')[:5] == ['prior', metric, 'cell/precision', 'cell/f1', 'step']
    body = [line.split(',') for line in lines[1:]]
    assert [float(r[0]) for r in body] == [0.02, 0.05]
    assert [float(r[1]) for r in body] == [v2, v5]
    assert [int(r[5]) for r in body] == [int(expected == 0.02), int(expected == 0.05)]
    with open(osp.join(work, 'select_prior.png'), 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'

    # --resume: nothing is retrained (no new run folder), same result
    os.remove(osp.join(work, 'select_prior.json'))
    proc = run_tool(['tools/analysis_tools/select_prior.py', cfg, '--work-dir', work,
                     '--priors', '0.02', '0.05', '--metric', metric, '--resume',
                     '--cfg-options', 'val_evaluator.score_thr=0.0'])
    assert proc.stdout.count('finished before, not retrained') == 2
    for prior in (0.02, 0.05):
        assert len(run_folders(osp.join(work, f'prior_{prior}'))) == 1
    with open(osp.join(work, 'select_prior.json')) as f:
        again = json.load(f)
    assert again['rows'] == res['rows'] and again['selected_prior'] == expected


def test_config_without_pu_loss_and_bad_priors_error(tmp_path, tiny_synthetic):
    plain = write_config(tmp_path, TINY_DET, tiny_synthetic, 'tiny_det.py')
    work = str(tmp_path / 'w')
    with pytest.raises(ValueError, match=r'tiny_det\.py: no PULoss in model: nothing to select'):
        sp.main([plain, '--work-dir', work, '--metric', 'cell/recall'])
    assert not osp.exists(work)  # failed before creating anything
    pu = write_config(tmp_path, TINY_PU, tiny_synthetic, 'tiny_pu.py')
    for priors, msg in ((['0.02', '1.0'], r'--priors: 1\.0 is not a class prior'),
                        (['0', '0.5'], r'--priors: 0\.0 is not'),
                        (['nan'], r'--priors: nan is not'),
                        (['0.03', '0.05', '0.03'], r'--priors: 0\.03 is given more than once')):
        with pytest.raises(ValueError, match=msg):
            sp.main([pu, '--work-dir', work, '--priors', *priors])
    with pytest.raises(FileNotFoundError, match='nope.py: config file not found'):
        sp.main([str(tmp_path / 'nope.py'), '--work-dir', work])


def test_failed_child_raises_with_its_stderr_tail(tmp_path):
    # a stand-in for tools/train.py (importing mmdet takes seconds): 50 stderr lines, exit 3
    child = str(tmp_path / 'prior_0.04')
    os.makedirs(child)
    fake = tmp_path / 'fake_train.py'
    fake.write_text('import sys\nprint("out")\n'
                    'for i in range(50):\n    print(f"err line {i}", file=sys.stderr)\n'
                    'print(sys.argv[1:], file=sys.stderr)\nsys.exit(3)\n')
    with pytest.raises(RuntimeError) as info:
        child_runs.run_child(osp.join(child, 'c.py'), child, train_py=str(fake))
    msg = str(info.value)
    assert 'exited with 3' in msg and 'child_stderr.log' in msg
    # the tail: the last 40 of the 51 stderr lines, with the arguments the child got
    assert 'err line 11\n' in msg and 'err line 10\n' not in msg
    assert repr([osp.join(child, 'c.py'), '--work-dir', child]) in msg
    with open(osp.join(child, 'child_stdout.log')) as f:
        assert f.read() == 'out\n'


# ----------------------------------------------------------------------------- pure helpers
def test_find_pu_losses_walks_dicts_lists_and_scopes():
    a = dict(type='PULoss', prior=0.1)
    b = dict(type='mmdet.PULoss', prior=0.2)
    c = dict(type='PULoss', prior=[0.1, 0.2])
    model = dict(type='X', heads=[dict(type='H', loss=a), dict(type='CrossEntropyLoss')],
                 roi=dict(stages=(dict(loss_cls=b), dict(loss_cls=dict(type='NotPULoss')))),
                 deep=dict(x=[[c]]))
    found = sp.find_pu_losses(model)
    assert [p for p, _ in found] == ['model.heads[0].loss', 'model.roi.stages[0].loss_cls',
                                     'model.deep.x[0][0]']
    assert all(d is e for (_, d), e in zip(found, (a, b, c)))  # the dicts themselves
    assert sp.find_pu_losses(dict(type='PULossy')) == []


def test_set_prior_sets_every_pu_loss_and_names_config_without_one():
    cfg = Config(dict(prior=0.04, model=dict(
        rpn_head=dict(loss_cls=dict(type='PULoss', prior=0.04, use_sigmoid=True)),
        roi_head=dict(bbox_head=[dict(loss_cls=dict(type='PULoss', prior=[0.01, 0.02]))]))))
    paths = sp.set_prior(cfg, 0.06, 'x.py')
    assert paths == ['model.rpn_head.loss_cls', 'model.roi_head.bbox_head[0].loss_cls']
    assert cfg.model.rpn_head.loss_cls.prior == 0.06
    assert cfg.model.roi_head.bbox_head[0].loss_cls.prior == 0.06
    assert cfg.prior == 0.06
    with pytest.raises(ValueError, match='y.py: no PULoss in model'):
        sp.set_prior(Config(dict(model=dict(loss=dict(type='CrossEntropyLoss')))), 0.1, 'y.py')


def test_check_priors_and_tags():
    assert sp.check_priors([0.05, 0.02, 0.04]) == [0.02, 0.04, 0.05]
    for bad in ([], [0.0], [1.0], [-0.1], [math.nan], [0.02, 0.02]):
        with pytest.raises(ValueError, match='--priors'):
            sp.check_priors(bad)
    assert sp.prior_tag(0.02) == '0.02' and sp.prior_tag(0.05) == '0.05'
    # distinct floats get distinct folder names (6 significant digits would merge these)
    assert sp.prior_tag(0.1234571) != sp.prior_tag(0.1234574)


def test_check_final_validation():
    ok = dict(val_dataloader=dict(), val_cfg=dict(type='ValLoop'), val_evaluator=dict(),
              train_cfg=dict(max_iters=2, val_interval=5))
    sp.check_final_validation(Config(ok), 'a.py')  # interval need not divide max_iters
    with pytest.raises(ValueError, match='a.py: val_evaluator missing'):
        sp.check_final_validation(Config(dict(ok, val_evaluator=None)), 'a.py')
    with pytest.raises(ValueError, match=r'val_begin=3 > max_iters=2'):
        sp.check_final_validation(
            Config(dict(ok, train_cfg=dict(max_iters=2, val_begin=3))), 'a.py')
    with pytest.raises(ValueError, match=r'val_begin=4 > max_epochs=3'):
        sp.check_final_validation(
            Config(dict(ok, train_cfg=dict(max_epochs=3, val_begin=4))), 'a.py')


def _write_scalars(work: str, stamp: str, recs: list) -> str:
    folder = osp.join(work, stamp, 'vis_data')
    os.makedirs(folder)
    path = osp.join(folder, 'scalars.json')
    with open(path, 'w') as f:
        f.write('\n'.join(json.dumps(r) for r in recs) + '\n')
    return path


def test_scalars_parsing_newest_run_last_validation(tmp_path):
    work = str(tmp_path / 'w')
    _write_scalars(work, '20260101_000000', [{'cell/recall': 0.9, 'step': 4}])
    newest = _write_scalars(work, '20260102_000000', [
        dict(loss=1.0, iter=2, step=2), {'cell/recall': 0.25, 'cell/f1': 0.3, 'step': 2},
        dict(loss=0.5, iter=4, step=4), {'cell/recall': 0.5, 'cell/f1': 0.4, 'time': 1.0,
                                         'step': 4}])
    os.makedirs(osp.join(work, 'not_a_run'))
    assert child_runs.newest_scalars(work) == newest
    rec = child_runs.last_validation(newest, 'cell/recall')
    assert rec['cell/recall'] == 0.5 and rec['step'] == 4
    row = sp.make_row(0.03, rec, 'cell/recall', newest, work)
    assert row['value'] == 0.5 and row['metrics'] == {'cell/recall': 0.5, 'cell/f1': 0.4}
    with pytest.raises(ValueError, match=r"metric 'cell/avg_recall' not in the last validation "
                       r"record; keys found: \['cell/f1', 'cell/recall'\]"):
        child_runs.last_validation(newest, 'cell/avg_recall')

    only_train = _write_scalars(str(tmp_path / 't'), '20260101_000000', [dict(loss=1, iter=1)])
    with pytest.raises(ValueError, match='scalars.json: no validation record'):
        child_runs.last_validation(only_train, 'cell/recall')
    with open(only_train, 'a') as f:
        f.write('{broken\n')
    with pytest.raises(ValueError, match='scalars.json: line 2 is not JSON'):
        child_runs.last_validation(only_train, 'cell/recall')
    empty = str(tmp_path / 'empty')
    os.makedirs(osp.join(empty, '20260101_000000'))
    with pytest.raises(FileNotFoundError, match='20260101_000000/vis_data/scalars.json: not '):
        child_runs.newest_scalars(empty)
    with pytest.raises(FileNotFoundError, match='no <timestamp> run folder'):
        child_runs.newest_scalars(str(tmp_path / 'absent'))


def test_select_best_argmax_ties_to_smaller_prior():
    rows = [dict(prior=0.04, value=0.5), dict(prior=0.02, value=0.3),
            dict(prior=0.03, value=0.5), dict(prior=0.05, value=0.1)]
    assert sp.select_best(rows) == 2  # 0.03 and 0.04 tie at 0.5: the smaller, 0.03
    assert sp.select_best([dict(prior=0.06, value=0.2), dict(prior=0.02, value=0.7)]) == 1
    with pytest.raises(ValueError, match=r'prior 0.02: metric value nan'):
        sp.select_best([dict(prior=0.02, value=math.nan)])


def test_finished_result_needs_same_config_and_done_run(tmp_path, capsys):
    child = str(tmp_path / 'prior_0.02')
    cfg_path = osp.join(child, 'c_prior0.02.py')
    scalars = _write_scalars(child, '20260101_000000', [{'cell/recall': 0.7, 'step': 2}])
    with open(cfg_path, 'w') as f:
        f.write('a = 1\n')
    assert child_runs.finished_result(child, cfg_path, 'cell/recall', sp.DONE_FILE) is None  # no done file
    done = dict(config_sha256=child_runs.sha256_file(cfg_path), scalars=osp.abspath(scalars), returncode=0)
    with open(osp.join(child, sp.DONE_FILE), 'w') as f:
        json.dump(done, f)
    assert child_runs.finished_result(child, cfg_path, 'cell/recall', sp.DONE_FILE)['cell/recall'] == 0.7
    # a later (unfinished) run folder: its result is not the finished one
    _write_scalars(child, '20260102_000000', [{'cell/recall': 0.1, 'step': 1}])
    assert child_runs.finished_result(child, cfg_path, 'cell/recall', sp.DONE_FILE) is None
    # a changed config is retrained
    with open(cfg_path, 'w') as f:
        f.write('a = 2\n')
    assert child_runs.finished_result(child, cfg_path, 'cell/recall', sp.DONE_FILE) is None
    assert 'differs from the finished run: retraining' in capsys.readouterr().out


def test_format_table_marks_selected_row_and_extra_columns():
    rows = [dict(prior=0.02, value=0.25, step=2,
                 metrics={'cell/avg_recall': 0.25, 'cell/recall': 0.5, 'cell/f1': 0.125}),
            dict(prior=0.03, value=0.75, step=2,
                 metrics={'cell/avg_recall': 0.75, 'cell/recall': 1.0, 'cell/f1': 0.5})]
    # precision is absent from the records: only recall and f1 are added
    assert sp.extra_keys('cell/avg_recall', rows) == ['cell/recall', 'cell/f1']
    lines = sp.format_table(rows, 'cell/avg_recall', 1).splitlines()
    assert lines[0].split(' | ') == ['prior', 'cell/avg_recall', 'cell/recall', 'cell/f1',
                                     'step']
    assert lines[2].split() == ['0.02', '|', '0.2500', '|', '0.5000', '|', '0.1250', '|', '2']
    assert lines[3].endswith('<- selected') and '0.7500' in lines[3]
