"""QuPath GeoJSON in (issue 18): the fixtures of QuPath 0.3-0.6, our export against QuPath's
conventions, the round trip through tools/infer_slide.py's writer, the converter's tile
coordinates worked by hand, bad input, and a detector trained 2 iterations on the result.

The fixtures in tests/data/qupath/ hold the same five objects as QuPath writes them:
0.2 / 0.3 (a bare list, the type in ``id`` / ``object_type``, ``colorRGB`` ARGB ints,
measurements as a list), 0.4 (compact FeatureCollection, UUID ids, ``objectType``,
``color`` [r, g, b], measurements as a map, ``nucleusGeometry`` beside ``geometry``),
0.5 and 0.6 (pretty printed; 0.6 also names the region).
"""
import json
import math
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest

from projects.common.qupath import (ConvertOptions, check_qupath_geojson, convert, pair_slides,
                                    qupath_colour, read_geojson, tile_starts)
from projects.common.slide import TiffSlideReader, open_slide

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
FIXTURES = osp.join(REPO, 'tests', 'data', 'qupath')
VERSIONS = ['qupath_0.3.json', 'qupath_0.4.geojson', 'qupath_0.5.geojson',
            'qupath_0.6.geojson']


# ============================================================================ reading
@pytest.mark.parametrize('name', VERSIONS)
def test_fixtures_of_every_version_read_the_same(name):
    objs, warnings = read_geojson(osp.join(FIXTURES, name))
    assert warnings == []
    got = [(o.index, o.part, o.object_type, o.class_name, o.colour) for o in objs]
    assert got == [(0, 0, 'annotation', 'Complete', (0, 200, 0)),
                   (1, 0, 'annotation', 'tumour', (200, 0, 0)),  # a MultiPoint: 2 objects
                   (1, 1, 'annotation', 'tumour', (200, 0, 0)),
                   (2, 0, 'detection', 'lymphocyte', (0, 0, 200)),
                   (3, 0, 'cell', 'tumour', (200, 0, 0)),
                   (4, 0, 'annotation', 'lymphocyte', (0, 0, 200))]
    # centres: the points; a rectangle's centre; the cell's NUCLEUS (240..250), not its
    # 230..260 outline; the MultiPolygon: a 40x40 square with a 20x20 hole (area 1200,
    # centroid (100, 270)) and a 10x10 square (area 100, centroid (135, 255)):
    # x = (1200 * 100 + 100 * 135) / 1300 = 102.6923, y = (1200 * 270 + 100 * 255) / 1300
    # = 268.8462
    want = [(192, 192), (100, 120), (200.5, 210.25), (160, 158), (245, 245),
            (102.6923, 268.8462)]
    np.testing.assert_allclose([o.centre() for o in objs], want, atol=1e-4)
    assert len(objs[-1].polygons) == 2 and len(objs[-1].polygons[0]) == 2  # hole kept


def test_classification_forms():
    # 0.2 / 0.3: colorRGB is a signed ARGB int: 0xFFC80000 - 2**32 = -3670016 -> (200, 0, 0)
    assert qupath_colour({'name': 'Tumor', 'colorRGB': -3670016}) == (200, 0, 0)
    assert qupath_colour({'name': 'Tumor', 'color': [1, 2, 3]}) == (1, 2, 3)
    assert qupath_colour({'name': 'Tumor'}) is None
    # QuPath writes [r, g, b, a] when the class colour is translucent (GsonTools)
    assert qupath_colour({'name': 'Tumor', 'color': [10, 20, 30, 128]}) == (10, 20, 30)


def test_derived_classes_legacy_types_and_unclassified(tmp_path):
    feats = [
        dict(type='Feature', geometry=dict(type='Point', coordinates=[1, 2]),
             properties=dict(objectType='detection',
                             classification=dict(names=['Tumor', 'Positive'],
                                                 color=[1, 2, 3]))),
        dict(type='Feature', id='PathDetectionObject',
             geometry=dict(type='Point', coordinates=[3, 4]), properties={}),
        # QuPath also reads a bare string, and 0.2 / 0.3 wrote a derived class as the leaf
        # name with its parentClass
        dict(type='Feature', geometry=dict(type='Point', coordinates=[5, 6]),
             properties=dict(objectType='cell', classification='Stroma: Negative')),
        dict(type='Feature', geometry=dict(type='Point', coordinates=[7, 8]),
             properties=dict(object_type='detection', classification=dict(
                 name='Positive', colorRGB=-65536,
                 parentClass=dict(name='Tumor', colorRGB=-3670016)))),
    ]
    path = tmp_path / 'a.json'
    path.write_text(json.dumps(feats))
    objs, _ = read_geojson(str(path))
    assert [(o.object_type, o.class_name) for o in objs] == [
        ('detection', 'Tumor: Positive'), ('detection', None), ('cell', 'Stroma: Negative'),
        ('detection', 'Tumor: Positive')]


