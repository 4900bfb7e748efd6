"""tools/analysis_tools/benchmark_ece.py: stock CE / exclusive CE step-time benchmark.

No timing target is asserted (DESIGN.md sect. 5: benchmarks are scripts, not timed tests):
the tests check the bookkeeping (medians, ratios, flags), that the models really run their
own losses from the same weights, that lr = 0 keeps the weights, and that the exclusive
loss of the benchmarked model equals a by-hand eq. (7) on the logits the head produced
(and the stock loss when the threshold is 1).
"""
import json
import math
import os.path as osp
import sys
from contextlib import contextmanager

import pytest
import torch
import torch.nn.functional as F
from mmengine.registry import DefaultScope

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(REPO, 'tools', 'analysis_tools'))
import benchmark_ece  # noqa: E402
from benchmark_losses import make_optim_wrapper, train_step  # noqa: E402
from projects.common.runner_utils import config_scope  # noqa: E402
from conftest import median_by_sorting  # noqa: E402

# U-Net at base width 8: decoder output of stage 4 (decode head, in_index 4) has 8
# channels, of stage 3 (auxiliary head, in_index 3) 16.
TINY_SEG = ['model.backbone.base_channels=8', 'model.decode_head.in_channels=8',
            'model.decode_head.channels=8', 'model.auxiliary_head.in_channels=16',
            'model.auxiliary_head.channels=8']
# ResNet-18 at base width 8: stages give 8, 16, 32, 64 channels.
TINY_DET = ['model.backbone.base_channels=8', 'model.neck.in_channels=[8,16,32,64]',
            'model.neck.out_channels=16', 'model.bbox_head.in_channels=16',
            'model.bbox_head.feat_channels=16']
SEG_CONFIG = osp.join(REPO, benchmark_ece.SEG_CONFIG)
DET_CONFIG = osp.join(REPO, benchmark_ece.DET_CONFIG)
TINY_ARGS = ['--seg-config', SEG_CONFIG, '--det-config', DET_CONFIG, '--size', '64',
             '--seg-cfg-options', *TINY_SEG, '--det-cfg-options', *TINY_DET]


@pytest.fixture(scope='module')
def result(tmp_path_factory):
    out = str(tmp_path_factory.mktemp('bench') / 'bench.json')
    rc = benchmark_ece.main([*TINY_ARGS, '--iters', '3', '--warmup', '1', '--focal',
                             '--no-progress', '--out', out])
    assert rc == 0
    with open(out) as f:
        return json.load(f)


def _configs(task: str):
    args = benchmark_ece.parse_args([*TINY_ARGS, '--tasks', task])
    return benchmark_ece.load_configs(args)[task]


def test_json_times_medians_and_ratios(result):
    assert set(result['tasks']) == {'seg', 'det'}
    assert result['threads'] == 1 and result['size'] == 64
    for task in result['tasks'].values():
        assert set(task['models']) == {'stock', 'ece', 'focal_ece'}
        medians = {}
        for name, m in task['models'].items():
            assert len(m['times_s']) == 3 and all(t > 0 for t in m['times_s'])
            medians[name] = median_by_sorting(m['times_s'])
            assert m['median_s'] == pytest.approx(medians[name], rel=1e-12)
            assert m['mean_s'] == pytest.approx(sum(m['times_s']) / 3, rel=1e-12)
        assert set(task['ratios']) == {'ece', 'focal_ece'}
        for name, r in task['ratios'].items():
            assert r['ratio'] == pytest.approx(medians[name] / medians['stock'], rel=1e-12)
            assert r['target'] == 1.03
            assert r['passed'] == (r['ratio'] <= 1.03)
    table = benchmark_ece.format_table(result)
    assert len(table.splitlines()) == 1 + 2 * 3
    assert 'reference' in table


