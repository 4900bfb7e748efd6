"""Voronoi / cluster labels from points (Qu et al., sect. II.A.1) and their transforms."""
import os.path as osp
import sys
import warnings

import numpy as np
import pytest
from scipy import ndimage

from projects.common.io import write_image, write_points
from projects.point_supervision import labels as L
from projects.point_supervision import transforms as T

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(REPO, 'tools', 'analysis_tools'))
import benchmark_point_labels as B  # noqa: E402  (the authors' algorithm, full-image)

# disk(2): every offset (dy, dx) with dy^2 + dx^2 <= 4, listed by hand
DISK2 = [(0, 0), (-1, 0), (1, 0), (0, -1), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1),
         (-2, 0), (2, 0), (0, -2), (0, 2)]


def _with_disks(label: np.ndarray, centres) -> np.ndarray:
    for r, c in centres:
        for dy, dx in DISK2:
            if 0 <= r + dy < label.shape[0] and 0 <= c + dx < label.shape[1]:
                label[r + dy, c + dx] = 1
    return label


def _pix(rc):
    """Points (x, y) at the centres of pixels (row, col)."""
    rc = np.asarray(rc, np.float64).reshape(-1, 2)
    return np.stack([rc[:, 1] + 0.5, rc[:, 0] + 0.5], axis=1)


def brute_voronoi(point_rc, shape, close_edges=False) -> np.ndarray:
    """Independent reference from the definition: closed cells from all pairwise squared
    distances (a tie pixel belongs to every nearest point), the authors' per-cell
    ``mask & ~erosion(mask, disk(1))`` with skimage, skimage closing and dilation."""
    from skimage import morphology
    h, w = shape
    rr, cc = np.mgrid[:h, :w]
    pts = np.asarray(point_rc)
    d2 = (rr[..., None] - pts[:, 0])**2 + (cc[..., None] - pts[:, 1])**2
    member = d2 == d2.min(-1, keepdims=True)
    edges = np.zeros((h, w), bool)
    for k in range(len(pts)):
        m = member[..., k]
        edges |= m & ~morphology.erosion(m, morphology.disk(1))
    if close_edges:
        edges = morphology.binary_closing(edges, morphology.disk(1))
    pmap = np.zeros((h, w), np.uint8)
    pmap[pts[:, 0], pts[:, 1]] = 1
    out = np.full((h, w), 255, np.uint8)
    out[edges] = 0
    out[morphology.dilation(pmap, morphology.disk(2)) > 0] = 1
    return out


# ------------------------------------------------------------------ Voronoi label
def test_disk_matches_hand_list_and_skimage():
    from skimage.morphology import disk as skdisk
    fp = L.disk(2)
    assert sorted(map(tuple, np.argwhere(fp) - 2)) == sorted(DISK2)
    for r in range(8):
        np.testing.assert_array_equal(L.disk(r), skdisk(r).astype(bool))


def test_single_point_is_a_radius_two_disk_and_no_edge():
    lab = L.voronoi_label(_pix([(4, 5)]), (9, 11))
    np.testing.assert_array_equal(lab, _with_disks(np.full((9, 11), 255, np.uint8), [(4, 5)]))
    assert lab.dtype == np.uint8


def test_bisector_between_columns_gives_two_edge_columns():
    # points in pixels (4, 3) and (4, 10): bisector x = 6.5 (pixel centres), so column 6 is
    # nearer the left point and column 7 the right one: both are edges, in every row
    lab = L.voronoi_label(_pix([(4, 3), (4, 10)]), (9, 16))
    exp = np.full((9, 16), 255, np.uint8)
    exp[:, 6:8] = 0
    np.testing.assert_array_equal(lab, _with_disks(exp, [(4, 3), (4, 10)]))


def test_bisector_through_a_column_tie_rule():
    # points in columns 3 and 9: column 6 is equidistant; as on the authors' closed polygon
    # boundary it belongs to both cells, so only column 6 is an edge (columns 5 and 7 have
    # all their 4-neighbours in their own cell)
    lab = L.voronoi_label(_pix([(4, 3), (4, 9)]), (9, 13))
    exp = np.full((9, 13), 255, np.uint8)
    exp[:, 6] = 0
    np.testing.assert_array_equal(lab, _with_disks(exp, [(4, 3), (4, 9)]))


