"""Tests of projects/common/io.py: file modes of the atomic writers and error messages that
name the file."""
import os
import os.path as osp
import stat

import numpy as np
import pytest

from projects.common.io import (read_image, read_instance_map, read_points, write_image,
                                write_instance_map, write_json, write_points)


def _with_umask(mask, fn):
    old = os.umask(mask)
    try:
        return fn()
    finally:
        os.umask(old)


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize('writer, name', [
    (lambda p: write_image(p, np.zeros((4, 5, 3), np.uint8)), 'a.png'),
    (lambda p: write_instance_map(p, np.ones((4, 5), np.int32)), 'i.npy'),
    (lambda p: write_points(p, np.zeros((1, 2))), 'p.csv'),
    (lambda p: write_json(p, {'a': 1}), 'j.json'),
])
def test_written_files_follow_the_umask(tmp_path, writer, name):
    # a new file gets 0666 & ~umask, as open() would give it: umask 022 -> 0644
    # (group / other readable), 077 -> 0600; mkstemp's 0600 must not leak through
    path = str(tmp_path / name)
    _with_umask(0o022, lambda: writer(path))
    assert _mode(path) == 0o644
    assert _mode(path) & (stat.S_IRGRP | stat.S_IROTH)
    _with_umask(0o077, lambda: writer(path))  # overwriting takes the new mode too
    assert _mode(path) == 0o600
    _with_umask(0o002, lambda: writer(path))
    assert _mode(path) == 0o664
    assert [f for f in os.listdir(tmp_path) if f.startswith('.tmp_')] == []


def test_png_round_trip_under_umask_022(tmp_path):
    path = str(tmp_path / 'sub' / 'x.png')  # the folder is created
    img = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    _with_umask(0o022, lambda: write_image(path, img))
    assert _mode(path) == 0o644
    np.testing.assert_array_equal(read_image(path), img)


def test_failed_write_leaves_no_file(tmp_path):
    path = str(tmp_path / 'big.png')
    with pytest.raises(ValueError, match=r'big\.png: 70000 instance ids'):
        write_instance_map(path, np.full((2, 2), 70000, np.int32))
    with pytest.raises(Exception):
        write_image(path, np.zeros((2, 2, 7), np.uint8))  # PIL cannot write 7 channels
    assert os.listdir(tmp_path) == []


def test_corrupt_image_is_named(tmp_path):
    path = tmp_path / 'x.png'
    path.write_bytes(b'\x00garbage, not a PNG\xff' * 3)
    with pytest.raises(ValueError, match=r'x\.png: corrupt'):
        read_image(str(path))
    trunc = tmp_path / 't.png'  # a real PNG cut in the middle
    write_image(str(tmp_path / 'full.png'), np.random.default_rng(0).integers(
        0, 255, (32, 32, 3), dtype=np.uint8))
    trunc.write_bytes((tmp_path / 'full.png').read_bytes()[:200])
    with pytest.raises(ValueError, match=r't\.png: corrupt'):
        read_image(str(trunc))


def test_missing_files_raise_file_not_found_naming_them(tmp_path):
    for fn, what in ((read_image, 'image'), (read_instance_map, 'instance map'),
                     (read_points, 'point')):
        path = str(tmp_path / f'nope_{what[:4]}.png')
        with pytest.raises(FileNotFoundError, match=rf'nope_{what[:4]}\.png: {what} file not '
                           r'found'):
            fn(path)


def test_channel_checks(tmp_path):
    rgba = str(tmp_path / 'rgba.png')
    write_image(rgba, np.zeros((3, 4, 4), np.uint8))
    with pytest.raises(ValueError, match=r'rgba\.png: expected an RGB or grey image, got '
                       r'shape \(3, 4, 4\) \(4 channels\)'):
        read_image(rgba, channels=3)
    assert read_image(rgba, channels=None).shape == (3, 4, 4)  # as stored
    with pytest.raises(ValueError, match=r'rgba\.png: expected a single-channel image'):
        read_image(rgba, channels=1)
    grey = str(tmp_path / 'grey.png')
    write_image(grey, np.array([[0, 7], [9, 255]], np.uint8))
    # a grey image is repeated to 3 channels
    assert read_image(grey).tolist() == [[[0] * 3, [7] * 3], [[9] * 3, [255] * 3]]