def test_each_model_runs_its_own_loss(result):
    seg, det = result['tasks']['seg']['models'], result['tasks']['det']['models']
    heads = ('decode_head.loss_decode', 'auxiliary_head.loss_decode')
    assert seg['stock']['losses_cls'] == {h: 'CrossEntropyLoss' for h in heads}
    assert seg['ece']['losses_cls'] == {h: 'ExclusiveCrossEntropyLoss' for h in heads}
    assert seg['focal_ece']['losses_cls'] == {h: 'ExclusiveCrossEntropyLoss+focal'
                                              for h in heads}
    assert det['stock']['losses_cls'] == {'bbox_head.loss_cls': 'CrossEntropyLoss'}
    assert det['ece']['losses_cls'] == {'bbox_head.loss_cls': 'ExclusiveCrossEntropyLoss'}
    # mmseg logs each loss under its loss_name
    assert {'decode.loss_ce', 'aux.loss_ce'} <= set(seg['stock']['log_keys'])
    assert {'decode.loss_ece', 'aux.loss_ece'} <= set(seg['ece']['log_keys'])
    assert not {'decode.loss_ce', 'aux.loss_ce'} & set(seg['ece']['log_keys'])
    # the paper's sigmoid schedule at progress 0.5: sigmoid(0.75 * 0.5)
    thr = 1.0 / (1.0 + math.exp(-0.375))
    for models in (seg, det):
        assert models['stock']['threshold'] is None and models['stock']['kept'] is None
        for name in ('ece', 'focal_ece'):
            assert models[name]['threshold'] == pytest.approx(thr, rel=1e-12)
        # lr = 0 and the same RNG seed before every step: every repetition is the same step
        for m in models.values():
            assert m['losses'] == pytest.approx([m['losses'][0]] * 3, rel=1e-6)


@pytest.mark.parametrize('task', ['seg', 'det'])
def test_kept_share_by_hand(task):
    """``kept`` of the result: the share of unannotated terms eq. (7) keeps, by hand from
    the logits each head passes to its loss (mean of heads). The threshold is the median
    confidence of the first head's unannotated terms at the initial weights, so about half
    are kept (lr = 0: every timed step is that first step)."""
    reference = _reference_seg if task == 'seg' else _reference_det
    with _built(task) as (cfg, models, data):
        calls, handles = _capture(models['stock'])
        train_step(models['stock'], make_optim_wrapper(models['stock'], cfg), data, seed=0)
        for h in handles:
            h.remove()
        args0 = next(iter(calls.values()))[0]
        conf = (1.0 - args0[0].softmax(1)[:, 0])[args0[1] == 0] if task == 'seg' else \
            args0[0].sigmoid()[args0[1] == args0[0].shape[1]]
        thr = float(conf.median())
        shares = []
        for args, kwargs in calls.values():
            _, drop, unannotated = reference(args, kwargs, thr, 1.0)
            shares.append(1.0 - float(drop.sum()) / float(unannotated.sum()))
        assert 0.3 < shares[0] < 0.7
        out = benchmark_ece.run_task(task, cfg, size=64, batch=2, objects=8, iters=2, warmup=0,
                                     seed=0, ece_options=dict(schedule='fixed', threshold=thr),
                                     progress_bar=False)
    assert out['models']['ece']['kept'] == pytest.approx(sum(shares) / len(shares), rel=1e-6)


def test_loss_dicts_are_replaced_whole():
    cfg = _configs('seg')
    cfgs = benchmark_ece.seg_model_configs(cfg.model, focal=True, size=64,
                                           ece_options=dict(threshold=0.3))
    assert cfgs['ece']['decode_head']['loss_decode'] == dict(
        type='ExclusiveCrossEntropyLoss', loss_weight=1.0, background_label=0,
        use_focal=False, threshold=0.3)
    assert cfgs['focal_ece']['auxiliary_head']['loss_decode'] == dict(
        type='ExclusiveCrossEntropyLoss', loss_weight=0.4, background_label=0,
        use_focal=True, threshold=0.3)
    assert cfgs['stock']['auxiliary_head']['loss_decode']['type'] == 'CrossEntropyLoss'
    assert tuple(cfgs['stock']['data_preprocessor']['size']) == (64, 64)
    assert cfg.model.decode_head.loss_decode.type == 'CrossEntropyLoss'  # input unchanged
    dcfg = _configs('det')
    dcfgs = benchmark_ece.det_model_configs(dcfg.model)
    assert set(dcfgs) == {'stock', 'ece'}
    assert dcfgs['ece']['bbox_head']['loss_cls'] == dict(
        type='ExclusiveCrossEntropyLoss', loss_weight=1.0, use_sigmoid=True, use_focal=False)


