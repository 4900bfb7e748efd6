"""tools/dataset_converters/mitos_atypia14.py on a tiny fixture in the public layout."""
import importlib.util
import json
import os
import os.path as osp
import re

import numpy as np
import pytest
import tifffile

from projects.common.io import read_image

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
_spec = importlib.util.spec_from_file_location(
    'mitos_atypia14_converter', osp.join(REPO, 'tools', 'dataset_converters',
                                         'mitos_atypia14.py'))
mitos = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mitos)

H, W = 100, 120
ARGS = ['--patch-size', '60', '--overlap', '20', '--box-size', '8']
# tile_grid(100, 120, 60, 20): stride 40; x starts 0, 40 and 60 (40 + 60 = 100 < 120, so
# a last column shifted to 120 - 60 = 60); y starts 0, 40 (40 + 60 = 100 = H) -> 6 patches
X0S, Y0S = (0, 40, 60), (0, 40)
# mitosis CSVs (x, y[, confidence]); None = no CSV file
MITOSES = {
    'A03_00Aa': '10,20,1\n50,45,0.5\n110,90,1\n',
    'A03_00Ab': None,
    'A03_00Ac': '',
    'A04_00Aa': '5,5\n20,10,0.8\n',
    'A04_00Ab': '70,70,1\n',
    'A04_00Ac': '55,55,1\n65,50,1\n',
}
NOT_MITOSES = {'A03_00Ac': '30,30,0\n40,41,0\n'}


def _frame(name: str) -> np.ndarray:
    rng = np.random.default_rng(sum(map(ord, name)))
    return rng.integers(0, 256, (H, W, 3), dtype=np.uint8)


def make_root(tmp_path, mitoses=MITOSES) -> str:
    root = tmp_path / 'root'
    for name, csv in mitoses.items():
        slide = name.split('_')[0]
        os.makedirs(root / slide / 'frames' / 'x40', exist_ok=True)
        os.makedirs(root / slide / 'mitosis', exist_ok=True)
        tifffile.imwrite(str(root / slide / 'frames' / 'x40' / f'{name}.tiff'), _frame(name))
        if csv is not None:
            (root / slide / 'mitosis' / f'{name}_mitosis.csv').write_text(csv)
        if name in NOT_MITOSES:
            (root / slide / 'mitosis' / f'{name}_not_mitosis.csv').write_text(NOT_MITOSES[name])
    return str(root)


def _load(out, name):
    with open(osp.join(out, 'annotations', name)) as f:
        return json.load(f)


def _anns_by_file(coco):
    by_id = {im['id']: im['file_name'] for im in coco['images']}
    res = {im['file_name']: [] for im in coco['images']}
    for a in coco['annotations']:
        res[by_id[a['image_id']]].append(a)
    return res


@pytest.fixture(scope='module')
def converted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('mitos')
    root = make_root(tmp)
    out = str(tmp / 'out')
    assert mitos.main(['--root', root, '--out', out, '--seed', '0', *ARGS]) == 0
    return root, out


