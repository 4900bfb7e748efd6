"""Whole-slide inference (issue 8): slide readers, tissue mask, tiled == whole-region
inference for a detector and a segmentor, level / ROI mapping, QuPath GeoJSON + CSV, bad
input, bounded memory.

Real slide: OpenSlide's CMU-1-Small-Region (Aperio SVS, JPEG tiles, 2220x2967), read in
place from the shared data folder (MMHISTO_SHARED_DATA); the tests that need it skip
when it is absent. Pyramidal TIFFs are written here with tifffile.
"""
import importlib.util
import json
import os
import os.path as osp
import tracemalloc

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from scipy import ndimage
from scipy.spatial import cKDTree

from projects.common.instances import connected_components_per_class, instance_geometry
from projects.common.slide import TiffSlideReader, open_slide, openslide_available, tissue_mask
from projects.common.slide_inference import (InstanceStitcher, SlideInference, load_model,
                                             mask_to_polygon, region_in_level)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
SHARED = os.environ.get('MMHISTO_SHARED_DATA', osp.join(REPO, '..', 'shared', 'data'))
SVS = osp.join(SHARED, 'samples', 'cmu_small_region.svs')
needs_svs = pytest.mark.skipif(
    not osp.isfile(SVS), reason=f'{SVS} (OpenSlide CMU-1-Small-Region sample) is not on disk')
needs_openslide = pytest.mark.skipif(
    not openslide_available(), reason='openslide not importable (pip install "mmhisto[slide]")')


# ================================================================ fixtures and helpers
def pyramid_levels(level0: np.ndarray, n_levels: int = 3) -> list:
    """Level k+1 = rounded 2x2 block mean of level k (sizes divisible by 2**(n-1))."""
    levels = [level0]
    for _ in range(1, n_levels):
        p = levels[-1].astype(np.float64)
        h, w = p.shape[0] // 2, p.shape[1] // 2
        levels.append(np.rint(p.reshape(h, 2, w, 2, 3).mean((1, 3))).astype(np.uint8))
    return levels


def write_pyramid(path: str, level0: np.ndarray, n_levels: int = 3, tile: int = 64,
                  compression=None) -> list:
    """Tiled pyramidal TIFF, levels as successive reduced pages (OpenSlide generic-tiff)."""
    import tifffile
    levels = pyramid_levels(level0, n_levels)
    with tifffile.TiffWriter(path) as tw:
        for k, lv in enumerate(levels):
            tw.write(lv, tile=(tile, tile), photometric='rgb', compression=compression,
                     subfiletype=1 if k else 0)
    return levels


def tissue_image(h: int, w: int, seed: int = 0, blank_left: bool = False) -> np.ndarray:
    """Pink stroma with purple nuclei (discs); optionally a blank (near-white) left half."""
    rng = np.random.default_rng(seed)
    img = np.empty((h, w, 3), np.float64)
    img[:] = (235, 200, 220)
    yy, xx = np.mgrid[-10:11, -10:11]
    for _ in range(h * w // 2500):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(4, 9)
        iy, ix = int(cy), int(cx)
        disc = (yy + iy - cy) ** 2 + (xx + ix - cx) ** 2 < r * r
        ys, xs = yy[disc] + iy, xx[disc] + ix
        ok = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
        img[ys[ok], xs[ok]] = (90, 60, 140)
    img += rng.normal(0, 6, img.shape)
    if blank_left:
        img[:, :w // 2] = 250 + rng.normal(0, 1, (h, w // 2, 1))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- a test double
def _register_blob_detector():
    """``TestDarkBlobDetector``: one box per 8-connected blob of pixels whose channel mean
    is below ``dark``; class 1 ('large') if the blob has >= ``large_area`` pixels, else 0;
    score 0.9. Deterministic and exact, so level / ROI mapping can be checked by hand."""
    from mmdet.models.detectors import BaseDetector
    from mmdet.registry import MODELS
    from mmengine.structures import InstanceData

    class TestDarkBlobDetector(BaseDetector):

        def __init__(self, dark: float = 50, large_area: int = 400, data_preprocessor=None,
                     init_cfg=None):
            super().__init__(data_preprocessor=data_preprocessor
                             or dict(type='mmdet.DetDataPreprocessor'), init_cfg=init_cfg)
            self.dark, self.large_area = dark, large_area

        def predict(self, batch_inputs, batch_data_samples, rescale=True):
            for img, sample in zip(batch_inputs, batch_data_samples):
                lab, n = ndimage.label(img.float().mean(0).numpy() < self.dark,
                                       structure=np.ones((3, 3)))
                boxes, labels = [], []
                for k, sl in enumerate(ndimage.find_objects(lab), start=1):
                    boxes.append([sl[1].start, sl[0].start, sl[1].stop, sl[0].stop])
                    labels.append(int((lab[sl] == k).sum() >= self.large_area))
                inst = InstanceData()
                inst.bboxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
                inst.scores = torch.full((n, ), 0.9)
                inst.labels = torch.tensor(labels, dtype=torch.int64)
                sample.pred_instances = inst
            return batch_data_samples

        def loss(self, *args, **kwargs):
            raise NotImplementedError

        def _forward(self, *args, **kwargs):
            raise NotImplementedError

        def extract_feat(self, *args, **kwargs):
            raise NotImplementedError

    MODELS.register_module(name='TestDarkBlobDetector', module=TestDarkBlobDetector,
                           force=True)
    return TestDarkBlobDetector


BlobDetector = _register_blob_detector()
BLOB_CFG = "default_scope = 'mmdet'\nmodel = dict(type='TestDarkBlobDetector')\n"
BLOB_META = dict(classes=('small', 'large'), palette=[(255, 0, 0), (0, 0, 255)])


# ---------------------------------------------------------------- tiny real models
def _bgr_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img[..., ::-1].transpose(2, 0, 1)))


