"""Nuclei segmentation and cell crops of the cell GAN (projects/cell_gan/extraction.py,
Hu et al. 2018 sect. III.B.1 / IV.B) and tools/extract_cells.py."""
import importlib.util
import json
import math
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image

from projects.cell_gan.extraction import (MACENKO_MIN_OD, cell_crops, extract_cells,
                                          hematoxylin_intensity, macenko_matrix,
                                          segment_nuclei, threshold_od)
from projects.common.stain import lab_stats
from projects.common.synthetic import STAIN_REFERENCES

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
H_E = STAIN_REFERENCES['macenko'][:2]  # unit OD rows: hematoxylin, eosin
RED_IS_H = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # c_H = OD of the red channel


def _disc(shape, cy, cx, r):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy + 0.5 - cy) ** 2 + (xx + 0.5 - cx) ** 2 <= r ** 2


def _drawn():
    """160x200 image: white glass (x < 60), pink eosin tissue (c_E 0.3..0.6) elsewhere;
    hematoxylin c_H = 1.5 on discs a (r 12), b (r 10), a speck (r 5, 80 px < 200) and
    two discs c, d (r 11) joined by a 1-px bridge. Beer-Lambert, rounded to uint8."""
    shape = (160, 200)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    c_e = np.where(xx >= 60, 0.3 + 0.3 * yy / shape[0], 0.0)
    discs = dict(a=_disc(shape, 40, 100, 12), b=_disc(shape, 40, 160, 10),
                 speck=_disc(shape, 120, 30, 5), c=_disc(shape, 120, 100, 11),
                 d=_disc(shape, 120, 124, 11))
    bridge = np.zeros(shape, bool)
    bridge[119, 100:125] = True
    nucleus = bridge | np.any(list(discs.values()), axis=0)
    c_h = np.where(nucleus, 1.5, 0.0)
    od = c_h[..., None] * H_E[0] + c_e[..., None] * H_E[1]
    rgb = np.clip(np.round(255 * np.exp(-od)), 0, 255).astype(np.uint8)
    return rgb, discs, nucleus


def _brute_opening(mask: np.ndarray, k: int) -> np.ndarray:
    """Union of every k x k square lying inside ``mask`` (the definition of an opening)."""
    out = np.zeros_like(mask)
    fits = sliding_window_view(mask, (k, k)).all(axis=(2, 3))
    for i, j in zip(*np.nonzero(fits)):
        out[i:i + k, j:j + k] = True
    return out


# ----------------------------------------------------------------------- threshold
def test_threshold_maps_to_documented_od():
    # nucleus <=> I_H = floor(255 exp(-c_H)) < 120 <=> c_H > ln(255 / 120) = 0.75377
    assert threshold_od(120) == pytest.approx(math.log(255 / 120))
    assert threshold_od(120) == pytest.approx(0.753772, abs=1e-6)
    # with the red channel as the hematoxylin vector, c_H = -ln(R / 255), so the
    # intensity image is the red channel itself (R = 0 reads as 1, OD clipped at ln 255)
    red = np.arange(256, dtype=np.uint8)
    rgb = np.stack([red, np.full(256, 200, np.uint8), np.full(256, 90, np.uint8)], -1)[None]
    np.testing.assert_array_equal(hematoxylin_intensity(rgb, RED_IS_H)[0],
                                  np.maximum(red, 1))
    # R = 119 (c_H = 0.7621 > 0.7538) is nucleus, R = 120 (c_H = 0.7538, not >) is not
    img = np.full((40, 60, 3), 255, np.uint8)
    img[10:30, 5:25, 0] = 119
    img[10:30, 35:55, 0] = 120
    inst = segment_nuclei(img, stain_matrix=RED_IS_H, opening=1)
    assert inst.max() == 1
    assert np.array_equal(inst > 0, np.pad(np.ones((20, 20), bool), ((10, 10), (5, 35))))