def test_nucleus_wins_over_edge():
    # columns 3 and 6: bisector 4.5 -> edge columns 4 and 5; the disks of radius 2 cover
    # (4, 4), (4, 5), (3, 4), (5, 5)... which stay 1
    lab = L.voronoi_label(_pix([(4, 3), (4, 6)]), (9, 10))
    exp = np.full((9, 10), 255, np.uint8)
    exp[:, 4:6] = 0
    exp = _with_disks(exp, [(4, 3), (4, 6)])
    np.testing.assert_array_equal(lab, exp)
    assert lab[4, 4] == 1 and lab[4, 5] == 1 and lab[0, 4] == 0


def test_three_points_junction():
    # A = (2, 2), B = (2, 12), C = (12, 7) (row, col); circumcentre (5.75, 7).
    # (5, 7): d2 A = B = 9 + 25 = 34 < C = 49 -> tie A / B -> edge.
    # (6, 7): d2 A = B = 41 > C = 36 -> in C, and its neighbour (5, 7) is at 49 > 34 from C
    #         -> edge. (7, 7): C = 25, every 4-neighbour is nearest C -> not an edge.
    # Rows 0..4 of column 7 are A / B ties (the bisector x = 7) -> edges; (3, 6) is nearest
    # A and its neighbour (3, 7) is a tie that contains A -> not an edge.
    pts = [(2, 2), (2, 12), (12, 7)]
    lab = L.voronoi_label(_pix(pts), (15, 15))
    assert lab[5, 7] == 0 and lab[6, 7] == 0
    assert lab[7, 7] == 255
    assert (lab[0:5, 7] == 0).all()
    assert lab[3, 6] == 255 and lab[3, 8] == 255
    np.testing.assert_array_equal(lab, brute_voronoi(np.array(pts), (15, 15)))


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_voronoi_identical_to_brute_force(seed):
    rng = np.random.default_rng(seed)
    h, w = 60 + 10 * seed, 75
    pts = rng.uniform(0, [w, h], size=(14, 2))
    pts[0] = (w, h)  # on the bottom-right border: last pixel
    pts[1] = pts[2] + 0.1  # two points in one pixel count once
    r, c = np.minimum(np.floor(pts[:, 1]), h - 1), np.minimum(np.floor(pts[:, 0]), w - 1)
    rc = np.unique(np.stack([r, c], 1).astype(int), axis=0)
    for close in (True, False):
        np.testing.assert_array_equal(L.voronoi_label(pts, (h, w), close_edges=close),
                                      brute_voronoi(rc, (h, w), close))


def test_voronoi_agrees_with_polygon_reference():
    # the benchmark's implementation of the authors' script (scipy Voronoi + shapely clip +
    # skimage.draw.polygon): identical up to float noise on tie pixels
    rng = np.random.default_rng(3)
    rc = np.unique(rng.integers(0, 120, size=(40, 2)), axis=0)
    ref, _ = B.reference_voronoi(rc, (120, 120))
    ours = L.voronoi_label(_pix(rc), (120, 120))
    assert np.mean(ref == ours) >= 0.99


def test_zero_points_and_duplicates():
    for empty in (np.zeros((0, 2)), [], np.zeros(0)):
        assert (L.voronoi_label(empty, (7, 8)) == 255).all()
        assert (L.cluster_label(np.zeros((7, 8, 3), np.uint8), empty) == 255).all()
    one = L.voronoi_label([[3.2, 2.7]], (7, 8))
    np.testing.assert_array_equal(L.voronoi_label([[3.2, 2.7], [3.9, 2.1]], (7, 8)), one)


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match=r'points_xy: point 1 at \(x=8.5'):
        L.voronoi_label([[1, 1], [8.5, 2]], (7, 8))
    with pytest.raises(ValueError, match='points_xy: point 0'):
        L.voronoi_label([[1, -0.5]], (7, 8))
    with pytest.raises(ValueError, match=r'points_xy: expected an \(N, 2\)'):
        L.voronoi_label(np.ones((3, 3)), (7, 8))
    with pytest.raises(ValueError, match='points_xy.*not finite|points_xy: point 0'):
        L.voronoi_label([[np.nan, 1]], (7, 8))
    with pytest.raises(ValueError, match='shape'):
        L.voronoi_label([[1, 1]], (0, 8))
    img = np.zeros((7, 8, 3), np.uint8)
    with pytest.raises(ValueError, match='image: expected an RGB'):
        L.cluster_label(np.zeros((7, 8, 4), np.uint8), [[1, 1]])
    with pytest.raises(ValueError, match=r'image: values must .* \[0, 255\]'):
        L.cluster_label(np.full((7, 8), 300.0), [[1, 1]])
    with pytest.raises(ValueError, match='points_xy: point 0'):
        L.cluster_label(img, [[9, 1]])
    with pytest.raises(ValueError, match='voronoi: expected an 8x7'):
        L.cluster_label(img, [[1, 1]], voronoi=np.zeros((8, 7), np.uint8))
    with pytest.raises(ValueError, match='voronoi: label values'):
        L.cluster_label(img, [[1, 1]], voronoi=np.full((7, 8), 7, np.uint8))


