"""PULossHook: training iteration -> every PULoss (hidden-prior warm-up), diagnostics -> log."""
from typing import List, Tuple

from mmengine.runner import Runner

from projects.common.hooks import LossScheduleHook, modules_of_type
from projects.common.registry import HOOKS, register
from .pu_loss import PULoss


def pu_losses(model) -> List[Tuple[str, PULoss]]:
    """(short name, loss) for every :class:`PULoss` in ``model`` (wrappers unwrapped);
    the name is the module path without ``.loss_cls``, dots as underscores
    (``rpn_head``, ``roi_head_bbox_head``)."""
    out = []
    for name, module in modules_of_type(model, PULoss):
        short = name[:-len('.loss_cls')] if name.endswith('.loss_cls') else name
        out.append((short.replace('.', '_') or 'loss', module))
    return out


@register(HOOKS)
class PULossHook(LossScheduleHook):
    """Push the training iteration into every PULoss; log what each loss saw.

    The mechanism of ``ExclusivityScheduleHook`` (exclusive_ce), one base
    (:class:`projects.common.hooks.LossScheduleHook`): before every training iteration
    each loss receives the runner's position, here ``runner.iter`` (used by
    ``hidden_prior_warmup_iters``). After every iteration, per loss (``name``: see
    :func:`pu_losses`), the last call's negative part before the clamp and the prior used
    (pi, or the per-batch pi_b) go to the log as ``pu_<name>_neg`` / ``pu_<name>_prior``:
    the share of iterations with a negative ``neg`` is the share in which eq. (11) clamps
    (or the nnPU step acts).

    A model without any ``PULoss`` is a configuration error.
    """

    loss_type = PULoss

    def find(self, model) -> List[Tuple[str, PULoss]]:
        return pu_losses(model)

    def push(self, runner: Runner, losses) -> None:
        for _, loss in losses:
            loss.set_iter(runner.iter)

    def log_losses(self, hub, losses) -> None:
        for name, loss in losses:
            if loss.last_stats is not None:
                hub.update_scalar(f'train/pu_{name}_neg', float(loss.last_stats['neg_part']))
                hub.update_scalar(f'train/pu_{name}_prior', float(loss.last_stats['prior']))
