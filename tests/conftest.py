"""Shared fixtures: a tiny synthetic data set and tiny configs for the tool tests."""
import os
import os.path as osp
import socket
import subprocess
import sys

import pytest

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


@pytest.fixture(autouse=True)
def _no_default_scope_leak():
    """Undo the default scopes a test creates (``init_default_scope``, a Runner): mmengine
    builds from the registry of the latest scope, so a scope left by one test would make
    another test's builds depend on the order the tests run in."""
    from mmengine.registry import DefaultScope
    before = dict(DefaultScope._instance_dict)
    yield
    for name in list(DefaultScope._instance_dict):
        if name not in before:
            del DefaultScope._instance_dict[name]


@pytest.fixture(scope='session')
def tiny_synthetic(tmp_path_factory) -> str:
    """A seeded synthetic data set of 64x64 tiles in both layouts (4 train, 2 val, 2 test)."""
    from projects.common.synthetic import generate_dataset
    root = str(tmp_path_factory.mktemp('synthetic'))
    generate_dataset(root, num_train=4, num_val=2, num_test=2, size=(64, 64), seed=0)
    return root


def run_tool(args: list, cwd: str = REPO, env: dict = None, timeout: int = 600,
             check: bool = True) -> subprocess.CompletedProcess:
    """Run a repository tool with this interpreter; on failure show its output."""
    full_env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore')
    full_env.update(env or {})
    proc = subprocess.run([sys.executable] + args, cwd=cwd, env=full_env, timeout=timeout,
                          capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f'{" ".join(args)} exited {proc.returncode}\n'
                             f'--- stdout ---\n{proc.stdout[-4000:]}\n'
                             f'--- stderr ---\n{proc.stderr[-6000:]}')
    return proc


def median_by_sorting(values) -> float:
    """Median by sorting (independent of statistics.median, for benchmark bookkeeping)."""
    v = sorted(values)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2.0


def run_folders(work_dir: str) -> list:
    """mmengine's <timestamp> run folders under ``work_dir``, oldest first."""
    from projects.common.child_runs import TIMESTAMP
    return sorted(d for d in os.listdir(work_dir) if TIMESTAMP.match(d))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


TINY_DET = '''
_base_ = '{repo}/configs/baselines/faster-rcnn_r18-c32_fpn_2k_synthetic.py'
data_root = '{data}/'
model = dict(
    backbone=dict(base_channels=8),
    neck=dict(in_channels=[8, 16, 32, 64], out_channels=16),
    rpn_head=dict(in_channels=16, feat_channels=16),
    roi_head=dict(bbox_roi_extractor=dict(out_channels=16),
                  bbox_head=dict(in_channels=16, fc_out_channels=32)),
    train_cfg=dict(rpn=dict(sampler=dict(num=64)), rcnn=dict(sampler=dict(num=64))))
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root))
val_dataloader = dict(num_workers=0, persistent_workers=False, dataset=dict(data_root=data_root))
test_dataloader = dict(num_workers=0, persistent_workers=False,
                       dataset=dict(data_root=data_root))
train_cfg = dict(max_iters=4, val_interval=4)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=2, max_keep_ckpts=3))
'''

# A deterministic U-Net (no dropout, no random augmentation) so that a resumed run can be
# compared weight for weight with an uninterrupted one.
TINY_SEG = '''
_base_ = '{repo}/configs/baselines/unet-s5-d16_fcn_2k_synthetic-256x256.py'
data_root = '{data}/'
crop_size = (64, 64)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(base_channels=4, num_stages=3, strides=(1, 1, 1), enc_num_convs=(1, 1, 1),
                  dec_num_convs=(1, 1), downsamples=(True, True), enc_dilations=(1, 1, 1),
                  dec_dilations=(1, 1)),
    decode_head=dict(in_channels=4, in_index=2, channels=4, dropout_ratio=0.0),
    auxiliary_head=None)
pipe = [dict(type='StrictLoadImageFromFile'), dict(type='LoadAnnotations'),
        dict(type='PackSegInputs')]
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root, pipeline=pipe))
val_dataloader = dict(num_workers=0, persistent_workers=False, dataset=dict(data_root=data_root))
test_dataloader = dict(num_workers=0, persistent_workers=False,
                       dataset=dict(data_root=data_root))
train_cfg = dict(max_iters=4, val_interval=100)
param_scheduler = [dict(type='PolyLR', eta_min=1e-5, power=0.9, begin=0, end=4, by_epoch=False)]
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=2, max_keep_ckpts=3))
'''


def write_config(tmp_path, template: str, data: str, name: str) -> str:
    path = osp.join(str(tmp_path), name)
    with open(path, 'w') as f:
        f.write(template.format(repo=REPO, data=data))
    return path


@pytest.fixture(scope='session')
def tiny_bags(tmp_path_factory) -> str:
    """Synthetic proportion bags: 3 labelled + 4 proportion-only training slides, 1 val and
    1 test slide of 128x128 px, 32-px patches (tools/dataset_converters/synthetic_bags.py)."""
    root = str(tmp_path_factory.mktemp('bags'))
    run_tool(['tools/dataset_converters/synthetic_bags.py', '--out', root, '--num-labelled',
              '3', '--num-weak', '4', '--num-val', '1', '--num-test', '1', '--size', '128',
              '--patch-size', '32', '--seed', '0', '--overwrite', '--no-progress'])
    return root


@pytest.fixture(scope='session')
def tiny_cells(tmp_path_factory) -> str:
    """Crops of 2 train, 1 val, 1 test synthetic tiles (256 px), by the real converter."""
    root = str(tmp_path_factory.mktemp('cells'))
    run_tool(['tools/dataset_converters/synthetic_cells.py', '--out', root, '--num-train', '2',
              '--num-val', '1', '--num-test', '1', '--size', '256', '--mode', 'seg',
              '--no-progress'])
    return root
