"""Every runnable config builds its model and data set through the registries and trains."""
import glob
import math
import os
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

import projects  # noqa: F401

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
# Benchmark specs (configs/benchmarks/*.py) list runs of other configs: not runnable configs.
SPECS = set(glob.glob(osp.join(REPO, 'configs', 'benchmarks', '*.py')))
CONFIGS = sorted(p for p in glob.glob(osp.join(REPO, 'configs', '**', '*.py'), recursive=True)
                 if '_base_' not in p and p not in SPECS)


def _config_id(path: str) -> str:
    """Test id of a config: its path under configs/ (a zoo peer and a method study may
    share a file name)."""
    return osp.relpath(path, osp.join(REPO, 'configs'))


def _scope(cfg: Config):
    scope = cfg.get('default_scope', 'mmdet')
    return DefaultScope.overwrite_default_scope(scope), scope


def _det_classes(cfg: Config) -> int:
    """num_classes of a two-stage (RoI head), cascade (one RoI head per stage, all alike)
    or single-stage (bbox_head) detector."""
    head = cfg.model.roi_head.bbox_head if 'roi_head' in cfg.model else cfg.model.bbox_head
    if isinstance(head, (list, tuple)):
        classes = {h.num_classes for h in head}
        if len(classes) != 1:
            raise ValueError(f'{cfg.filename}: the cascade stages disagree on num_classes '
                             f'({sorted(classes)})')
        return classes.pop()
    return head.num_classes


def _det_batch(num_classes: int):
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    sample = DetDataSample(metainfo=dict(img_shape=(64, 64), ori_shape=(64, 64),
                                         scale_factor=(1.0, 1.0)))
    sample.gt_instances = InstanceData(
        bboxes=torch.tensor([[10., 10., 26., 24.], [30., 34., 44., 50.]]),
        labels=torch.tensor([0, num_classes - 1]))
    return dict(inputs=[torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)],
                data_samples=[sample])


def _seg_batch(num_classes: int):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    sample = SegDataSample(metainfo=dict(img_shape=(64, 64), ori_shape=(64, 64)))
    seg = torch.zeros(1, 64, 64, dtype=torch.long)
    seg[0, 20:40, 20:40] = num_classes - 1
    sample.gt_sem_seg = PixelData(data=seg)
    # two images: a BatchNorm after global pooling (DeepLabV3+'s image-pool branch) needs
    # more than one value per channel in training
    return dict(inputs=[torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)
                        for _ in range(2)], data_samples=[sample, sample.clone()])


