"""CellCropDataset, RandomRot90, PackPatchInputs on crops (projects/cell_gan/dataset.py) and
the synthetic cell converter (tools/dataset_converters/synthetic_cells.py)."""
import importlib.util
import json
import os.path as osp
from collections import Counter

import numpy as np
import pytest
import torch
from mmdet.registry import DATASETS as DET_DATASETS
from mmengine.config import Config
from mmseg.registry import DATASETS as SEG_DATASETS
from PIL import Image

import projects.cell_gan.dataset  # noqa: F401 (registers CellCropDataset, RandomRot90)
from projects.cell_gan.dataset import RandomRot90
from projects.cell_gan.extraction import cell_crops, extract_cells
from projects.common.registry import build_in_scope
from projects.common.stain import lab_stats
from projects.common.synthetic import NUCLEUS_CLASSES, generate_tile, tile_seed
from projects.common.transforms import PackPatchInputs

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
SCOPES = {'mmseg': SEG_DATASETS, 'mmdet': DET_DATASETS}


def _build(cfg: dict, scope: str = 'mmseg'):
    return build_in_scope(scope, SCOPES[scope], cfg)


def _write_set(root, crops=None, data_list=None, images=None, classes=('a', 'b')):
    """cells.json + two crops: c0 (image s1, class 1), c1 (image s2, unknown)."""
    rng = np.random.default_rng(0)
    crops = crops if crops is not None else rng.integers(0, 256, (2, 32, 32, 3), np.uint8)
    (root / 'crops').mkdir(parents=True, exist_ok=True)
    for k, crop in enumerate(crops):
        Image.fromarray(crop).save(root / 'crops' / f'c{k}.png')
    if data_list is None:
        data_list = [dict(img_path='crops/c0.png', image_id='s1', gt_label=1, inst_id=3,
                          bbox=[1, 2, 9, 12], centroid=[5.0, 7.0], area=60),
                     dict(img_path='crops/c1.png', image_id='s2', gt_label=-1, inst_id=1,
                          bbox=[0, 0, 8, 8], centroid=[4.0, 4.0], area=50)]
    if images is None:
        images = [dict(image_id='s1', img_path='src/s1.png', gt_label=0),
                  dict(image_id='s2', img_path='/abs/s2.png', gt_label=1)]
    ann = dict(metainfo=dict(classes=list(classes), crop_size=32, mode='seg'),
               data_list=data_list, images=images)
    (root / 'cells.json').write_text(json.dumps(ann))
    return crops


@pytest.mark.parametrize('scope', ['mmseg', 'mmdet'])
def test_dataset_loads_the_json(tmp_path, scope):
    crops = _write_set(tmp_path)
    pipeline = [dict(type='StrictLoadImageFromFile'), dict(type='PackPatchInputs')]
    ds = _build(dict(type='CellCropDataset', ann_file=str(tmp_path / 'cells.json'),
                     pipeline=pipeline, check_files=True), scope)
    assert len(ds) == 2
    assert ds.metainfo['classes'] == ('a', 'b') and ds.metainfo['crop_size'] == 32
    assert ds.get_data_info(0)['img_path'] == str(tmp_path / 'crops' / 'c0.png')
    assert list(ds.image_ids) == ['s1', 's2']
    assert ds.image_index.tolist() == [0, 1] and ds.gt_labels.tolist() == [1, -1]
    assert ds.images[0]['img_path'] == str(tmp_path / 'src' / 's1.png')
    assert ds.images[1]['img_path'] == '/abs/s2.png' and ds.images[1]['gt_label'] == 1
    out = ds[0]
    # the crop comes back exactly, channel-first, in the loader's BGR order (the model's
    # data preprocessor converts to RGB)
    assert out['inputs'].dtype == torch.uint8
    np.testing.assert_array_equal(out['inputs'].numpy(), crops[0][..., ::-1].transpose(2, 0, 1))
    sample = out['data_samples']
    assert int(sample.gt_label) == 1 and sample.image_id == 's1' and sample.inst_id == 3
    assert sample.sample_idx == 0 and sample.img_path.endswith('c0.png')
    assert int(ds[1]['data_samples'].gt_label) == -1


def test_dataset_indices_and_data_prefix(tmp_path):
    _write_set(tmp_path / 'ann')
    (tmp_path / 'elsewhere').mkdir()
    (tmp_path / 'ann' / 'crops').rename(tmp_path / 'elsewhere' / 'crops')
    ds = _build(dict(type='CellCropDataset', ann_file='ann/cells.json',
                     data_root=str(tmp_path), indices=[1], check_files=True,
                     data_prefix=dict(img_path='elsewhere')))
    assert len(ds) == 1 and list(ds.image_ids) == ['s2'] and ds.image_index.tolist() == [1]
    assert ds.get_data_info(0)['img_path'] == osp.join(str(tmp_path), 'elsewhere',
                                                       'crops/c1.png')