def test_patches_points_and_boxes(converted):
    root, out = converted
    frames = _load(out, 'frames.json')
    names = sorted(MITOSES)
    assert [f['name'] for f in frames['frames']] == names
    # 6 frames x 6 patches = 36 PNGs
    assert len(os.listdir(osp.join(out, 'images'))) == 36
    rec = {f['name']: f for f in frames['frames']}
    a = rec['A03_00Aa']
    assert (a['width'], a['height']) == (W, H)
    # CSV pixel (10, 20) -> pixel centre (10.5, 20.5)
    assert a['points'] == [[10.5, 20.5], [50.5, 45.5], [110.5, 90.5]]
    assert a['confidence'] == [1.0, 0.5, 1.0]
    assert rec['A03_00Ab']['points'] == [] and rec['A03_00Ac']['points'] == []
    assert rec['A04_00Aa']['confidence'] == [1.0, 0.8]  # missing confidence -> 1.0
    group = _anns_by_file(_load(out, f'group_{a["group"]}.json'))
    pts = {f'A03_00Aa_x{x}_y{y}.png': [ann['point'] for ann in group[f'A03_00Aa_x{x}_y{y}.png']]
           for y in Y0S for x in X0S}
    # (10.5, 20.5): column 10 only in [0, 60), row 20 only in [0, 60) -> patch x0_y0;
    # (50.5, 45.5): column 50 in [0, 60) and [40, 100), row 45 in both y ranges -> 4 patches
    # (local (10.5, 5.5) in x40_y40); (110.5, 90.5): only [60, 120) x [40, 100) -> x60_y40
    # at (50.5, 50.5)
    assert pts == {
        'A03_00Aa_x0_y0.png': [[10.5, 20.5], [50.5, 45.5]],
        'A03_00Aa_x40_y0.png': [[10.5, 45.5]],
        'A03_00Aa_x60_y0.png': [],
        'A03_00Aa_x0_y40.png': [[50.5, 5.5]],
        'A03_00Aa_x40_y40.png': [[10.5, 5.5]],
        'A03_00Aa_x60_y40.png': [[50.5, 50.5]],
    }
    first = group['A03_00Aa_x0_y0.png'][0]
    # 8x8 box centred on (10.5, 20.5): x 6.5..14.5, y 16.5..24.5; area 64
    assert first['bbox'] == [6.5, 16.5, 8.0, 8.0] and first['area'] == 64.0
    assert first['category_id'] == 1
    # the patch pixels are the frame crop rows 40..100, columns 60..120
    patch = read_image(osp.join(out, 'images', 'A03_00Aa_x60_y40.png'))
    np.testing.assert_array_equal(patch, _frame('A03_00Aa')[40:100, 60:120])
    np.testing.assert_array_equal(read_image(osp.join(out, 'frames', 'A03_00Aa.png')),
                                  _frame('A03_00Aa'))


def test_split_by_frame_and_folds(converted, tmp_path):
    root, out = converted
    groups = _load(out, 'frames.json')['groups']
    names = sorted(MITOSES)
    # by hand: 6 frames -> round(6 / 6) = 1 val frame; 5 left -> one per fold; the order is
    # numpy's default_rng(0).permutation(6)
    perm = np.random.default_rng(0).permutation(6)
    assert groups['val'] == [names[perm[0]]]
    assert [groups[f'fold{k}'] for k in range(5)] == [[names[i]] for i in perm[1:]]
    flat = [n for g in groups.values() for n in g]
    assert sorted(flat) == names  # a partition: no frame in two groups
    val = {im['file_name'] for im in _load(out, 'val.json')['images']}
    assert val == {f'{groups["val"][0]}_x{x}_y{y}.png' for x in X0S for y in Y0S}
    nonval = {f'{n}_x{x}_y{y}.png' for n in names if n not in groups['val']
              for x in X0S for y in Y0S}
    tests = []
    for k in range(5):
        tr = {im['file_name'] for im in _load(out, f'train_fold{k}.json')['images']}
        te = {im['file_name'] for im in _load(out, f'test_fold{k}.json')['images']}
        assert tr | te == nonval and not tr & te  # fold k splits the non-val patches
        assert te == {f'{groups[f"fold{k}"][0]}_x{x}_y{y}.png' for x in X0S for y in Y0S}
        tests.append(te)
    assert set.union(*tests) == nonval and sum(map(len, tests)) == len(nonval) == 30
    # deterministic: same seed, same split and same kept annotations
    out2 = str(tmp_path / 'out2')
    mitos.convert(root, out2, 8, 60, 20, seed=0, folds=5, progress=False)
    assert _load(out2, 'frames.json') == _load(out, 'frames.json')
    assert _load(out2, 'train_fold2.json') == _load(out, 'train_fold2.json')
    with pytest.raises(ValueError, match='6 frames: 1 go to val and 5 remain for 6 folds'):
        mitos.split_frames(names, folds=6)