def test_hematoxylin_intensity_of_a_pure_h_pixel():
    # c_H = 0.8 rendered with the H vector: I_H = 255 exp(-0.8) = 114.58 -> 114 (uint8
    # rounding of the RGB moves c_H by < 0.01, i.e. I_H by < 1.2)
    rgb = np.round(255 * np.exp(-0.8 * H_E[0]))[None, None].astype(np.uint8)
    assert abs(int(hematoxylin_intensity(rgb, H_E)[0, 0]) - 114.58) < 1.2


# -------------------------------------------------------------------- segmentation
def test_segment_nuclei_drawn_discs():
    rgb, discs, nucleus = _drawn()
    inst = segment_nuclei(rgb, stain_matrix=H_E)
    assert inst.dtype == np.int32
    # the speck (80 px) is removed, the bridge is cut by the 7x7 opening: 4 nuclei
    assert inst.max() == 4
    # reference: brute-force opening of the drawn mask without the speck
    ref = _brute_opening(nucleus & ~discs['speck'], 7)
    assert np.array_equal(inst > 0, ref)
    for name, r in (('a', 12), ('b', 10), ('c', 11), ('d', 11)):
        ids = np.unique(inst[discs[name]])
        ids = ids[ids > 0]
        assert len(ids) == 1, name  # one instance per disc
        area = int((inst == ids[0]).sum())
        assert area == int((ref & discs[name]).sum())
        # ~ pi r^2: the opening trims the rim where a 7x7 square does not fit (~7%)
        assert area == pytest.approx(math.pi * r * r, rel=0.08)
    assert not inst[discs['speck']].any()
    assert not inst[119, 112]  # the bridge between c and d


def test_segment_nuclei_macenko_and_reinhard_match_known_stains():
    rgb, _, _ = _drawn()
    known = segment_nuclei(rgb, stain_matrix=H_E)
    # Macenko on the image (pixels with OD norm >= 0.348 = HistomicsTK magnitude 16):
    # the eosin vector is recovered; the H angle is the disc colour H + 0.3..0.6 E
    m = macenko_matrix(rgb)
    assert MACENKO_MIN_OD == pytest.approx(16 * math.log(255) / 255)
    assert float(m[1] @ H_E[1]) > 0.999
    np.testing.assert_array_equal(segment_nuclei(rgb), known)
    # Reinhard to the image's own statistics changes almost nothing
    np.testing.assert_array_equal(
        segment_nuclei(rgb, target_stats=lab_stats(rgb, 'lalphabeta')), known)


def test_segment_nuclei_keeps_nuclei_cut_by_the_border():
    # a 45 x 5 strip along the left border (225 px) survives the 7x7 opening whole: the
    # erosion treats pixels outside the image as foreground (scikit-image's convention),
    # so a square centred on column 1 fits; were outside background, no 7x7 square
    # would fit in 5 columns and the strip would vanish
    rgb = np.full((60, 40, 3), 255, np.uint8)
    rgb[5:50, 0:5, 0] = 50
    inst = segment_nuclei(rgb, stain_matrix=RED_IS_H)
    assert int((inst > 0).sum()) == 225 and (inst[5:50, 0:5] == 1).all()


def test_segment_nuclei_drops_fragments_left_by_the_opening():
    # a 20 x 20 block (400 px) and an 8 x 8 block (64 px) joined by a 1-px bridge: one
    # 464+ px object passes min_size 200; the opening cuts the bridge and the 64-px
    # fragment is then dropped, the 400-px block kept
    rgb = np.full((40, 60, 3), 255, np.uint8)
    rgb[10:30, 5:25, 0] = 50
    rgb[16:24, 40:48, 0] = 50
    rgb[20, 25:40, 0] = 50
    inst = segment_nuclei(rgb, stain_matrix=RED_IS_H)
    assert inst.max() == 1 and int((inst == 1).sum()) == 400