def test_dataset_errors_name_the_file(tmp_path):
    ann = tmp_path / 'cells.json'
    _write_set(tmp_path, data_list=[])
    with pytest.raises(ValueError, match=rf'{ann}: "data_list" is missing or empty'):
        _build(dict(type='CellCropDataset', ann_file=str(ann)))
    with pytest.raises(FileNotFoundError, match=rf'{tmp_path / "none.json"}'):
        _build(dict(type='CellCropDataset', ann_file=str(tmp_path / 'none.json')))
    # a missing crop: at build time with check_files, else when the sample is loaded
    _write_set(tmp_path)
    (tmp_path / 'crops' / 'c1.png').unlink()
    missing = str(tmp_path / 'crops' / 'c1.png')
    with pytest.raises(FileNotFoundError, match=rf'data_list\[1\]: crop file {missing}'):
        _build(dict(type='CellCropDataset', ann_file=str(ann), check_files=True))
    ds = _build(dict(type='CellCropDataset', ann_file=str(ann),
                     pipeline=[dict(type='StrictLoadImageFromFile')]))
    with pytest.raises(FileNotFoundError, match=missing):
        ds[1]
    bad = dict(img_path='crops/c0.png', image_id='nope', gt_label=0)
    _write_set(tmp_path, data_list=[bad])
    with pytest.raises(ValueError, match=r"data_list\[0\] \(crops/c0.png\): image_id 'nope'"):
        _build(dict(type='CellCropDataset', ann_file=str(ann)))
    _write_set(tmp_path, data_list=[dict(bad, image_id='s1', gt_label=2)])
    with pytest.raises(ValueError, match=r'gt_label must be -1 or a class index < 2'):
        _build(dict(type='CellCropDataset', ann_file=str(ann)))
    _write_set(tmp_path)
    with pytest.raises(ValueError, match=r"classes \['a', 'b'\] differ"):
        _build(dict(type='CellCropDataset', ann_file=str(ann),
                    metainfo=dict(classes=('x', 'y'))))


def test_random_rot90_draws_the_four_orientations():
    img = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)  # non-square
    rot = RandomRot90(prob=0.75)
    np.random.seed(0)
    seen = Counter()
    for _ in range(4000):
        out = rot(dict(img=img.copy(), img_shape=(2, 3)))
        k = out['rot90']
        seen[k] += 1
        np.testing.assert_array_equal(out['img'], np.rot90(img, k))
        assert out['img_shape'] == ((3, 2) if k % 2 else (2, 3))
    # prob 0.75 spread over 3 turns: each orientation 1/4 (binomial sd 0.007 at n=4000)
    for k in range(4):
        assert seen[k] / 4000 == pytest.approx(0.25, abs=0.03)
    assert RandomRot90(prob=0)(dict(img=img.copy()))['rot90'] == 0
    with pytest.raises(ValueError, match='RandomRot90: prob'):
        RandomRot90(prob=1.5)


def test_pack_patch_inputs_moved_and_reexported():
    from projects.negative_pseudo_labels import PackPatchInputs as npl_pack
    from projects.negative_pseudo_labels.dataset import PackPatchInputs as npl_pack2
    assert npl_pack is PackPatchInputs and npl_pack2 is PackPatchInputs
    bgr = np.random.default_rng(0).integers(0, 256, (4, 4, 3), np.uint8)
    out = PackPatchInputs()(dict(img=bgr, image_id='x', gt_label=2))
    np.testing.assert_array_equal(out['inputs'].numpy(), bgr.transpose(2, 0, 1))
    assert out['data_samples'].image_id == 'x' and int(out['data_samples'].gt_label) == 2


def test_base_config_builds_in_both_scopes(tmp_path):
    cfg = Config.fromfile(osp.join(REPO, 'configs/_base_/datasets/synthetic_cells.py'))
    assert cfg.val_evaluator == dict(type='ClusteringMetric')
    assert cfg.train_dataloader.batch_size == 64
    _write_set(tmp_path / 'train')
    for scope in SCOPES:
        ds = _build(dict(cfg.train_dataloader.dataset, data_root=str(tmp_path)), scope)
        out = ds[0]
        assert out['inputs'].shape == (3, 32, 32) and int(out['data_samples'].gt_label) == 1