def test_our_export_follows_qupath_conventions_and_round_trips(tmp_path):
    """tools/infer_slide.py writes through ObjectWriter: its GeoJSON passes the checks the
    0.4-0.6 fixtures pass, and read back gives the centres written (2 decimals)."""
    from projects.common.export import ObjectWriter
    from projects.common.slide_inference import SlideObjects
    boxes = np.array([[5.0, 15.0, 15.008, 26.0], [290.0, 30.0, 310.5, 50.252],
                      [3.0, 4.0, 12.0, 13.0]])
    objs = SlideObjects(centres=(boxes[:, :2] + boxes[:, 2:]) / 2, labels=np.array([0, 1, 0]),
                        scores=np.array([0.9, 0.8, 0.7]), boxes=boxes)
    for geometry in ('polygon', 'point'):
        gj = str(tmp_path / f'{geometry}.geojson')
        with ObjectWriter(gj, str(tmp_path / f'{geometry}.csv'), ['tumour', 'lymphocyte'],
                          [(200, 0, 0), (0, 0, 200)], geometry=geometry) as w:
            w.write(objs)
        with open(gj) as f:
            assert check_qupath_geojson(json.load(f), gj) == []
        back, warnings = read_geojson(gj)
        assert warnings == []
        np.testing.assert_allclose([o.centre() for o in back], objs.centres, atol=0.01)
        assert [o.class_name for o in back] == ['tumour', 'lymphocyte', 'tumour']
        assert [o.colour for o in back] == [(200, 0, 0), (0, 0, 200), (200, 0, 0)]


@pytest.mark.parametrize('geometry', ['polygon', 'point'])
def test_infer_slide_output_converts_back_to_the_same_points(tmp_path, geometry):
    """tools/infer_slide.py on a pyramid with dark squares (the exact blob detector of
    tests/test_slide_inference.py), its GeoJSON converted at level 0 into 256-px sparse
    tiles: every COCO point maps back (offset + p * scale) to a detection's centre."""
    from test_slide_inference import _blob_files, _squares_slide, load_tool
    slide = _squares_slide(tmp_path, blank_left=True)
    cfg, ckpt = _blob_files(tmp_path)
    load_tool('infer_slide').main([cfg, ckpt, slide, '--out', str(tmp_path / 'inf'), '--tile',
                                   '256', '--overlap', '64', '--tissue-mask', '--geometry',
                                   geometry, '--no-progress'])
    gj = str(tmp_path / 'inf' / 'squares.geojson')
    objs, warnings = read_geojson(gj)
    # squares A [600, 632) x [300, 332) and C [900, 932) x [100, 132), 'large'; B lies in
    # the blank half and is never run
    assert warnings == [] and sorted(tuple(o.centre()) for o in objs) == [(616, 316),
                                                                          (916, 116)]
    summary = convert([(slide, gj)], str(tmp_path / 'tiles'),
                      ConvertOptions(level=0, tile=256, sparse_tiles=True, box_size=32))
    assert summary['slides'][slide]['per_class'] == {'large': dict(
        kept=2, outside_tiles=0, outside_slide=0, unknown_class=0)}
    with open(tmp_path / 'tiles' / 'annotations' / 'train_sparse.json') as f:
        coco = json.load(f)
    back = []
    for a in coco['annotations']:
        img = coco['images'][a['image_id'] - 1]
        back.append(tuple(np.add(img['offset'], np.multiply(a['point'], img['scale']))))
        assert a['bbox'][2:] == [32, 32]  # the square (tight box) or the --box-size box
    # A: 256-px grid cell (512, 256), point (104, 60); C: cell (768, 0), point (148, 116)
    assert sorted(back) == [(616, 316), (916, 116)]


@pytest.mark.parametrize('name', VERSIONS[1:])
def test_modern_fixtures_pass_the_convention_checks(name):
    with open(osp.join(FIXTURES, name)) as f:
        assert check_qupath_geojson(json.load(f), name) == []


