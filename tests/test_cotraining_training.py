"""The point-supervision configs run through tools/train.py and tools/test.py (tiny nets,
tiny synthetic data); the EMA store follows eq. (5) across refreshes and survives --resume."""
import glob
import json
import os.path as osp

import numpy as np
import pytest
import torch

from conftest import REPO, run_tool

CFG = 'configs/point_supervision/scnet_r18-c32_vor-clu-cot-color_400i_synthetic.py'
LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')
TINY = ['model.backbone.encoder.base_channels=8', 'model.backbone.encoder.stem_channels=8',
        'model.backbone.decoder_channels=[32,16,16,8,8]', 'model.backbone.stem_channels=[8,8]',
        'model.colorization_head.base_channels=4', 'model.colorization_head.num_stages=2',
        'model.test_cfg.crop_size=64', 'model.test_cfg.overlap=16']


def _options(data: str, iters: int) -> list:
    opts = [f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={iters}',
            'default_hooks.checkpoint.interval=2', 'default_hooks.checkpoint.max_keep_ckpts=3',
            'default_hooks.logger.interval=1',
            'train_dataloader.batch_size=2', 'custom_hooks.0.interval=2',
            # labels from the points on the fly (the configs read precomputed PNGs)
            'train_dataloader.dataset.pipeline.4.label_dir=None',
            'train_dataloader.dataset.pipeline.5.label_dir=None',
            'train_dataloader.dataset.pipeline.9.crop_size=(64,64)',
            'train_dataloader.dataset.pipeline.8.ratio_range=(1.0,1.25)']
    for loader in LOADERS:
        opts += [f'{loader}.dataset.data_root={data}/', f'{loader}.num_workers=0',
                 f'{loader}.persistent_workers=False']
    return opts + TINY


def _records(work: str) -> list:
    records = []
    for path in sorted(glob.glob(osp.join(work, '*', 'vis_data', 'scalars.json'))):
        with open(path) as f:
            records += [json.loads(line) for line in f if line.strip()]
    return records


def _other_net_probs(ckpt_path: str, data: str, store: dict) -> dict:
    """Each stored image predicted by the net of the other half, from the checkpoint."""
    from mmengine.config import Config
    from mmengine.dataset import Compose
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    import projects.point_supervision  # noqa: F401
    from projects.point_supervision.hooks import split_halves
    cfg = Config.fromfile(osp.join(REPO, CFG))
    cfg.merge_from_dict(dict(
        (o.split('=')[0], eval(o.split('=')[1])) for o in TINY))
    init_default_scope('mmseg')
    model = MODELS.build(cfg.model)
    ckpt = torch.load(ckpt_path, map_location='cpu', weights_only=False)
    model.load_state_dict(ckpt['state_dict'])
    model.eval()
    pipeline = Compose(cfg.ema_pipeline)
    halves = split_halves(list(store), seed=0)
    out = {}
    with torch.no_grad():
        for path in store:
            d = pipeline(dict(img_path=path))
            batch = model.data_preprocessor(dict(inputs=[d['inputs']],
                                                 data_samples=[d['data_samples']]), False)
            probs = model.predict_probs(batch['inputs'], nets=[1 - halves[path]])
            out[path] = probs[0, 1].numpy()
    return out