def _cotrain_batch():
    """A point-supervision sample: H-component input, point labels, colour, source index."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    sample = SegDataSample(metainfo=dict(img_shape=(64, 64), ori_shape=(64, 64),
                                         img_path='a.png', src_shape=(64, 64)))
    vor = torch.full((1, 64, 64), 255, dtype=torch.long)
    vor[0, 28:32, 28:32], vor[0, :, 10] = 1, 0
    clu = torch.full((1, 64, 64), 255, dtype=torch.long)
    clu[0, 24:36, 24:36], clu[0, :20] = 1, 0
    sem = torch.zeros(1, 64, 64, dtype=torch.long)
    sem[0, 24:36, 24:36] = 1
    sample.gt_voronoi, sample.gt_cluster = PixelData(data=vor), PixelData(data=clu)
    sample.gt_sem_seg = PixelData(data=sem)
    sample.gt_src_index = PixelData(data=torch.arange(64 * 64).reshape(1, 64, 64))
    sample.gt_color = PixelData(data=torch.rand(3, 64, 64))
    return dict(inputs=[torch.randint(0, 256, (1, 64, 64), dtype=torch.uint8)],
                data_samples=[sample])


def _patch_batch():
    """Two labelled 32x32 patches of different classes (proportion-bag classification)."""
    from mmengine.structures import BaseDataElement
    samples = []
    for i in range(2):
        s = BaseDataElement(metainfo=dict(sample_idx=i))
        s.gt_label = torch.tensor(i)
        samples.append(s)
    return dict(inputs=[torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
                        for _ in range(2)], data_samples=samples)


# A one-per-patch config differs from its sparse30 twin in the data pipeline and the PU
# priors only (checked below), so only the twin's model is built and trained here.
TWINS = {p: p.replace('one-per-patch', 'sparse30') for p in CONFIGS if 'one-per-patch' in p}
BUILT = [p for p in CONFIGS if p not in TWINS]


def _without_priors(obj):
    if isinstance(obj, dict):
        return {k: _without_priors(v) for k, v in obj.items() if k != 'prior'}
    if isinstance(obj, (list, tuple)):
        return [_without_priors(v) for v in obj]
    return obj


def test_one_per_patch_configs_share_the_model_of_their_sparse30_twin():
    assert TWINS, 'no one-per-patch config found'
    for path, twin in TWINS.items():
        a, b = Config.fromfile(path), Config.fromfile(twin)
        assert _without_priors(a.model.to_dict()) == _without_priors(b.model.to_dict()), path
        kinds = [[t.get('mode') for t in c.train_dataloader.dataset.pipeline
                  if t['type'] == 'SparsifyAnnotations'] for c in (a, b)]
        assert kinds == [['one_per_patch'], ['nested']], path


@pytest.mark.parametrize('path', BUILT, ids=_config_id)
def test_config_builds_and_gives_finite_losses(path):
    cfg = Config.fromfile(path)
    # offline: no config may download weights when it is built for a test
    assert 'Pretrained' not in str(cfg.model.get('backbone', {}).get('init_cfg', None))
    ctx, scope = _scope(cfg)
    if cfg.model.type == 'CellInfoWGAN':
        _gan_config_trains(cfg, ctx)
        return
    with ctx:
        cotrain = cfg.model.type == 'CoTrainingSegmentor'
        patches = cfg.model.type == 'PatchClassifier'
        if patches:
            from mmseg.registry import MODELS
            batch = _patch_batch()
        elif cotrain:
            from mmseg.registry import MODELS
            batch = _cotrain_batch()
        elif scope == 'mmseg':
            from mmseg.registry import MODELS
            cfg.model.data_preprocessor.size = (64, 64)
            num_classes = cfg.model.decode_head.num_classes
            batch = _seg_batch(num_classes)
        else:
            from mmdet.registry import MODELS
            num_classes = _det_classes(cfg)
            batch = _det_batch(num_classes)
        torch.manual_seed(0)
        model = MODELS.build(cfg.model)
        model.init_weights()
        model.train()
        if cotrain:  # what EMAPseudoLabelHook does before training: image -> half
            model.halves = {'a.png': 0}
        if any(h.get('type') == 'PULossHook' for h in cfg.get('custom_hooks', [])):
            from projects.pu_detection import PULoss  # what PULossHook does: the iteration
            for m in model.modules():
                if isinstance(m, PULoss):
                    m.set_iter(0)
        data = model.data_preprocessor(batch, True)
        losses = model(**data, mode='loss')
    total = 0.0
    for name, value in losses.items():
        if 'loss' not in name:
            continue
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            assert torch.isfinite(v).all(), f'{name} is not finite'
            total = total + v.sum()
    # a randomly initialised model has a positive classification loss on any data
    assert float(total) > 0
    total.backward()


def _gan_config_trains(cfg: Config, ctx) -> None:
    """Smoke: a GAN trains through train_step: n_critic iterations on two crops take one
    critic step each and, after the last, one generator and one Q step, all finite (the
    values are tested in tests/test_cell_gan_model.py)."""
    from mmengine.optim import build_optim_wrapper
    with ctx:
        from mmseg.registry import MODELS
        torch.manual_seed(0)
        model = MODELS.build(cfg.model)
        model.init_weights()
        optim = build_optim_wrapper(model, cfg.optim_wrapper)
        size = cfg.model.img_size
        data = dict(inputs=[torch.randint(0, 256, (3, size, size), dtype=torch.uint8)] * 2)
        logs = [model.train_step(data, optim) for _ in range(cfg.model.n_critic)]
    assert 'loss_g' not in logs[0] and {'loss_g', 'loss_q'} <= set(logs[-1])
    assert all(torch.isfinite(v) for log in logs for v in log.values())


@pytest.mark.parametrize('path', [p for p in CONFIGS
                                  if 'synthetic' in p and 'bags' not in p and 'cells' not in p],
                         ids=_config_id)
def test_synthetic_config_classes_match_the_data(path, tiny_synthetic):
    """num_classes in the model equals the classes the data set reads from the files."""
    from projects.common.synthetic import NUCLEUS_CLASSES
    cfg = Config.fromfile(path)
    ctx, scope = _scope(cfg)
    with ctx:
        ds_cfg = cfg.test_dataloader.dataset
        ds_cfg.data_root = tiny_synthetic + '/'
        if scope == 'mmseg':
            from mmseg.registry import DATASETS
            dataset = DATASETS.build(ds_cfg)
            assert dataset.metainfo['classes'] == ('background', 'nucleus')
            if cfg.model.type != 'CoTrainingSegmentor':  # always background / nucleus
                assert cfg.model.decode_head.num_classes == 2
        else:
            from mmdet.registry import DATASETS
            dataset = DATASETS.build(ds_cfg)
            assert tuple(dataset.metainfo['classes']) == NUCLEUS_CLASSES
            assert _det_classes(cfg) == len(NUCLEUS_CLASSES)
        assert len(dataset) == 2  # the fixture's two test tiles


BAG_CONFIGS = [p for p in CONFIGS if 'synthetic-bags' in p]


@pytest.mark.parametrize('path', BAG_CONFIGS, ids=lambda p: osp.basename(p))
def test_bag_config_classes_match_the_data(path, tiny_bags):
    """num_classes of the patch classifier equals the classes of the bag files."""
    cfg = Config.fromfile(path)
    ctx, _ = _scope(cfg)
    with ctx:
        from mmseg.registry import DATASETS
        for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
            ds_cfg = cfg[loader].dataset
            ds_cfg.data_root = tiny_bags + '/'
            dataset = DATASETS.build(ds_cfg)
            assert dataset.metainfo['classes'] == ('tumour', 'stroma', 'lymphocytic',
                                                   'necrosis')
            assert cfg.model.num_classes == 4
            assert len(dataset) > 0


# ------------------------------------------------------------------- model-zoo peers

ZOO = [p for p in CONFIGS if osp.join('configs', 'benchmarks', 'zoo') in p]
ZOO_DET = [p for p in ZOO if '_fpn_' in osp.basename(p)]
ZOO_SEG = [p for p in ZOO if p not in ZOO_DET]
MMDET_CONFIGS = osp.join(osp.dirname(__import__('mmdet').__file__), '.mim', 'configs')


def _write_mnfinder_raw(root: str) -> None:
    """Three training images and one validation image in mnfinder's own layout (grey tif,
    RGBA nucleus / micronucleus masks, one colour per object): 64x64, four 10x10 nuclei
    and two 3x3 micronuclei each."""
    import numpy as np
    import tifffile
    from PIL import Image
    rng = np.random.default_rng(0)
    for split, names in (('training-data', ('1', '2', '3')), ('validation-data', ('7', ))):
        d = osp.join(root, split, 'setA')
        for sub in ('images', 'nucleus_masks', 'mn_masks'):
            os.makedirs(osp.join(d, sub), exist_ok=True)
        for k, name in enumerate(names):
            img = rng.integers(200, 800, (64, 64)).astype(np.uint16)
            nuc = np.zeros((64, 64, 4), np.uint8)
            mn = np.zeros((64, 64, 4), np.uint8)
            for i, (y, x) in enumerate(((4, 4), (4, 40), (36, 8), (40, 44))):
                y, x = y + k, x + 2 * k
                nuc[y:y + 10, x:x + 10] = (10 * i + 10, 50, 90, 255)
                img[y:y + 10, x:x + 10] += 3000
            for i, (y, x) in enumerate(((20, 26), (52, 28))):
                mn[y:y + 3, x:x + 3] = (10 * i + 10, 60, 120, 255)
                img[y:y + 3, x:x + 3] += 2000
            tifffile.imwrite(osp.join(d, 'images', name + '.tif'), img)
            Image.fromarray(nuc).save(osp.join(d, 'nucleus_masks', name + '.png'))
            Image.fromarray(mn).save(osp.join(d, 'mn_masks', name + '.png'))


@pytest.fixture(scope='module')
def tiny_mnfinder(tmp_path_factory) -> str:
    """A tiny mnfinder set in both layouts (detection COCO + mmseg), written by the
    repository's converter from :func:`_write_mnfinder_raw`: train 2 images, val 1 (from
    training-data), test 1 (validation-data)."""
    from conftest import run_tool
    raw = str(tmp_path_factory.mktemp('mnfinder_raw'))
    out = str(tmp_path_factory.mktemp('mnfinder'))
    _write_mnfinder_raw(raw)
    run_tool(['tools/dataset_converters/mnfinder.py', '--root', raw, '--out', out,
              '--val-from-train', '1'])
    return out


@pytest.mark.parametrize('path', ZOO, ids=_config_id)
def test_zoo_config_trains_two_iterations_smoke(path, tiny_synthetic, tiny_mnfinder, tmp_path):
    """Smoke test: each zoo peer trains 2 iterations (batch 2) on a tiny copy of its data
    set through mmengine's Runner, then validates with its own evaluator."""
    from mmengine.hooks import Hook
    from mmengine.runner import Runner
    cfg = Config.fromfile(path)
    root = tiny_mnfinder if 'mnfinder' in osp.basename(path) else tiny_synthetic
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = root + '/'
        cfg[loader].num_workers = 0
        cfg[loader].persistent_workers = False
    cfg.train_dataloader.batch_size = 2
    cfg.train_cfg.max_iters = 2
    cfg.train_cfg.val_interval = 2
    cfg.default_hooks.checkpoint = None
    cfg.default_hooks.logger.interval = 1
    cfg.work_dir = str(tmp_path)
    seen = dict(losses=[], metrics=None)

    class Record(Hook):
        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            seen['losses'].append(float(outputs['loss'].detach()))

        def after_val_epoch(self, runner, metrics=None):
            seen['metrics'] = metrics

    torch.manual_seed(0)
    runner = Runner.from_cfg(cfg)
    runner.register_hook(Record(), 'LOWEST')
    runner.train()
    assert len(seen['losses']) == 2 and all(math.isfinite(v) for v in seen['losses'])
    keys = ('cell/f1', 'cell/coco_AP') if path in ZOO_DET else ('nuclei/pq', 'nuclei/aji')
    for key in keys:
        assert 0.0 <= seen['metrics'][key] <= 1.0, (key, seen['metrics'])