def test_convention_checks_catch_legacy_and_broken_features():
    with open(osp.join(FIXTURES, 'qupath_0.3.json')) as f:
        assert check_qupath_geojson(json.load(f)) == ['GeoJSON: not a FeatureCollection']
    doc = {'type': 'FeatureCollection', 'features': [
        {'type': 'Feature', 'geometry': {'type': 'Polygon',
                                         'coordinates': [[[0, 0], [5, 0], [5, 5]]]},
         'properties': {'objectType': 'detection', 'measurements': [{'name': 'a', 'value': 1}],
                        'classification': {'name': 'x', 'colorRGB': -1}}}]}
    problems = check_qupath_geojson(doc, 'doc')
    assert problems == [
        "doc: feature 0: classification is not {name, color: [r, g, b]}: "
        "{'name': 'x', 'colorRGB': -1}",
        'doc: feature 0: measurements are not a name -> number map',
        'doc: feature 0: ring not closed, shorter than 4 positions or of zero area']


def test_tile_starts_by_hand():
    assert tile_starts(0, 100, 40, 40) == [0.0, 40.0, 60.0]  # last shifted to end at 100
    assert tile_starts(0, 80, 40, 40) == [0.0, 40.0]
    assert tile_starts(10, 30, 40, 40) == [0.0]  # shorter than a tile: centred


# ============================================================================ slides
def _write_slide(path, mpp_tags=True, size=512):
    """A 3-level pyramidal TIFF (blank glass left, tissue right), mpp 0.25 in the TIFF
    XResolution / ResolutionUnit tags (40000 px per cm)."""
    import tifffile
    from test_slide_inference import pyramid_levels, tissue_image
    levels = pyramid_levels(tissue_image(size, size, seed=1, blank_left=True), 3)
    with tifffile.TiffWriter(path) as tw:
        for k, lv in enumerate(levels):
            kw = dict(resolution=(40000, 40000), resolutionunit='CENTIMETER') \
                if k == 0 and mpp_tags else {}
            tw.write(lv, tile=(64, 64), photometric='rgb', subfiletype=1 if k else 0, **kw)
    return levels


def _feature(geom_type, coords, cls, object_type='annotation'):
    return dict(type='Feature', geometry=dict(type=geom_type, coordinates=coords),
                properties=dict(objectType=object_type,
                                classification=dict(name=cls, color=[1, 2, 3])))


def _ring(x0, y0, x1, y1):
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]


# right half is tissue: a 128x128 complete region at (288, 64); a tumour point inside it, a
# lymphocyte rectangle inside it, a tumour point outside every region, a 'stroma' object
SLIDE_FEATURES = [
    _feature('Polygon', [_ring(288, 64, 416, 192)], 'Complete'),
    _feature('MultiPoint', [[300.5, 100.25], [410.0, 180.0]], 'tumour'),
    _feature('Polygon', [_ring(320, 96, 340, 112)], 'lymphocyte', 'detection'),
    _feature('Point', [450.0, 400.0], 'tumour'),
    _feature('Point', [300.0, 300.0], 'stroma'),
    _feature('Polygon', [_ring(256, 256, 512, 512)], 'tumour', 'tile'),  # not a label
]


@pytest.fixture(scope='module')
def slide_pair(tmp_path_factory):
    d = tmp_path_factory.mktemp('qupath_slide')
    _write_slide(str(d / 'case1.tif'))
    (d / 'case1.geojson').write_text(json.dumps(dict(type='FeatureCollection',
                                                     features=SLIDE_FEATURES)))
    return str(d / 'case1.tif'), str(d / 'case1.geojson')


def test_tiff_resolution_tags_give_mpp(tmp_path):
    import tifffile
    img = np.full((64, 64, 3), 200, np.uint8)
    for unit, res, mpp in (('CENTIMETER', 40000, 0.25), ('INCH', 50800, 0.5),
                           ('NONE', 1, None)):
        path = str(tmp_path / f'{unit}.tif')
        tifffile.imwrite(path, img, photometric='rgb', tile=(32, 32), resolution=(res, res),
                         resolutionunit=unit)
        # 1 cm = 10^4 um: 10^4 / 40000 px = 0.25 um/px; 1 inch = 25400 um / 50800 px = 0.5
        for reader in (TiffSlideReader(path), open_slide(path)):
            got = reader.properties.get('mpp')
            assert (float(got) if got else None) == mpp, (unit, reader.backend)
            reader.close()


