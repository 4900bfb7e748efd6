"""Tests of tools/dataset_converters/monuseg.py and cpm.py on tiny fixtures written at test
time in the MoNuSeg format (TIFF / PNG + Aperio ImageScope XML polygons) and the CPM
format of HoVer-Net (PNG + .mat with ``inst_map``), and of LayoutWriter's ``point_mode``."""
import importlib.util
import json
import os
import os.path as osp
import re

import numpy as np
import pytest
import scipy.io
import tifffile
from PIL import Image

from projects.common.io import read_image, read_instance_map, read_points
from projects.common.layout import LayoutWriter

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def _load(name):
    spec = importlib.util.spec_from_file_location(
        f'{name}_converter', osp.join(REPO, 'tools', 'dataset_converters', f'{name}.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


mon = _load('monuseg')
cpm = _load('cpm')

H, W = 16, 32  # MoNuSeg fixture images


def _rgb(seed, h=H, w=W):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3)).astype(np.uint8)


def _rect(x1, y1, x2, y2):
    """Polygon (x, y) vertices of the axis-aligned rectangle [x1, x2] x [y1, y2]."""
    return [(x1, y1), (x2, y1), (x2, y2), (x1, y2)]


def _coco(out, split):
    return json.loads((out / 'annotations' / f'{split}.json').read_text())


# ----------------------------------------------------------------------------- MoNuSeg

def _xml(regions):
    """ImageScope XML with one Region per (Id, vertices) in the order given."""
    regs = []
    for rid, verts in regions:
        vs = ''.join(f'<Vertex X="{x}" Y="{y}" Z="0" />' for x, y in verts)
        regs.append(f'<Region Id="{rid}" Type="0" Zoom="0.5" Selected="0"><Attributes/>'
                    f'<Vertices>{vs}</Vertices></Region>')
    return ('<Annotations MicronsPerPixel="0.252000"><Annotation Id="1" Name="" '
            'ReadOnly="0"><Attributes><Attribute Name="Description" Id="0" Value=""/>'
            '</Attributes><Regions><RegionAttributeHeaders/>' + ''.join(regs) +
            '</Regions><Plots/></Annotation></Annotations>')


def _write_monuseg(root, samples, split_folders):
    """samples: id -> (image, regions or None (no XML), extension). split_folders: the
    training layout (Tissue Images/ + Annotations/) or the test layout (side by side)."""
    img_dir = osp.join(root, 'Tissue Images') if split_folders else root
    ann_dir = osp.join(root, 'Annotations') if split_folders else root
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(ann_dir, exist_ok=True)
    for sid, (img, regions, ext) in samples.items():
        path = osp.join(img_dir, sid + ext)
        if ext == '.tif':
            tifffile.imwrite(path, img, photometric='rgb')
        else:
            Image.fromarray(img).save(path)
        if regions is not None:
            with open(osp.join(ann_dir, sid + '.xml'), 'w') as f:
                f.write(_xml(regions))


SQUARE = _rect(3, 4, 9, 10)            # pixel centres inside: rows 4..9, cols 3..8
TRIANGLE = [(20, 2), (24, 2), (20, 10)]  # edge 2x + y = 50 passes no pixel centre


def _triangle_pixels():
    """Pixels whose centre (c + .5, r + .5) is inside TRIANGLE: c >= 20, r >= 2 and
    2(c + .5) + (r + .5) < 50, i.e. 2c + r <= 48: row 2 -> cols 20-23, rows 3-4 -> 20-22,
    rows 5-6 -> 20-21, rows 7-8 -> 20, row 9 -> none (2*20 + 9 = 49). 16 pixels."""
    cols_of_row = {2: 4, 3: 3, 4: 3, 5: 2, 6: 2, 7: 1, 8: 1}
    return {(r, c) for r, n in cols_of_row.items() for c in range(20, 20 + n)}