def _resolved(path: str) -> dict:
    """The resolved config as a plain dict, without ``custom_imports`` (which only adds
    registrations)."""
    cfg = Config.fromfile(path).to_dict()
    cfg.pop('custom_imports', None)
    return cfg


@pytest.mark.parametrize('ds', ['synthetic', 'mnfinder'])
def test_zoo_peers_are_the_runs_of_the_method_studies(ds):
    """The zoo Faster R-CNN / RetinaNet / U-Net resolve to exactly the stock baselines of
    the PU-detection and exclusive-CE studies (the zoo configs are the references)."""
    zoo = osp.join(REPO, 'configs', 'benchmarks', 'zoo')
    pairs = [
        (f'faster-rcnn_r18-c32_fpn_500i_{ds}-sparse30.py',
         f'pu_detection/faster-rcnn_r18-c32_fpn_ce_500i_{ds}-sparse30.py'),
        (f'retinanet_r18-c32_fpn_500i_{ds}-sparse30.py',
         f'pu_detection/retinanet_r18-c32_fpn_500i_{ds}-sparse30.py'),
        (f'unet-s5-d16-c16_fcn_300i_{ds}-sparse30-128x128.py',
         f'exclusive_ce/unet-s5-d16-c16_fcn_ce_300i_{ds}-sparse30-128x128.py'),
    ]
    for mine, theirs in pairs:
        assert _resolved(osp.join(zoo, mine)) == _resolved(
            osp.join(REPO, 'configs', theirs)), mine