def test_convert_hand_checked_coordinates(slide_pair, tmp_path):
    slide, ann = slide_pair
    out = str(tmp_path / 'out')
    opts = ConvertOptions(mpp=0.5, tile=64, classes=['tumour', 'lymphocyte'],
                          sparse_tiles=True, box_sizes={'tumour': 10.0}, box_size=6.0)
    summary = convert(pair_slides([slide], [ann]), out, opts)
    s = summary['slides'][slide]
    # mpp 0.25 -> 0.5: level 1 (downsample 2) read as is: 2 level-0 px per tile px; the
    # 128-px region is one 64-px tile at (288, 64); the point at (450, 400) gets the
    # sparse tile of the 128-px grid cell (384, 384)
    assert (s['level'], s['scale'], s['mpp']) == (1, 2.0, 0.5)
    assert s['tiles'] == dict(complete=1, sparse=1, no_tissue=0)
    assert s['per_class'] == {
        'tumour': dict(kept=3, outside_tiles=0, outside_slide=0, unknown_class=0),
        'lymphocyte': dict(kept=1, outside_tiles=0, outside_slide=0, unknown_class=0),
        'stroma': dict(kept=0, outside_tiles=0, outside_slide=0, unknown_class=1)}
    assert "feature 5: a QuPath 'tile' object is not a label" in s['warnings'][0]
    assert "feature 4: class 'stroma' is not in --classes" in s['warnings'][1]
    assert s['invalid_features'] == 1
    with open(osp.join(out, 'annotations', 'train.json')) as f:
        coco = json.load(f)
    img = coco['images'][0]
    assert (img['parent'], img['offset'], img['scale'], img['complete']) == (
        slide, [288.0, 64.0], 2.0, True)
    anns = sorted(coco['annotations'], key=lambda a: a['point'])
    # tumour (300.5, 100.25) -> ((300.5 - 288) / 2, (100.25 - 64) / 2) = (6.25, 18.125),
    # box 10 px; tumour (410, 180) -> (61, 58); lymphocyte rectangle 320..340 x 96..112 ->
    # 16..26 x 16..24: tight box [16, 16, 10, 8], centroid (21, 20)
    assert [(a['category_id'], a['point'], a['bbox']) for a in anns] == [
        (1, [6.25, 18.125], [1.25, 13.125, 10.0, 10.0]),
        (2, [21.0, 20.0], [16.0, 16.0, 10.0, 8.0]),
        (1, [61.0, 58.0], [56.0, 53.0, 10.0, 10.0])]
    for a in anns:  # and back: level0 = offset + p * scale
        x, y = np.array(img['offset']) + np.array(a['point']) * img['scale']
        assert (x, y) in {(300.5, 100.25), (330.0, 104.0), (410.0, 180.0)}
    with open(osp.join(out, 'annotations', 'train_sparse.json')) as f:
        sparse = json.load(f)
    assert sparse['images'][0]['offset'] == [384.0, 384.0]
    assert sparse['images'][0]['complete'] is False
    assert sparse['annotations'][0]['point'] == [33.0, 8.0]  # (450-384)/2, (400-384)/2
    # pixels: the tile is level 1 at (144, 32), unresized
    from projects.common.io import read_image
    tile = read_image(osp.join(out, 'images', 'case1_x288_y64.png'))
    with TiffSlideReader(slide) as reader:
        np.testing.assert_array_equal(tile, reader.read_level(1, 144, 32, 64, 64))
    # semantic map: lymphocyte pixels 1, the point discs 255 (extent unknown), rest 0; in
    # the sparse tile only labelled pixels are known
    sem = read_image(osp.join(out, 'ann_dir', 'train', 'case1_x288_y64.png'), channels=None)
    assert (sem[16:24, 16:26] == 1).all() and sem[18, 6] == 255 and sem[40, 40] == 0
    sem = read_image(osp.join(out, 'ann_dir', 'train_sparse', 'case1_x384_y384.png'),
                     channels=None)
    assert set(np.unique(sem)) == {255}