def test_point_file_errors(tmp_path):
    empty = tmp_path / 'empty.csv'
    empty.write_text('')
    with pytest.raises(ValueError, match=r'empty\.csv: point file is empty'):
        read_points(str(empty))
    bad = tmp_path / 'bad.csv'
    bad.write_text('row,col,label\n1,2,0\n')
    with pytest.raises(ValueError, match=r'bad\.csv: header must start with "x,y", got '
                       r'"row,col,label"'):
        read_points(str(bad))
    line = tmp_path / 'line.csv'
    line.write_text('x,y,label\n1,2,0\n3,oops,1\n')
    with pytest.raises(ValueError, match=r'line\.csv: line 3 "3,oops,1" is not'):
        read_points(str(line))
    # header only: a valid file with no point
    (tmp_path / 'none.csv').write_text('x,y,label\n')
    pts, labels = read_points(str(tmp_path / 'none.csv'))
    assert pts.shape == (0, 2) and labels.shape == (0, )


def test_points_outside_the_image(tmp_path):
    # a 10 px wide, 6 px high image: valid points satisfy 0 <= x <= 10, 0 <= y <= 6
    # (continuous pixel coordinates: the borders x = 10 and y = 6 are inside)
    path = str(tmp_path / 'pts.csv')
    write_points(path, np.array([[0.0, 0.0], [10.0, 6.0], [5.5, 3.25]]), np.array([0, 1, 2]))
    pts, labels = read_points(path, shape=(6, 10))
    assert pts.tolist() == [[0, 0], [10, 6], [5.5, 3.25]] and labels.tolist() == [0, 1, 2]
    write_points(path, np.array([[1.0, 1.0], [10.5, 2.0]]))
    with pytest.raises(ValueError, match=r'pts\.csv: point 1 at \(x=10\.5, y=2\.0\) lies '
                       r'outside the 10x6 image'):
        read_points(path, shape=(6, 10))
    write_points(path, np.array([[1.0, -0.25]]))
    with pytest.raises(ValueError, match=r'pts\.csv: point 0 at \(x=1\.0, y=-0\.2\)'):
        read_points(path, shape=(6, 10, 3))


def test_instance_map_errors(tmp_path):
    neg = str(tmp_path / 'neg.npy')
    np.save(neg, np.array([[0, -1], [2, 3]], np.int32))
    with pytest.raises(ValueError, match=r'neg\.npy: instance map has negative ids'):
        read_instance_map(neg)
    flt = str(tmp_path / 'flt.npy')
    np.save(flt, np.array([[0, 1.5], [2, 3]], np.float32))
    with pytest.raises(ValueError, match=r'flt\.npy: an instance map must hold integers, got '
                       r'float32'):
        read_instance_map(flt)
    three = str(tmp_path / 'three.npy')
    np.save(three, np.zeros((2, 2, 2), np.int32))
    with pytest.raises(ValueError, match=r'three\.npy: an instance map must be 2-D'):
        read_instance_map(three)
    junk = tmp_path / 'junk.npy'
    junk.write_bytes(b'not numpy')
    with pytest.raises(ValueError, match=r'junk\.npy: corrupt instance map'):
        read_instance_map(str(junk))
    # uint16 PNG round trip keeps ids > 255 exactly
    ok = str(tmp_path / 'ok.png')
    write_instance_map(ok, np.array([[0, 300], [65535, 1]], np.int32))
    got = read_instance_map(ok)
    assert got.dtype == np.int32 and got.tolist() == [[0, 300], [65535, 1]]
    assert osp.isfile(ok)