def test_one_per_patch_on_train_and_val(converted):
    root, out = converted
    frames = _load(out, 'frames.json')
    groups = frames['groups']
    rec = {f['name']: f for f in frames['frames']}
    total_intact = 0
    for k in range(5):
        test = _anns_by_file(_load(out, f'test_fold{k}.json'))
        intact = _anns_by_file(_load(out, f'group_fold{k}.json'))
        assert test == intact  # test keeps every annotation
        total_intact += sum(map(len, test.values()))
        train = _anns_by_file(_load(out, f'train_fold{k}.json'))
        assert max(len(v) for v in train.values()) <= 1
        for fname, anns in train.items():  # kept points are the frame's one-per-patch set
            frame = fname.rsplit('_x', 1)[0]
            x0, y0 = (int(v) for v in re.findall(r'_x(\d+)_y(\d+)\.png', fname)[0])
            kept = {tuple(rec[frame]['points'][i]) for i in rec[frame]['kept']}
            for a in anns:
                assert (a['point'][0] + x0, a['point'][1] + y0) in kept
    val = _anns_by_file(_load(out, 'val.json'))
    assert max(len(v) for v in val.values()) <= 1
    # patch counts of all annotations over the non-val groups (A03_00Aa: 2+1+0+1+1+1 = 6;
    # A04_00Aa: 2 in x0_y0; A04_00Ab (70, 70): columns [40,100), [60,120), row [40,100)
    # -> 2; A04_00Ac (55, 55) in x {0, 40} y {0, 40} -> 4, (65, 50) in x {40, 60}, y {0, 40}
    # -> 4), minus the val frame's count
    per_frame = {'A03_00Aa': 6, 'A03_00Ab': 0, 'A03_00Ac': 0, 'A04_00Aa': 2,
                 'A04_00Ab': 2, 'A04_00Ac': 8}
    assert total_intact == 18 - per_frame[groups['val'][0]]
    # A04_00Aa: both mitoses lie only in patch x0_y0 -> exactly one survives (frame level)
    assert len(rec['A04_00Aa']['kept']) == 1
    # A04_00Ac: (55, 55) and (65, 50) share patch x40_y0 -> one survives
    assert len(rec['A04_00Ac']['kept']) == 1
    # A03_00Aa: (10,20) and (50,45) share x0_y0; (110, 90) shares x60_y40 with nothing
    # but (50, 45) is not in x60_y40 -> 2 kept if (10,20) wins, else (50,45) + (110,90) = 2
    assert len(rec['A03_00Aa']['kept']) == 2
    fv = _load(out, 'frames_val.json')
    v = rec[groups['val'][0]]
    assert fv['images'][0]['file_name'] == v['file_name']
    assert [a['point'] for a in fv['annotations']] == [v['points'][i] for i in v['kept']]
    ft = _load(out, 'frames_test_fold0.json')
    f0 = rec[groups['fold0'][0]]
    assert [a['point'] for a in ft['annotations']] == f0['points']


def test_min_confidence_and_not_mitosis(tmp_path):
    root = make_root(tmp_path)
    res = mitos.convert(root, str(tmp_path / 'o'), 8, 60, 20, min_confidence=0.6,
                        progress=False)
    # 3 + 2 + 1 + 2 = 8 mitoses; confidence 0.5 (A03_00Aa) is dropped, 0.8 and the
    # default 1.0 stay: 8 - 1 = 7
    assert res['stats']['mitoses'] == 7 and res['stats']['low_confidence'] == 1
    assert res['stats']['not_mitosis'] == 2 and res['stats']['frames_without_csv'] == 1
    rec = {f['name']: f for f in _load(str(tmp_path / 'o'), 'frames.json')['frames']}
    assert rec['A03_00Aa']['points'] == [[10.5, 20.5], [110.5, 90.5]]


