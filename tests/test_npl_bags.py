"""Bags of patches for negative pseudo labelling: projects/negative_pseudo_labels/bags.py and
the converters tools/dataset_converters/{synthetic_bags,proportion_bags}.py."""
import importlib.util
import json
import os
import os.path as osp
import re
import sys

import numpy as np
import pytest
from PIL import Image

from projects.common.synthetic import generate_tile, tile_seed
from projects.negative_pseudo_labels.bags import (NoPatchError, patch_grid, read_bag_json,
                                                  read_ratio_csv, tissue_grid, tissue_mask,
                                                  write_bag_json)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def _load_tool(name: str):
    spec = importlib.util.spec_from_file_location(
        f'{name}_tool', osp.join(REPO, 'tools', 'dataset_converters', f'{name}.py'))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # the worker pool pickles functions by module name
    spec.loader.exec_module(mod)
    return mod


synthetic_bags = _load_tool('synthetic_bags')
proportion_bags = _load_tool('proportion_bags')

I = 255  # ignore


def _hand_mask() -> np.ndarray:
    """8x12 mask, 3 classes, patch 4 -> a 2 x 3 grid of patches:

    (x=0, y=0): 16 px class 0                                   -> kept, label 0
    (x=4, y=0): 8 px class 1 (left half), 8 px class 2          -> kept, tie -> label 1
    (x=8, y=0): 7 px class 2, 9 ignore (7/16 < 0.5)             -> dropped
    (x=0, y=4): 3 px class 0, 5 px class 2, 8 ignore (8/16=0.5) -> kept, label 2
    (x=4, y=4): all ignore                                      -> dropped
    (x=8, y=4): 6 px class 0 (cols 8-9, rows 4-6), 10 class 1   -> kept, label 1
    """
    m = np.full((8, 12), I, np.uint8)
    m[0:4, 0:4] = 0
    m[0:4, 4:6] = 1
    m[0:4, 6:8] = 2
    m[0, 8:12] = 2
    m[1, 8:11] = 2                       # 4 + 3 = 7 px of class 2
    m[4, 0:3] = 0                        # 3 px class 0
    m[5, 0:4] = 2
    m[6, 0:1] = 2                        # 4 + 1 = 5 px class 2
    m[4:8, 8:12] = 1
    m[4:7, 8:10] = 0                     # 6 px class 0, 16 - 6 = 10 px class 1
    return m


def test_patch_grid_hand_made():
    res = patch_grid(_hand_mask(), 4, 3, ignore_index=I, min_tissue=0.5)
    np.testing.assert_array_equal(res['patches'], [[0, 0], [4, 0], [0, 4], [8, 4]])
    np.testing.assert_array_equal(res['labels'], [0, 1, 2, 1])
    np.testing.assert_array_equal(res['pixel_counts'],
                                  [[16, 0, 0], [0, 8, 8], [3, 0, 5], [6, 10, 0]])
    # class areas over all 63 non-ignore pixels (incl. the dropped patch's 7 px of class 2):
    # class 0: 16 + 3 + 6 = 25; class 1: 8 + 10 = 18; class 2: 8 + 7 + 5 = 20
    np.testing.assert_allclose(res['ratio'], np.array([25, 18, 20]) / 63)
    assert res['patches'].dtype == np.int64 and res['pixel_counts'].dtype == np.int64


def test_patch_grid_drops_partial_patches_but_counts_their_pixels_in_the_ratio():
    m = np.full((10, 13), 1, np.uint8)  # an extra 2-row / 1-col margin of class 1 (32 px)
    m[:8, :12] = _hand_mask()
    res = patch_grid(m, 4, 3)
    np.testing.assert_array_equal(res['patches'], [[0, 0], [4, 0], [0, 4], [8, 4]])
    # margin: 10 * 13 - 8 * 12 = 34 px of class 1 -> class 1 area 18 + 34 = 52, total 97
    np.testing.assert_allclose(res['ratio'], np.array([25, 52, 20]) / 97)
    # min_tissue 1.0 keeps only the fully annotated patches
    res = patch_grid(_hand_mask(), 4, 3, min_tissue=1.0)
    np.testing.assert_array_equal(res['patches'], [[0, 0], [4, 0], [8, 4]])


