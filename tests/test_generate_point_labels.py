"""tools/generate_point_labels.py: Voronoi / cluster label PNGs for a data set layout."""
import os
import os.path as osp
import sys

import numpy as np
import pytest

from projects.common.io import (read_image, read_points, write_image, write_instance_map,
                                write_points)
from projects.common.synthetic import generate_tile
from projects.point_supervision import labels as L

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(REPO, 'tools'))
import generate_point_labels as G  # noqa: E402


@pytest.fixture()
def layout(tmp_path):
    """Two 64 x 48 synthetic tiles in img_dir / inst_dir / points (train split)."""
    root = str(tmp_path)
    tiles = {}
    for i, name in enumerate(['t0', 't1']):
        tile = generate_tile(i, (48, 64))
        write_image(osp.join(root, 'img_dir', 'train', name + '.png'), tile['image'])
        write_instance_map(osp.join(root, 'inst_dir', 'train', name + '.png'), tile['inst_map'])
        write_points(osp.join(root, 'points', 'train', name + '.csv'), tile['points'],
                     tile['labels'])
        tiles[name] = tile
    return root, tiles


def _box_centres(inst):
    """Box centres (x, y) by hand: (first + last + 1) / 2 in continuous coordinates."""
    out = []
    for i in np.unique(inst[inst > 0]):
        r, c = np.nonzero(inst == i)
        out.append(((c.min() + c.max() + 1) / 2, (r.min() + r.max() + 1) / 2))
    return np.array(out)


def _read(root, folder, name):
    return read_image(osp.join(root, folder, 'train', name + '.png'), channels=1)


def test_csv_points(layout, capsys):
    root, tiles = layout
    assert G.main(['--root', root, '--splits', 'train', '--no-progress']) == 0
    assert '2 images' in capsys.readouterr().out
    for name, tile in tiles.items():
        pts, _ = read_points(osp.join(root, 'points', 'train', name + '.csv'))  # 2 decimals
        vor = L.voronoi_label(pts, (48, 64))
        clu = L.cluster_label(tile['image'], pts, seed=0, voronoi=vor)
        np.testing.assert_array_equal(_read(root, 'vor_dir', name), vor)
        np.testing.assert_array_equal(_read(root, 'clu_dir', name), clu)
        assert (vor == 1).any() and (vor == 0).any() and (clu == 1).any()
    assert not [f for f in os.listdir(osp.join(root, 'vor_dir', 'train')) if f.startswith('.')]


def test_bbox_and_centroid_points_with_two_jobs(layout):
    root, tiles = layout
    assert G.main(['--root', root, '--points-from', 'bbox', '--jobs', '2', '--seed', '3',
                   '--no-progress']) == 0
    differs = 0
    for name, tile in tiles.items():
        pts = _box_centres(tile['inst_map'])
        vor = L.voronoi_label(pts, (48, 64))
        np.testing.assert_array_equal(_read(root, 'vor_dir', name), vor)
        np.testing.assert_array_equal(_read(root, 'clu_dir', name),
                                      L.cluster_label(tile['image'], pts, seed=3))
        differs += int((vor != L.voronoi_label(tile['points'], (48, 64))).any())
    assert differs  # box centres are not centroids
    assert G.main(['--root', root, '--points-from', 'centroid', '--no-progress']) == 0
    for name, tile in tiles.items():
        np.testing.assert_array_equal(_read(root, 'vor_dir', name),
                                      L.voronoi_label(tile['points'], (48, 64)))


def test_errors_name_the_file(layout, capsys):
    root, _ = layout
    assert G.main(['--root', root, '--splits', 'val', '--no-progress']) == 1
    assert osp.join(root, 'img_dir', 'val') in capsys.readouterr().err
    bad = osp.join(root, 'points', 'train', 't1.csv')
    write_points(bad, np.array([[70.0, 3.0]]))  # x = 70 > W = 64
    assert G.main(['--root', root, '--no-progress']) == 1
    err = capsys.readouterr().err
    assert bad in err and 'outside' in err
    os.remove(bad)
    assert G.main(['--root', root, '--no-progress', '--jobs', '2']) == 1
    assert f'{bad}: point file not found' in capsys.readouterr().err
    os.remove(osp.join(root, 'inst_dir', 'train', 't0.png'))
    assert G.main(['--root', root, '--points-from', 'bbox', '--no-progress']) == 1
    assert osp.join(root, 'inst_dir', 'train', 't0.png') in capsys.readouterr().err