@pytest.mark.parametrize('csv,msg', [('10,20,1\n12;30\n', 'line 2 "12;30"'),
                                     ('10,abc\n', 'line 1'),
                                     ('1,2,3,4\n', 'line 1'),
                                     ('120,5,1\n', r'outside the 120x100 frame'),
                                     ('5,-1\n', 'outside')])
def test_bad_csv_names_file(tmp_path, csv, msg):
    root = make_root(tmp_path, {'A03_00Aa': '1,1\n', 'A03_00Ab': csv, 'A04_00Aa': None})
    path = osp.join(root, 'A03', 'mitosis', 'A03_00Ab_mitosis.csv')
    with pytest.raises(ValueError, match=re.escape(path) + '.*' + msg):
        mitos.convert(root, str(tmp_path / 'o'), 8, 60, 20, folds=1, progress=False)


def test_bad_not_mitosis_and_tiff_name_file(tmp_path):
    root = make_root(tmp_path, {'A03_00Aa': None, 'A03_00Ab': None, 'A03_00Ac': None})
    nm = osp.join(root, 'A03', 'mitosis', 'A03_00Ac_not_mitosis.csv')
    with open(nm, 'w') as f:
        f.write('500,5,0\n')
    with pytest.raises(ValueError, match=re.escape(nm)):
        mitos.convert(root, str(tmp_path / 'o'), 8, 60, 20, folds=1, progress=False)
    os.remove(nm)
    tif = osp.join(root, 'A03', 'frames', 'x40', 'A03_00Ab.tiff')
    with open(tif, 'wb') as f:
        f.write(b'not a tiff')
    with pytest.raises(ValueError, match=re.escape(tif)):
        mitos.convert(root, str(tmp_path / 'o2'), 8, 60, 20, folds=1, progress=False)
    with pytest.raises(FileNotFoundError, match='no frame'):
        mitos.convert(str(tmp_path), str(tmp_path / 'o3'), 8, 60, 20, progress=False)


def test_patch_entries_name_parent_frame_and_offset(converted):
    # every patch entry of every patch COCO file carries its frame's file_name (as listed
    # in frames_*.json) and its top-left pixel: A03_00Aa_x60_y40.png -> A03_00Aa.png,
    # [60, 40]; the pixels at that offset in the frame are the patch's
    root, out = converted
    frame_files = set()
    for name in ['frames_val.json'] + [f'frames_test_fold{k}.json' for k in range(5)]:
        frame_files |= {im['file_name'] for im in _load(out, name)['images']}
    assert frame_files == {f'{n}.png' for n in MITOSES}
    files = (['val.json', 'group_val.json'] + [f'{s}_fold{k}.json' for k in range(5)
                                               for s in ('train', 'test')]
             + [f'group_fold{k}.json' for k in range(5)])
    seen = 0
    for name in files:
        for im in _load(out, name)['images']:
            frame, x0, y0 = re.fullmatch(r'(.+)_x(\d+)_y(\d+)\.png', im['file_name']).groups()
            assert im['parent'] == f'{frame}.png' and im['parent'] in frame_files
            assert im['offset'] == [int(x0), int(y0)]
            seen += 1
    # val 6 + group_val 6 + train 5 x 24 + test 5 x 6 + group_fold 5 x 6 patches
    assert seen == 6 + 6 + 120 + 30 + 30
    test0 = {im['file_name']: im for im in _load(out, 'test_fold0.json')['images']}
    im = test0[f'{_load(out, "frames.json")["groups"]["fold0"][0]}_x60_y40.png']
    frame = read_image(osp.join(out, 'frames', im['parent']))
    x0, y0 = im['offset']
    np.testing.assert_array_equal(read_image(osp.join(out, 'images', im['file_name'])),
                                  frame[y0:y0 + 60, x0:x0 + 60])