def test_segment_nuclei_min_size_and_fill_holes():
    # a ring (outer r 10, inner r 4) of H: holes filled -> a full disc (~314 px); without
    # filling, the ring (314 - 50 = 264 px) survives min_size 200 but not min_size 300
    shape = (40, 40)
    ring = _disc(shape, 20, 20, 10) & ~_disc(shape, 20, 20, 4)
    rgb = np.full(shape + (3, ), 255, np.uint8)
    rgb[ring, 0] = 50
    full = segment_nuclei(rgb, stain_matrix=RED_IS_H, opening=1)
    assert np.array_equal(full > 0, _disc(shape, 20, 20, 10))
    ring_only = segment_nuclei(rgb, stain_matrix=RED_IS_H, opening=1, fill_holes=False)
    assert np.array_equal(ring_only > 0, ring)
    assert not segment_nuclei(rgb, stain_matrix=RED_IS_H, opening=1, fill_holes=False,
                              min_size=int(ring.sum()) + 1).any()


@pytest.mark.parametrize('bad, match', [
    (np.zeros((10, 10), np.uint8), r'rgb: expected an RGB image'),
    (np.zeros((10, 10, 3), np.float32), r'rgb: expected dtype uint8'),
    (np.zeros((0, 5, 3), np.uint8), r'rgb: image is empty'),
])
def test_segment_nuclei_rejects_bad_images(bad, match):
    with pytest.raises(ValueError, match=match):
        segment_nuclei(bad, stain_matrix=H_E)


def test_segment_nuclei_rejects_bad_arguments():
    rgb, _, _ = _drawn()
    with pytest.raises(ValueError, match='opening: the square side must be odd'):
        segment_nuclei(rgb, stain_matrix=H_E, opening=6)
    with pytest.raises(ValueError, match='threshold'):
        segment_nuclei(rgb, stain_matrix=H_E, threshold=0)
    with pytest.raises(ValueError, match='target_stats'):
        segment_nuclei(rgb, target_stats=([1, 2, 3], [1, 0, 1]))
    with pytest.raises(ValueError, match='rgb: only 0 pixels'):
        segment_nuclei(np.full((20, 20, 3), 255, np.uint8))  # blank: no stain to estimate


# --------------------------------------------------------------------------- crops
def _l_shape_case():
    """40x40 random image; instance 5 = an L in box rows 10..16, cols 20..24; instance 2
    fills rows 10..14 of cols 23..24 (inside the L's box, outside the L)."""
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 200, (40, 40, 3)).astype(np.uint8)
    inst = np.zeros((40, 40), np.int32)
    inst[10:17, 20:22] = 5
    inst[15:17, 20:25] = 5
    inst[10:15, 23:25] = 2
    return rgb, inst


def test_cell_crops_seg_centres_the_masked_box():
    rgb, inst = _l_shape_case()
    crops, info = cell_crops(rgb, inst, size=32, mode='seg')
    assert crops.shape == (2, 32, 32, 3) and crops.dtype == np.uint8
    # id 5: box 7 x 5 -> top (32 - 7) // 2 = 12, left (32 - 5) // 2 = 13
    exp = np.full((32, 32, 3), 255, np.uint8)
    box = inst[10:17, 20:25] == 5
    exp[12:19, 13:18] = np.where(box[..., None], rgb[10:17, 20:25], 255)
    np.testing.assert_array_equal(crops[1], exp)
    assert (crops[1][12:17, 16:18] == 255).all()  # instance 2's pixels are white
    # 20 px: 14 in cols 20-21 (rows 10-16), 6 in cols 22-24 (rows 15-16)
    # mean col (7*20 + 7*21 + 2*(22+23+24)) / 20 = 21.25, mean row 275 / 20 = 13.75
    assert info[1] == dict(inst_id=5, bbox=[20, 10, 25, 17], centroid=[21.75, 14.25], area=20)
    # id 2: box 5 x 2, fully inside -> rows 13..17, cols 15..16
    exp2 = np.full((32, 32, 3), 255, np.uint8)
    exp2[13:18, 15:17] = rgb[10:15, 23:25]
    np.testing.assert_array_equal(crops[0], exp2)
    assert info[0]['inst_id'] == 2 and info[0]['area'] == 10