def test_patch_grid_errors_name_the_source():
    m = _hand_mask()
    m[7, 11] = 3
    with pytest.raises(ValueError, match=r'slide_a\.png: 1 pixels .*\[3\].*x=11, y=7'):
        patch_grid(m, 4, 3, source='slide_a.png')
    with pytest.raises(NoPatchError, match=r'slide_b: no 4x4 patch .* \(6 grid patches, '
                                           r'max fraction 0\.000'):
        patch_grid(np.full((8, 12), I, np.uint8), 4, 3, source='slide_b')
    with pytest.raises(ValueError, match='slide_c: ignore_index 2 is a class index'):
        patch_grid(_hand_mask(), 4, 3, ignore_index=2, source='slide_c')


def test_tissue_grid_matches_the_hand_made_non_ignore_pattern():
    tissue = _hand_mask() != I  # fractions 16, 16, 7, 8, 0, 16 / 16
    np.testing.assert_array_equal(tissue_grid(tissue, 4), [[0, 0], [4, 0], [0, 4], [8, 4]])
    np.testing.assert_array_equal(tissue_grid(tissue, 4, min_tissue=0.4),
                                  [[0, 0], [4, 0], [8, 0], [0, 4], [8, 4]])  # 7/16 = 0.44
    with pytest.raises(NoPatchError, match='t.png: no 4x4 patch has a tissue fraction'):
        tissue_grid(np.zeros((8, 12), bool), 4, source='t.png')


def test_tissue_mask_white_and_pink_halves():
    img = np.zeros((4, 8, 3), np.uint8)
    img[:, :4] = 255                 # glass: saturation 0
    img[:, 4:] = (230, 150, 200)     # eosin pink: saturation (230 - 150) / 230 = 0.35
    expected = np.zeros((4, 8), bool)
    expected[:, 4:] = True
    np.testing.assert_array_equal(tissue_mask(img), expected)
    # constant saturation: nothing to separate -> no tissue
    assert not tissue_mask(np.full((4, 4, 3), 200, np.uint8)).any()


def _write(path, text):
    with open(path, 'w') as f:
        f.write(text)
    return str(path)


def test_read_ratio_csv_percent_and_fraction_rows(tmp_path):
    p = _write(tmp_path / 'r.csv', 'stroma,name,tumour\n40,a,60\n0.75,b,0.25\n'
                                   '39.8,c,59.7\n0,d,100\n')
    r = read_ratio_csv(p, ['tumour', 'stroma'])
    assert list(r) == ['a', 'b', 'c', 'd']
    np.testing.assert_allclose(r['a'], [0.6, 0.4])
    np.testing.assert_allclose(r['b'], [0.25, 0.75])
    np.testing.assert_allclose(r['c'], [59.7 / 99.5, 39.8 / 99.5])  # sum 99.5: within 1 %
    np.testing.assert_allclose(r['d'], [1.0, 0.0])


@pytest.mark.parametrize('text, pattern', [
    ('name,tumour,stroma\na,60,40\nb,50,40\n', r'line 3 \(b\): ratios sum to 90'),
    ('name,tumour,stroma\na,0.6,0.3\n', r'line 2 \(a\): ratios sum to 0\.9'),
    ('name,tumour\na,100\n', r"missing column\(s\) \['stroma'\]"),
    ('name,tumour,stroma,solid\na,50,50,0\n', r"extra column\(s\) \['solid'\]"),
    ('name,tumour,stroma\na,110,-10\n', r'line 2 \(a\): ratios must be finite and non-neg'),
    ('name,tumour,stroma\na,sixty,40\n', r'line 2 \(a\): non-numeric'),
    ('name,tumour,stroma\na,60,40\na,50,50\n', r"line 3: name 'a' appears twice"),
])
def test_read_ratio_csv_errors_name_file_and_line(tmp_path, text, pattern):
    p = _write(tmp_path / 'bad.csv', text)
    with pytest.raises(ValueError, match=re.escape(p) + '.*' + pattern):
        read_ratio_csv(p, ['tumour', 'stroma'])