def test_cotraining_trains_refreshes_and_resumes(tiny_synthetic, tmp_path):
    work = str(tmp_path / 'run')
    run_tool(['tools/train.py', CFG, '--work-dir', work, '--cfg-options',
              *_options(tiny_synthetic, 5)])
    records = _records(work)
    train = [r for r in records if 'loss_vor_a' in r or 'loss_vor_b' in r]
    assert [r['iter'] for r in train] == [1, 2, 3, 4, 5]
    # 4 training images, batch 2, interval 2 iterations, 5 iterations: refreshes after
    # iterations 2 and 4 (none could follow the last one)
    assert [r['ema_refreshes'] for r in records if 'ema_refreshes' in r][-1] == 2
    for r in train:  # alpha = (N / Nmax)^2 at N = iter - 1
        progress = (r['iter'] - 1) / 5
        assert r['alpha'] == pytest.approx(progress**2, abs=1e-6)
    # the colour term is normalised: at the first measurement (iteration 0) it holds
    # color_share = 0.3 of the gradient norms on each net's segmenter that had a sample
    first = train[0]
    shares = [first[k] for k in ('gshare_color_a', 'gshare_color_b') if k in first]
    assert shares and shares == pytest.approx([0.3] * len(shares), abs=1e-4)
    ck2 = torch.load(osp.join(work, 'iter_2.pth'), map_location='cpu', weights_only=False)
    state2 = ck2['ema_pseudo_labels']
    assert state2['refreshes'] == 1 and state2['momentum'] == 0.5
    train_imgs = sorted(glob.glob(osp.join(tiny_synthetic, 'img_dir', 'train', '*.png')))
    assert sorted(state2['store']) == train_imgs
    # first refresh stores the other net's prediction itself (eq. (5) with p_0 = y)
    y2 = _other_net_probs(osp.join(work, 'iter_2.pth'), tiny_synthetic, state2['store'])
    for path, stored in state2['store'].items():
        assert stored.dtype == np.float16 and stored.shape == (64, 64)
        np.testing.assert_allclose(stored.astype(np.float32), y2[path], atol=2e-3)
    # second refresh: p_2 = 0.5 y + 0.5 p_1, y from the iteration-4 weights
    ck4 = torch.load(osp.join(work, 'iter_4.pth'), map_location='cpu', weights_only=False)
    state4 = ck4['ema_pseudo_labels']
    assert state4['refreshes'] == 2
    y4 = _other_net_probs(osp.join(work, 'iter_4.pth'), tiny_synthetic, state4['store'])
    for path, stored in state4['store'].items():
        expected = 0.5 * y4[path] + 0.5 * state2['store'][path].astype(np.float32)
        np.testing.assert_allclose(stored.astype(np.float32), expected, atol=2e-3)
    ck5 = torch.load(osp.join(work, 'iter_5.pth'), map_location='cpu', weights_only=False)
    assert ck5['ema_pseudo_labels']['refreshes'] == 2  # none after the last iteration

    # a run killed after iteration 2 and resumed from its checkpoint: the store comes back
    # from the checkpoint and the run ends like the uninterrupted one (mmengine skips the
    # consumed batches, so the augmentations repeat). Adam turns float noise in a
    # near-zero gradient into a step of up to lr = 1e-3, so a few weights may differ;
    # another batch or a lost store would move almost every weight.
    # the colour scale (a buffer) comes back from the checkpoint as well: with a lost scale
    # the resumed run would weigh L_color differently and move most weights
    resumed = str(tmp_path / 'resumed')
    run_tool(['tools/train.py', CFG, '--work-dir', resumed, '--resume',
              osp.join(work, 'iter_2.pth'), '--cfg-options', *_options(tiny_synthetic, 5)])
    log = ''.join(open(p).read() for p in glob.glob(osp.join(resumed, '*', '*.log')))
    assert '4 stored pseudo labels after 1 refreshes' in log
    res4 = torch.load(osp.join(resumed, 'iter_4.pth'), map_location='cpu', weights_only=False)
    n_far = n_all = 0
    for key, value in ck4['state_dict'].items():
        if value.is_floating_point():
            n_far += int(((res4['state_dict'][key] - value).abs() > 1e-5).sum())
            n_all += value.numel()
    assert n_far < 0.005 * n_all, f'{n_far} of {n_all} weights differ after resuming'
    assert res4['ema_pseudo_labels']['refreshes'] == 2
    for path, stored in state4['store'].items():
        np.testing.assert_allclose(res4['ema_pseudo_labels']['store'][path].astype(np.float32),
                                   stored.astype(np.float32), atol=1e-2)
    scale = ck2['state_dict']['color_scale']
    assert torch.isfinite(scale).all()  # both nets measured by iteration 2
    torch.testing.assert_close(res4['state_dict']['color_scale'],
                               ck4['state_dict']['color_scale'], rtol=1e-3, atol=0)

    proc = run_tool(['tools/test.py', CFG, osp.join(work, 'iter_4.pth'), '--work-dir',
                     str(tmp_path / 'test'), '--cfg-options', *_options(tiny_synthetic, 5)])
    assert 'nuclei/dice_obj' in proc.stdout + proc.stderr

    # the picture tool draws the same checkpoint: 5 panels of a 64x64 test tile
    png = str(tmp_path / 'draw.png')
    run_tool(['tools/analysis_tools/draw_point_supervision.py', CFG,
              osp.join(work, 'iter_4.pth'), '--index', '1', '--out', png, '--cfg-options',
              *_options(tiny_synthetic, 5)])
    from PIL import Image
    with Image.open(png) as im:
        assert im.size[0] > 4 * im.size[1]  # one row of panels