def test_cell_crops_seg_rescales_large_instances():
    # 50 rows x 20 cols of one colour: scale 32/50 -> 32 x round(12.8) = 13, placed at
    # left (32 - 13) // 2 = 9; the rest stays white
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 50, (80, 60, 3)).astype(np.uint8)  # dark neighbours
    rgb[10:60, 20:40] = (200, 100, 50)
    inst = np.zeros((80, 60), np.int32)
    inst[10:60, 20:40] = 1
    inst[10:30, 30:40] = 2  # a dark neighbour cut out of the top-right quarter
    crops, info = cell_crops(rgb, inst, size=32, mode='seg')
    c1 = crops[0]
    assert info[0]['bbox'] == [20, 10, 40, 60]
    # the mask is resized with centre-aligned nearest neighbour: crop row i <- box row
    # floor((i + 0.5) * 50 / 32), col j <- floor((j + 0.5) * 20 / 13); the cut-out (box
    # rows < 20, cols >= 10) covers crop rows 0..12 (row 12 <- 19) and cols 6..12 of the
    # 13 (col 6 <- 10): white there, the colour elsewhere; nothing blends (the neighbour
    # is white before resizing, and re-whitened after)
    exp = np.full((32, 32, 3), 255, np.uint8)
    exp[:, 9:22] = (200, 100, 50)
    exp[:13, 9 + 6:22] = 255
    np.testing.assert_array_equal(c1, exp)
    # a box of exactly 32 is not rescaled
    inst2 = np.zeros((80, 60), np.int32)
    inst2[5:37, 10:18] = 1
    crop, _ = cell_crops(rgb, inst2, size=32, mode='seg')
    np.testing.assert_array_equal(crop[0][:, 12:20], rgb[5:37, 10:18])


