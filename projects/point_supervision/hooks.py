"""EMAPseudoLabelHook: the two co-training halves and the EMA pseudo-label store."""
import math
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from mmengine.dataset import Compose
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.registry import DefaultScope
from mmengine.runner import EpochBasedTrainLoop, Runner

from projects.common.layout import track
from projects.common.registry import HOOKS, register
from projects.common.runner_utils import buffers_from_rank0, hook_model
from .cotraining import CoTrainingSegmentor, ema_update

CKPT_KEY = 'ema_pseudo_labels'


def split_halves(paths: Sequence[str], seed: int = 0) -> Dict[str, int]:
    """Two disjoint halves of equal size (the first gets the odd one), seeded.

    The paths are sorted first, so the split depends on the file names and the seed only.
    """
    uniq = sorted(set(paths))
    order = np.random.default_rng(seed).permutation(len(uniq))
    first = math.ceil(len(uniq) / 2)
    return {uniq[j]: int(rank >= first) for rank, j in enumerate(order)}


def _model(runner: Runner) -> CoTrainingSegmentor:
    return hook_model(runner, CoTrainingSegmentor, 'EMAPseudoLabelHook')


@register(HOOKS)
class EMAPseudoLabelHook(Hook):
    """Split the training set in two halves and refresh the EMA pseudo labels (Qu et al.).

    Before training, the images of the training set are split into two disjoint halves of
    equal size (:func:`split_halves`, seeded); net k trains on half k. Every ``interval``
    epochs (the paper's gamma = 3; in iteration-based loops an epoch is
    ``len(train_dataloader)`` iterations), or every ``interval`` iterations with
    ``by_epoch=False``, each net predicts the full images of the *other* half and the
    store is updated by eq. (5) with EMA weight ``momentum`` a. No refresh follows the last
    epoch / iteration (nothing would train on it).

    After n refreshes the store is ``sum_j w_j y_j`` over the predictions y_1..y_n with
    ``w_n = a``, ``w_{n-k} = a (1 - a)^k`` and ``w_1 = (1 - a)^(n-1)`` (the first refresh
    stores y_1 itself; :func:`~.cotraining.ema_weights`): the mean age of the target is
    ``interval * (1 - a) / a`` at a refresh, plus up to ``interval`` until the next one.

    Predictions use ``pipeline`` (load the image and turn it into the network input, as
    the training pipeline does, without augmentation) and the model's test mode, or
    ``mode`` (``'whole'``: one forward per image, cheaper than overlapping windows).
    Without co-training (``use_cotraining=False``) the hook only assigns the halves. Each
    refresh logs ``ema_refreshes`` and ``ema_lag``: the mean absolute difference between
    the new predictions and the store before the update (how far the target trailed the
    nets).

    The store (img_path -> float16 nucleus probability map) is kept outside the model
    weights, in the checkpoint under ``'ema_pseudo_labels'``, so ``--resume`` continues
    with the same pseudo labels.
    """

    priority = 'NORMAL'

    def __init__(self, pipeline: Optional[List[dict]] = None, interval: int = 3,
                 by_epoch: bool = True, momentum: float = 0.1, seed: int = 0,
                 mode: Optional[str] = None, scope: str = 'mmseg') -> None:
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ValueError(f'EMAPseudoLabelHook: interval must be an int >= 1, got '
                             f'{interval!r}')
        if mode not in (None, 'slide', 'whole'):
            raise ValueError(f"EMAPseudoLabelHook: mode must be None, 'slide' or 'whole', "
                             f'got {mode!r}')
        if not 0.0 < momentum <= 1.0:
            raise ValueError(f'EMAPseudoLabelHook: momentum must lie in (0, 1], got {momentum}')
        self.pipeline_cfg = pipeline or [
            dict(type='StrictLoadImageFromFile'),
            dict(type='ExtractHematoxylin'),
            dict(type='PackSegInputs', meta_keys=('img_path', 'ori_shape', 'img_shape')),
        ]
        self.interval = interval
        self.by_epoch = by_epoch
        self.mode = mode
        self.momentum = momentum
        self.seed = seed
        self.scope = scope
        self.store: Dict[str, np.ndarray] = {}
        self.refreshes = 0
        self._pipeline: Optional[Compose] = None

    # ------------------------------------------------------------------ set-up
    def _data_infos(self, runner: Runner) -> List[dict]:
        dataset = runner.train_dataloader.dataset
        infos = [dataset.get_data_info(i) for i in range(len(dataset))]
        if not infos:
            raise ValueError('EMAPseudoLabelHook: the training set is empty')
        return infos

    def before_train(self, runner: Runner) -> None:
        model = _model(runner)
        paths = [d['img_path'] for d in self._data_infos(runner)]
        model.halves = split_halves(paths, self.seed)
        model.pseudo_store = self.store
        sizes = np.bincount(list(model.halves.values()), minlength=2)
        print_log(f'EMAPseudoLabelHook: {len(model.halves)} training images split into '
                  f'halves of {sizes[0]} and {sizes[1]}; {len(self.store)} stored pseudo '
                  f'labels after {self.refreshes} refreshes', logger='current')

    # ----------------------------------------------------------------- refresh
    def _epoch_loop(self, runner: Runner) -> bool:
        return isinstance(runner.train_loop, EpochBasedTrainLoop)

    def after_train_iter(self, runner: Runner, batch_idx: int,
                         data_batch: Optional[dict] = None,
                         outputs: Optional[dict] = None) -> None:
        if self.by_epoch and self._epoch_loop(runner):
            return  # after_train_epoch refreshes
        step = runner.iter + 1  # iterations done
        per_epoch = max(len(runner.train_dataloader), 1) if self.by_epoch else 1
        if step % (self.interval * per_epoch) == 0 and step < runner.max_iters:
            self.refresh(runner)

    def after_train_epoch(self, runner: Runner) -> None:
        if not (self.by_epoch and self._epoch_loop(runner)):
            return
        step = runner.epoch + 1  # epochs done
        if step % self.interval == 0 and step < runner.max_epochs:
            self.refresh(runner)

    def _compose(self) -> Compose:
        if self._pipeline is None:
            with DefaultScope.overwrite_default_scope(self.scope):
                self._pipeline = Compose(self.pipeline_cfg)
        return self._pipeline

    @torch.no_grad()
    def refresh(self, runner: Runner) -> None:
        """Eq. (5) on every training image, predicted by the net of the other half."""
        model = _model(runner)
        if not model.use_cotraining:
            return
        pipeline = self._compose()
        buffers_from_rank0(model)  # every rank's store from the same model
        lag_sum, lag_count = 0.0, 0
        was_training = model.training
        test_mode = model.test_cfg['mode']
        model.test_cfg['mode'] = self.mode or test_mode
        model.eval()
        try:
            for info in track(self._data_infos(runner)):
                path = info['img_path']
                data = pipeline(dict(info))
                batch = model.data_preprocessor(
                    dict(inputs=[data['inputs']], data_samples=[data['data_samples']]), False)
                other = 1 - model.halves[path]
                probs = model.predict_probs(batch['inputs'], nets=(other, ))
                h, w = data['inputs'].shape[-2:]
                fg = probs[0, 1, :h, :w].float().cpu().numpy()
                previous = self.store.get(path)
                if previous is not None and previous.shape == fg.shape:
                    lag_sum += float(np.abs(fg - previous.astype(np.float32)).sum())
                    lag_count += fg.size
                new = ema_update(previous, fg, self.momentum)
                self.store[path] = new.astype(np.float16)
        finally:
            model.train(was_training)
            model.test_cfg['mode'] = test_mode
        self.refreshes += 1
        model.pseudo_store = self.store
        hub = runner.message_hub
        hub.update_scalar('train/ema_refreshes', self.refreshes)
        lag = lag_sum / lag_count if lag_count else float('nan')
        if lag_count:
            hub.update_scalar('train/ema_lag', lag)
        print_log(f'EMAPseudoLabelHook: refresh {self.refreshes} of {len(self.store)} pseudo '
                  f'labels at iteration {runner.iter + 1} (mean |new prediction - stored| '
                  f'{lag:.4f})', logger='current')

    # -------------------------------------------------------------- checkpoint
    def before_save_checkpoint(self, runner: Runner, checkpoint: dict) -> None:
        checkpoint[CKPT_KEY] = dict(store=dict(self.store), refreshes=self.refreshes,
                                    momentum=self.momentum, seed=self.seed)

    def after_load_checkpoint(self, runner: Runner, checkpoint: dict) -> None:
        state = checkpoint.get(CKPT_KEY)
        if state is None:
            return
        self.store.clear()
        self.store.update({k: np.asarray(v, np.float16) for k, v in state['store'].items()})
        self.refreshes = int(state['refreshes'])