# ------------------------------------------------------------------ refinement
def test_refine_removes_objects_below_30_pixels():
    vor = np.full((60, 60), 255, np.uint8)  # one cell, no edge
    nuclei = np.zeros((60, 60), bool)
    nuclei[10:16, 10:15] = True  # 6 x 5 = 30 px: kept
    nuclei[40:46, 40:45] = True
    nuclei[40, 40] = False  # 29 px: removed
    ref = L.refine_nuclei(nuclei, vor)
    assert ref[12, 12] and not ref[42, 42]
    # after the size filter only the 30-px blob remains: same as refining it alone
    alone = np.zeros_like(nuclei)
    alone[10:16, 10:15] = True
    np.testing.assert_array_equal(ref, L.refine_nuclei(alone, vor))


def test_refine_fills_holes_and_counts_outside_as_foreground():
    h = w = 80
    rr, cc = np.mgrid[:h, :w]
    rad = np.hypot(rr - 40, cc - 40)
    ring = (rad <= 20) & (rad > 14)  # hole of radius 14 survives the dilation by 5
    vor = np.full((h, w), 255, np.uint8)
    ref = L.refine_nuclei(ring, vor)
    assert ref[40, 40]  # filled, then eroded by 7 from a radius of ~25: centre stays
    # without hole filling the centre would stay empty
    dil = ndimage.binary_dilation(ring, L.disk(5))
    assert not dil[40, 40]
    # a 10 x 10 square in the top-left corner: pixels outside the image count as
    # foreground in the erosion, so the refined nucleus reaches row 0; along row 0 the
    # dilation reaches column 9 + 5 = 14 and the erosion takes 7 back: columns 0..7
    corner = np.zeros((h, w), bool)
    corner[:10, :10] = True
    ref = L.refine_nuclei(corner, vor)
    assert ref[0, :8].all() and not ref[0, 8:].any()
    # with 0 outside (scipy's default) the first rows would be eroded away
    alt = ndimage.binary_erosion(
        ndimage.binary_fill_holes(ndimage.binary_dilation(corner, L.disk(5))), L.disk(7))
    assert not alt[0, 0]


def _brute_refine(nuclei, vor):
    """The authors' refinement on the full image, cell by cell (skimage / scipy)."""
    from skimage import measure, morphology
    initial = morphology.remove_small_objects(measure.label(nuclei), max_size=29)
    cells = morphology.dilation(measure.label(vor != 0), morphology.disk(2))
    refined = np.zeros(nuclei.shape, bool)
    for idx in np.unique(cells):
        if idx == 0:
            continue
        m = morphology.binary_dilation((cells == idx) & (initial > 0), morphology.disk(5))
        m = morphology.binary_erosion(ndimage.binary_fill_holes(m), morphology.disk(7))
        refined |= m
    return refined


def test_refine_identical_to_full_image_per_cell():
    rng = np.random.default_rng(5)
    h, w = 110, 130
    rc = np.unique(rng.integers(0, [h, w], size=(25, 2)), axis=0)
    vor = L.voronoi_label(_pix(rc), (h, w))
    # blobs around the points (some touch the border), plus noise specks
    blobs = ndimage.binary_dilation(vor == 1, L.disk(3)) | (rng.random((h, w)) < 0.03)
    blobs[:4, :] |= rng.random((4, w)) < 0.5
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        np.testing.assert_array_equal(L.refine_nuclei(blobs, vor), _brute_refine(blobs, vor))