def _bilinear_reference(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Bilinear resize with pixel-centre alignment, coordinates clamped at the edges."""
    h, w = img.shape[:2]
    ys = np.clip((np.arange(out_h) + 0.5) * h / out_h - 0.5, 0, h - 1)
    xs = np.clip((np.arange(out_w) + 0.5) * w / out_w - 0.5, 0, w - 1)
    out = np.zeros((out_h, out_w, img.shape[2]))
    for i, y in enumerate(ys):
        y0 = int(np.floor(y))
        y1, fy = min(y0 + 1, h - 1), y - y0
        for j, x in enumerate(xs):
            x0 = int(np.floor(x))
            x1, fx = min(x0 + 1, w - 1), x - x0
            out[i, j] = ((1 - fy) * (1 - fx) * img[y0, x0] + (1 - fy) * fx * img[y0, x1]
                         + fy * (1 - fx) * img[y1, x0] + fy * fx * img[y1, x1])
    return out


def test_cell_crops_bbox_mode_resizes_the_unmasked_box():
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (100, 140, 3)).astype(np.uint8)
    inst = np.zeros((100, 140), np.int32)
    inst[2:98, 3:99] = 1  # 96 x 96 box
    inst[_disc((100, 140), 12, 124, 8)] = 2  # box rows 4..19, cols 116..131 (16 x 16)
    crops, info = cell_crops(rgb, inst, size=32, mode='bbox')
    assert info[1]['bbox'] == [116, 4, 132, 20]
    # enlarging: bilinear, the box corners (outside the disc) are kept, not whitened
    ref = _bilinear_reference(rgb[4:20, 116:132].astype(np.float64), 32, 32)
    assert np.abs(crops[1].astype(np.float64) - ref).max() <= 1.0
    # shrinking 3x: area averaging = the mean of each 3x3 block (bilinear would sample
    # the block centres only)
    block = rgb[2:98, 3:99].astype(np.float64).reshape(32, 3, 32, 3, 3).mean(axis=(1, 3))
    assert np.abs(crops[0].astype(np.float64) - block).max() <= 0.5 + 1e-9


def test_cell_crops_errors_and_empty_map():
    rgb, inst = _l_shape_case()
    with pytest.raises(ValueError, match=r'inst_map: shape \(39, 40\) does not match'):
        cell_crops(rgb, inst[:39])
    with pytest.raises(ValueError, match='mode'):
        cell_crops(rgb, inst, mode='box')
    with pytest.raises(ValueError, match='rgb: expected dtype uint8'):
        cell_crops(rgb.astype(np.float64), inst)
    crops, info = cell_crops(rgb, np.zeros_like(inst))
    assert crops.shape == (0, 32, 32, 3) and info == []


def test_extract_cells_crops_from_the_pipeline():
    rgb, _, _ = _drawn()
    res = extract_cells(rgb, modes=('seg', 'bbox'))
    np.testing.assert_array_equal(res['inst_map'], segment_nuclei(rgb))
    for mode in ('seg', 'bbox'):
        crops, info = cell_crops(rgb, res['inst_map'], mode=mode)
        np.testing.assert_array_equal(res['crops'][mode], crops)
        assert res['info'] == info


# ---------------------------------------------------------------------------- tool
def test_extract_cells_tool(tmp_path, capsys):
    rgb, _, _ = _drawn()
    src = tmp_path / 'images'
    src.mkdir()
    Image.fromarray(rgb).save(src / 'img_a.png')
    Image.fromarray(np.ascontiguousarray(rgb[:, ::-1])).save(src / 'img_b.png')
    (tmp_path / 'labels.csv').write_text('image_name,label\nimg_a.png,1\nimg_b,0\n')
    out = tmp_path / 'cells'
    env = dict(os.environ, OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, 'tools/extract_cells.py', str(src), '--out',
                           str(out), '--labels', str(tmp_path / 'labels.csv'),
                           '--no-progress'], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    ann = json.loads((out / 'cells.json').read_text())
    assert ann['metainfo']['mode'] == 'seg' and ann['metainfo']['crop_size'] == 32
    assert [(i['image_id'], i['gt_label']) for i in ann['images']] == [('img_a', 1),
                                                                      ('img_b', 0)]
    assert [d['image_id'] for d in ann['data_list']] == ['img_a'] * 4 + ['img_b'] * 4
    crops, info = cell_crops(rgb, segment_nuclei(rgb))
    for k in range(4):
        d = ann['data_list'][k]
        assert d['gt_label'] == -1 and d['bbox'] == info[k]['bbox']
        np.testing.assert_array_equal(np.asarray(Image.open(out / d['img_path'])), crops[k])
    # in-process: a second run refuses to overwrite; a corrupt image is named
    tool = _load_tool()
    assert tool.main([str(src), '--out', str(out), '--no-progress']) == 1
    assert 'pass --overwrite' in capsys.readouterr().err
    (src / 'img_c.png').write_bytes(b'not a png')
    assert tool.main([str(src), '--out', str(tmp_path / 'o2'), '--no-progress']) == 1
    err = capsys.readouterr().err
    assert str(src / 'img_c.png') in err and 'corrupt or unreadable' in err


def _load_tool():
    spec = importlib.util.spec_from_file_location(
        'extract_cells_tool', osp.join(REPO, 'tools', 'extract_cells.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_draw_cell_extraction_tool(tmp_path):
    """The picture tool runs the same pipeline: its nucleus count is segment_nuclei's."""
    from conftest import run_tool
    from projects.common.io import write_image
    from projects.common.synthetic import generate_tile
    tile = generate_tile(3, (160, 160), scale=2.5)['image']
    write_image(str(tmp_path / 'tile.png'), tile)
    n = int(segment_nuclei(tile).max())
    out = str(tmp_path / 'fig.png')
    proc = run_tool(['tools/analysis_tools/draw_cell_extraction.py', str(tmp_path / 'tile.png'),
                     '--out', out])
    assert f': {n} nuclei, {n} crops' in proc.stdout and osp.getsize(out) > 0
    bad = run_tool(['tools/analysis_tools/draw_cell_extraction.py', str(tmp_path / 'tile.png'),
                    '--out', out, '--crop', '100,100,100,100'], check=False)
    assert bad.returncode != 0 and 'outside' in bad.stderr and 'tile.png' in bad.stderr