@contextmanager
def _built(task, ece_options=None):
    """(config, models, batch) of ``task``, inside the config's registry scope."""
    cfg = _configs(task)
    with DefaultScope.overwrite_default_scope(config_scope(cfg)):
        models = benchmark_ece.build_models(cfg, task, size=64, ece_options=ece_options)
        yield cfg, models, benchmark_ece.make_batch(task, models['stock'], 64, 2, 8, seed=0)


@pytest.mark.parametrize('task', ['seg', 'det'])
def test_same_initial_weights_and_lr_zero_keeps_them(task):
    from projects.exclusive_ce.hooks import ece_losses
    with _built(task) as (cfg, models, data):
        ref = models['stock'].state_dict()
        state = models['ece'].state_dict()
        assert list(state) == list(ref)
        assert all(torch.equal(state[k], ref[k]) for k in ref)
        assert [(m.epoch, m.progress) for m in ece_losses(models['ece'])] == \
            [(100.0, 0.5)] * len(ece_losses(models['ece']))
        before = {k: p.detach().clone() for k, p in models['ece'].named_parameters()}
        wrapper = make_optim_wrapper(models['ece'], cfg)
        for _ in range(2):
            train_step(models['ece'], wrapper, data, seed=0)
        # the optimizer really stepped twice on non-zero gradients (Adam's moments)
        assert wrapper.optimizer.__class__.__name__ == 'Adam'
        states = list(wrapper.optimizer.state.values())
        assert states and all(float(s['step']) == 2 for s in states)
        assert any(bool(s['exp_avg'].abs().sum() > 0) for s in states)
        after = dict(models['ece'].named_parameters())
        assert all(torch.equal(before[k], after[k]) for k in before)


def _capture(model):
    """Record (args, kwargs) of every call of the replaced losses, by module path."""
    calls, handles = {}, []
    for path, module in model.named_modules():
        if path.split('.')[-1] in benchmark_ece.LOSS_ATTRS:
            def hook(mod, args, kwargs, path=path):
                calls[path] = ([a.detach().clone() if torch.is_tensor(a) else a for a in args],
                               dict(kwargs))
            handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
    return calls, handles


def _reference_seg(args, kwargs, thr, loss_weight):
    """Eq. (7) by hand for an mmseg head: softmax CE per pixel, background pixels (label 0)
    dropped where 1 - p(bg) >= thr, mean over all pixels (avg_non_ignore=False)."""
    logits, label = args[0], args[1]
    ce = F.cross_entropy(logits, label, ignore_index=kwargs['ignore_index'], reduction='none')
    conf = 1.0 - logits.softmax(1)[:, 0]
    drop = (label == 0) & (conf >= thr)
    return loss_weight * float((ce * ~drop).sum() / label.numel()), drop, label == 0


def _reference_det(args, kwargs, thr, loss_weight):
    """Eq. (7) by hand for sigmoid columns: BCE per (cell, class), background cells
    (label C) dropped per column where sigmoid >= thr, weighted sum / avg_factor."""
    scores, labels, weights = args[0], args[1], args[2]
    c = scores.shape[1]
    target = torch.zeros_like(scores)
    fg = labels < c
    target[fg.nonzero()[:, 0], labels[fg]] = 1.0
    ce = F.binary_cross_entropy_with_logits(scores, target, reduction='none')
    bg = (labels == c)[:, None].expand_as(ce)
    drop = bg & (scores.sigmoid() >= thr)
    loss = (ce * ~drop * weights[:, None]).sum() / kwargs['avg_factor']
    return loss_weight * float(loss), drop, bg