def _monuseg_fixture(tmp_path):
    """Training root (Tissue Images / Annotations): A square + triangle, B overlapping
    rectangles, C one rectangle; test root (side by side): D (.png), E (.tif)."""
    train = {
        'A': (_rgb(1), [('1', SQUARE), ('2', TRIANGLE)], '.tif'),
        # Id 7 rows 2-5 cols 2-7; Id 8 rows 4-7 cols 6-9 (shares rows 4-5, cols 6-7 = 4 px);
        # Id 9 rows 10-11 cols 20-21 lies inside Id 10 rows 9-12 cols 19-22 (4 px)
        'B': (_rgb(2), [('7', _rect(2, 2, 8, 6)), ('8', _rect(6, 4, 10, 8)),
                        ('9', _rect(20, 10, 22, 12)), ('10', _rect(19, 9, 23, 13))], '.tif'),
        'C': (_rgb(3), [('1', _rect(10, 10, 14, 13))], '.tif')}
    test = {'D': (_rgb(4), [('1', _rect(0, 0, 2, 2))], '.png'),
            'E': (_rgb(5), [('3', _rect(5, 5, 6, 7)), ('4', _rect(8, 1, 11, 3))], '.tif')}
    _write_monuseg(str(tmp_path / 'train'), train, split_folders=True)
    _write_monuseg(str(tmp_path / 'test'), test, split_folders=False)
    return {k: v[0] for k, v in {**train, **test}.items()}


def test_monuseg_rasterisation_points_and_both_layouts(tmp_path, capsys):
    images = _monuseg_fixture(tmp_path)
    out = tmp_path / 'out'
    assert mon.main(['--train-root', str(tmp_path / 'train'), '--test-root',
                     str(tmp_path / 'test'), '--out', str(out)]) == 0
    log = capsys.readouterr().out
    # nuclei A 2 + B 3 (Id 9 fully covered by Id 10) + C 1 = 6 of 7 regions; overlap in B:
    # 4 px shared by Ids 7/8 + the 4 px of Id 9 under Id 10 = 8 px
    assert '[monuseg] train: 3 images, 6 nuclei from 7 regions; 8 pixels' in log
    assert '1 regions fully covered' in log and '[monuseg] test: 2 images, 3 nuclei' in log

    for sid, split in (('A', 'train'), ('B', 'train'), ('C', 'train'), ('D', 'test'),
                       ('E', 'test')):
        assert np.array_equal(read_image(str(out / 'img_dir' / split / f'{sid}.png')),
                              images[sid])
    assert not (out / 'annotations' / 'val.json').exists()  # --num-val 0: no val split

    inst = read_instance_map(str(out / 'inst_dir' / 'train' / 'A.png'))
    square = {(r, c) for r in range(4, 10) for c in range(3, 9)}  # 6 x 6 = 36 pixels
    assert set(zip(*np.nonzero(inst == 1))) == square
    assert set(zip(*np.nonzero(inst == 2))) == _triangle_pixels()
    assert set(np.unique(inst)) == {0, 1, 2}
    sem = read_image(str(out / 'ann_dir' / 'train' / 'A.png'), channels=1)
    assert np.array_equal(sem, (inst > 0).astype(np.uint8))
    # points = box centres: square box x 3..9, y 4..10 -> (6, 7); triangle box cols 20-23
    # rows 2-8 -> x 20..24, y 2..9 -> (22, 5.5). (Its centroid would be (334/16 + .5,
    # 66/16 + .5) = (21.375, 4.625): not what is written.)
    pts, labels = read_points(str(out / 'points' / 'train' / 'A.csv'))
    assert pts.tolist() == [[6.0, 7.0], [22.0, 5.5]] and labels.tolist() == [0, 0]
    coco = _coco(out, 'train')
    assert coco['categories'] == [dict(id=1, name='nucleus')]
    a_id = next(i['id'] for i in coco['images'] if i['file_name'] == 'A.png')
    anns = [a for a in coco['annotations'] if a['image_id'] == a_id]
    assert [(a['bbox'], a['area'], a['point']) for a in anns] == [
        ([3, 4, 6, 6], 36, [6.0, 7.0]), ([20, 2, 4, 7], 16, [22.0, 5.5])]

    # B: later region wins; region 3 (Id 9) has no pixel left, its id is absent
    want = np.zeros((H, W), np.int64)
    want[2:6, 2:8] = 1
    want[4:8, 6:10] = 2
    want[9:13, 19:23] = 4
    assert np.array_equal(read_instance_map(str(out / 'inst_dir' / 'train' / 'B.png')), want)
    # Id 7 keeps rows 2-5, cols 2-7 minus its overlap: box unchanged -> (5, 4); Id 8 -> (8, 6);
    # Id 10 -> (21, 11)
    pts, _ = read_points(str(out / 'points' / 'train' / 'B.csv'))
    assert pts.tolist() == [[5.0, 4.0], [8.0, 6.0], [21.0, 11.0]]
    # test layout with images and XML side by side; D is a PNG
    pts, _ = read_points(str(out / 'points' / 'test' / 'E.csv'))
    assert pts.tolist() == [[5.5, 6.0], [9.5, 2.0]]
    inst_d = read_instance_map(str(out / 'inst_dir' / 'test' / 'D.png'))
    assert set(zip(*np.nonzero(inst_d))) == {(0, 0), (0, 1), (1, 0), (1, 1)}