# ------------------------------------------------------------------------- bag json
def _valid_layout():
    lab = dict(name='lab_0', img_path='images/lab_0.png', mask_path='masks/lab_0.png',
               labelled=True, height=8, width=12, ratio=[25 / 63, 18 / 63, 20 / 63],
               patches=[[0, 0], [4, 0], [0, 4], [8, 4]], labels=[0, 1, 2, 1],
               pixel_counts=[[16, 0, 0], [0, 8, 8], [3, 0, 5], [6, 10, 0]])
    weak = dict(name='weak_0', img_path='images/weak_0.png', mask_path=None, labelled=False,
                height=8, width=12, ratio=[0.0, 0.7, 0.3], patches=[[0, 4], [8, 0]],
                labels=None, pixel_counts=None)
    meta = dict(classes=['a', 'b', 'c'], patch_size=4, ignore_index=255, min_tissue=0.5)
    return dict(metainfo=meta, bags=[lab, weak])


def test_write_read_bag_json_round_trip(tmp_path):
    obj = _valid_layout()
    path = str(tmp_path / 'train.json')
    bags = [dict(b) for b in obj['bags']]
    bags[0]['patches'] = np.asarray(bags[0]['patches'])  # numpy input is accepted
    write_bag_json(path, ['a', 'b', 'c'], 4, bags)
    with open(path) as f:
        assert json.load(f) == obj
    got = read_bag_json(path)
    assert got['metainfo'] == obj['metainfo']
    lab, weak = got['bags']
    np.testing.assert_array_equal(lab['patches'], obj['bags'][0]['patches'])
    np.testing.assert_array_equal(lab['labels'], [0, 1, 2, 1])
    np.testing.assert_array_equal(lab['pixel_counts'], obj['bags'][0]['pixel_counts'])
    np.testing.assert_allclose(weak['ratio'], [0.0, 0.7, 0.3])
    assert weak['labels'] is None and weak['pixel_counts'] is None and weak['mask_path'] is None


def _set(bag_index, key, value):
    def edit(obj):
        if value is KeyError:
            del obj['bags'][bag_index][key]
        else:
            obj['bags'][bag_index][key] = value
    return edit