def test_bad_inputs_name_the_file_and_feature(slide_pair, tmp_path):
    slide, ann = slide_pair
    bad = tmp_path / 'bad.geojson'
    bad.write_text('{"type": "FeatureCollection", "features": [')
    with pytest.raises(ValueError, match=r'bad\.geojson: not valid JSON'):
        read_geojson(str(bad))
    bad.write_text('{"type": "GeometryCollection", "geometries": []}')
    with pytest.raises(ValueError, match=r"bad\.geojson: not QuPath GeoJSON.*'GeometryCollection'"):
        read_geojson(str(bad))
    bad.write_text(json.dumps([
        _feature('LineString', [[0, 0], [1, 1]], 'tumour'),
        _feature('Polygon', [[[0, 0], [4, 0], [0, 0]]], 'tumour'),
        _feature('Polygon', [[[0, 0], [4, 0], [8, 0], [0, 0]]], 'tumour'),
        _feature('Point', ['a', 1], 'tumour'),
        _feature('Point', [5, 5], 'tumour')]))
    objs, warnings = read_geojson(str(bad))
    assert len(objs) == 1 and len(warnings) == 4
    assert "feature 0: unknown geometry type 'LineString'" in warnings[0]
    assert 'feature 1 polygon 0 ring 0: polygon ring has fewer than 3 distinct' in warnings[1]
    assert 'feature 2 polygon 0 ring 0: polygon ring has zero area' in warnings[2]
    assert 'feature 3: point coordinates are not numbers' in warnings[3]
    assert all(w.startswith(str(bad)) for w in warnings)
    # a point outside the 512x512 slide: an error without --clip, dropped and counted with
    out_ann = tmp_path / 'case1.geojson'
    out_ann.write_text(json.dumps(SLIDE_FEATURES + [_feature('Point', [600.0, 10.0],
                                                             'tumour')]))
    pairs = pair_slides([slide], [f'{osp.basename(slide)}={out_ann}'])
    with pytest.raises(ValueError, match=r'case1\.geojson: 1 object\(s\) lie.*outside the '
                       r'512x512 slide .*case1\.tif \(feature 6\); pass --clip'):
        convert(pairs, str(tmp_path / 'o1'), ConvertOptions(mpp=0.5, tile=64))
    s = convert(pairs, str(tmp_path / 'o2'), ConvertOptions(mpp=0.5, tile=64, clip=True))
    assert s['slides'][slide]['per_class']['tumour']['outside_slide'] == 1
    # pairing: a slide without annotation file, an annotation file without slide
    lonely = tmp_path / 'lonely.tif'
    _write_slide(str(lonely), mpp_tags=False, size=128)
    with pytest.raises(ValueError, match=r'lonely\.tif: no annotation file for this slide'):
        pair_slides([slide, str(lonely)], [ann])
    with pytest.raises(ValueError, match=r'bad\.geojson: annotation file without a slide'):
        pair_slides([slide], [ann, str(bad)])
    # a slide without mpp when --mpp is asked
    (tmp_path / 'lonely.geojson').write_text(json.dumps([_feature('Point', [5, 5], 'x')]))
    with pytest.raises(ValueError, match=r'lonely\.tif: the slide has no microns-per-pixel'):
        convert(pair_slides([str(lonely)], [str(tmp_path / 'lonely.geojson')]),
                str(tmp_path / 'o3'), ConvertOptions(mpp=0.5, tile=64))


def test_cli_converts_and_a_detector_trains_two_iterations(slide_pair, tmp_path):
    """The CLI on the generated pyramid (mpp from its TIFF tags), then Faster R-CNN
    (the demo config, half-width ResNet-18) trained 2 iterations on the tiles."""
    import torch
    from mmengine.config import Config
    from mmengine.hooks import Hook
    from mmengine.registry import DefaultScope
    from mmengine.runner import Runner
    slide, ann = slide_pair
    out = str(tmp_path / 'data')
    r = subprocess.run([sys.executable, 'tools/dataset_converters/qupath.py', '--slides',
                        slide, '--annotations', ann, '--out', out, '--mpp', '0.5', '--tile',
                        '64', '--classes', 'tumour,lymphocyte', '--task', 'det',
                        '--no-progress'], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert 'case1.tif' in r.stdout and 'tumour' in r.stdout
    assert not osp.exists(osp.join(out, 'img_dir'))  # --task det: COCO layout only
    cfg = Config.fromfile(osp.join(REPO, 'configs/baselines/'
                                   'faster-rcnn_r18-c32_fpn_demo_synthetic.py'))
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = out + '/'
        cfg[loader].dataset.ann_file = 'annotations/train.json'
        cfg[loader].num_workers = 0
        cfg[loader].persistent_workers = False
    cfg.model.roi_head.bbox_head.num_classes = 2
    cfg.train_dataloader.batch_size = 1
    cfg.train_cfg.max_iters = 2
    cfg.train_cfg.val_interval = 100
    cfg.default_hooks.checkpoint = None
    cfg.work_dir = str(tmp_path / 'work')
    losses = []

    class Record(Hook):
        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            losses.append(float(outputs['loss'].detach()))

    with DefaultScope.overwrite_default_scope('mmdet'):
        torch.manual_seed(0)
        runner = Runner.from_cfg(cfg)
        runner.register_hook(Record(), 'LOWEST')
        assert runner.train_dataloader.dataset.metainfo['classes'] == ('tumour', 'lymphocyte')
        runner.train()
    assert len(losses) == 2 and all(math.isfinite(v) and v > 0 for v in losses)
