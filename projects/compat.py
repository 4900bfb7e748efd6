"""Compatibility fixes applied once when :mod:`projects` is imported.

torch >= 2.6 makes ``torch.load`` default to ``weights_only=True``. mmengine 0.10.7 loads
runner checkpoints with a bare ``torch.load``, and its checkpoints hold Python objects
(``HistoryBuffer`` in the message hub, numpy scalars and arrays in the log history), so
``--resume``, ``load_from`` and ``tools/test.py CONFIG CKPT`` fail with "Unsupported
global: mmengine.logging.history_buffer.HistoryBuffer".

The fix uses mmengine's own extension point: the loader of local files (the scheme with
the empty prefix of :class:`mmengine.runner.CheckpointLoader`) is replaced by one that
passes ``weights_only=False``. That is exactly mmengine's behaviour under torch < 2.6:
a checkpoint file named in a config or on the command line is trusted by the user, as
with any pickle. Remote (http) checkpoints already go through ``torch.hub``, whose
``load_state_dict_from_url`` keeps ``weights_only=False`` by default. Nothing has to be set
in the environment: importing :mod:`projects` (which every MMHisto config does through
``custom_imports``, and our tools do explicitly) applies it.
"""
import os.path as osp
from typing import Any, Optional

import torch


def load_local_checkpoint(filename: str, map_location: Optional[Any] = None) -> Any:
    """Load a local mmengine checkpoint; ``weights_only=False`` for trusted files."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename}: checkpoint file not found')
    return torch.load(filename, map_location=map_location, weights_only=False)


def patch_mmengine_checkpoint_loader() -> None:
    """Register :func:`load_local_checkpoint` as mmengine's loader for local paths."""
    try:
        from mmengine.runner.checkpoint import CheckpointLoader
    except ImportError:  # mmengine not installed: nothing to patch
        return
    CheckpointLoader.register_scheme(prefixes='', loader=load_local_checkpoint, force=True)


patch_mmengine_checkpoint_loader()
