"""EMAPseudoLabelHook: when it refreshes (iterations, epochs in both loops, never after the
last step) and what the store holds after each refresh (eq. (5), by hand), with a stub
runner and nets whose probabilities are set by hand."""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.logging import MessageHub
from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop
from mmseg.models import SegDataPreProcessor
from PIL import Image

from projects.point_supervision import CoTrainingSegmentor, EMAPseudoLabelHook, ema_weights

TINY = dict(
    backbone=dict(type='ResUNet', in_channels=1,
                  encoder=dict(type='ResNet', depth=18, base_channels=8, stem_channels=8,
                               out_indices=(0, 1, 2, 3)),
                  decoder_channels=(32, 16, 16, 8, 8), stem_channels=(8, 8)))
GREY = [dict(type='LoadImageFromFile', color_type='grayscale'),
        dict(type='PackSegInputs', meta_keys=('img_path', 'ori_shape', 'img_shape'))]


class _Logit(nn.Module):
    """A 'network' whose nucleus probability is sigmoid(logit) at every pixel."""

    def __init__(self) -> None:
        super().__init__()
        self.logit = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x * 0, x * 0 + self.logit], dim=1)


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


class _Loader(list):
    """A 'data loader': only its length (iterations per epoch) and its data set matter."""


class _Dataset:

    def __init__(self, paths):
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def get_data_info(self, i: int) -> dict:
        return dict(img_path=self.paths[i])


def _runner(loop: type, model=None, paths=(), per_epoch: int = 4, max_iters: int = 0,
            max_epochs: int = 0) -> SimpleNamespace:
    loader = _Loader(range(per_epoch))
    loader.dataset = _Dataset(list(paths))
    return SimpleNamespace(model=model, train_dataloader=loader, train_loop=loop.__new__(loop),
                           iter=0, epoch=0, max_iters=max_iters, max_epochs=max_epochs,
                           message_hub=MessageHub.get_current_instance())


def _drive(hook: EMAPseudoLabelHook, runner, epochs: int, per_epoch: int, before_step=None):
    """Call the hook as a runner would; return the iterations (1-based) it refreshed after."""
    done = []
    real = hook.refresh

    def refresh(r):
        done.append(r.iter + 1)
        real(r)

    hook.refresh = refresh
    for epoch in range(epochs):
        runner.epoch = epoch
        for i in range(per_epoch):
            runner.iter = epoch * per_epoch + i
            if before_step is not None:
                before_step(runner)
            hook.after_train_iter(runner, i)
        hook.after_train_epoch(runner)
    return done


@pytest.mark.parametrize('interval, max_iters, expected', [
    # the CPU configs: every 20 of 400 iterations -> 20, 40, ..., 380; none after 400
    (20, 400, list(range(20, 400, 20))),
    # the old setting: 100, 200, 300 (the 4th, after iteration 400, is not wasted any more)
    (100, 400, [100, 200, 300]),
    (7, 20, [7, 14]),
])
def test_iteration_schedule_skips_the_last_step(interval, max_iters, expected):
    hook = EMAPseudoLabelHook(interval=interval, by_epoch=False)
    hook.refresh = lambda r: None
    runner = _runner(IterBasedTrainLoop, per_epoch=max_iters, max_iters=max_iters)
    assert _drive(hook, runner, epochs=1, per_epoch=max_iters) == expected


def test_by_epoch_schedule_in_both_loops():
    # the paper's gamma = 3 epochs, 4 iterations per epoch, 12 epochs (48 iterations):
    # refreshes after epochs 3, 6, 9 = iterations 12, 24, 36; none after epoch 12
    for loop in (EpochBasedTrainLoop, IterBasedTrainLoop):
        hook = EMAPseudoLabelHook(interval=3, by_epoch=True)
        hook.refresh = lambda r: None
        runner = _runner(loop, per_epoch=4, max_iters=48, max_epochs=12)
        assert _drive(hook, runner, epochs=12, per_epoch=4) == [12, 24, 36], loop.__name__
    # by_epoch=False in an epoch loop counts iterations: every 5 -> 5, 10, ..., 45
    hook = EMAPseudoLabelHook(interval=5, by_epoch=False)
    hook.refresh = lambda r: None
    runner = _runner(EpochBasedTrainLoop, per_epoch=4, max_iters=48, max_epochs=12)
    assert _drive(hook, runner, epochs=12, per_epoch=4) == list(range(5, 48, 5))


