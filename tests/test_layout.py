"""Tests of projects/common/layout.py (LayoutWriter) on a hand-made two-sample dataset."""
import json
import math
import os.path as osp

import numpy as np
import pytest

from projects.common.io import read_image, read_instance_map, read_points
from projects.common.layout import LayoutWriter, check_box_size, seeded_split, track

CLASSES = ('tumour', 'lymphocyte')
H, W = 6, 8


def _labelled_sample():
    """6x8 image with two instances whose ids are not in raster order:
    id 2 (A): pixels (row 3, col 5) and (row 4, col 5), class 1 (lymphocyte);
    id 7 (B): an L of pixels (0, 0), (0, 1), (1, 0), class 0 (tumour)."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (H, W, 3)).astype(np.uint8)
    inst = np.zeros((H, W), np.int32)
    inst[3:5, 5] = 2
    inst[0, 0:2] = 7
    inst[1, 0] = 7
    labels = [1, 0]  # ascending id order: id 2, then id 7
    semantic = np.zeros((H, W), np.uint8)
    semantic[inst == 2] = 2
    semantic[inst == 7] = 1
    region = np.arange(H * W, dtype=np.uint8).reshape(H, W) % 5
    # uncompressed COCO RLE of A, column-major (index = col * H + row): pixels 5*6+3 = 33
    # and 34 -> 33 zeros, 2 ones, 48 - 35 = 13 zeros
    rle_a = {'size': [H, W], 'counts': [33, 2, 13]}
    # B: (0, 0) -> 0, (1, 0) -> 1, (0, 1) -> 6 -> 0 zeros, 2 ones, 4 zeros, 1 one, 41 zeros
    rle_b = {'size': [H, W], 'counts': [0, 2, 4, 1, 41]}
    return image, semantic, inst, labels, region, [rle_a, rle_b]


def _write(out, **kw):
    image, semantic, inst, labels, region, rles = _labelled_sample()
    unl = np.full((5, 4, 3), 77, np.uint8)
    writer = LayoutWriter(str(out), CLASSES, 'toy {split} split', source='hand-made', **kw)
    assert writer.add('train', 's1', image, semantic, inst, labels,
                      extra_maps={'region_dir': region},
                      ann_extra=[{'segmentation': r} for r in rles]) == 1
    assert writer.add('unlabeled', 'u1', unl) == 1
    return writer.close(), (image, semantic, inst, region, unl)


def _coco(out, split):
    with open(osp.join(out, 'annotations', f'{split}.json')) as f:
        return json.load(f)


def test_two_samples_files_and_coco(tmp_path):
    out = tmp_path / 'out'
    counts, (image, semantic, inst, region, unl) = _write(out)
    assert counts == {
        'train': dict(images=1, unlabeled_images=0, empty_images=0, instances=2,
                      per_class={'tumour': 1, 'lymphocyte': 1}),
        'unlabeled': dict(images=1, unlabeled_images=1, empty_images=0, instances=0,
                          per_class={'tumour': 0, 'lymphocyte': 0})}

    # segmentation layout: every file holds exactly what was given
    assert np.array_equal(read_image(str(out / 'images' / 's1.png')), image)
    assert np.array_equal(read_image(str(out / 'img_dir' / 'train' / 's1.png')), image)
    assert np.array_equal(read_image(str(out / 'ann_dir' / 'train' / 's1.png'), 1), semantic)
    assert np.array_equal(read_instance_map(str(out / 'inst_dir' / 'train' / 's1.png')), inst)
    assert np.array_equal(read_image(str(out / 'region_dir' / 'train' / 's1.png'), 1), region)
    pts, labels = read_points(str(out / 'points' / 'train' / 's1.csv'), shape=(H, W))
    # A: col 5 -> x = 5.5; rows 3, 4 -> y = 3.5 + 0.5 = 4.0. B: cols 0, 1, 0 -> x = 1/3 + 0.5
    # = 0.8333 (CSV: 0.83), rows 0, 0, 1 -> y = 0.83; rows in ascending id order (2, 7)
    assert np.allclose(pts, [[5.5, 4.0], [0.83, 0.83]], atol=1e-6)
    assert labels.tolist() == [1, 0]
    # the unlabeled sample: image files only
    assert np.array_equal(read_image(str(out / 'images' / 'u1.png')), unl)
    assert np.array_equal(read_image(str(out / 'img_dir' / 'unlabeled' / 'u1.png')), unl)
    for folder in ('ann_dir', 'inst_dir', 'points', 'region_dir'):
        assert not (out / folder / 'unlabeled').exists()

    train = _coco(out, 'train')
    assert train['info'] == {'description': 'toy train split', 'source': 'hand-made'}
    assert train['licenses'] == []
    assert train['categories'] == [{'id': 1, 'name': 'tumour'}, {'id': 2, 'name': 'lymphocyte'}]
    assert train['images'] == [{'id': 1, 'file_name': 's1.png', 'height': H, 'width': W}]
    a, b = train['annotations']
    # A: tight box cols 5..6, rows 3..5 -> xywh [5, 3, 1, 2], 2 px, class 1 -> category 2
    assert a == {'id': 1, 'image_id': 1, 'category_id': 2, 'bbox': [5.0, 3.0, 1.0, 2.0],
                 'area': 2.0, 'iscrowd': 0, 'point': [5.5, 4.0],
                 'segmentation': {'size': [H, W], 'counts': [33, 2, 13]}}
    # B: box cols 0..2, rows 0..2 -> [0, 0, 2, 2], 3 px, point 0.8333 rounded to 3 decimals
    assert b['bbox'] == [0.0, 0.0, 2.0, 2.0] and b['area'] == 3.0
    assert b['point'] == [0.833, 0.833] and b['category_id'] == 1 and b['id'] == 2
    unl_coco = _coco(out, 'unlabeled')
    assert unl_coco['images'] == [{'id': 1, 'file_name': 'u1.png', 'height': 5, 'width': 4}]
    assert unl_coco['annotations'] == []


def test_pycocotools_loads_and_decodes_the_masks(tmp_path):
    from pycocotools.coco import COCO
    out = tmp_path / 'out'
    _, (_, _, inst, _, _) = _write(out)
    coco = COCO(str(out / 'annotations' / 'train.json'))
    assert coco.getCatIds() == [1, 2] and coco.getImgIds() == [1]
    anns = coco.loadAnns(coco.getAnnIds(imgIds=1))
    for ann, inst_id in zip(anns, (2, 7)):  # pycocotools' RLE decoder: the written instance
        mask = coco.annToMask(ann)
        assert np.array_equal(mask, inst == inst_id) and mask.sum() == ann['area']
    unl = COCO(str(out / 'annotations' / 'unlabeled.json'))
    assert unl.getImgIds() == [1] and unl.getAnnIds() == []


def test_box_size_boxes_are_centred_and_not_clipped(tmp_path):
    out = tmp_path / 'out'
    _write(out, box_size=10)
    a, b = _coco(out, 'train')['annotations']
    # 10x10 box centred on A's point (5.5, 4.0): x1 = 5.5 - 5 = 0.5, y1 = 4.0 - 5 = -1.0;
    # NOT clipped to the 8x6 image (the point stays the box centre); area 10 * 10
    assert a['bbox'] == [0.5, -1.0, 10.0, 10.0] and a['area'] == 100.0
    assert a['point'] == [5.5, 4.0]
    # B (0.8333, 0.8333): 0.8333 - 5 = -4.1667 -> -4.167 (3 decimals)
    assert b['bbox'] == [-4.167, -4.167, 10.0, 10.0]


def test_full_precision_supercategory_and_declared_splits(tmp_path):
    image, semantic, inst, labels, _, _ = _labelled_sample()
    writer = LayoutWriter(str(tmp_path), CLASSES, 'toy', supercategory='nucleus',
                          licenses=None, decimals=None, splits=('train', 'val'))
    writer.add('train', 's1', image, semantic, inst, labels)
    empty_inst = np.zeros((H, W), np.int32)
    writer.add('train', 's2', image, np.zeros((H, W), np.uint8), empty_inst, [])
    counts = writer.close()
    assert counts['train']['empty_images'] == 1 and counts['train']['instances'] == 2
    assert counts['val']['images'] == 0
    train = _coco(tmp_path, 'train')
    assert list(train) == ['info', 'images', 'annotations', 'categories']  # no licenses key
    assert train['info'] == {'description': 'toy'}
    assert train['categories'][0] == {'id': 1, 'name': 'tumour', 'supercategory': 'nucleus'}
    assert train['annotations'][1]['point'] == [1 / 3 + 0.5, 1 / 3 + 0.5]  # not rounded
    assert [i['id'] for i in train['images']] == [1, 2]
    # a declared split with no sample still gets its JSON and (empty) folders
    assert _coco(tmp_path, 'val')['images'] == []
    assert (tmp_path / 'img_dir' / 'val').is_dir() and (tmp_path / 'points' / 'val').is_dir()
    assert read_points(str(tmp_path / 'points' / 'train' / 's2.csv'))[0].shape == (0, 2)


@pytest.mark.parametrize('box_size', [0, -4, math.nan, math.inf, True, '8'])
def test_invalid_box_size_raises(tmp_path, box_size):
    with pytest.raises(ValueError, match='--box-size'):
        LayoutWriter(str(tmp_path), CLASSES, 'toy', box_size=box_size)
    with pytest.raises(ValueError, match='--box-size'):
        check_box_size(box_size)
    assert check_box_size(None) is None and check_box_size(np.int64(32)) == 32.0


def test_bad_samples_raise_and_write_nothing(tmp_path):
    image, semantic, inst, labels, _, _ = _labelled_sample()
    writer = LayoutWriter(str(tmp_path), CLASSES, 'toy')
    cases = [
        (dict(inst_map=inst), r'unlabeled sample \(semantic=None\) takes no inst_map'),
        (dict(semantic=semantic, labels=labels), 'needs semantic, inst_map and labels'),
        (dict(semantic=semantic, inst_map=inst, labels=[0]), '1 labels for 2 instances'),
        (dict(semantic=semantic, inst_map=inst, labels=[0, 2]), r'label 2 .*\[0, 2\)'),
        (dict(semantic=semantic.astype(np.int32), inst_map=inst, labels=labels),
         'semantic must be uint8'),
        (dict(semantic=semantic, inst_map=inst[:5], labels=labels), 'inst_map has shape'),
        (dict(semantic=semantic, inst_map=inst, labels=labels,
              ann_extra=[{'bbox': 1}, {}]), "may not redefine \\['bbox'\\]"),
        (dict(semantic=semantic, inst_map=inst, labels=labels,
              extra_maps={'ann_dir': semantic}), 'standard layout folder'),
    ]
    for kwargs, match in cases:
        with pytest.raises(ValueError, match='train/bad: .*' + match):
            writer.add('train', 'bad', image, **kwargs)
    with pytest.raises(ValueError, match='image must be RGB uint8'):
        writer.add('train', 'bad', image.astype(np.float32))
    with pytest.raises(ValueError, match='name: expected .* without path separators'):
        writer.add('train', '../x', image)
    assert not (tmp_path / 'images').exists()  # every check ran before any write
    writer.add('train', 'ok', image)
    with pytest.raises(ValueError, match='val/ok: sample name already written in split '
                                         '"train"'):
        writer.add('val', 'ok', image)
    writer.close()
    with pytest.raises(RuntimeError, match='after close'):
        writer.add('train', 'late', image)


def test_track_yields_every_item_once_in_order():
    # mmengine's bar binds sys.stdout at import, so its text is not checked here
    assert list(track(['a', 'b'], enabled=False)) == ['a', 'b']
    assert list(track(iter(['a', 'b', 'c']))) == ['a', 'b', 'c']  # a generator is listed
    assert list(track([])) == []  # no bar for nothing


def test_seeded_split_hands_out_the_permutation_in_order():
    """The converters' split: over the sorted ids, the seeded permutation's first k go to
    the first named split, the next to the second, the rest to train."""
    ids = ['e', 'a', 'd', 'c', 'b', 'f']
    perm = np.random.default_rng(3).permutation(6)  # indices into ['a', ..., 'f']
    order = ['abcdef'[i] for i in perm]
    out = seeded_split(ids, [('test', 2), ('val', 1)], 3)
    assert out == dict(train=sorted(order[3:]), test=sorted(order[:2]), val=[order[2]])
    # the first split is nested in a larger one; the input order does not matter
    assert set(out['test']) < set(seeded_split(ids[::-1], [('test', 4)], 3)['test'])
    assert seeded_split(ids, [('val', 0)], 3) == dict(train=sorted(ids), val=[])
