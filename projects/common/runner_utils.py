"""Helpers shared by ``tools/train.py`` and ``tools/test.py`` (config handling, CPU DDP)."""
import argparse
import os
import os.path as osp
from typing import Optional

import torch
from mmengine.config import Config, ConfigDict, DictAction


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """The options train.py and test.py share with mmdet's tools."""
    parser.add_argument('--work-dir', help='the dir to save logs, checkpoints and metrics')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings, e.g. train_cfg.max_iters=10 '
        "model.backbone.depth=101 'key=[a,b]'")
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def parse_args_with_rank(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse, and export LOCAL_RANK for launchers that pass --local-rank instead."""
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def load_config(path: str, cfg_options: Optional[dict] = None,
                work_dir: Optional[str] = None, launcher: str = 'none') -> Config:
    """Load a config, merge ``--cfg-options`` and set ``work_dir`` like mmdet's tools.

    An unknown path or a config with a syntax error raises with the file named.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'{path}: config file not found')
    cfg = Config.fromfile(path)
    cfg.launcher = launcher
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(path))[0])
    return cfg


def config_scope(cfg: Config) -> str:
    """'mmdet', 'mmseg' or another default scope named by the config."""
    return cfg.get('default_scope', 'mmdet') or 'mmdet'


def setup_cpu_distributed(cfg: Config) -> None:
    """Make ``--launcher pytorch`` work on machines without CUDA.

    mmengine 0.10.7 calls ``torch.cuda.set_device`` while initialising the process group
    and wraps the model with ``device_ids=[LOCAL_RANK]``; both fail without CUDA. Here the
    gloo process group is created first (mmengine then skips its own initialisation) and
    the DDP wrapper gets ``device_ids=None``, which is what PyTorch requires for CPU models.
    On CUDA machines nothing changes.
    """
    if cfg.get('launcher', 'none') == 'none' or torch.cuda.is_available():
        return
    import torch.distributed as dist
    if not dist.is_initialized():
        dist.init_process_group(backend='gloo')
    env_cfg = cfg.setdefault('env_cfg', ConfigDict())
    env_cfg['dist_cfg'] = dict(backend='gloo')
    wrapper = cfg.get('model_wrapper_cfg', None) or dict(
        type='MMDistributedDataParallel', broadcast_buffers=False,
        find_unused_parameters=cfg.get('find_unused_parameters', False))
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper
    os.environ.setdefault('LOCAL_RANK', '0')


def dump_test_metrics_on_rank0(runner) -> None:
    """Let only rank 0 write the test metrics JSON.

    mmengine 0.10.7's ``LoggerHook.after_test_epoch`` dumps the metrics to
    ``<log_dir>/<timestamp>.json`` on every rank; the ranks share the path, and concurrent
    writes of different lengths leave a corrupt file. Other ranks keep the log line only.
    """
    from mmengine.dist import is_main_process
    from mmengine.hooks import LoggerHook
    if is_main_process():
        return
    for hook in runner.hooks:
        if isinstance(hook, LoggerHook):
            def after_test_epoch(runner, metrics=None):
                _, log_str = runner.log_processor.get_log_after_epoch(
                    runner, len(runner.test_dataloader), 'test', with_non_scalar=True)
                runner.logger.info(log_str)
            hook.after_test_epoch = after_test_epoch


def close_process_group() -> None:
    """Tear the process group down once the runner is done (a no-op without one).

    Left to interpreter exit, gloo's threads can outlive their owner and abort the rank
    ("terminate called without an active exception", exit code -6) after training and
    validation have finished; an explicit barrier and ``destroy_process_group`` end every
    rank cleanly.
    """
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def hook_model(runner, cls: type, hook: str):
    """The runner's model without its DDP wrapper; TypeError (naming ``hook``) unless it
    is a ``cls``."""
    from mmengine.model import is_model_wrapper
    model = runner.model.module if is_model_wrapper(runner.model) else runner.model
    if not isinstance(model, cls):
        raise TypeError(f'{hook} needs a {cls.__name__}, the model is {type(model).__name__}')
    return model


def buffers_from_rank0(model: torch.nn.Module) -> None:
    """Give every rank rank 0's buffers (batch-norm statistics) before a hook predicts.

    DDP keeps the weights of the ranks equal but not their batch-norm running statistics
    (each rank sees its own batches); predictions made on several ranks then come from
    different models. After this call they all match rank 0, whose model the checkpoints
    hold. A no-op outside distributed runs.
    """
    from mmengine.dist import broadcast, get_world_size
    if get_world_size() > 1:
        for buf in model.buffers():
            broadcast(buf, src=0)