@pytest.mark.parametrize('edit, bag, pattern', [
    (_set(0, 'ratio', KeyError), 'lab_0', r"lacks key\(s\) \['ratio'\]"),
    (_set(0, 'ratio', [0.5, 0.5]), 'lab_0', 'ratio must be 3 numbers'),
    (_set(1, 'ratio', [0.0, 0.6, 0.3]), 'weak_0', r'sum to 1 .*sum 0\.9'),
    (_set(1, 'ratio', [-0.1, 0.8, 0.3]), 'weak_0', 'non-negative'),
    (_set(0, 'patches', [[0, 0], [3, 0], [0, 4], [8, 4]]), 'lab_0',
     r'patch 1 at \(x=3, y=0\) is not on the 4-px grid inside the 12x8'),
    (_set(1, 'patches', [[0, 4], [12, 0]]), 'weak_0', r'patch 1 at \(x=12, y=0\)'),
    (_set(1, 'patches', [[0, 4], [0, 4]]), 'weak_0', 'duplicate patches'),
    (_set(1, 'patches', []), 'weak_0', 'no patch'),
    (_set(0, 'labels', [0, 1, 2]), 'lab_0', '3 labels for 4 patches'),
    (_set(0, 'labels', [0, 1, 3, 1]), 'lab_0', r'labels must lie in 0\.\.2, got \[3\]'),
    (_set(0, 'labels', None), 'lab_0', 'needs labels and pixel_counts'),
    (_set(0, 'labels', [0, 2, 2, 1]), 'lab_0', 'label 2 of patch 1 is not the majority'),
    (_set(0, 'pixel_counts', [[16, 0], [0, 8], [3, 0], [6, 10]]), 'lab_0',
     r'pixel_counts must have shape \(K, 3\)'),
    (_set(0, 'mask_path', None), 'lab_0', 'needs a mask_path'),
    (_set(1, 'labels', [1, 1]), 'weak_0', 'must have mask_path, labels and pixel_counts null'),
    (_set(1, 'height', 0), 'weak_0', 'height and width must be positive'),
    (_set(1, 'name', 'lab_0'), 'lab_0', 'appears twice'),
])
def test_read_bag_json_errors_name_file_and_bag(tmp_path, edit, bag, pattern):
    obj = _valid_layout()
    edit(obj)
    path = str(tmp_path / 'train.json')
    with open(path, 'w') as f:
        json.dump(obj, f)
    with pytest.raises(ValueError, match=re.escape(f"{path}: bag '{bag}'") + '.*' + pattern):
        read_bag_json(path)
    # the writer refuses the same content (never writes a file the reader rejects)
    with pytest.raises(ValueError, match=pattern):
        write_bag_json(str(tmp_path / 'w.json'), ['a', 'b', 'c'], 4, obj['bags'])
    assert not osp.exists(tmp_path / 'w.json')


@pytest.mark.parametrize('edit, pattern', [
    (lambda o: o.update(bags=[]), '"bags" must be a non-empty list'),
    (lambda o: o['metainfo'].update(patch_size=0), 'patch_size must be a positive int'),
    (lambda o: o['metainfo'].update(classes='abc'), 'classes must be a non-empty list'),
    (lambda o: o['metainfo'].update(ignore_index=1), 'ignore_index must be an int outside'),
    (lambda o: o['metainfo'].pop('min_tissue'), r"metainfo lacks \['min_tissue'\]"),
])
def test_read_bag_json_file_level_errors(tmp_path, edit, pattern):
    obj = _valid_layout()
    edit(obj)
    path = str(tmp_path / 'val.json')
    with open(path, 'w') as f:
        json.dump(obj, f)
    with pytest.raises(ValueError, match=re.escape(path) + '.*' + pattern):
        read_bag_json(path)


# ------------------------------------------------------------------ synthetic_bags
TINY = ['--num-labelled', '2', '--num-weak', '3', '--num-val', '1', '--num-test', '1',
        '--size', '128', '--patch-size', '32', '--seed', '0', '--no-progress']


def _grid_reference(labels: np.ndarray, p: int, num_classes: int):
    """Brute force over grid cells: kept [x, y], majority labels, counts (ignore >= C)."""
    kept, maj, counts = [], [], []
    for y in range(0, labels.shape[0] - p + 1, p):
        for x in range(0, labels.shape[1] - p + 1, p):
            cell = labels[y:y + p, x:x + p].ravel()
            c = np.array([np.sum(cell == k) for k in range(num_classes)])
            if c.sum() >= 0.5 * p * p:
                kept.append([x, y])
                maj.append(int(np.argmax(c)))
                counts.append(c.tolist())
    return kept, maj, counts


def _tree(root):
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            full = osp.join(dirpath, f)
            with open(full, 'rb') as fh:
                out[osp.relpath(full, root)] = fh.read()
    return out


