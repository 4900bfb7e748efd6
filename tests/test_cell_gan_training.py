"""The cell-GAN config runs through tools/train.py and tools/test.py on tiny synthetic
crops: the 5:1:1 schedule is counted in the optimisers' own step counters, --resume keeps
all three optimisers and the schedule, and the hook's sample grid is G of the checkpoint."""
import glob
import json
import os.path as osp

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO, run_tool

CFG = 'configs/cell_gan/cell-infowgan_res-c128_z32-c5_10e_synthetic-cells.py'
LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')
TINY = {'model.channels': 4, 'model.n_critic': 2}
TRAIN_CROPS, BATCH = 12, 4  # 3 critic iterations per epoch


def _options(data: str, epochs: int) -> list:
    opts = [f'train_cfg.max_epochs={epochs}', f'train_dataloader.batch_size={BATCH}',
            f'train_dataloader.dataset.indices={TRAIN_CROPS}',
            'default_hooks.logger.interval=1', 'default_hooks.checkpoint.max_keep_ckpts=5',
            'default_hooks.visualization.interval=2', 'default_hooks.visualization.num_rows=2']
    opts += [f'{loader}.dataset.data_root={data}/' for loader in LOADERS]
    return opts + [f'{k}={v}' for k, v in TINY.items()]


def _adam_steps(optim_state: dict) -> set:
    return {int(s['step']) for s in optim_state['state'].values()}


def _build_model():
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    import projects.cell_gan  # noqa: F401
    cfg = Config.fromfile(osp.join(REPO, CFG))
    cfg.merge_from_dict(TINY)
    init_default_scope('mmseg')
    return MODELS.build(cfg.model)


def test_train_resume_and_test(tiny_cells, tmp_path):
    from projects.cell_gan import CellGANSampleHook, cluster_scores, sample_grid
    # uninterrupted: 2 epochs x 3 critic iterations; G and Q step after critic 2, 4, 6
    full = str(tmp_path / 'full')
    run_tool(['tools/train.py', CFG, '--work-dir', full, '--cfg-options',
              *_options(tiny_cells, 2)])
    ckpt = torch.load(osp.join(full, 'epoch_2.pth'), map_location='cpu', weights_only=False)
    assert int(ckpt['state_dict']['critic_steps']) == 6
    optim = ckpt['optimizer']
    assert set(optim) == {'generator', 'discriminator', 'auxiliary'}
    assert _adam_steps(optim['discriminator']) == {6}
    assert _adam_steps(optim['generator']) == {3} and _adam_steps(optim['auxiliary']) == {3}

    # interrupted after epoch 1 (3 critic steps, 1 G step), then --resume to epoch 2: the
    # counters continue from the checkpoint only if all three optimisers were restored
    part = str(tmp_path / 'part')
    run_tool(['tools/train.py', CFG, '--work-dir', part, '--cfg-options',
              *_options(tiny_cells, 1)])
    first = torch.load(osp.join(part, 'epoch_1.pth'), map_location='cpu', weights_only=False)
    assert _adam_steps(first['optimizer']['generator']) == {1}
    run_tool(['tools/train.py', CFG, '--work-dir', part, '--resume', '--cfg-options',
              *_options(tiny_cells, 2)])
    resumed = torch.load(osp.join(part, 'epoch_2.pth'), map_location='cpu', weights_only=False)
    assert int(resumed['state_dict']['critic_steps']) == 6
    for key, steps in (('discriminator', 6), ('generator', 3), ('auxiliary', 3)):
        assert _adam_steps(resumed['optimizer'][key]) == {steps}, key

    # the last sample grid is G(z, c) of the final weights on the hook's fixed latent grid
    model = _build_model()
    model.load_state_dict(ckpt['state_dict'])
    hook = CellGANSampleHook(num_rows=2)
    z, c = hook.latent_grid(model)
    expected = sample_grid(model.generate(z, c).permute(0, 2, 3, 1).numpy(), 2,
                           model.num_categories)
    grids = sorted(glob.glob(osp.join(full, '*', 'vis_data', 'samples', 'iter_*.png')))
    assert [osp.basename(g) for g in grids] == ['iter_000002.png', 'iter_000004.png',
                                                'iter_000006.png']
    np.testing.assert_array_equal(np.asarray(Image.open(grids[-1])), expected)
    assert glob.glob(osp.join(full, '*', 'vis_data', 'learning_curves.png'))

    # tools/test.py: purity / entropy / F-score of argmax Q on the labelled test crops
    out = str(tmp_path / 'test')
    run_tool(['tools/test.py', CFG, osp.join(full, 'epoch_2.pth'), '--work-dir', out,
              '--cfg-options', *_options(tiny_cells, 2)])
    metrics = json.load(open(glob.glob(osp.join(out, '*', '*.json'))[-1]))
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS
    init_default_scope('mmseg')
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(REPO, CFG))
    ds_cfg = cfg.test_dataloader.dataset
    ds_cfg.data_root = tiny_cells + '/'
    ds = DATASETS.build(ds_cfg)
    batch = pseudo_collate([ds[i] for i in range(len(ds))])
    model.eval()
    with torch.no_grad():
        clusters = model.q_logits(model.data_preprocessor(batch, False)['inputs']).argmax(1)
    labels = np.array([int(s.gt_label) for s in batch['data_samples']])
    keep = labels >= 0
    ref = cluster_scores(clusters.numpy()[keep], labels[keep])
    for key in ('purity', 'entropy', 'f_score'):
        assert metrics[key] == pytest.approx(ref[key], abs=1e-4), key