def test_monuseg_val_split_is_seeded(tmp_path):
    _monuseg_fixture(tmp_path)
    runs = []
    for k in range(2):
        out = tmp_path / f'out{k}'
        res = mon.convert(str(out), train_root=str(tmp_path / 'train'), num_val=1, seed=3,
                          progress=False)
        runs.append(res['splits'])
    # the first index of default_rng(3).permutation(3) over the sorted ids A, B, C is val
    val = ['A', 'B', 'C'][np.random.default_rng(3).permutation(3)[0]]
    assert runs[0] == runs[1] == dict(train=sorted({'A', 'B', 'C'} - {val}), val=[val])
    assert (tmp_path / 'out0' / 'inst_dir' / 'val' / f'{val}.png').read_bytes() == \
        (tmp_path / 'out1' / 'inst_dir' / 'val' / f'{val}.png').read_bytes()
    perm = np.random.default_rng(7).permutation(3)
    two = mon.split_train_val(['C', 'A', 'B'], num_val=2, seed=7)
    assert two == dict(train=[['A', 'B', 'C'][perm[2]]],
                       val=sorted(['A', 'B', 'C'][i] for i in perm[:2]))
    with pytest.raises(ValueError, match='--num-val must be an int in \\[0, 2\\]'):
        mon.split_train_val(['A', 'B', 'C'], num_val=3)


def test_monuseg_degenerate_and_clipped_regions(tmp_path):
    root = tmp_path / 'raw'
    regions = [('5', [(1, 1), (4, 4)]),                         # 2 vertices
               ('6', [(1, 1), (3, 3), (5, 5)]),                 # collinear: zero area
               ('7', [(0.1, 0.1), (0.4, 0.1), (0.1, 0.4)]),     # holds no pixel centre
               ('8', _rect(28, 12, 34, 18))]                    # partly outside 32x16
    _write_monuseg(str(root), {'T': (_rgb(6), regions, '.tif')}, split_folders=False)
    xml = re.escape(str(root / 'T.xml'))
    with pytest.raises(ValueError, match=xml + '.*Id=5.*2 vertices'):
        mon.convert(str(tmp_path / 'o1'), test_root=str(root), progress=False)
    res = mon.rasterise_regions(regions[1:2], (H, W), 'T.xml', skip_degenerate=True)
    assert res['degenerate'] == [('6', 'zero polygon area')]
    with pytest.raises(ValueError, match='T.xml: region Id=7 .*no pixel centre'):
        mon.rasterise_regions(regions[2:], (H, W), 'T.xml')
    res = mon.convert(str(tmp_path / 'o2'), test_root=str(root), skip_degenerate=True,
                      progress=False)
    assert [r for r, _ in res['degenerate']['T']] == ['5', '6', '7']
    st = res['stats']['test']
    assert (st['nuclei'], st['degenerate'], st['clipped'], st['regions']) == (1, 3, 1, 4)
    inst = read_instance_map(str(tmp_path / 'o2' / 'inst_dir' / 'test' / 'T.png'))
    # region 4 (Id 8) keeps rows 12..15, cols 28..31: box x 28..32, y 12..16 -> (30, 14)
    want = np.zeros((H, W), np.int64)
    want[12:16, 28:32] = 4
    assert np.array_equal(inst, want)
    pts, _ = read_points(str(tmp_path / 'o2' / 'points' / 'test' / 'T.csv'))
    assert pts.tolist() == [[30.0, 14.0]]