YOLLO_OPTS = dict(model=dict(
    data_preprocessor=dict(pad_size_divisor=4),
    backbone=dict(base_channels=4, num_stages=1, out_indices=(0, ), strides=(1, ),
                  dilations=(1, )),
    bbox_head=dict(in_channels=4, feat_channels=4, stacked_convs=1),
    test_cfg=dict(score_thr=0.0, max_per_img=100000)))


def tiny_yollo(calibrate_on: np.ndarray):
    """The project's YOLLO config (exclusive_ce) at 4 channels, one ResNet stage, no FPN:
    receptive radius about 25 px (+4 px for the 3x3 peak decoding), stride 4. Random
    init (seed 1); each class's bias is shifted so that its top 0.5% cells of
    ``calibrate_on`` score above 0.6 (there are detections of every class)."""
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    cfg = Config.fromfile(
        f'{REPO}/configs/exclusive_ce/yollo_r18-c32_ce_300i_synthetic-sparse30.py')
    cfg.merge_from_dict(YOLLO_OPTS)
    cfg.model.neck = None
    torch.manual_seed(1)
    with DefaultScope.overwrite_default_scope('mmdet'):
        m = MODELS.build(cfg.model).eval()
    head = m.bbox_head
    torch.nn.init.normal_(head.conv_cls.weight, std=0.2)
    h, w = calibrate_on.shape[:2]
    with torch.no_grad():
        data = m.data_preprocessor(dict(inputs=[_bgr_tensor(calibrate_on)], data_samples=[
            DetDataSample(metainfo=dict(img_shape=(h, w)))]), False)
        logits = head(m.extract_feat(data['inputs']))[0][0]
        q = torch.quantile(logits.flatten(1), 0.995, dim=1)
        head.conv_cls.bias += float(np.log(0.6 / 0.4)) - q
    return m


UNET_OPTS = dict(model=dict(
    data_preprocessor=dict(size=None),
    backbone=dict(base_channels=4, num_stages=3, strides=(1, 1, 1), enc_num_convs=(1, 1, 1),
                  dec_num_convs=(1, 1), downsamples=(True, True), enc_dilations=(1, 1, 1),
                  dec_dilations=(1, 1)),
    decode_head=dict(in_channels=4, in_index=2, channels=4, dropout_ratio=0.0, num_convs=1,
                     concat_input=False),
    auxiliary_head=None))


UNET_CFG = (f"_base_ = '{REPO}/configs/baselines/unet-s5-d16_fcn_2k_synthetic-256x256.py'\n"
            f"model = {UNET_OPTS['model']!r}\n")


def tiny_unet(calibrate_on=None, base_channels: int = 4):
    """The baseline mmseg U-Net config at 4 channels, 3 stages: receptive radius about
    15 px, total stride 4. Random init (seed 0); with ``calibrate_on`` the nucleus bias is
    shifted so that 15% of its pixels are nucleus (blobs of many sizes)."""
    from mmseg.registry import MODELS
    cfg = Config.fromfile(f'{REPO}/configs/baselines/unet-s5-d16_fcn_2k_synthetic-256x256.py')
    cfg.merge_from_dict(UNET_OPTS)
    cfg.merge_from_dict(dict(model=dict(backbone=dict(base_channels=base_channels),
                                        decode_head=dict(in_channels=base_channels))))
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmseg'):
        m = MODELS.build(cfg.model).eval()
    if calibrate_on is not None:
        h, w = calibrate_on.shape[:2]
        with torch.no_grad():
            x = m.data_preprocessor(dict(inputs=[_bgr_tensor(calibrate_on)]), False)['inputs']
            lg = m.encode_decode(x, [dict(img_shape=(h, w), pad_shape=(h, w))])[0]
            m.decode_head.conv_seg.bias[1] -= torch.quantile((lg[1] - lg[0]).flatten(), 0.85)
    return m


