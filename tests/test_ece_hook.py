"""ExclusivityScheduleHook: the training position reaches every ECE loss, in iteration and
epoch loops, and a resumed run sees the same thresholds as an uninterrupted one."""
from typing import Optional, Tuple

import pytest
import torch
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch.utils.data import Dataset

from projects.exclusive_ce.ece_loss import ExclusiveCrossEntropyLoss
from projects.exclusive_ce.hooks import ExclusivityScheduleHook, ece_losses


class _Points(Dataset):
    """10 random 2-d points with labels alternating 0 (unannotated) / 1: every batch of 5
    holds both."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(10, 2, generator=g)
        self.y = torch.arange(10) % 2

    def __len__(self) -> int:
        return 10

    def __getitem__(self, i: int) -> dict:
        return dict(inputs=self.x[i], label=self.y[i])


class _Toy(BaseModel):
    """A linear classifier with two ECE losses (two heads share the schedule): by default
    'linear' and 'package_sigmoid' schedules; ``losses`` gives other ones."""

    def __init__(self, with_ece: bool = True, losses: Optional[Tuple[dict, dict]] = None
                 ) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(2, 2)
        if not with_ece:
            self.loss_a, self.loss_b = torch.nn.CrossEntropyLoss(), torch.nn.CrossEntropyLoss()
            return
        losses = losses or (dict(schedule='linear'), dict(schedule='package_sigmoid'))
        self.loss_a, self.loss_b = (ExclusiveCrossEntropyLoss(background_label=0, **kw)
                                    for kw in losses)

    def forward(self, inputs, label=None, mode='tensor'):
        inputs = torch.stack(inputs) if isinstance(inputs, list) else inputs
        logits = self.fc(inputs)
        if mode == 'loss':
            label = torch.stack(label) if isinstance(label, list) else label
            return dict(loss_a=self.loss_a(logits, label), loss_b=self.loss_b(logits, label))
        return logits


class _Record(Hook):
    """Reads the losses' position after the schedule hook pushed it (priority LOW)."""
    priority = 'LOW'

    def __init__(self) -> None:
        self.seen = []

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        a, b = ece_losses(runner.model)
        assert (a.epoch, a.progress) == (b.epoch, b.progress)
        self.seen.append((runner.iter, a.epoch, a.progress, a.current_threshold()))


def _runner(work_dir, loop: dict, record: _Record, model=None, resume=False,
            load_from=None) -> Runner:
    return Runner(
        model=model or _Toy(), work_dir=str(work_dir),
        train_dataloader=dict(dataset=_Points(), batch_size=5,
                              sampler=dict(type='DefaultSampler', shuffle=False),
                              collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
        train_cfg=loop, custom_hooks=[dict(type='ExclusivityScheduleHook'), record],
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=2,
                                           by_epoch=loop.get('by_epoch', True))),
        resume=resume, load_from=load_from, default_scope='mmdet',
        env_cfg=dict(dist_cfg=dict(backend='gloo')), log_level='WARNING')


def test_iteration_loop_pushes_fractional_epochs(tmp_path):
    # 2 batches per epoch (10 points, batch 5), 6 iterations: iteration i is at epoch i/2
    # and progress i/6; the linear threshold is 0.75 * i / 6
    rec = _Record()
    _runner(tmp_path, dict(by_epoch=False, max_iters=6), rec).train()
    assert [s[0] for s in rec.seen] == list(range(6))
    for it, epoch, progress, rho in rec.seen:
        assert epoch == pytest.approx(it / 2)
        assert progress == pytest.approx(it / 6)
        assert rho == pytest.approx(0.75 * it / 6)


def test_epoch_loop_pushes_integer_epochs(tmp_path):
    rec = _Record()
    _runner(tmp_path, dict(by_epoch=True, max_epochs=3), rec).train()
    assert [s[1] for s in rec.seen] == [0, 0, 1, 1, 2, 2]
    assert [s[2] for s in rec.seen] == pytest.approx([i / 6 for i in range(6)])


def test_resume_sees_the_same_schedule(tmp_path):
    full = _Record()
    _runner(tmp_path / 'full', dict(by_epoch=False, max_iters=6), full).train()
    # stop after 4 iterations (checkpoint iter_4), then resume to 6 in a new runner
    part = _Record()
    _runner(tmp_path / 'part', dict(by_epoch=False, max_iters=4), part).train()
    resumed = _Record()
    _runner(tmp_path / 'part', dict(by_epoch=False, max_iters=6), resumed,
            resume=True).train()
    assert [s[0] for s in resumed.seen] == [4, 5]
    assert resumed.seen == full.seen[4:]  # same arithmetic on the same runner.iter


class _Logged(Hook):
    """Reads what the schedule hook logged after each iteration (priority LOW: after it)."""
    priority = 'LOW'

    def __init__(self) -> None:
        self.rows = []

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        hub = runner.message_hub
        self.rows.append(tuple(hub.get_scalar(f'train/ece_{key}').current()
                               for key in ('threshold', 'warmup', 'kept')))


def test_hook_logs_threshold_and_kept_share(tmp_path):
    rec = _Record()
    runner = _runner(tmp_path, dict(by_epoch=False, max_iters=3), rec)
    runner.train()
    hub = runner.message_hub
    # after the last iteration (iter 2 of 3): linear threshold 0.75 * 2 / 3
    assert hub.get_scalar('train/ece_threshold').current() == pytest.approx(0.5)


def test_hook_logs_the_warmup_and_the_mean_kept_share(tmp_path):
    # two fixed thresholds the probabilities can not cross: 2.0 keeps every unannotated
    # term, 0.0 none (p < 0 never holds); both with warmup 0.5 of 4 iterations. Iterations
    # 0, 1 (progress 0, 0.25) are warm-up: both keep all, mean 1.0; iterations 2, 3
    # (progress 0.5, 0.75): (1 + 0) / 2 = 0.5. The logged threshold is the first loss's.
    model = _Toy(losses=(dict(schedule='fixed', threshold=2.0, warmup=0.5),
                         dict(schedule='fixed', threshold=0.0, warmup=0.5)))
    logged = _Logged()
    runner = _runner(tmp_path, dict(by_epoch=False, max_iters=4), _Record(), model=model)
    runner.register_hook(logged)
    runner.train()
    assert logged.rows == [(2.0, 1.0, 1.0), (2.0, 1.0, 1.0), (2.0, 0.0, 0.5), (2.0, 0.0, 0.5)]


def test_model_without_ece_is_an_error(tmp_path):
    runner = _runner(tmp_path, dict(by_epoch=False, max_iters=1), _Record(),
                     model=_Toy(with_ece=False))
    with pytest.raises(ValueError, match='no ExclusiveCrossEntropyLoss'):
        runner.train()


def test_hook_is_registered():
    from mmengine.registry import HOOKS
    assert HOOKS.get('ExclusivityScheduleHook') is ExclusivityScheduleHook
