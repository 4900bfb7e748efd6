"""Tests of CellDetDataset and NucleiSegDataset, built through the real registries."""
import json
import os
import os.path as osp

import numpy as np
import pytest
from mmengine.registry import init_default_scope

import projects.common.datasets  # noqa: F401  (registers the datasets)
from projects.common.io import write_image, write_instance_map, write_points


# ----------------------------------------------------------------- detection fixture
def _det_fixture(root, annotations=None, images=None, categories=None, write_images=True):
    """COCO fixture: a.png 40x30 (2 annotations), b.png 40x30 (none), c.png 20x10 (1)."""
    images = images if images is not None else [
        dict(id=1, file_name='a.png', height=30, width=40),
        dict(id=2, file_name='b.png', height=30, width=40),
        dict(id=3, file_name='c.png', height=10, width=20)]
    # categories listed out of id order: classes must follow the ids
    categories = categories if categories is not None else [
        dict(id=7, name='mitosis'), dict(id=3, name='tumour')]
    annotations = annotations if annotations is not None else [
        # box-only annotation: the point is the box centre (4 + 10/2, 6 + 8/2) = (9, 10)
        dict(id=11, image_id=1, category_id=7, bbox=[4, 6, 10, 8], area=80, iscrowd=0),
        # annotation with a point, crowd -> ignore_flag 1
        dict(id=12, image_id=1, category_id=3, bbox=[18, 12, 6, 6], area=36, iscrowd=1,
             point=[21.5, 15.0]),
        dict(id=13, image_id=3, category_id=3, bbox=[2, 2, 4, 4], area=16, iscrowd=0,
             point=[4, 4])]
    if write_images:
        for img in images:
            write_image(osp.join(root, 'images', img['file_name']),
                        np.full((img['height'], img['width'], 3), 100, np.uint8))
    os.makedirs(osp.join(root, 'annotations'), exist_ok=True)
    path = osp.join(root, 'annotations', 'train.json')
    with open(path, 'w') as f:
        json.dump(dict(images=images, annotations=annotations, categories=categories), f)
    return path


def _build_det(root, **kwargs):
    from mmdet.registry import DATASETS
    init_default_scope('mmdet')
    cfg = dict(type='CellDetDataset', data_root=str(root), ann_file='annotations/train.json',
               data_prefix=dict(img='images/'), pipeline=[])
    cfg.update(kwargs)
    return DATASETS.build(cfg)


def test_cell_det_dataset_parses_and_keeps_empty_images(tmp_path):
    _det_fixture(str(tmp_path))
    ds = _build_det(tmp_path)
    # classes from the categories ordered by id: 3 tumour -> 0, 7 mitosis -> 1
    assert ds.metainfo['classes'] == ('tumour', 'mitosis')
    assert len(ds.metainfo['palette']) == 2
    assert len(ds) == 3  # b.png has no annotation and is kept
    a = ds.get_data_info(0)
    assert a['img_path'] == osp.join(str(tmp_path), 'images', 'a.png')
    assert (a['height'], a['width'], a['img_id']) == (30, 40, 1)
    i0, i1 = a['instances']
    # xywh [4, 6, 10, 8] -> xyxy [4, 6, 14, 14]; point = box centre (9, 10)
    assert i0 == dict(bbox=[4, 6, 14, 14], bbox_label=1, ignore_flag=0, point=[9.0, 10.0])
    assert i1 == dict(bbox=[18, 12, 24, 18], bbox_label=0, ignore_flag=1, point=[21.5, 15.0])
    assert ds.get_data_info(1)['instances'] == []
    assert ds.get_cat_ids(0) == [1, 0]