@pytest.mark.parametrize('local, zoo_config', [
    ('atss_r50_fpn.py', 'atss/atss_r50_fpn_1x_coco.py'),
    ('fcos_r50_fpn_gn-head-center-normbbox-centeronreg-giou.py',
     'fcos/fcos_r50_fpn_gn-head-center-normbbox-centeronreg-giou_8xb8-amp-lsj-200e_coco.py'),
])
def test_zoo_model_copies_equal_the_installed_mmdet_zoo(local, zoo_config):
    """ATSS and FCOS are defined inline in mmdet's zoo configs (beside COCO data), so our
    bases hold their ``model`` verbatim: it must equal the installed mmdet's, key for key."""
    mine = Config.fromfile(osp.join(REPO, 'configs', 'benchmarks', 'zoo', '_base_', local))
    theirs = Config.fromfile(osp.join(MMDET_CONFIGS, zoo_config))
    assert mine.model.to_dict() == theirs.model.to_dict()


def test_zoo_peers_share_backbone_data_and_schedule():
    """Every zoo detector of one data set has the same backbone, FPN widths, data, schedule
    and runtime, so that the comparison isolates the head and the loss; both zoo segmentors
    of one data set share everything but the model."""
    def shared(path):
        cfg = _resolved(path)
        model = cfg.pop('model')
        neck = dict(in_channels=model['neck']['in_channels'],
                    out_channels=model['neck']['out_channels'],
                    start_level=model['neck'].get('start_level', 0))
        return dict(cfg, backbone=model['backbone'], neck=neck,
                    preprocessor={k: v for k, v in model['data_preprocessor'].items()
                                  if k != 'batch_augments'})

    for ds in ('synthetic', 'mnfinder'):
        paths = [p for p in ZOO_DET if f'_{ds}-' in p]
        assert [osp.basename(p).split('_')[0] for p in paths] == [
            'atss', 'cascade-rcnn', 'faster-rcnn', 'fcos', 'retinanet']
        ref = shared(paths[0])
        assert ref['backbone'] == dict(
            type='ResNet', depth=18, base_channels=32, num_stages=4, out_indices=(0, 1, 2, 3),
            frozen_stages=-1, norm_cfg=dict(type='BN', requires_grad=True), norm_eval=False,
            style='pytorch', init_cfg=None)
        assert ref['neck'] == dict(in_channels=[32, 64, 128, 256], out_channels=64,
                                   start_level=0)
        assert ref['optim_wrapper']['optimizer'] == dict(type='SGD', lr=0.02, momentum=0.9,
                                                         weight_decay=0.0001)
        for p in paths[1:]:
            assert shared(p) == ref, p
        deeplab, unet = (_resolved(p) for p in ZOO_SEG if f'_{ds}-' in p)
        assert (deeplab['model']['backbone']['type'], unet['model']['backbone']['type']) == (
            'ResNetV1c', 'UNet')
        assert deeplab['model']['pretrained'] is None
        deeplab.pop('model')
        unet.pop('model')
        assert deeplab == unet
    assert sorted(osp.basename(p) for p in ZOO_SEG) == [
        f'{m}_300i_{ds}-sparse30-128x128.py' for m in ('deeplabv3plus_r18-c32-d8',
                                                       'unet-s5-d16-c16_fcn')
        for ds in ('mnfinder', 'synthetic')]
