"""Evaluate a checkpoint with MMEngine's runner (detection or segmentation configs).

Same command line as MMDetection's ``tools/test.py``::

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out results.pkl]
                         [--show-dir DIR] [--cfg-options k=v ...] [--launcher ...]
"""
import argparse
import os.path as osp

from mmengine.registry import RUNNERS
from mmengine.runner import Runner

import projects  # noqa: F401  (registers MMHisto components, torch.load fix)
from projects.common.runner_utils import (add_common_args, close_process_group, config_scope,
                                         dump_test_metrics_on_rank0, load_config,
                                         parse_args_with_rank, setup_cpu_distributed)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test (and evaluate) a model (MMHisto)')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out', help='dump predictions to a pickle file (.pkl)')
    parser.add_argument('--show', action='store_true', help='show predictions in a window')
    parser.add_argument('--show-dir', help='save images with predictions drawn, in this '
                        'directory (relative to the timestamped work-dir run folder)')
    parser.add_argument('--wait-time', type=float, default=2, help='interval of --show (s)')
    add_common_args(parser)
    return parse_args_with_rank(parser)


def enable_visualization(cfg, scope: str, show: bool, show_dir: str, wait_time: float) -> None:
    """Switch on the downstream visualisation hook, as mmdet / mmseg's test tools do."""
    hooks = cfg.get('default_hooks', {})
    if 'visualization' not in hooks:
        raise ValueError('--show / --show-dir need default_hooks.visualization in the config '
                         '(DetVisualizationHook or SegVisualizationHook)')
    hook = hooks['visualization']
    hook['draw'] = True
    if show:
        hook['show'] = True
        hook['wait_time'] = wait_time
    if show_dir:
        if scope == 'mmseg':
            cfg.visualizer['save_dir'] = show_dir
            hook['interval'] = 1
        else:
            hook['test_out_dir'] = show_dir


def main() -> None:
    args = parse_args()
    if not osp.isfile(args.checkpoint):
        raise FileNotFoundError(f'{args.checkpoint}: checkpoint file not found')
    cfg = load_config(args.config, args.cfg_options, args.work_dir, args.launcher)
    cfg.load_from = args.checkpoint
    if args.show or args.show_dir:
        enable_visualization(cfg, config_scope(cfg), args.show, args.show_dir, args.wait_time)
    if args.out is not None:
        if not args.out.endswith(('.pkl', '.pickle')):
            raise ValueError(f'--out {args.out}: the output file must be a .pkl file')
        cfg.test_evaluator = cfg.test_evaluator if isinstance(cfg.test_evaluator, list) \
            else [cfg.test_evaluator]
        cfg.test_evaluator.append(dict(type='DumpResults', out_file_path=args.out))
    setup_cpu_distributed(cfg)
    runner = RUNNERS.build(cfg) if 'runner_type' in cfg else Runner.from_cfg(cfg)
    dump_test_metrics_on_rank0(runner)
    runner.test()
    close_process_group()


if __name__ == '__main__':
    main()
