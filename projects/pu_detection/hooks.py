"""PULossHook: training iteration -> every PULoss (hidden-prior warm-up), diagnostics -> log."""
from typing import List, Optional, Tuple

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.runner import Runner

from projects.common.registry import HOOKS, register
from .pu_loss import PULoss


def pu_losses(model) -> List[Tuple[str, PULoss]]:
    """(short name, loss) for every :class:`PULoss` in ``model`` (wrappers unwrapped);
    the name is the module path without ``.loss_cls``, dots as underscores
    (``rpn_head``, ``roi_head_bbox_head``)."""
    if is_model_wrapper(model):
        model = model.module
    out = []
    for name, module in model.named_modules():
        if isinstance(module, PULoss):
            short = name[:-len('.loss_cls')] if name.endswith('.loss_cls') else name
            out.append((short.replace('.', '_') or 'loss', module))
    return out


@register(HOOKS)
class PULossHook(Hook):
    """Push the training iteration into every PULoss; log what each loss saw.

    The mechanism of ``ExclusivityScheduleHook`` (exclusive_ce): before every training
    iteration each loss receives the runner's position, here ``runner.iter`` (used by
    ``hidden_prior_warmup_iters``). The position is read from the runner, which a resumed
    run restores: nothing else needs saving. After every iteration, per loss (``name``: see
    :func:`pu_losses`), the last call's negative part before the clamp and the prior
    used (pi, or the per-batch pi_b) go to the log as ``pu_<name>_neg`` /
    ``pu_<name>_prior``: the share of iterations with a negative ``neg`` is the share in
    which eq. (11) clamps (or the nnPU step acts).

    A model without any ``PULoss`` is a configuration error.
    """

    priority = 'NORMAL'

    def __init__(self, log: bool = True) -> None:
        self.log = log
        self._losses: Optional[List[Tuple[str, PULoss]]] = None

    def before_train(self, runner: Runner) -> None:
        self._losses = pu_losses(runner.model)
        if not self._losses:
            raise ValueError('PULossHook: the model has no PULoss; remove the hook from the '
                             'config or use the loss')

    def before_train_iter(self, runner: Runner, batch_idx: int,
                          data_batch: Optional[dict] = None) -> None:
        if self._losses is None:
            self.before_train(runner)
        for _, loss in self._losses:
            loss.set_iter(runner.iter)

    def after_train_iter(self, runner: Runner, batch_idx: int,
                         data_batch: Optional[dict] = None,
                         outputs: Optional[dict] = None) -> None:
        if not self.log or not self._losses:
            return
        hub = runner.message_hub
        for name, loss in self._losses:
            if loss.last_stats is not None:
                hub.update_scalar(f'train/pu_{name}_neg', float(loss.last_stats['neg_part']))
                hub.update_scalar(f'train/pu_{name}_prior', float(loss.last_stats['prior']))