def test_cell_det_dataset_classes_from_metainfo_and_filter(tmp_path):
    _det_fixture(str(tmp_path))
    ds = _build_det(tmp_path, metainfo=dict(classes=('mitosis', 'tumour')))
    assert ds.get_data_info(0)['instances'][0]['bbox_label'] == 0  # mitosis first now
    # an explicit filter_empty_gt=True is honoured (b.png dropped): 3 -> 2 images
    ds = _build_det(tmp_path, filter_cfg=dict(filter_empty_gt=True))
    assert [ds.get_data_info(i)['img_id'] for i in range(len(ds))] == [1, 3]
    # in test mode nothing is filtered
    ds = _build_det(tmp_path, filter_cfg=dict(filter_empty_gt=True), test_mode=True)
    assert len(ds) == 3


def _ann(**kw):
    base = dict(id=11, image_id=1, category_id=7, bbox=[4, 6, 10, 8], area=80, iscrowd=0)
    base.update(kw)
    return [base]


@pytest.mark.parametrize('anns, err, match', [
    (_ann(bbox=[4, 6, 0, 8]), ValueError, r'train\.json: annotation id 11 \(image id 1.*w <= 0'),
    (_ann(bbox=[4, 6, 5, -1]), ValueError, r'train\.json: annotation id 11.*h <= 0'),
    (_ann(bbox=[45, 6, 5, 5]), ValueError, r'annotation id 11.*entirely outside'),
    (_ann(point=[41, 10]), ValueError, r'train\.json: annotation id 11.*point \(x=41\.0'),
    (_ann(category_id=5), ValueError, r'train\.json: annotation id 11.*category_id 5'),
    (_ann(image_id=99), ValueError, r'train\.json: annotation id 11 refers to image_id 99'),
    (_ann() + _ann(), ValueError, r'train\.json: annotation id 11 is used twice'),
])
def test_cell_det_dataset_bad_annotations(tmp_path, anns, err, match):
    _det_fixture(str(tmp_path), annotations=anns)
    with pytest.raises(err, match=match):
        _build_det(tmp_path)


def test_cell_det_dataset_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r'train\.json: annotation file not found'):
        _build_det(tmp_path)
    os.makedirs(tmp_path / 'annotations')
    (tmp_path / 'annotations' / 'train.json').write_text('')
    with pytest.raises(ValueError, match=r'train\.json: annotation file is empty'):
        _build_det(tmp_path)
    (tmp_path / 'annotations' / 'train.json').write_text('{"images": [], "annotations": []}')
    with pytest.raises(ValueError, match=r'train\.json: no "images"'):
        _build_det(tmp_path)
    (tmp_path / 'annotations' / 'train.json').write_text('{"images": [')
    with pytest.raises(ValueError, match=r'train\.json: not valid JSON'):
        _build_det(tmp_path)
    _det_fixture(str(tmp_path), images=[dict(id=1, file_name='a.png', width=40)],
                 annotations=[], write_images=False)
    with pytest.raises(ValueError, match=r'train\.json: image id 1 has no "height"'):
        _build_det(tmp_path, metainfo=dict(classes=('mitosis', )))


def test_cell_det_dataset_missing_image(tmp_path):
    _det_fixture(str(tmp_path))
    os.remove(tmp_path / 'images' / 'b.png')
    # default: the data list builds; loading the image names the missing file
    ds = _build_det(tmp_path, pipeline=[dict(type='LoadImageFromFile')])
    ds[0]
    with pytest.raises(FileNotFoundError, match=r'b\.png'):
        ds.pipeline(ds.get_data_info(1))
    with pytest.raises(FileNotFoundError, match=r'image id 2: image file .*b\.png not found'):
        _build_det(tmp_path, check_files=True)


# ----------------------------------------------------------------- segmentation fixture
def _seg_fixture(root, names=('n1', 'n2'), npy=('n2', )):
    """img_dir/ann_dir/inst_dir/points for split train; n2's instance map is a .npy."""
    for name in names:
        write_image(osp.join(root, 'img_dir', 'train', name + '.png'),
                    np.zeros((12, 16, 3), np.uint8))
        write_image(osp.join(root, 'ann_dir', 'train', name + '.png'),
                    np.zeros((12, 16), np.uint8))
        ext = '.npy' if name in npy else '.png'
        write_instance_map(osp.join(root, 'inst_dir', 'train', name + ext),
                           np.zeros((12, 16), np.int32))
        write_points(osp.join(root, 'points', 'train', name + '.csv'), np.zeros((0, 2)))