def _expect(err, match, fn, *args, **kw):
    with pytest.raises(err, match=match):
        fn(*args, **kw)


def test_monuseg_errors_name_the_file(tmp_path):
    def tree(name, samples, split_folders=False):
        root = tmp_path / name
        _write_monuseg(str(root), samples, split_folders)
        return root

    ok = [('1', SQUARE)]
    root = tree('bad_img', {'G': (_rgb(0), ok, '.tif')})
    (root / 'G.tif').write_bytes(b'not a tiff at all')
    _expect(ValueError, re.escape(str(root / 'G.tif')) + '.*unreadable', mon.convert,
            str(tmp_path / 'o'), test_root=str(root), progress=False)

    root = tree('bad_xml', {'G': (_rgb(0), ok, '.tif')})
    (root / 'G.xml').write_text('<Annotations><Region Id="1">')
    _expect(ValueError, re.escape(str(root / 'G.xml')) + '.*does not parse', mon.convert,
            str(tmp_path / 'o'), test_root=str(root), progress=False)

    root = tree('no_region', {'G': (_rgb(0), [], '.tif')})
    _expect(ValueError, re.escape(str(root / 'G.xml')) + '.*no <Region>', mon.convert,
            str(tmp_path / 'o'), test_root=str(root), progress=False)

    root = tree('bad_vertex', {'G': (_rgb(0), [('3', [(1, 1), ('x', 2), (3, 1)])], '.tif')})
    _expect(ValueError, re.escape(str(root / 'G.xml')) + '.*Id=3.*no numeric', mon.convert,
            str(tmp_path / 'o'), test_root=str(root), progress=False)

    # an image without its XML, in the training layout
    root = tree('no_xml', {'G': (_rgb(0), ok, '.tif'), 'U': (_rgb(1), None, '.tif')},
                split_folders=True)
    _expect(FileNotFoundError, re.escape(str(root / 'Tissue Images' / 'U.tif')) +
            '.*no annotation U.xml', mon.convert, str(tmp_path / 'o'), train_root=str(root),
            progress=False)
    out = tmp_path / 'unl'
    res = mon.convert(str(out), train_root=str(root), allow_unlabeled=True, progress=False)
    assert res['splits'] == dict(train=['G'], unlabeled=['U'])
    assert (out / 'img_dir' / 'unlabeled' / 'U.png').is_file()
    assert not (out / 'ann_dir' / 'unlabeled').exists()
    assert _coco(out, 'unlabeled')['annotations'] == []

    root = tree('orphan_xml', {'G': (_rgb(0), ok, '.tif')})
    (root / 'Z.xml').write_text(_xml(ok))
    _expect(FileNotFoundError, re.escape(str(root / 'Z.xml')) + '.*without its image',
            mon.convert, str(tmp_path / 'o'), test_root=str(root), progress=False)
    _expect(ValueError, 'train-root and / or --test-root', mon.convert, str(tmp_path / 'o'))


# ----------------------------------------------------------------------------- CPM

CH, CW = 12, 14  # CPM fixture images
CPM_NAMES = [f'{t}_{i}' for t in ('gbm', 'lung') for i in range(4)]


def _cpm_inst(k):
    """Instance map of image k: one rectangle rows k%5 .. k%5+2, cols 1..k%4+2, id 3."""
    inst = np.zeros((CH, CW), np.float64)  # MATLAB stores inst_map as doubles
    inst[k % 5:k % 5 + 3, 1:k % 4 + 3] = 3
    return inst


