"""ExclusivityScheduleHook: training progress -> every exclusive cross-entropy loss."""
from typing import List

from mmengine.runner import EpochBasedTrainLoop, Runner

from projects.common.hooks import LossScheduleHook, modules_of_type
from projects.common.registry import HOOKS, register
from .ece_loss import ExclusiveCrossEntropyLoss


def ece_losses(model) -> List[ExclusiveCrossEntropyLoss]:
    """Every :class:`ExclusiveCrossEntropyLoss` inside ``model`` (wrappers unwrapped)."""
    return [m for _, m in modules_of_type(model, ExclusiveCrossEntropyLoss)]


@register(HOOKS)
class ExclusivityScheduleHook(LossScheduleHook):
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

    loss_type = ExclusiveCrossEntropyLoss

    @staticmethod
    def _epoch(runner: Runner) -> float:
        if isinstance(runner.train_loop, EpochBasedTrainLoop):
            return float(runner.epoch)
        per_epoch = len(runner.train_dataloader)
        if per_epoch < 1:
            raise ValueError('ExclusivityScheduleHook: the training dataloader is empty')
        return runner.iter / per_epoch

    def push(self, runner: Runner, losses) -> None:
        epoch = self._epoch(runner)
        progress = runner.iter / max(runner.max_iters, 1)
        for _, loss in losses:
            loss.set_progress(epoch, progress)

    def log_losses(self, hub, losses) -> None:
        first = losses[0][1]
        hub.update_scalar('train/ece_threshold', first.current_threshold())
        hub.update_scalar('train/ece_warmup', float(first.in_warmup()))
        kept = [float(m.last_kept_fraction) for _, m in losses
                if m.last_kept_fraction is not None]
        if kept:
            hub.update_scalar('train/ece_kept', sum(kept) / len(kept))