@pytest.fixture(scope='module')
def synthetic_pair(tmp_path_factory):
    a = str(tmp_path_factory.mktemp('bags_j1'))
    b = str(tmp_path_factory.mktemp('bags_j2'))
    assert synthetic_bags.main(TINY + ['--out', a, '--overwrite', '--jobs', '1']) == 0
    assert synthetic_bags.main(TINY + ['--out', b, '--overwrite', '--jobs', '2']) == 0
    return a, b


def test_synthetic_bags_same_output_with_one_or_two_jobs(synthetic_pair):
    a, b = synthetic_pair
    ta, tb = _tree(a), _tree(b)
    assert sorted(ta) == sorted(tb)
    assert {'train.json', 'val.json', 'test.json', 'weak_truth.json', 'summary.json',
            'images/lab_000.png', 'images/weak_002.png', 'masks/test_000.png'} <= set(ta)
    assert not any(k.startswith('masks/weak') for k in ta)
    for k in ta:
        assert ta[k] == tb[k], k


def test_synthetic_bags_labelled_bags_rederived_from_mask_files(synthetic_pair):
    root = synthetic_pair[0]
    names = {'train': ['lab_000', 'lab_001'], 'val': ['val_000'], 'test': ['test_000']}
    for split, expected in names.items():
        layout = read_bag_json(osp.join(root, f'{split}.json'))
        assert layout['metainfo'] == dict(classes=['tumour', 'stroma', 'lymphocytic',
                                                   'necrosis'], patch_size=32,
                                          ignore_index=255, min_tissue=0.5)
        lab = [b for b in layout['bags'] if b['labelled']]
        assert [b['name'] for b in lab] == expected
        for i, bag in enumerate(lab):
            mask = np.asarray(Image.open(osp.join(root, bag['mask_path'])))
            # the mask file is region_map - 1 with background -> 255, same seed scheme
            tile_split = 'train' if split == 'train' else split
            region = generate_tile(tile_seed(0, tile_split, i), (128, 128))['region_map']
            np.testing.assert_array_equal(mask, np.where(region == 0, 255, region - 1))
            kept, maj, counts = _grid_reference(mask, 32, 4)
            np.testing.assert_array_equal(bag['patches'], kept)
            np.testing.assert_array_equal(bag['labels'], maj)
            np.testing.assert_array_equal(bag['pixel_counts'], counts)
            area = np.array([np.sum(mask == k) for k in range(4)], float)
            np.testing.assert_allclose(bag['ratio'], area / np.sum(mask != 255))


def test_synthetic_bags_weak_bags_rederived_from_region_map(synthetic_pair):
    root = synthetic_pair[0]
    layout = read_bag_json(osp.join(root, 'train.json'))
    weak = [b for b in layout['bags'] if not b['labelled']]
    assert [b['name'] for b in weak] == ['weak_000', 'weak_001', 'weak_002']
    with open(osp.join(root, 'weak_truth.json')) as f:
        truth = json.load(f)
    assert sorted(truth) == ['weak_000', 'weak_001', 'weak_002']
    n_weak_patches = 0
    for i, bag in enumerate(weak):
        tile = generate_tile(tile_seed(0, 'train', 1_000_000 + i), (128, 128))
        region = tile['region_map'].astype(np.int64)
        np.testing.assert_array_equal(
            np.asarray(Image.open(osp.join(root, bag['img_path'])).convert('RGB')),
            tile['image'])
        tissue = region > 0
        ratio = np.array([np.sum(region == r) for r in (1, 2, 3, 4)]) / tissue.sum()
        np.testing.assert_allclose(bag['ratio'], ratio)
        kept, maj, _ = _grid_reference(np.where(tissue, region - 1, 255), 32, 4)
        np.testing.assert_array_equal(bag['patches'], kept)
        assert truth[bag['name']] == maj
        assert bag['labels'] is None and bag['mask_path'] is None
        n_weak_patches += len(kept)
    with open(osp.join(root, 'summary.json')) as f:
        summary = json.load(f)
    assert summary['splits']['train']['weak_patches'] == n_weak_patches
    assert summary['splits']['train']['labelled_bags'] == 2
    assert summary['skipped'] == {'lab': 0, 'weak': 0, 'val': 0, 'test': 0}


