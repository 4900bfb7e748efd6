"""tools/analysis_tools: training curves from mmengine's scalars.json."""
import json
import os.path as osp
import sys

import pytest

sys.path.insert(0, osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'tools',
                            'analysis_tools'))
import plot_training  # noqa: E402

from conftest import run_tool  # noqa: E402


def _write_run(tmp_path) -> str:
    run = tmp_path / 'work' / '20260101_000000' / 'vis_data'
    run.mkdir(parents=True)
    lines = [dict(lr=0.01, loss=2.0, loss_cls=1.5, iter=10, step=10),
             dict(lr=0.01, loss=1.0, loss_cls=0.7, iter=20, step=20),
             {'cell/f1': 0.5, 'data_time': 0.1, 'step': 20}]
    (run / 'scalars.json').write_text('\n'.join(json.dumps(x) for x in lines) + '\n')
    return str(tmp_path / 'work')


def test_read_scalars_splits_training_and_validation(tmp_path):
    work = _write_run(tmp_path)
    train, val = plot_training.read_scalars(plot_training.find_scalars(work))
    assert train['loss'] == [(10, 2.0), (20, 1.0)]
    assert train['loss_cls'] == [(10, 1.5), (20, 0.7)]
    assert 'iter' not in train and 'step' not in train
    assert val == [{'cell/f1': 0.5, 'data_time': 0.1, 'step': 20}]


def test_plot_training_writes_png_and_names_bad_input(tmp_path):
    work = _write_run(tmp_path)
    out = str(tmp_path / 'curves.png')
    run_tool(['tools/analysis_tools/plot_training.py', work, '--out', out])
    with open(out, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    with pytest.raises(FileNotFoundError, match='empty_dir: no <timestamp>/vis_data'):
        (tmp_path / 'empty_dir').mkdir()
        plot_training.find_scalars(str(tmp_path / 'empty_dir'))
    proc = run_tool(['tools/analysis_tools/plot_training.py', work, '--keys', 'loss_nope',
                     '--out', out], check=False)
    assert proc.returncode != 0 and "no training series ['loss_nope']" in proc.stderr