def _model() -> CoTrainingSegmentor:
    model = CoTrainingSegmentor(
        **TINY, data_preprocessor=SegDataPreProcessor(mean=[127.5], std=[127.5]),
        test_cfg=dict(mode='slide', crop_size=32, overlap=8))
    model.nets[0] = _Logit()
    model.nets[1] = _Logit()
    return model


@pytest.mark.parametrize('loop', [EpochBasedTrainLoop, IterBasedTrainLoop])
def test_paper_epoch_setting_refreshes_with_exact_ema(tmp_path, loop):
    # Two 40x48 grey images, one per half; every 3 epochs of 4 iterations, momentum 0.5,
    # 12 epochs: refreshes after epochs 3, 6, 9 (iterations 12, 24, 36). The nets change
    # their (uniform) probability every epoch; refreshes at other epochs would store
    # 0.9 or 0.1 and show in the values.
    # The image of half h is predicted by net 1 - h:
    #   half 0 <- net 1: y = 0.5, 0.75, 0.25 -> p = 0.5, 0.625, 0.4375
    #   half 1 <- net 0: y = 0.25, 0.25, 0.875 -> p = 0.25, 0.25, 0.5625
    # = ema_weights(3, 0.5) = [0.25, 0.25, 0.5] applied to the three predictions;
    # ema_lag (mean |y - p before|): refresh 2: (0.25 + 0) / 2, refresh 3: (0.375 + 0.625) / 2
    paths = []
    for i in range(2):
        path = str(tmp_path / f'im{i}.png')
        Image.fromarray(np.full((40, 48), 60 + 100 * i, np.uint8)).save(path)
        paths.append(path)
    model = _model()
    hook = EMAPseudoLabelHook(pipeline=GREY, interval=3, by_epoch=True, momentum=0.5,
                              mode='whole')
    runner = _runner(loop, model, paths, per_epoch=4, max_iters=48, max_epochs=12)
    hook.before_train(runner)
    assert sorted(model.halves.values()) == [0, 1]
    by_epoch = {2: (0.25, 0.5), 5: (0.25, 0.75), 8: (0.875, 0.25)}  # epoch index: nets 0, 1
    lags = []

    def set_nets(r):
        p0, p1 = by_epoch.get(r.epoch, (0.9, 0.1))
        model.nets[0].logit, model.nets[1].logit = _logit(p0), _logit(p1)
        if r.iter % 4 == 0 and hook.refreshes >= 2:
            lags.append(r.message_hub.get_scalar('train/ema_lag').current())

    assert _drive(hook, runner, epochs=12, per_epoch=4, before_step=set_nets) == [12, 24, 36]
    assert hook.refreshes == 3
    expected = {0: 0.4375, 1: 0.5625}
    for path in paths:
        stored = hook.store[path]
        assert stored.dtype == np.float16 and stored.shape == (40, 48)
        assert np.unique(stored).tolist() == [expected[model.halves[path]]]
    ys = {0: [0.5, 0.75, 0.25], 1: [0.25, 0.25, 0.875]}
    for h in (0, 1):
        assert float(ema_weights(3, 0.5) @ np.array(ys[h])) == pytest.approx(expected[h])
    assert sorted(set(np.round(lags, 6))) == [0.125, 0.5]
    assert model.pseudo_store is hook.store
    assert runner.message_hub.get_scalar('train/ema_refreshes').current() == 3


def test_store_survives_a_checkpoint_round_trip():
    hook = EMAPseudoLabelHook(momentum=0.5)
    hook.store['a.png'] = np.full((2, 3), 0.4375, np.float16)
    hook.refreshes = 3
    ckpt = {}
    hook.before_save_checkpoint(None, ckpt)
    other = EMAPseudoLabelHook(momentum=0.5)
    other.after_load_checkpoint(None, ckpt)
    assert other.refreshes == 3
    assert other.store['a.png'].dtype == np.float16
    assert other.store['a.png'].tolist() == [[0.4375] * 3] * 2
    with pytest.raises(ValueError, match='interval must be an int >= 1'):
        EMAPseudoLabelHook(interval=0)