def test_synthetic_bags_refuses_non_empty_out(tmp_path, capsys):
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'keep.txt').write_text('x')
    assert synthetic_bags.main(TINY + ['--out', str(out)]) == 1
    assert f'{out}: output folder is not empty' in capsys.readouterr().err
    assert os.listdir(out) == ['keep.txt']


# ---------------------------------------------------------------- proportion_bags
CLASSES = 'a,b,c'


def _fixture(root) -> dict:
    """3 labelled 64x96 slides + masks (classes a, b, c; 255 ignore), 2 weak slides whose
    left half is glass and right half pink tissue, and a ratio CSV."""
    rng = np.random.default_rng(1)
    d = {k: osp.join(str(root), k) for k in ('lab', 'masks', 'weak')}
    for v in d.values():
        os.makedirs(v)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (64, 96, 3), np.uint8)).save(
            osp.join(d['lab'], f's{i}.png'))
        mask = np.kron(rng.integers(0, 3, (2, 3)), np.ones((32, 32), np.int64))  # per patch
        noise = rng.random((64, 96)) < 0.35  # 35 % of the pixels: any class or ignore
        mask[noise] = rng.choice([0, 1, 2, 255], size=int(noise.sum()))
        mask = mask.astype(np.uint8)
        mask[:32, :32] = 255  # one patch fully unannotated
        Image.fromarray(mask).save(osp.join(d['masks'], f's{i}.png'))
    for i in range(2):
        img = np.full((64, 96, 3), 255, np.uint8)
        img[:, 48:] = (200 + 10 * i, 120, 180)
        Image.fromarray(img).save(osp.join(d['weak'], f'w{i}.png'))
    d['csv'] = _write(osp.join(str(root), 'ratios.csv'), 'name,c,a,b\nw0,10,60,30\nw1,0,0.5,0.5\n')
    d['val'] = _write(osp.join(str(root), 'val.txt'), '# val slides\ns1\n')
    d['test'] = _write(osp.join(str(root), 'test.txt'), 's2.png\n')
    d['out'] = osp.join(str(root), 'out')
    return d


def _args(d, *extra):
    return ['--classes', CLASSES, '--labelled-images', d['lab'], '--masks', d['masks'],
            '--weak-images', d['weak'], '--ratios', d['csv'], '--patch-size', '32',
            '--out', d['out'], '--no-progress'] + list(extra)


def test_proportion_bags_converts_the_fixture(tmp_path):
    d = _fixture(tmp_path)
    assert proportion_bags.main(_args(d, '--val-list', d['val'], '--test-list', d['test'])) == 0
    train = read_bag_json(osp.join(d['out'], 'train.json'))
    assert [b['name'] for b in train['bags']] == ['s0', 'w0', 'w1']
    assert [b['name'] for b in read_bag_json(osp.join(d['out'], 'val.json'))['bags']] == ['s1']
    test = read_bag_json(osp.join(d['out'], 'test.json'))
    assert [b['name'] for b in test['bags']] == ['s2']
    for bag in train['bags'][:1] + test['bags']:
        src_mask = np.asarray(Image.open(osp.join(d['masks'], bag['name'] + '.png')))
        np.testing.assert_array_equal(
            np.asarray(Image.open(osp.join(d['out'], bag['mask_path']))), src_mask)
        kept, maj, counts = _grid_reference(src_mask, 32, 3)
        assert [0, 0] not in kept  # the unannotated corner patch
        np.testing.assert_array_equal(bag['patches'], kept)
        np.testing.assert_array_equal(bag['labels'], maj)
        np.testing.assert_array_equal(bag['pixel_counts'], counts)
        with open(osp.join(d['lab'], bag['name'] + '.png'), 'rb') as f1, \
                open(osp.join(d['out'], bag['img_path']), 'rb') as f2:
            assert f1.read() == f2.read()  # copied byte for byte
    w0, w1 = train['bags'][1:]
    # Otsu tissue = right half (x >= 48): patches at x = 64 fully inside it, x = 32 covers
    # columns 32..63, 16 of 32 tissue -> 0.5 >= min_tissue: kept
    np.testing.assert_array_equal(w0['patches'], [[32, 0], [64, 0], [32, 32], [64, 32]])
    np.testing.assert_allclose(w0['ratio'], [0.6, 0.3, 0.1])  # CSV order c, a, b -> a, b, c
    np.testing.assert_allclose(w1['ratio'], [0.5, 0.5, 0.0])
    assert w0['height'] == 64 and w0['width'] == 96


