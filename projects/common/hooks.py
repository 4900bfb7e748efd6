"""The one mechanism behind the losses that follow training: a hook that finds every loss
of a type in the model, pushes the runner's position into each before every training
iteration and logs what each saw after it (``ExclusivityScheduleHook``, ``PULossHook``)."""
from typing import List, Optional, Tuple

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.runner import Runner

__all__ = ['modules_of_type', 'LossScheduleHook']


def modules_of_type(model, cls: type) -> List[Tuple[str, object]]:
    """(module path, module) of every ``cls`` inside ``model`` (wrappers unwrapped), in
    ``named_modules`` order."""
    if is_model_wrapper(model):
        model = model.module
    return [(name, m) for name, m in model.named_modules() if isinstance(m, cls)]


class LossScheduleHook(Hook):
    """Base hook: subclasses set ``loss_type`` and implement :meth:`push` (the runner's
    position into the losses, before each training iteration) and :meth:`log_losses`
    (scalars into the message hub, after it, when ``log``). The position is read from the
    runner, which a resumed run restores: nothing else needs saving. A model without any
    ``loss_type`` is a configuration error naming the hook."""

    priority = 'NORMAL'
    loss_type: type = type(None)

    def __init__(self, log: bool = True) -> None:
        self.log = log
        self._losses: Optional[List[Tuple[str, object]]] = None

    def find(self, model) -> List[Tuple[str, object]]:
        """(name, loss) of every ``loss_type`` in ``model``; subclasses may rename."""
        return modules_of_type(model, self.loss_type)

    def before_train(self, runner: Runner) -> None:
        self._losses = self.find(runner.model)
        if not self._losses:
            raise ValueError(f'{type(self).__name__}: the model has no '
                             f'{self.loss_type.__name__}; remove the hook from the config '
                             'or use the loss')

    def before_train_iter(self, runner: Runner, batch_idx: int,
                          data_batch: Optional[dict] = None) -> None:
        if self._losses is None:
            self.before_train(runner)
        self.push(runner, self._losses)

    def after_train_iter(self, runner: Runner, batch_idx: int,
                         data_batch: Optional[dict] = None,
                         outputs: Optional[dict] = None) -> None:
        if self.log and self._losses:
            self.log_losses(runner.message_hub, self._losses)

    def push(self, runner: Runner, losses: List[Tuple[str, object]]) -> None:
        raise NotImplementedError

    def log_losses(self, hub, losses: List[Tuple[str, object]]) -> None:
        raise NotImplementedError