def _write_cpm(root, names, label_fmt=None):
    """<root>/Images/<name>.png and <root>/Labels/<name>.mat (or the format label_fmt[name]
    gives: 'png' uint16 mask, 'npy', or None for no label file)."""
    os.makedirs(osp.join(root, 'Images'), exist_ok=True)
    os.makedirs(osp.join(root, 'Labels'), exist_ok=True)
    label_fmt = label_fmt or {}
    for k, name in enumerate(names):
        Image.fromarray(_rgb(10 + k, CH, CW)).save(osp.join(root, 'Images', name + '.png'))
        fmt, inst = label_fmt.get(name, 'mat'), _cpm_inst(k)
        base = osp.join(root, 'Labels', name)
        if fmt == 'mat':
            scipy.io.savemat(base + '.mat', {'inst_map': inst, 'type_map': (inst > 0) * 1.0})
        elif fmt == 'png':
            Image.fromarray(inst.astype(np.uint16)).save(base + '.png')
        elif fmt == 'npy':
            np.save(base + '.npy', inst.astype(np.int32))


def _reference_split(types, num_val, num_test, seed):
    """The documented rule: types sorted; one rng; per type a permutation of the sorted
    names: first num_val -> val, next num_test -> test, rest -> train."""
    rng = np.random.default_rng(seed)
    out = dict(train=[], val=[], test=[])
    for t in sorted(set(types.values())):
        names = sorted(n for n in types if types[n] == t)
        perm = rng.permutation(len(names))
        out['val'] += [names[i] for i in perm[:num_val]]
        out['test'] += [names[i] for i in perm[num_val:num_val + num_test]]
        out['train'] += [names[i] for i in perm[num_val + num_test:]]
    return {s: sorted(v) for s, v in out.items()}


def test_cpm_instances_points_and_per_type_split(tmp_path, capsys):
    root = tmp_path / 'cpm'
    _write_cpm(str(root), CPM_NAMES, {'gbm_1': 'png', 'gbm_2': 'npy'})
    # lung_0 gets two instances with stored ids 9 (rows 1-3, cols 2-5) and 5 (an L:
    # rows 6-9 of col 10 plus row 9, cols 11-12) -> renumbered 5 -> 1, 9 -> 2
    inst = np.zeros((CH, CW), np.float64)
    inst[1:4, 2:6] = 9
    inst[6:10, 10] = 5
    inst[9, 11:13] = 5
    scipy.io.savemat(str(root / 'Labels' / 'lung_0.mat'), {'inst_map': inst})
    out = tmp_path / 'out'
    assert cpm.main(['--root', str(root), '--out', str(out), '--type-regex', '^([a-z]+)_',
                     '--seed', '5']) == 0
    log = capsys.readouterr().out
    assert '[cpm] val: 2 images (gbm: 1, lung: 1)' in log
    assert '[cpm] test: 4 images (gbm: 2, lung: 2)' in log
    assert '[cpm] train: 2 images (gbm: 1, lung: 1)' in log
    types = {n: n.split('_')[0] for n in CPM_NAMES}
    want = _reference_split(types, 1, 2, 5)
    for split, names in want.items():
        assert sorted(osp.splitext(f)[0] for f in os.listdir(out / 'img_dir' / split)) == names
        assert len(_coco(out, split)['images']) == len(names)

    split0 = next(s for s, v in want.items() if 'lung_0' in v)
    got = read_instance_map(str(out / 'inst_dir' / split0 / 'lung_0.png'))
    expect = np.where(inst == 5, 1, np.where(inst == 9, 2, 0))
    assert np.array_equal(got, expect)
    # box centres: id 1 (the L) cols 10-12, rows 6-9 -> x 10..13, y 6..10 -> (11.5, 8);
    # id 2 cols 2-5, rows 1-3 -> x 2..6, y 1..4 -> (4, 2.5)
    pts, labels = read_points(str(out / 'points' / split0 / 'lung_0.csv'))
    assert pts.tolist() == [[11.5, 8.0], [4.0, 2.5]] and labels.tolist() == [0, 0]
    assert np.array_equal(read_image(str(out / 'img_dir' / split0 / 'lung_0.png')),
                          _rgb(10 + CPM_NAMES.index('lung_0'), CH, CW))
    # the .png and .npy labels: image k's rectangle rows k%5..k%5+2, cols 1..k%4+2
    for name in ('gbm_1', 'gbm_2'):
        k = CPM_NAMES.index(name)
        split = next(s for s, v in want.items() if name in v)
        got = read_instance_map(str(out / 'inst_dir' / split / f'{name}.png'))
        assert np.array_equal(got, (_cpm_inst(k) > 0).astype(int))
        pts, _ = read_points(str(out / 'points' / split / f'{name}.csv'))
        # box x 1..k%4+3, y k%5..k%5+3
        assert pts.tolist() == [[(1 + k % 4 + 3) / 2, (2 * (k % 5) + 3) / 2]]
    assert np.array_equal(
        read_image(str(out / 'ann_dir' / split / 'gbm_2.png'), channels=1),
        (_cpm_inst(CPM_NAMES.index('gbm_2')) > 0).astype(np.uint8))


