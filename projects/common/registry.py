"""Register one class in several OpenMMLab registries at once.

A component used by both MMDetection and MMSegmentation configs (a loss, a loading
transform, a metric) must be found under both default scopes, so it is registered in
``mmdet.registry.X`` and ``mmseg.registry.X``. Hooks and loops go to MMEngine's root
registries (and so do optimiser-wrapper constructors), which every downstream scope
searches.
"""
from typing import Callable, Optional, Type

from mmdet import registry as det
from mmengine import registry as engine
from mmengine.registry import Registry
from mmseg import registry as seg

MODELS = (det.MODELS, seg.MODELS)
TRANSFORMS = (det.TRANSFORMS, seg.TRANSFORMS)
METRICS = (det.METRICS, seg.METRICS)
DET_DATASETS = (det.DATASETS, )
SEG_DATASETS = (seg.DATASETS, )
HOOKS = (engine.HOOKS, )
LOOPS = (engine.LOOPS, )
OPTIM_WRAPPER_CONSTRUCTORS = (engine.OPTIM_WRAPPER_CONSTRUCTORS, )


def register(registries: tuple, name: Optional[str] = None) -> Callable[[Type], Type]:
    """Class decorator: ``@register(MODELS)`` registers the class in every registry given."""

    def wrap(cls: Type) -> Type:
        for reg in registries:
            assert isinstance(reg, Registry)
            reg.register_module(name=name, module=cls)
        return cls

    return wrap


def build_in_scope(scope: str, registry: Registry, cfg: dict):
    """``registry.build(cfg)`` with ``scope`` as the default scope, whatever the caller's.

    mmengine builds from the registry of the *current* default scope, so
    ``mmseg.registry.MODELS.build`` inside an mmdet-scoped run would look in mmdet's
    registry (and miss ``ResNetV1c``); here the owner's scope is set for the call.
    """
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope(scope):
        return registry.build(cfg)