# ------------------------------------------------------------------ cluster label
def _disc_image(seed=0, size=120, radius=7):
    """Light noisy background, dark discs on a jittered grid; points at the centres."""
    rng = np.random.default_rng(seed)
    rr, cc = np.mgrid[:size, :size]
    img = np.empty((size, size, 3), np.float64)
    img[:] = (225, 205, 215)
    discs = np.zeros((size, size), bool)
    centres = []
    for cy in range(15, size - 10, 30):
        for cx in range(15, size - 10, 30):
            y, x = cy + rng.integers(-3, 4), cx + rng.integers(-3, 4)
            discs |= np.hypot(rr - y, cc - x) <= radius
            centres.append((y, x))
    img[discs] = (90, 50, 130)
    img = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
    return img, discs, np.array(centres)


def test_cluster_label_on_discs():
    img, discs, centres = _disc_image()
    pts = _pix(centres)
    lab = L.cluster_label(img, pts, seed=0)
    assert set(np.unique(lab)) == {0, 1, 255}
    nuc = lab == 1
    assert nuc.sum() > 0.3 * discs.sum()
    assert (nuc & discs).sum() / nuc.sum() >= 0.95  # precision of label 1
    assert lab[centres[:, 0], centres[:, 1]].tolist() == [1] * len(centres)
    # background never within 10 px of a point
    rr, cc = np.mgrid[:120, :120]
    d2 = ((rr[..., None] - centres[:, 0])**2 + (cc[..., None] - centres[:, 1])**2).min(-1)
    assert (lab == 0).any() and (d2[lab == 0] > 100).all()
    assert not (discs & (lab == 0)).any()
    # a grey image is used as R = G = B
    grey = img.mean(2).astype(np.uint8)
    np.testing.assert_array_equal(L.cluster_label(grey, pts),
                                  L.cluster_label(np.repeat(grey[..., None], 3, 2), pts))


def _reference_inputs(seed):
    img, _, centres = _disc_image(seed)
    rng = np.random.default_rng(seed)
    centres = np.concatenate([centres, rng.integers(0, 120, size=(4, 2))])  # some on stroma
    return img, np.unique(centres, axis=0)


@pytest.mark.parametrize('seed', [0, 1])
def test_cluster_label_matches_full_image_reference(seed):
    img, rc = _reference_inputs(seed)
    pts = _pix(rc)
    vor = L.voronoi_label(pts, img.shape[:2])
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        ref = B.reference_cluster(img, rc, vor == 0, seed=seed)
    # k-means fitted on every pixel: the same fit, so the same label
    full = L.cluster_label(img, pts, seed=seed, max_samples=None)
    np.testing.assert_array_equal(full, ref)
    # fitted on a 4000-pixel subsample of the 14400, then every pixel assigned
    sub = L.cluster_label(img, pts, seed=seed, voronoi=vor, max_samples=4000)
    assert np.mean(sub == ref) >= 0.97


# ------------------------------------------------------------------ transforms
def _layout(tmp_path, size=64):
    img, _, centres = _disc_image(0, size=size, radius=5)
    img_path = osp.join(str(tmp_path), 'img_dir', 'train', 'a.png')
    pts_path = osp.join(str(tmp_path), 'points', 'train', 'a.csv')
    write_image(img_path, img)
    write_points(pts_path, _pix(centres))
    return img, _pix(centres), img_path, pts_path


def _compose(pipeline):
    """Build under the mmseg default scope (mmseg's RandomCrop), restoring the scope."""
    from mmengine.dataset import Compose
    from mmengine.registry import DefaultScope
    import projects.common  # noqa: F401  (LoadPointAnnotations)
    with DefaultScope.overwrite_default_scope('mmseg'):
        return Compose(pipeline)


