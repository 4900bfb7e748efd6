"""ExclusivityScheduleHook: training progress -> every exclusive cross-entropy loss."""
from typing import List, Optional

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.runner import EpochBasedTrainLoop, Runner

from projects.common.registry import HOOKS, register
from .ece_loss import ExclusiveCrossEntropyLoss


def ece_losses(model) -> List[ExclusiveCrossEntropyLoss]:
    """Every :class:`ExclusiveCrossEntropyLoss` inside ``model`` (wrappers unwrapped)."""
    if is_model_wrapper(model):
        model = model.module
    return [m for m in model.modules() if isinstance(m, ExclusiveCrossEntropyLoss)]


@register(HOOKS)
class ExclusivityScheduleHook(Hook):
    """Push the training position into every ECE loss before each training iteration.

    Panteli et al. 2021 anneal the exclusivity threshold over training (sect. 3.2.2,
    Table 2). Before every iteration each loss receives ``progress = iter / max_iters``
    and an epoch: the runner's epoch in epoch-based loops (an integer, as the ``ece-loss``
    package's ``set_epoch``), ``iter / len(train_dataloader)`` in iteration-based loops,
    so the package's epoch constants (50, 150, temperature 10) keep their meaning in
    epochs of data. The position is read from the runner, which a resumed run restores:
    nothing else needs saving. The losses' warm-up (``warmup``: the first share of
    training keeps every term) ends on the same pushed progress. After every iteration the
    schedule's threshold (of the first loss), the share of unannotated terms kept (mean
    over the losses) and whether the first loss is in its warm-up (1 / 0) go to the log as
    ``ece_threshold`` / ``ece_kept`` / ``ece_warmup``.

    A model without any ``ExclusiveCrossEntropyLoss`` is a configuration error.
    """

    priority = 'NORMAL'

    def __init__(self, log: bool = True) -> None:
        self.log = log
        self._losses: Optional[List[ExclusiveCrossEntropyLoss]] = None

    def before_train(self, runner: Runner) -> None:
        self._losses = ece_losses(runner.model)
        if not self._losses:
            raise ValueError('ExclusivityScheduleHook: the model has no '
                             'ExclusiveCrossEntropyLoss; remove the hook from the config '
                             'or use the loss')

    def _epoch(self, runner: Runner) -> float:
        if isinstance(runner.train_loop, EpochBasedTrainLoop):
            return float(runner.epoch)
        per_epoch = len(runner.train_dataloader)
        if per_epoch < 1:
            raise ValueError('ExclusivityScheduleHook: the training dataloader is empty')
        return runner.iter / per_epoch

    def before_train_iter(self, runner: Runner, batch_idx: int,
                          data_batch: Optional[dict] = None) -> None:
        if self._losses is None:
            self.before_train(runner)
        epoch = self._epoch(runner)
        progress = runner.iter / max(runner.max_iters, 1)
        for loss in self._losses:
            loss.set_progress(epoch, progress)

    def after_train_iter(self, runner: Runner, batch_idx: int,
                         data_batch: Optional[dict] = None,
                         outputs: Optional[dict] = None) -> None:
        if not self.log or not self._losses:
            return
        hub = runner.message_hub
        hub.update_scalar('train/ece_threshold', self._losses[0].current_threshold())
        hub.update_scalar('train/ece_warmup', float(self._losses[0].in_warmup()))
        kept = [float(m.last_kept_fraction) for m in self._losses
                if m.last_kept_fraction is not None]
        if kept:
            hub.update_scalar('train/ece_kept', sum(kept) / len(kept))