# ------------------------------------------------------------------------ converter
def _load_converter():
    spec = importlib.util.spec_from_file_location(
        'synthetic_cells_tool', osp.join(REPO, 'tools', 'dataset_converters',
                                         'synthetic_cells.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_crop_labels_hand_case():
    conv = _load_converter()
    # extracted nucleus 1 (row 0, 10 px): 4 px of GT nucleus 1 (tumour), 3 of GT 2
    # (lymphocyte), 3 background -> tumour, fraction 0.4, 2 GT nuclei;
    # nucleus 2 (row 1, 6 px): 3 stromal (GT 3), 3 background -> 2 * 3 >= 6: unknown (-1);
    # nucleus 3 (row 2, 4 px): 2 lymphocyte (GT 2), 2 stromal (GT 3) -> tie: lowest class
    inst = np.zeros((3, 10), np.int32)
    inst[0, :] = 1
    inst[1, :6] = 2
    inst[2, :4] = 3
    gt = np.zeros((3, 10), np.int64)
    gt[0, :4], gt[0, 4:7] = 1, 2
    gt[1, :3] = 3
    gt[2, :2], gt[2, 2:4] = 2, 3
    info = [dict(inst_id=1, bbox=[0, 0, 10, 1]), dict(inst_id=2, bbox=[0, 1, 6, 2]),
            dict(inst_id=3, bbox=[0, 2, 4, 3])]
    labels, extra = conv.crop_labels(inst, info, gt, np.array([0, 1, 2]))
    assert labels == [0, -1, 1]
    assert extra == [dict(label_fraction=0.4, num_gt=2), dict(label_fraction=0.5, num_gt=1),
                     dict(label_fraction=0.5, num_gt=2)]
    # image label: tumour + mitosis > half of the nuclei
    assert conv.image_label(np.array([0, 3, 1])) == 1 and conv.image_label(np.array([0, 1])) == 0


def test_synthetic_converter_labels_follow_the_ground_truth(tmp_path):
    conv = _load_converter()
    out = tmp_path / 'cells'
    summary = conv.generate(str(out), num_train=2, num_val=0, num_test=0, size=256,
                            progress=False)
    ann = json.loads((out / 'train' / 'cells.json').read_text())
    bbox_ann = json.loads((out / 'train' / 'cells_bbox.json').read_text())
    assert ann['metainfo']['classes'] == list(NUCLEUS_CLASSES)
    assert not (out / 'val').exists()
    data = ann['data_list']
    assert len(data) == summary['splits']['train']['crops'] > 0
    assert [d['bbox'] for d in bbox_ann['data_list']] == [d['bbox'] for d in data]
    stats = [np.asarray(v) for v in ann['metainfo']['target_stats']]
    for i in range(2):
        name = f'train_{i:04d}'
        tile = generate_tile(tile_seed(0, 'train', i), (256, 256), scale=2.5,
                             mitosis_rate=0.05)
        if i == 0:  # the Reinhard target is train tile 0
            for a, b in zip(stats, lab_stats(tile['image'], 'lalphabeta')):
                np.testing.assert_allclose(a, b)
        # the same pipeline, run again: same nuclei, same crops
        res = extract_cells(tile['image'], stats)
        mine = [d for d in data if d['image_id'] == name]
        assert [d['inst_id'] for d in mine] == [d['inst_id'] for d in res['info']]
        crops, _ = cell_crops(res['normalized'], res['inst_map'])
        gt, labels = tile['inst_map'], tile['labels']
        for d, crop in zip(mine, crops):
            np.testing.assert_array_equal(
                np.asarray(Image.open(out / 'train' / d['img_path'])), crop)
            # label by hand: the ground-truth class of each pixel of the nucleus
            ys, xs = np.nonzero(res['inst_map'] == d['inst_id'])
            votes = Counter(int(labels[gt[y, x] - 1]) if gt[y, x] else -1
                            for y, x in zip(ys, xs))
            if 2 * votes[-1] >= len(ys):
                expected = -1
            else:
                best = max(votes[c] for c in range(4))
                expected = min(c for c in range(4) if votes[c] == best)
            assert d['gt_label'] == expected
            assert d['label_fraction'] == pytest.approx(votes[expected] / len(ys), abs=1e-4)
        # image label: tumour + mitosis nuclei > half of the tile's nuclei
        counts = Counter(labels.tolist())
        img = next(x for x in ann['images'] if x['image_id'] == name)
        assert img['gt_label'] == int(counts[0] + counts[3] > len(labels) / 2)
        assert img['img_path'] == f'images/{name}.png'
    # the crops load through the dataset
    ds = _build(dict(type='CellCropDataset',
                                 ann_file=str(out / 'train' / 'cells.json'),
                                 check_files=True))
    assert ds.gt_labels.tolist() == [d['gt_label'] for d in data]
    with pytest.raises(ValueError, match='output folder is not empty'):
        conv.generate(str(out), num_train=1, num_val=0, num_test=0, size=64, progress=False)