def test_proportion_bags_fraction_split_is_seeded(tmp_path):
    d = _fixture(tmp_path)
    assert proportion_bags.main(_args(d, '--val-fraction', '0.3', '--test-fraction', '0.3',
                                      '--seed', '3')) == 0
    names = {s: [b['name'] for b in read_bag_json(osp.join(d['out'], f'{s}.json'))['bags']]
             for s in ('train', 'val', 'test')}
    # round(0.3 * 3) = 1 test, 1 val; the sorted stems permuted by default_rng(3)
    perm = np.random.default_rng(3).permutation(3)
    assert names['test'] == [f's{perm[0]}'] and names['val'] == [f's{perm[1]}']
    assert names['train'] == [f's{perm[2]}', 'w0', 'w1']


def _corrupt(d):
    with open(osp.join(d['lab'], 's1.png'), 'wb') as f:
        f.write(b'not a png at all')


def _extra_mask(d):
    Image.fromarray(np.zeros((64, 96), np.uint8)).save(osp.join(d['masks'], 's9.png'))


def _missing_mask(d):
    os.remove(osp.join(d['masks'], 's0.png'))


def _small_mask(d):
    Image.fromarray(np.zeros((48, 96), np.uint8)).save(osp.join(d['masks'], 's2.png'))


def _no_row(d):
    _write(d['csv'], 'name,a,b,c\nw0,60,30,10\n')


def _extra_row(d):
    _write(d['csv'], 'name,a,b,c\nw0,60,30,10\nw1,50,50,0\nw7,50,50,0\n')


def _bad_value(d):
    m = np.zeros((64, 96), np.uint8)
    m[5, 7] = 3
    Image.fromarray(m).save(osp.join(d['masks'], 's0.png'))


def _weak_in_val(d):
    _write(d['val'], 'w0\n')


@pytest.mark.parametrize('edit, pattern', [
    (_extra_mask, r"1 mask file\(s\) without a matching image in .*lab: \['s9\.png'\]"),
    (_missing_mask, r"1 image file\(s\) without a matching mask in .*masks: \['s0\.png'\]"),
    (_small_mask, r'masks/s2\.png: mask is 96x48 \(WxH\) but image .*lab/s2\.png is 96x64'),
    (_no_row, r"ratios\.csv: no ratio row for the weak image\(s\) \['.*weak/w1\.png'\]"),
    (_extra_row, r"ratios\.csv: row\(s\) \['w7'\] have no image in .*weak"),
    (_corrupt, r'lab/s1\.png: corrupt or unreadable image'),
    (_bad_value, r'masks/s0\.png: 1 pixels have values outside the classes 0\.\.2'),
    (_weak_in_val, r"val\.txt: line 1: 'w0' is a proportion-only slide"),
])
def test_proportion_bags_errors_name_the_files(tmp_path, capsys, edit, pattern):
    d = _fixture(tmp_path)
    edit(d)
    assert proportion_bags.main(_args(d, '--val-list', d['val'], '--test-list', d['test'])) == 1
    err = capsys.readouterr().err
    assert re.search(pattern, err), err
