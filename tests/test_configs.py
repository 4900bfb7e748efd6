"""Every runnable config builds its model and data set through the registries and trains."""
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

import projects  # noqa: F401

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = sorted(p for p in glob.glob(osp.join(REPO, 'configs', '**', '*.py'), recursive=True)
                 if '_base_' not in p)


def _scope(cfg: Config):
    scope = cfg.get('default_scope', 'mmdet')
    return DefaultScope.overwrite_default_scope(scope), scope


def _det_classes(cfg: Config) -> int:
    """num_classes of a two-stage (RoI head) or single-stage (bbox_head) detector."""
    head = cfg.model.roi_head.bbox_head if 'roi_head' in cfg.model else cfg.model.bbox_head
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
    return dict(inputs=[torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)],
                data_samples=[sample])


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


@pytest.mark.parametrize('path', BUILT, ids=[osp.basename(p) for p in BUILT])
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
    """A GAN trains through train_step: n_critic iterations on two crops take one critic
    step each and, after the last, one generator and one Q step, all finite."""
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
    assert logs[-1]['loss_q'] > 0  # -log Q(c | G(z, c)) of an untrained Q


@pytest.mark.parametrize('path', [p for p in CONFIGS
                                  if 'synthetic' in p and 'bags' not in p and 'cells' not in p],
                         ids=lambda p: osp.basename(p))
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