def test_cpm_types_from_csv_or_none_and_seeded_split(tmp_path):
    root = tmp_path / 'cpm'
    _write_cpm(str(root), CPM_NAMES)
    # CSV types by parity of the index (crossing the name prefixes), file names with .png
    csv_types = {n: ('odd' if int(n[-1]) % 2 else 'even') for n in CPM_NAMES}
    csv = tmp_path / 'types.csv'
    csv.write_text('name,type\n' + ''.join(f'{n}.png,{t}\n' for n, t in csv_types.items()))
    res = cpm.convert(str(root), str(tmp_path / 'o1'), types_csv=str(csv), seed=2,
                      progress=False)
    assert res['types'] == csv_types
    assert res['splits'] == _reference_split(csv_types, 1, 2, 2)
    for split, n in (('val', 1), ('test', 2), ('train', 1)):
        assert res['stats'][split]['per_type'] == {'even': n, 'odd': n}
    # no type source: one type -> 1 val, 2 test, 5 train over all 8 images
    res = cpm.convert(str(root), str(tmp_path / 'o2'), seed=2, progress=False)
    assert res['splits'] == _reference_split({n: 'all' for n in CPM_NAMES}, 1, 2, 2)
    assert [len(res['splits'][s]) for s in ('train', 'val', 'test')] == [5, 1, 2]
    # seeded: same seed same split; the 5 seeds do not all give the same split
    types = {n: n.split('_')[0] for n in CPM_NAMES}
    splits = [cpm.split_by_type(types, 1, 2, s) for s in range(5)]
    assert splits == [_reference_split(types, 1, 2, s) for s in range(5)]
    assert cpm.split_by_type(types, 1, 2, 3) == splits[3]
    assert len({json.dumps(s, sort_keys=True) for s in splits}) > 1
    with pytest.raises(ValueError, match='tumour type "gbm" has 4 images: too few for 2 val '
                       '\\+ 2 test'):
        cpm.split_by_type(types, 2, 2)