def _build_seg(root, **kwargs):
    from mmseg.registry import DATASETS
    init_default_scope('mmseg')
    cfg = dict(type='NucleiSegDataset', data_root=str(root),
               data_prefix=dict(img_path='img_dir/train', seg_map_path='ann_dir/train',
                                inst_path='inst_dir/train', points_path='points/train'),
               pipeline=[])
    cfg.update(kwargs)
    return DATASETS.build(cfg)


def test_nuclei_seg_dataset_paths(tmp_path):
    _seg_fixture(str(tmp_path))
    ds = _build_seg(tmp_path)
    assert ds.metainfo['classes'] == ('background', 'nucleus')
    assert len(ds) == 2
    d0, d1 = ds.get_data_info(0), ds.get_data_info(1)
    r = str(tmp_path)
    assert d0['img_path'] == osp.join(r, 'img_dir/train', 'n1.png')
    assert d0['seg_map_path'] == osp.join(r, 'ann_dir/train', 'n1.png')
    assert d0['inst_map_path'] == osp.join(r, 'inst_dir/train', 'n1.png')
    assert d1['inst_map_path'] == osp.join(r, 'inst_dir/train', 'n2.npy')  # .npy fallback
    assert d0['points_path'] == osp.join(r, 'points/train', 'n1.csv')
    assert d0['labeled'] and d1['labeled']
    # without the optional prefixes, no such keys
    ds = _build_seg(tmp_path, data_prefix=dict(img_path='img_dir/train',
                                               seg_map_path='ann_dir/train'))
    assert 'inst_map_path' not in ds.get_data_info(0)
    assert 'points_path' not in ds.get_data_info(0)


def test_nuclei_seg_dataset_missing_files_and_unlabeled(tmp_path):
    _seg_fixture(str(tmp_path))
    os.remove(tmp_path / 'inst_dir' / 'train' / 'n2.npy')
    with pytest.raises(FileNotFoundError, match=r'inst_dir/train/n2\.png or .*n2\.npy.*not found'):
        _build_seg(tmp_path)
    os.remove(tmp_path / 'points' / 'train' / 'n1.csv')
    with pytest.raises(FileNotFoundError, match=r'points/train/n1\.csv'):
        _build_seg(tmp_path, data_prefix=dict(img_path='img_dir/train',
                                              points_path='points/train'))
    ds = _build_seg(tmp_path, allow_unlabeled=True)
    d0, d1 = ds.get_data_info(0), ds.get_data_info(1)
    assert d0['points_path'] is None and d0['labeled'] is False
    assert d0['inst_map_path'] is not None  # its other files stay
    assert d1['inst_map_path'] is None and d1['labeled'] is False
    os.remove(tmp_path / 'ann_dir' / 'train' / 'n1.png')
    with pytest.raises(FileNotFoundError, match=r'ann_dir/train/n1\.png: semantic'):
        _build_seg(tmp_path)


def test_nuclei_seg_dataset_empty_folder_and_classes(tmp_path):
    os.makedirs(tmp_path / 'img_dir' / 'train')
    with pytest.raises(ValueError, match=r'img_dir/train: no image with suffix "\.png"'):
        _build_seg(tmp_path, data_prefix=dict(img_path='img_dir/train'))
    with pytest.raises(FileNotFoundError, match=r'img_dir/val: image folder not found'):
        _build_seg(tmp_path, data_prefix=dict(img_path='img_dir/val'))
    _seg_fixture(str(tmp_path))
    ds = _build_seg(tmp_path, metainfo=dict(classes=('background', 'nucleus', 'micronucleus')))
    assert ds.metainfo['classes'] == ('background', 'nucleus', 'micronucleus')
    assert len(ds.metainfo['palette']) == 3
    assert ds.metainfo['label_map'] is None  # label values used as they are