def run_objects(engine: SlideInference, slide, level=0, roi=None, **kw):
    """(SlideRun, objects as a list of per-object tuples sorted by centre)."""
    got = []
    run = engine.run(slide, level, roi, sink=got.append, **kw)
    rows = []
    for o in got:
        for i in range(len(o)):
            rows.append((o.centres[i], int(o.labels[i]), float(o.scores[i]), o.boxes[i],
                         None if o.polygons is None else o.polygons[i]))
    rows.sort(key=lambda r: (round(r[0][0], 3), round(r[0][1], 3)))
    return run, rows


def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(osp.basename(name),
                                                  osp.join(REPO, 'tools', f'{name}.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope='module')
def pyramid(tmp_path_factory):
    """A 3-level tiled TIFF (1024x768 -> 512x384 -> 256x192) of synthetic tissue."""
    path = str(tmp_path_factory.mktemp('slide') / 'pyr.tif')
    levels = write_pyramid(path, tissue_image(768, 1024, seed=0))
    return path, levels


# ================================================================ readers
def test_tiff_reader_levels_and_regions(pyramid):
    path, levels = pyramid
    with TiffSlideReader(path) as s:
        assert s.level_dimensions == [(1024, 768), (512, 384), (256, 192)]
        # OpenSlide's rule: (w0 / wk + h0 / hk) / 2 -> 1, 2, 4
        assert s.level_downsamples == [1.0, 2.0, 4.0]
        # 64 px TIFF tiles: this region spans 3 x 2 of them at level 1
        assert np.array_equal(s.read_level(1, 50, 60, 150, 40), levels[1][60:100, 50:200])
        # read_region takes level-0 coordinates: (130, 66) at level 1 -> (65, 33)
        assert np.array_equal(s.read_region(130, 66, 1, 20, 10), levels[1][33:43, 65:85])
        assert np.array_equal(s.read_level(2, 0, 0, 256, 192), levels[2])
        # thumbnail of the lowest level (256x192) reduced by f = ceil(256 / 100) = 3:
        # thumbnail pixel (0, 0) = mean of level-2 pixels [0:3, 0:3]; the last column
        # (85 = 255 // 3) holds level-2 column 255 only
        thumb, scale = s.thumbnail(100)
        assert thumb.shape == (64, 86, 3) and scale == 3 * 4.0
        lv2 = levels[2].astype(np.float64)
        assert np.array_equal(thumb[0, 0], np.rint(lv2[0:3, 0:3].mean((0, 1))))
        assert np.array_equal(thumb[5, 85], np.rint(lv2[15:18, 255].mean(0)))


@needs_openslide
@pytest.mark.parametrize('compression', [None, 'zlib'])
def test_openslide_and_tifffile_agree_on_pyramid(tmp_path, compression):
    path = str(tmp_path / 'p.tif')
    levels = write_pyramid(path, tissue_image(384, 512, seed=3), compression=compression)
    a, b = open_slide(path, 'openslide'), open_slide(path, 'tifffile')
    assert (a.backend, b.backend) == ('openslide', 'tifffile')
    assert a.level_dimensions == b.level_dimensions and a.level_downsamples == b.level_downsamples
    for k, lv in enumerate(levels):
        h, w = lv.shape[:2]
        ra, rb = a.read_level(k, 0, 0, w, h), b.read_level(k, 0, 0, w, h)
        assert np.array_equal(ra, lv) and np.array_equal(rb, lv)
    # level-0 coordinates that are multiples of the downsample: same pixels
    assert np.array_equal(a.read_region(132, 68, 2, 37, 29), b.read_region(132, 68, 2, 37, 29))
    a.close()
    b.close()


@needs_svs
@needs_openslide
def test_openslide_and_tifffile_agree_on_svs():
    a, b = open_slide(SVS, 'openslide'), open_slide(SVS, 'tifffile')
    # the SVS thumbnail page (768x574, stripped) is not a level, as in OpenSlide
    assert a.level_dimensions == b.level_dimensions == [(2220, 2967)]
    # every JPEG tile of level 0 decoded by both back-ends: identical pixels
    assert np.array_equal(a.read_level(0, 0, 0, 2220, 2967), b.read_level(0, 0, 0, 2220, 2967))
    assert b.properties.get('mpp') == '0.4990'
    a.close()
    b.close()


def test_tissue_mask_by_hand():
    # left half white, right half pink (saturation (235 - 200) / 235 = 0.149): Otsu
    # separates them; a blank image stays blank (floor 0.05)
    img = np.full((20, 40, 3), 255, np.uint8)
    img[:, 20:] = (235, 200, 220)
    mask, thr = tissue_mask(img)
    assert 0.05 <= thr < 0.149
    assert mask[:, 20:].all() and not mask[:, :20].any()
    od_mask, _ = tissue_mask(img, 'od')
    assert np.array_equal(od_mask, mask)
    blank, thr0 = tissue_mask(np.full((8, 8, 3), 250, np.uint8))
    assert not blank.any() and thr0 == 0.05
    # a one-pixel pink speck on the glass is dust (objects < min_object = 4 px dropped)
    img[5, 5] = (235, 200, 220)
    assert not tissue_mask(img)[0][5, 5] and tissue_mask(img, min_object=1)[0][5, 5]
    with pytest.raises(ValueError, match='method'):
        tissue_mask(img, 'otsu')


# ================================================================ stitching and polygons
def test_stitcher_equals_connected_components_of_whole_map():
    # random class maps cut into random cores: the stitched instances are exactly the
    # 8-connected per-class components of the whole map (independent reference)
    rng = np.random.default_rng(0)
    for trial in range(60):
        h, w = (int(v) for v in rng.integers(5, 40, 2))
        lab = (rng.random((h, w)) < 0.45) * rng.integers(1, 3, (h, w))
        if trial % 2:
            lab = ndimage.median_filter(lab, 3)  # larger blobs spanning cores
        yb = [0] + sorted(rng.choice(np.arange(1, h), int(rng.integers(0, min(h, 6) - 1)),
                                     replace=False).tolist()) + [h]
        xb = [0] + sorted(rng.choice(np.arange(1, w), int(rng.integers(0, min(w, 6) - 1)),
                                     replace=False).tolist()) + [w]
        st = InstanceStitcher(h, w, yb, xb, fill_holes=False)
        got = []
        for r in range(len(yb) - 1):
            for c in range(len(xb) - 1):
                st.add_core(r, c, lab[yb[r]:yb[r + 1], xb[c]:xb[c + 1]])
            got += st.end_row(r)
        ref = connected_components_per_class(lab)
        _, cen, boxes = instance_geometry(ref)  # the project's centroid / box convention
        want = sorted((tuple(b.astype(int)), (int((ref == k).sum()), int(lab[ref == k][0])),
                       tuple(np.round(c, 9))) for k, b, c in zip(range(1, len(cen) + 1),
                                                                boxes, cen))
        have = sorted((tuple(int(v) for v in g['box']), (g['pixels'], g['label']),
                       tuple(np.round(g['centroid'], 9))) for g in got)
        assert have == want, trial


def test_stitcher_rejects_out_of_order_cores():
    st = InstanceStitcher(4, 4, [0, 2, 4], [0, 2, 4])
    with pytest.raises(ValueError, match='row-major'):
        st.add_core(0, 1, np.zeros((2, 2), int))


def test_mask_to_polygon_by_hand():
    # one pixel (0, 0) covers [0, 1)^2: marching squares gives the diamond through the
    # middles of its edges
    one = mask_to_polygon(np.ones((1, 1), bool))
    assert {tuple(p) for p in one} == {(0.5, 0.0), (1.0, 0.5), (0.5, 1.0), (0.0, 0.5)}
    assert np.array_equal(one[0], one[-1])

    def area(p):
        return abs(np.dot(p[:-1, 0], p[1:, 1]) - np.dot(p[:-1, 1], p[1:, 0])) / 2
    # a 2x3 rectangle: its 6 px minus 4 cut corners of 1/8 px each = 5.5; an octagon
    # once the collinear points along its edges are dropped
    rect = mask_to_polygon(np.ones((2, 3), bool))
    assert area(rect) == pytest.approx(5.5) and len(rect) == 9
    # two diagonal pixels are one 8-connected object: one ring around both. Their two
    # diamonds (0.5 px each) lose their quarters in the square between the two pixel
    # centres (2 x 0.125) and that square gets a hexagon instead (1 - 2 x 0.125):
    # 1.0 - 0.25 + 0.75 = 1.5; without its collinear points the ring is the rectangle
    # (0, 0.5) (0.5, 0) (2, 1.5) (1.5, 2)
    diag = mask_to_polygon(np.eye(2, dtype=bool))
    assert area(diag) == pytest.approx(1.5)
    assert {tuple(p) for p in diag} == {(0.0, 0.5), (0.5, 0.0), (2.0, 1.5), (1.5, 2.0)}
    assert len(diag) == 5


# ================================================================ tiled == whole
def _assert_same_detections(a, b):
    assert len(a) == len(b)
    ca = np.array([np.r_[r[3], r[1] * 1e4] for r in a])
    cb = np.array([np.r_[r[3], r[1] * 1e4] for r in b])
    dist, j = cKDTree(cb).query(ca)
    assert len(set(j.tolist())) == len(a)  # one-to-one
    assert dist.max() < 1e-3  # same boxes and classes
    assert max(abs(r[2] - b[k][2]) for r, k in zip(a, j)) < 1e-5  # same scores


def _detection_equality(slide, level, roi):
    x, y, w, h = region_in_level(slide, level, roi)
    model = tiny_yollo(slide.read_level(level, x, y, w, h))
    # 256 px tiles, 128 px overlap (stride 128, a multiple of the net's stride 4); the
    # border filter drops boxes within 32 px (>= receptive radius + peak window) of an
    # inner tile border when another tile holds them with that clearance
    tiled = SlideInference(model, tile_size=256, overlap=128, score_thr=0.6, max_per_tile=-1,
                           drop_border_boxes=True, border_margin=32, progress=False)
    whole = SlideInference(model, tile_size=(h, w), overlap=0, score_thr=0.6,
                           max_per_tile=-1, progress=False)
    run_t, a = run_objects(tiled, slide, level, roi)
    run_w, b = run_objects(whole, slide, level, roi)
    assert len(run_w.tiles) == 1 and len(run_t.tiles) >= 6
    assert len(b) > 50 and len(set(r[1] for r in b)) >= 2  # several classes
    _assert_same_detections(a, b)
    return a


@needs_svs
def test_detection_tiled_equals_whole_region_svs():
    slide = open_slide(SVS)  # OpenSlide when installed (CI), else tifffile
    roi = (768, 1024, 1024, 768)  # level-0 x, y, w, h in the tissue
    rows = _detection_equality(slide, 0, roi)
    cen = np.array([r[0] for r in rows])
    assert cen[:, 0].min() >= 768 - 8 and cen[:, 0].max() <= 768 + 1024 + 8  # level 0
    slide.close()


def test_detection_tiled_equals_whole_region_pyramid_level1(pyramid):
    slide = open_slide(pyramid[0], 'tifffile')
    _detection_equality(slide, 1, (0, 0, 1024, 768))  # level 1: the 512x384 image
    slide.close()


def _segmentation_equality(slide, level, roi):
    x, y, w, h = region_in_level(slide, level, roi)
    img = slide.read_level(level, x, y, w, h)
    model = tiny_unet(img)
    # 128 px tiles, 64 px overlap: each core keeps >= 32 px (> receptive radius 15) from
    # the inner tile borders, offsets are multiples of the U-Net's stride 4
    run_t, a = run_objects(SlideInference(model, 128, 64, progress=False), slide, level, roi)
    run_w, b = run_objects(SlideInference(model, (h, w), 0, progress=False), slide, level, roi)
    assert len(run_w.tiles) == 1 and len(run_t.tiles) >= 9
    # independent count: connected components of the whole-region class map
    lab, _ = SlideInference(model, progress=False)._predict_seg([img], torch.device('cpu'))[0]
    ref = connected_components_per_class(lab)
    assert len(a) == len(b) == ref.max() > 50
    d = slide.level_downsamples[level]
    for ra, rb in zip(a, b):
        assert np.allclose(ra[0], rb[0], atol=1e-9) and ra[1] == rb[1]
        # mean float32 probabilities: oneDNN blocks a 128 px tile and the whole region
        # differently, so the sums differ in the last bits (1.6e-5 seen on one machine)
        assert abs(ra[2] - rb[2]) < 1e-4
        assert np.allclose(ra[4], rb[4], atol=1e-9)  # identical outlines (level-0 px)
    # some instances cross core borders (the stitching was exercised): boxes wider
    # than a core
    widths = np.array([(r[3][2] - r[3][0]) / d for r in a])
    assert widths.max() > 64
    return a


@needs_svs
def test_segmentation_tiled_equals_whole_region_svs():
    slide = open_slide(SVS)
    _segmentation_equality(slide, 0, (1024, 1280, 512, 384))
    slide.close()


def test_segmentation_tiled_equals_whole_region_pyramid_level1(pyramid):
    slide = open_slide(pyramid[0], 'tifffile')
    _segmentation_equality(slide, 1, (256, 128, 768, 512))
    slide.close()


def test_sliding_window_keep_reads_only_kept_tiles():
    # 96x160 image, 64 px tiles, overlap 0 -> x starts 0, 64, 96 (shifted), y 0, 32: six
    # tiles in row-major order; keep tiles 1 and 4 only: exactly those two are read
    from projects.common.tiling import SlidingWindowInference, tile_grid
    img = np.full((96, 160, 3), 200, np.uint8)
    img[40:50, 70:80] = 0  # a dark square inside tiles 1 and 4 (x 64-128): NMS keeps one
    reads = []

    def read(x, y, w, h):
        reads.append((x, y))
        return img[y:y + h, x:x + w]

    sw = SlidingWindowInference(BlobDetector(), tile_size=64, overlap=0, progress=False)
    keep = np.zeros(6, bool)
    keep[[1, 4]] = True
    assert tile_grid(96, 160, 64, 0)[[1, 4], :2].tolist() == [[64, 0], [64, 32]]
    res = sw.run(read, 96, 160, keep=keep)
    assert reads == [(64, 0), (64, 32)]
    assert res.bboxes.tolist() == [[70.0, 40.0, 80.0, 50.0]]
    assert sw.last_stats['processed'] == 2 and sw.last_stats['skipped'] == 4
    with pytest.raises(ValueError, match=r'keep must be a bool array of shape \(6,\)'):
        sw.run(read, 96, 160, keep=np.ones(5, bool))


# ================================================================ level / ROI mapping
def _squares_slide(tmp_path, blank_left=False) -> str:
    """1024x768 tissue with dark squares (RGB 20) at level-0 [x0, x1) x [y0, y1):
    A [600, 632) x [300, 332) (32 px), B [200, 264) x [400, 464) (64 px),
    C [900, 932) x [100, 132) (outside the ROI of the mapping test)."""
    img = tissue_image(768, 1024, seed=1, blank_left=blank_left)
    for x0, y0, s in ((600, 300, 32), (200, 400, 64), (900, 100, 32)):
        img[y0:y0 + s, x0:x0 + s] = 20
    path = str(tmp_path / 'squares.tif')
    write_pyramid(path, img)
    return path


@pytest.mark.parametrize('tiles', [dict(tile_size=500, overlap=100),
                                   dict(tile_size=96, overlap=48, drop_border_boxes=True)])
def test_roi_and_level_mapping_by_hand(tmp_path, tiles):
    slide = open_slide(_squares_slide(tmp_path), 'tifffile')
    roi = (128, 256, 640, 384)  # level 0 -> level 1 (downsample 2): x 64, y 128, 320x192
    assert region_in_level(slide, 1, roi) == (64, 128, 320, 192)
    run, rows = run_objects(SlideInference(BlobDetector(), progress=False, **tiles),
                            slide, 1, roi)
    # level 1, relative to the region: A at [300-64, 316-64) x [150-128, 166-128), 16x16
    # = 256 px < 400 -> 'small' (0); B at [36, 68) x [72, 104), 32x32 = 1024 px ->
    # 'large' (1). Back to level 0: ((x + 64) * 2, (y + 128) * 2) = the drawn squares;
    # C lies outside the ROI.
    boxes = sorted((tuple(r[3]), r[1]) for r in rows)
    assert boxes == [((200.0, 400.0, 264.0, 464.0), 1), ((600.0, 300.0, 632.0, 332.0), 0)]
    assert [tuple(r[0]) for r in rows] == [(232.0, 432.0), (616.0, 316.0)]  # centres
    slide.close()


# ================================================================ the tool: outputs
def _blob_files(tmp_path):
    cfg = tmp_path / 'blob.py'
    cfg.write_text(BLOB_CFG)
    ckpt = tmp_path / 'blob.pth'
    torch.save(dict(state_dict={}, meta=dict(dataset_meta=BLOB_META)), str(ckpt))
    return str(cfg), str(ckpt)


def test_tool_tissue_mask_geojson_csv(tmp_path):
    infer = load_tool('infer_slide')
    slide = _squares_slide(tmp_path, blank_left=True)
    cfg, ckpt = _blob_files(tmp_path)
    out = tmp_path / 'out'
    summary = infer.main([cfg, ckpt, slide, '--out', str(out), '--tile', '256',
                          '--overlap', '64', '--tissue-mask', '--no-progress'])
    # tiles of 256 px, stride 192 on 1024x768: x starts 0, 192, 384, 576, 768 and
    # y starts 0, 192, 384, 512 (the last row shifted to end at 768): 5 x 4 = 20 tiles.
    # The left half (x < 512) is blank: tiles at x 0 (0-256) and 192 (192-448) hold no
    # tissue, 2 columns x 4 rows = 8 skipped; x 384 (384-640) reaches the tissue.
    assert summary['tiles'] == dict(total=20, processed=12, skipped=8)
    # B (x 200-264) lies in the blank half: never run. A and C (32x32 = 1024 px at
    # level 0, >= 400: 'large') are found once each.
    assert summary['objects'] == 2 and summary['counts'] == {'large': 2}
    with open(out / 'squares.geojson') as f:
        gj = json.load(f)
    assert gj['type'] == 'FeatureCollection' and len(gj['features']) == 2
    rings = {}
    for feat in gj['features']:
        assert feat['type'] == 'Feature' and feat['geometry']['type'] == 'Polygon'
        props = feat['properties']
        assert props['objectType'] == 'detection'
        assert props['classification'] == dict(name='large', color=[0, 0, 255])
        assert props['measurements']['score'] == pytest.approx(0.9)
        ring = feat['geometry']['coordinates'][0]
        assert ring[0] == ring[-1] and len(ring) == 5  # closed box ring
        rings[tuple(ring[0])] = ring
    # level-0 pixels: the squares' corners
    assert rings[(600.0, 300.0)] == [[600, 300], [632, 300], [632, 332], [600, 332],
                                     [600, 300]]
    assert rings[(900.0, 100.0)] == [[900, 100], [932, 100], [932, 132], [900, 132],
                                     [900, 100]]
    lines = (out / 'squares.csv').read_text().splitlines()
    assert lines[0] == 'x,y,class,score'
    assert sorted(lines[1:]) == ['616.00,316.00,large,0.900000', '916.00,116.00,large,0.900000']
    with open(out / 'squares_summary.json') as f:
        on_disk = json.load(f)
    assert on_disk['tiles'] == summary['tiles'] and on_disk['backend'] in ('openslide',
                                                                           'tifffile')
    assert set(on_disk['timings_s']) >= {'read_s', 'forward_s', 'merge_s', 'export_s'}
    png = out / 'squares_overview.png'
    assert png.stat().st_size > 1000
    # points instead of boxes, every tile; B is cut by the border of tile x 0-256 and
    # whole in tile x 192-448: the border filter keeps the whole box only
    infer.main([cfg, ckpt, slide, '--out', str(tmp_path / 'pts'), '--geometry', 'point',
                '--tile', '256', '--overlap', '64', '--drop-border-boxes', '--no-progress'])
    with open(tmp_path / 'pts' / 'squares.geojson') as f:
        pts = json.load(f)
    got = sorted(tuple(f['geometry']['coordinates']) for f in pts['features'])
    assert [f['geometry']['type'] for f in pts['features']] == ['Point'] * 3
    assert got == [(232.0, 432.0), (616.0, 316.0), (916.0, 116.0)]


def test_tool_segmentation_polygons(tmp_path, pyramid):
    infer = load_tool('infer_slide')
    slide = open_slide(pyramid[0], 'tifffile')
    model = tiny_unet(slide.read_level(1, 0, 0, 512, 384))
    cfg = tmp_path / 'unet.py'
    cfg.write_text(UNET_CFG)
    ckpt = str(tmp_path / 'unet.pth')
    torch.save(dict(state_dict=model.state_dict()), ckpt)
    summary = infer.main([str(cfg), ckpt, pyramid[0], '--out', str(tmp_path / 'o'),
                          '--level', '1', '--tile', '128', '--overlap', '64', '--simplify',
                          '0', '--no-progress'])
    run, rows = run_objects(SlideInference(model, 128, 64, progress=False), slide, 1)
    assert summary['task'] == 'segmentation' and summary['objects'] == len(rows) > 50
    with open(tmp_path / 'o' / 'pyr.geojson') as f:
        feats = json.load(f)['features']
    assert {f['properties']['classification']['name'] for f in feats} == {'nucleus'}
    ring_sets = sorted(np.asarray(f['geometry']['coordinates'][0]).round(2).tolist()
                       for f in feats)
    assert ring_sets == sorted(np.round(r[4], 2).tolist() for r in rows)
    allxy = np.concatenate([np.asarray(f['geometry']['coordinates'][0]) for f in feats])
    assert allxy.min() >= 0 and allxy[:, 0].max() <= 1024 and allxy[:, 1].max() <= 768
    assert all(f['geometry']['type'] == 'Polygon' for f in feats)
    slide.close()


def test_benchmark_smoke(tmp_path, capsys):
    # smoke test of the benchmark tool (timings are not asserted): tile counts by hand as
    # in test_tool_tissue_mask_geojson_csv, and overhead = wall - forwards
    bench = load_tool('analysis_tools/benchmark_slide_inference')
    cfg, ckpt = _blob_files(tmp_path)
    res = bench.main([cfg, ckpt, _squares_slide(tmp_path, blank_left=True), '--tile', '256',
                      '--overlap', '64', '--tissue-mask'])
    assert (res['tiles'], res['processed'], res['objects']) == (20, 12, 2)
    assert res['overhead_s'] == pytest.approx(res['wall_s'] - res['forward_s'])
    assert 'overhead / forwards' in capsys.readouterr().out


# ================================================================ bad input
def test_bad_slides(tmp_path, pyramid):
    with pytest.raises(FileNotFoundError, match='nope.svs'):
        open_slide(str(tmp_path / 'nope.svs'))
    empty = tmp_path / 'empty.svs'
    empty.write_bytes(b'')
    with pytest.raises(ValueError, match='empty.svs: slide file is empty'):
        open_slide(str(empty))
    junk = tmp_path / 'junk.svs'
    junk.write_bytes(b'not a slide at all' * 50)
    for backend in ['tifffile'] + (['openslide'] if openslide_available() else []):
        with pytest.raises(ValueError, match='junk.svs: unreadable'):
            open_slide(str(junk), backend)
    # a pyramid cut in its tile data (its IFDs stay readable): named as truncated
    data = open(pyramid[0], 'rb').read()
    cut = tmp_path / 'cut.tif'
    cut.write_bytes(data[:len(data) * 3 // 4])
    for backend in ['tifffile', 'auto']:
        with pytest.raises(ValueError, match=r'cut.tif: (truncated|unreadable)'):
            open_slide(str(cut), backend)
    slide = open_slide(pyramid[0])
    with pytest.raises(ValueError, match=r'--level 3 does not exist in .*pyr.tif: it has 3'):
        region_in_level(slide, 3)
    with pytest.raises(ValueError, match=r'--roi 1000,700,100,100: .*outside the slide'):
        region_in_level(slide, 0, (1000, 700, 100, 100))
    with pytest.raises(ValueError, match='outside level 0'):
        slide.read_level(0, 1000, 0, 100, 10)
    slide.close()


@needs_svs
def test_truncated_svs(tmp_path):
    data = open(SVS, 'rb').read()
    for frac in (0.6, 0.9):  # 0.6: first IFD lost; 0.9: the IFD chain points past the end
        cut = tmp_path / f'cut{frac}.svs'
        cut.write_bytes(data[:int(len(data) * frac)])
        with pytest.raises(ValueError, match=f'cut{frac}.svs: (truncated|unreadable)'):
            open_slide(str(cut))


def test_tool_bad_arguments(tmp_path, pyramid):
    infer = load_tool('infer_slide')
    cfg, ckpt = _blob_files(tmp_path)
    base = [cfg, ckpt, pyramid[0], '--out', str(tmp_path / 'o'), '--no-progress']
    with pytest.raises(ValueError, match='--level 7 does not exist'):
        infer.main(base + ['--level', '7'])
    with pytest.raises(ValueError, match='--roi 0,0,2000,10: .*outside the slide'):
        infer.main(base + ['--roi', '0,0,2000,10'])
    with pytest.raises(ValueError, match='expected four integers'):
        infer.main(base + ['--roi', '1,2,3'])
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        infer.main([cfg, str(tmp_path / 'missing.pth'), pyramid[0], '--out', str(tmp_path)])
    assert not (tmp_path / 'o').exists()  # nothing written on failure


def test_checkpoint_config_mismatch(tmp_path):
    cfg = tmp_path / 'unet.py'
    cfg.write_text(UNET_CFG)
    good = tiny_unet().state_dict()
    ok = str(tmp_path / 'ok.pth')
    torch.save(dict(state_dict=good), ok)
    model, _, _ = load_model(str(cfg), ok)
    assert all(torch.equal(v, good[k]) for k, v in model.state_dict().items())
    wide = str(tmp_path / 'wide.pth')  # the same net at 8 channels
    torch.save(dict(state_dict=tiny_unet(base_channels=8).state_dict()), wide)
    with pytest.raises(ValueError, match=r'checkpoint .*wide.pth does not match the model of '
                       r'config .*unet.py: \d+ shape mismatch'):
        load_model(str(cfg), wide)
    odd = dict(good)
    odd.pop('decode_head.conv_seg.weight')
    odd['extra.weight'] = torch.zeros(1)
    bad = str(tmp_path / 'odd.pth')
    torch.save(dict(state_dict=odd), bad)
    with pytest.raises(ValueError, match=r'odd.pth .*1 missing key\(s\): decode_head.conv_seg'
                       r'.weight; 1 unexpected key\(s\): extra.weight'):
        load_model(str(cfg), bad)
    junk = tmp_path / 'junk.pth'
    junk.write_bytes(b'garbage')
    with pytest.raises(ValueError, match='junk.pth: unreadable checkpoint'):
        load_model(str(cfg), str(junk))


# ================================================================ bounded memory
def test_memory_bounded_by_tiles(tmp_path):
    # the numpy memory of a segmentation run (tracemalloc: arrays, not torch tensors)
    # does not grow with the slide: 1024^2 and 2048^2 level-0 images (16 and 64 tiles of
    # 256 px; the lowest level, read for the thumbnail, is 512^2 for both) peak at the
    # same size, well below one RGB copy of the big level (12.6 MB): no whole-level
    # image or label map is ever built
    engine = SlideInference(tiny_unet(), tile_size=256, overlap=0, progress=False)
    peaks = {}
    for n, n_levels in ((512, 1), (1024, 2), (2048, 3)):  # the first run warms up
        path = str(tmp_path / f'big{n}.tif')
        write_pyramid(path, tissue_image(n, n, seed=2), n_levels=n_levels)
        slide = open_slide(path, 'tifffile')
        tracemalloc.start()
        run = engine.run(slide, 0)
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        slide.close()
        assert run.keep.all() and len(run.tiles) == (n // 256) ** 2
    assert peaks[2048] < 1.1 * peaks[1024], peaks
    assert peaks[2048] < 2048 * 2048 * 3 / 2, peaks