def test_transforms_in_a_pipeline_move_with_random_crop(tmp_path):
    img, pts, img_path, pts_path = _layout(tmp_path)
    pipe = _compose([
        dict(type='LoadImageFromFile'),
        dict(type='LoadPointAnnotations'),
        dict(type='PointsToVoronoiLabel'),
        dict(type='PointsToClusterLabel', seed=0),
        dict(type='RandomCrop', crop_size=(40, 36)),
    ])
    vor = L.voronoi_label(pts, img.shape[:2])
    clu = L.cluster_label(img, pts, seed=0, voronoi=vor)
    for _ in range(3):
        out = pipe(dict(img_path=img_path, points_path=pts_path, seg_fields=[]))
        crop = out['img'][..., ::-1]  # BGR -> RGB
        # where the crop came from: the only offset where the (noisy) image matches
        hits = [(y, x) for y in range(64 - 40 + 1) for x in range(64 - 36 + 1)
                if np.array_equal(img[y:y + 40, x:x + 36], crop)]
        assert len(hits) == 1
        y0, x0 = hits[0]
        np.testing.assert_array_equal(out['gt_voronoi_map'], vor[y0:y0 + 40, x0:x0 + 36])
        np.testing.assert_array_equal(out['gt_cluster_map'], clu[y0:y0 + 40, x0:x0 + 36])
        assert out['seg_fields'] == ['gt_voronoi_map', 'gt_cluster_map']


def test_transform_cache_and_unlabeled(monkeypatch, tmp_path):
    img, pts, img_path, _ = _layout(tmp_path, size=32)
    calls = []
    real = L.voronoi_label
    monkeypatch.setattr(L, 'voronoi_label', lambda *a, **k: calls.append(1) or real(*a, **k))
    t = T.PointsToVoronoiLabel()
    res = lambda: dict(img=img[..., ::-1].copy(), img_path=img_path,  # noqa: E731
                       gt_points=pts.astype(np.float32))
    first = t(res())['gt_voronoi_map']
    first[:] = 7  # the cache hands out copies
    second = t(res())['gt_voronoi_map']
    np.testing.assert_array_equal(second, real(pts, (32, 32)))
    assert len(calls) == 1
    other = res()
    other['gt_points'] = (pts + 1).astype(np.float32)
    t(other)
    assert len(calls) == 2
    # an unlabeled image without points: all ignored, no computation
    for cls in (T.PointsToVoronoiLabel, T.PointsToClusterLabel):
        out = cls()(dict(img=img, img_path=img_path, labeled=False))
        assert (out[cls.key] == 255).all() and out[cls.key].shape == (32, 32)
    with pytest.raises(ValueError, match='LoadPointAnnotations'):
        T.PointsToVoronoiLabel()(dict(img=img, img_path=img_path))
    with pytest.raises(ValueError, match=r'a.png: points_xy: point 0'):
        T.PointsToVoronoiLabel()(dict(img=img, img_path=img_path,
                                      gt_points=np.array([[40., 1.]], np.float32)))


def test_transforms_read_precomputed_labels(tmp_path):
    img, pts, img_path, _ = _layout(tmp_path, size=32)
    vor = L.voronoi_label(pts, (32, 32))
    clu = L.cluster_label(img, pts)
    vor_path = osp.join(str(tmp_path), 'vor_dir', 'train', 'a.png')
    assert T.precomputed_label_path(img_path, 'vor_dir') == vor_path
    base = dict(img=img[..., ::-1].copy(), img_path=img_path, gt_points=pts)
    with pytest.raises(FileNotFoundError, match=r'vor_dir/train/a.png.*generate_point_labels'
                       r'.py --root .* --splits train'):
        T.PointsToVoronoiLabel(label_dir='vor_dir')(dict(base))
    write_image(vor_path, vor)
    write_image(osp.join(str(tmp_path), 'clu_dir', 'train', 'a.png'), clu)
    out = T.PointsToVoronoiLabel(label_dir='vor_dir')(dict(base))
    np.testing.assert_array_equal(out['gt_voronoi_map'], vor)
    out = T.PointsToClusterLabel(label_dir='clu_dir')(dict(base))
    np.testing.assert_array_equal(out['gt_cluster_map'], clu)
    with pytest.raises(ValueError, match='img_dir'):
        T.PointsToVoronoiLabel(label_dir='vor_dir')(dict(base, img_path='/x/images/a.png'))
    small = dict(base, img=img[:20].copy())
    with pytest.raises(ValueError, match='vor_dir/train/a.png: Voronoi label is 32x32 but'):
        T.PointsToVoronoiLabel(label_dir='vor_dir')(small)