@pytest.mark.parametrize('task', ['seg', 'det'])
def test_ece_loss_equals_eq7_by_hand_and_stock_at_threshold_one(task):
    from projects.exclusive_ce.hooks import ece_losses
    with _built(task, ece_options=dict(schedule='fixed', threshold=1.0)) as \
            (cfg, models, data):
        keys = ({'decode_head.loss_decode': ('decode.loss_ce', 'decode.loss_ece', 1.0),
                 'auxiliary_head.loss_decode': ('aux.loss_ce', 'aux.loss_ece', 0.4)}
                if task == 'seg' else
                {'bbox_head.loss_cls': ('loss_cls', 'loss_cls', 1.0)})
        reference = _reference_seg if task == 'seg' else _reference_det
        stock, ece = models['stock'], models['ece']
        assert [m.current_threshold() for m in ece_losses(ece)] == [1.0] * len(keys)
        stock_calls, handles = _capture(stock)
        ece_calls, handles2 = _capture(ece)
        _, stock_log = train_step(stock, make_optim_wrapper(stock, cfg), data, seed=0)
        wrapper = make_optim_wrapper(ece, cfg)
        # threshold 1: no probability reaches it, nothing is excluded -> stock CE
        _, ece_log = train_step(ece, wrapper, data, seed=0)
        for path, (ce_key, ece_key, weight) in keys.items():
            assert ece_log[ece_key] == pytest.approx(stock_log[ce_key], rel=1e-6)
            value, drop, _ = reference(*stock_calls[path], 1.0, weight)
            assert not drop.any() and value == pytest.approx(stock_log[ce_key], rel=1e-5)
        assert ece_log['loss'] == pytest.approx(stock_log['loss'], rel=1e-6)
        # threshold = median confidence of the first head's unannotated terms: about half
        # of them are dropped
        path0 = next(iter(keys))
        args0 = stock_calls[path0][0]
        conf = (1.0 - args0[0].softmax(1)[:, 0])[args0[1] == 0] if task == 'seg' else \
            args0[0].sigmoid()[args0[1] == args0[0].shape[1]]
        thr = float(conf.median())
        for m in ece_losses(ece):
            m.threshold = thr
        _, ece_log = train_step(ece, wrapper, data, seed=0)
        for path, (ce_key, ece_key, weight) in keys.items():
            for a, b in zip(ece_calls[path][0], stock_calls[path][0]):
                assert torch.equal(a, b)  # the loss sees what the stock loss saw
            value, drop, unannotated = reference(*ece_calls[path], thr, weight)
            assert ece_log[ece_key] == pytest.approx(value, rel=1e-5)
            if path == path0:
                assert 0 < int(drop.sum()) < int(unannotated.sum())
                # the loss reports the share kept: 1 - dropped / unannotated
                kept = ece_losses(ece)[0].last_kept_fraction
                assert float(kept) == pytest.approx(
                    1.0 - float(drop.sum()) / float(unannotated.sum()), rel=1e-6)
                assert ece_log[ece_key] < stock_log[ce_key] * (1 - 1e-3)
        assert ece_log['loss'] < stock_log['loss'] * (1 - 1e-3)
        for h in handles + handles2:
            h.remove()


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match='--iters must be an integer >= 1, got 0'):
        benchmark_ece.main([*TINY_ARGS, '--iters', '0', '--no-progress'])
    with pytest.raises(ValueError, match='--size must be a multiple of 32 .*got 48'):
        benchmark_ece.main([*TINY_ARGS, '--size', '48', '--no-progress'])
    ece_cfg = SEG_CONFIG.replace('_fcn_ce_', '_fcn_ece_')
    with pytest.raises(ValueError, match='decode_head.loss_decode: the stock config must use '
                       "CrossEntropyLoss, got 'ExclusiveCrossEntropyLoss'"):
        benchmark_ece.main(['--seg-config', ece_cfg, '--tasks', 'seg', '--no-progress'])
    missing = str(tmp_path / 'nope.py')
    with pytest.raises(FileNotFoundError, match='nope.py: config file not found'):
        benchmark_ece.main(['--det-config', missing, '--tasks', 'det'])