def test_cpm_errors_name_the_file(tmp_path):
    names = [f'a_{i}' for i in range(4)]

    def tree(name, **kw):
        root = tmp_path / name
        _write_cpm(str(root), names, **kw)
        return root

    def run(root, **kw):
        return cpm.convert(str(root), str(tmp_path / 'o' / root.name), progress=False, **kw)

    root = tree('no_key')
    scipy.io.savemat(str(root / 'Labels' / 'a_1.mat'), {'type_map': np.zeros((CH, CW))})
    _expect(ValueError, re.escape(str(root / 'Labels' / 'a_1.mat')) +
            '.*no key "inst_map".*type_map', run, root)

    root = tree('shape')
    scipy.io.savemat(str(root / 'Labels' / 'a_2.mat'), {'inst_map': np.zeros((CH, CW + 1))})
    _expect(ValueError, re.escape(str(root / 'Labels' / 'a_2.mat')) +
            f'.*{CW + 1}x{CH} .*image .*a_2.png is {CW}x{CH}', run, root)

    root = tree('frac')
    scipy.io.savemat(str(root / 'Labels' / 'a_0.mat'), {'inst_map': np.full((CH, CW), 0.5)})
    _expect(ValueError, re.escape(str(root / 'Labels' / 'a_0.mat')) + '.*non-integer', run,
            root)

    root = tree('bad_img')
    (root / 'Images' / 'a_3.png').write_bytes(b'\x89PNG broken')
    _expect(ValueError, re.escape(str(root / 'Images' / 'a_3.png')) + '.*unreadable', run,
            root)

    root = tree('bad_mat')
    (root / 'Labels' / 'a_3.mat').write_bytes(b'garbage')
    _expect(ValueError, re.escape(str(root / 'Labels' / 'a_3.mat')) + '.*unreadable', run,
            root)

    root = tree('missing', label_fmt={'a_3': None})
    _expect(FileNotFoundError, re.escape(str(root / 'Images' / 'a_3.png')) +
            '.*no label file', run, root)
    _write_cpm(str(root), ['a_4'])  # a fourth labelled image: 1 val, 2 test, 1 train
    res = run(root, allow_unlabeled=True)
    assert res['splits']['unlabeled'] == ['a_3'] and 'a_3' not in res['types']
    assert sum(len(v) for s, v in res['splits'].items() if s != 'unlabeled') == 4
    assert not (tmp_path / 'o' / 'missing' / 'ann_dir' / 'unlabeled').exists()

    root = tree('orphan')
    np.save(str(root / 'Labels' / 'zz.npy'), np.zeros((CH, CW), np.int32))
    _expect(FileNotFoundError, re.escape(str(root / 'Labels' / 'zz.npy')) +
            '.*without its image', run, root)

    root = tree('two_labels')
    np.save(str(root / 'Labels' / 'a_0.npy'), np.zeros((CH, CW), np.int32))
    _expect(ValueError, 'two label files for image "a_0"', run, root)

    root = tree('types')
    _expect(ValueError, 'a_0: file name does not match --type-regex', run, root,
            type_regex='^b_')
    csv = tmp_path / 't.csv'
    csv.write_text('name,type\na_0,x\na_1,x\na_2,x\n')
    _expect(ValueError, re.escape(str(csv)) + ".*no type for 1 images.*'a_3'", run, root,
            types_csv=str(csv))
    csv.write_text('name,type\na_0,x\na_1,x\na_2,x\na_3,x\nb_9,x\n')
    _expect(ValueError, re.escape(str(csv)) + '.*line 6: "b_9" is not an image', run, root,
            types_csv=str(csv))
    _expect(ValueError, 'not both', run, root, types_csv=str(csv), type_regex='a')


def test_layout_writer_point_mode():
    """LayoutWriter(point_mode='bbox') writes box centres; the default stays the centroid."""
    import tempfile
    inst = np.zeros((6, 8), np.int32)
    inst[0, 0:3] = 4  # an L: (0,0), (0,1), (0,2), (1,0), (2,0)
    inst[1:3, 0] = 4
    img = np.zeros((6, 8, 3), np.uint8)
    got = {}
    with tempfile.TemporaryDirectory() as d:
        for mode in ('centroid', 'bbox'):
            w = LayoutWriter(osp.join(d, mode), ('nucleus', ), 'toy', point_mode=mode)
            w.add('train', 'x', img, (inst > 0).astype(np.uint8), inst, labels=0)
            w.close()
            got[mode] = read_points(osp.join(d, mode, 'points', 'train', 'x.csv'))[0]
    # centroid: mean col (0+1+2+0+0)/5 + .5 = 1.1, mean row (0+0+0+1+2)/5 + .5 = 1.1;
    # box x 0..3, y 0..3 -> centre (1.5, 1.5)
    assert got['centroid'].shape == (1, 2)
    assert got['centroid'][0].tolist() == pytest.approx([1.1, 1.1])
    assert got['bbox'].tolist() == [[1.5, 1.5]]
    with pytest.raises(ValueError, match="point_mode: expected one of"):
        LayoutWriter('unused', ('nucleus', ), 'toy', point_mode='center')
