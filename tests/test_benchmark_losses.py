"""tools/analysis_tools/benchmark_losses.py: stock / PU / BDE step-time benchmark.

No timing target is asserted (DESIGN.md sect. 5: benchmarks are scripts, not timed tests):
the tests check the bookkeeping (medians, ratios, flags), that the three models really run
their own heads and losses from the same weights, and that lr = 0 keeps every repetition
identical.
"""
import json
import os.path as osp
import sys

import pytest
import torch

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(REPO, 'tools', 'analysis_tools'))
import benchmark_losses  # noqa: E402
from conftest import median_by_sorting  # noqa: E402

# tests/conftest.py TINY_DET's network, as --cfg-options
TINY = ['model.backbone.base_channels=8', 'model.neck.in_channels=[8,16,32,64]',
        'model.neck.out_channels=16', 'model.rpn_head.in_channels=16',
        'model.rpn_head.feat_channels=16', 'model.roi_head.bbox_roi_extractor.out_channels=16',
        'model.roi_head.bbox_head.in_channels=16',
        'model.roi_head.bbox_head.fc_out_channels=32',
        'model.train_cfg.rpn.sampler.num=64', 'model.train_cfg.rcnn.sampler.num=64']
CONFIG = osp.join(REPO, benchmark_losses.DEFAULT_CONFIG)


@pytest.fixture(scope='module')
def result(tmp_path_factory):
    out = str(tmp_path_factory.mktemp('bench') / 'bench.json')
    rc = benchmark_losses.main(['--config', CONFIG, '--size', '64', '--iters', '3',
                                '--warmup', '1', '--no-progress', '--out', out,
                                '--cfg-options', *TINY])
    assert rc == 0
    with open(out) as f:
        return json.load(f)


def test_json_times_medians_and_ratios(result):
    assert set(result['models']) == {'stock', 'pu', 'bde'}
    medians = {}
    for name, m in result['models'].items():
        assert len(m['times_s']) == 3 and all(t > 0 for t in m['times_s'])
        medians[name] = median_by_sorting(m['times_s'])
        assert m['median_s'] == pytest.approx(medians[name], rel=1e-12)
        assert m['mean_s'] == pytest.approx(sum(m['times_s']) / 3, rel=1e-12)
    assert set(result['ratios']) == {'pu', 'bde'}
    for name, target in (('pu', 1.03), ('bde', 1.15)):
        r = result['ratios'][name]
        assert r['ratio'] == pytest.approx(medians[name] / medians['stock'], rel=1e-12)
        assert r['target'] == target
        assert r['passed'] == (r['ratio'] <= target)


def test_each_model_runs_its_own_heads_and_losses(result):
    m = result['models']
    assert (m['stock']['rpn_head'], m['stock']['rpn_loss_cls'], m['stock']['roi_head'],
            m['stock']['roi_loss_cls']) == ('RPNHead', 'CrossEntropyLoss', 'StandardRoIHead',
                                            'CrossEntropyLoss')
    assert (m['pu']['rpn_head'], m['pu']['rpn_loss_cls'], m['pu']['roi_head'],
            m['pu']['roi_loss_cls']) == ('PURPNHead', 'PULoss', 'StandardRoIHead', 'PULoss')
    assert (m['bde']['rpn_head'], m['bde']['rpn_loss_cls'], m['bde']['roi_head'],
            m['bde']['roi_loss_cls']) == ('BDERPNHead', 'CrossEntropyLoss', 'BDERoIHead',
                                          'CrossEntropyLoss')
    # BDE heads log their mean weights; the others do not
    assert {'rpn_bde_w', 'bde_w'} <= set(m['bde']['log_keys'])
    assert not {'rpn_bde_w', 'bde_w'} & set(m['stock']['log_keys'] + m['pu']['log_keys'])
    # lr = 0 and the same RNG seed before every step: each model repeats the same step
    for name in m:
        assert m[name]['losses'] == pytest.approx([m[name]['losses'][0]] * 3, rel=1e-6)
    # same weights and samples, different losses -> different totals
    stock = m['stock']['losses'][0]
    assert m['pu']['losses'][0] != pytest.approx(stock, rel=1e-4)
    assert m['bde']['losses'][0] != pytest.approx(stock, rel=1e-4)


def test_models_share_initial_weights_and_loss_dicts_are_replaced():
    from projects.common.runner_utils import load_config
    cfg = load_config(CONFIG, benchmark_losses.parse_args(['--cfg-options', *TINY]).cfg_options)
    cfgs = benchmark_losses.model_configs(cfg.model.to_dict(), 0.3, 0.5)
    # whole replacement: no key of the stock CrossEntropyLoss dict survives
    assert cfgs['pu']['rpn_head']['loss_cls'] == dict(type='PULoss', prior=0.3,
                                                      use_sigmoid=True)
    assert cfgs['pu']['roi_head']['bbox_head']['loss_cls'] == dict(type='PULoss', prior=0.5,
                                                                   use_sigmoid=False)
    assert cfgs['stock']['rpn_head']['loss_cls']['type'] == 'CrossEntropyLoss'
    assert cfg.model.rpn_head.type == 'RPNHead'  # the input is not modified
    models = benchmark_losses.build_models(cfg, 0.3, 0.5)
    ref = models['stock'].state_dict()
    for name in ('pu', 'bde'):
        state = models[name].state_dict()
        assert list(state) == list(ref)
        assert all(torch.equal(state[k], ref[k]) for k in ref)


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match='--iters must be an integer >= 1, got 0'):
        benchmark_losses.main(['--config', CONFIG, '--iters', '0', '--no-progress'])
    missing = str(tmp_path / 'nope.py')
    with pytest.raises(FileNotFoundError, match='nope.py: config file not found'):
        benchmark_losses.main(['--config', missing])
