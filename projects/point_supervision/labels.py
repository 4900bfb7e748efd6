"""Voronoi and cluster labels from point annotations (Qu et al., sect. II.A.1, Fig. 1 (e, f)).

Both labels are uint8 maps with 0 = background, 1 = nucleus, 255 = ignore (DESIGN.md 6).
Points are (x, y) in continuous pixel coordinates (docs/data_layout.md): point (x, y) lies
in pixel (row floor(y), col floor(x)), clipped to the last row / column for points on the
right / bottom border. Several points in one pixel count as one point pixel.

The rules are those of the authors' label generation (huiqu18/WeaklySegPointAnno and
hust-linyi/SC-Net, ``prepare_data.py``; DESIGN.md 4.3); the computation is ours:

Voronoi label (:func:`voronoi_label`)
    Cells are the Voronoi cells of the point pixels (integer (row, col) centres). The
    authors rasterise each cell as a closed polygon (``skimage.draw.polygon`` keeps pixels
    on the boundary), take each cell's inner boundary ``mask & ~erosion(mask, disk(1))``
    (the image border is not an edge) and sum them. Here the cells come from one exact
    Euclidean distance transform: pixel x belongs to every point at the minimum squared
    distance d2(x) (closed cells, so a pixel equidistant from two points belongs to both,
    like a pixel on the authors' polygon boundary), and x is an edge iff one of its
    in-image 4-neighbours y is strictly closer to some other point than to the point
    assigned to x: |y - p(x)|^2 > d2(y). (If x is a tie of p and q, some 4-neighbour is
    strictly closer to q than to p, so testing p(x) alone suffices.) Consequences: a
    bisector between two pixel columns gives an edge of two columns (one per side); a
    bisector through pixel centres (a tie column) gives an edge of one column, the tie
    column itself. ``p(x)``, the one nearest point reported by
    ``scipy.ndimage.distance_transform_edt``, resolves ties towards the smaller column,
    then the smaller row; with closed cells that choice does not change the label.
    Optionally (``close_edges=True``) the edges are closed with disk(1) (dilation with 0
    outside the image, then erosion with 1 outside, i.e. skimage's ``binary_closing``);
    off by default, as in the authors' script, which uses the raw edges. Edges -> 0, point
    pixels dilated by disk(2) -> 1 (nucleus wins), rest 255.

Cluster label (:func:`cluster_label`)
    k-means (k = 3) on per-pixel features [R/10, G/10, B/10, min(EDT to the nearest point
    pixel, 20)]. Nucleus cluster = the cluster holding most point pixels; background
    cluster = of the other two, the one with fewer pixels within disk(5) of a point pixel.
    Refinement: 8-connected components of the nucleus cluster smaller than 30 px are
    removed; Voronoi cells = 8-connected components of the non-zero pixels of the Voronoi
    label (edges excluded; the authors use their raw edge channel, so where a nucleus
    disk covers an edge, i.e. two points a few px apart, our cells merge there),
    grey-dilated by disk(2); per cell the nuclei inside it are
    dilated by disk(5), holes filled, eroded by disk(7) (pixels outside the image count as
    foreground, skimage's ``binary_erosion``) and OR-ed into the refined nuclei. Final:
    1 = refined nuclei, 0 = background cluster outside the refined nuclei and farther than
    10 px from every point pixel, 255 elsewhere. Speed-ups (ours): k-means is fitted on a
    seeded random subsample of pixels and then assigns every pixel to the nearest centre;
    the per-cell morphology runs inside the cell's nucleus bounding box padded by 6 px,
    which gives exactly the full-image result (see :func:`_refine_cells`).

A disk of radius r (skimage's ``disk``) is the set of offsets with dy^2 + dx^2 <= r^2, so
"within disk(r) of a point pixel" is ``d2 <= r^2`` with d2 the exact integer squared
distance: all point dilations come from the same distance transform.

Plain numpy + scipy + scikit-learn: no OpenMMLab import.
"""
from typing import Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

from projects.common.instances import point_to_pixel
from projects.common.io import check_points_inside

__all__ = ['IGNORE_INDEX', 'disk', 'point_pixels', 'voronoi_label', 'cluster_label',
           'refine_nuclei', 'check_label_map']

IGNORE_INDEX = 255
NUCLEUS_RADIUS = 2        # Voronoi label: points dilated by disk(2) = nucleus
CLUSTER_DIST_CLIP = 20.0  # k-means distance feature clipped at 20 px
COLOUR_SCALE = 10.0       # k-means colour features RGB / 10
BG_OVERLAP_RADIUS = 5     # background cluster: fewest pixels within disk(5) of points
MIN_NUCLEUS_SIZE = 30     # remove_small_objects(min_size=30)
CELL_DILATION = 2         # Voronoi cells grey-dilated by disk(2)
REFINE_DILATION = 5       # per cell: dilate disk(5), fill holes, erode disk(7)
REFINE_EROSION = 7
BG_EXCLUSION_RADIUS = 10  # background excludes pixels within disk(10) of a point
DEFAULT_MAX_SAMPLES = 100_000

_EIGHT = np.ones((3, 3), bool)


def disk(radius: int) -> np.ndarray:
    """Boolean (2r+1, 2r+1) disk footprint: offsets with dy^2 + dx^2 <= r^2 (the footprint
    of ``skimage.morphology.disk(r)``)."""
    if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)) or radius < 0:
        raise ValueError(f'radius: expected an int >= 0, got {radius!r}')
    r = np.arange(-radius, radius + 1)
    return (r[:, None]**2 + r[None, :]**2) <= radius * radius


def _check_shape(shape: Sequence[int]) -> Tuple[int, int]:
    try:
        h, w = (int(s) for s in tuple(shape)[:2])
    except (TypeError, ValueError) as err:
        raise ValueError(f'shape: expected (H, W), got {shape!r}') from err
    if len(tuple(shape)) < 2 or h <= 0 or w <= 0:
        raise ValueError(f'shape: expected a positive (H, W), got {tuple(shape)!r}')
    return h, w


def point_pixels(points_xy: np.ndarray, shape: Sequence[int],
                 name: str = 'points_xy') -> Tuple[np.ndarray, np.ndarray]:
    """Unique (rows, cols) int64 of the pixels holding the points (x, y).

    ValueError naming ``name`` for a wrong array shape or a point outside the (H, W) image
    (0 <= x <= W, 0 <= y <= H; border points go to the last row / column).
    """
    h, w = _check_shape(shape)
    pts = np.asarray(points_xy)
    if pts.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f'{name}: expected an (N, 2) array of (x, y), got shape {pts.shape}')
    if not (np.issubdtype(pts.dtype, np.number) and not np.issubdtype(pts.dtype,
                                                                      np.complexfloating)):
        raise ValueError(f'{name}: expected real numbers, got dtype {pts.dtype}')
    pts = pts.astype(np.float64)
    check_points_inside(pts, (h, w), name)
    rows, cols = point_to_pixel(pts, (h, w))
    flat = np.unique(rows * w + cols)
    return flat // w, flat % w


def _nearest(rows: np.ndarray, cols: np.ndarray,
             shape: Tuple[int, int]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per pixel: exact squared distance d2 (int64) to the nearest point pixel and the
    offsets (dr, dc) = pixel - that point (int64); ties: smaller column, then row."""
    h, w = shape
    free = np.ones((h, w), bool)
    free[rows, cols] = False
    ri, ci = ndimage.distance_transform_edt(free, return_distances=False,
                                            return_indices=True)
    dr = np.arange(h, dtype=np.int64)[:, None] - ri
    dc = np.arange(w, dtype=np.int64)[None, :] - ci
    return dr * dr + dc * dc, dr, dc


def _edges(d2: np.ndarray, dr: np.ndarray, dc: np.ndarray) -> np.ndarray:
    """Inner boundaries of the closed Voronoi cells (see the module docstring): x is an
    edge iff an in-image 4-neighbour y has |y - p(x)|^2 > d2(y)."""
    edge = np.zeros(d2.shape, bool)
    # |y - p|^2 for y = x + (1, 0) is d2(x) + 2 dr(x) + 1, and so on for the other shifts
    edge[:-1] |= d2[:-1] + 2 * dr[:-1] + 1 > d2[1:]   # neighbour below
    edge[1:] |= d2[1:] - 2 * dr[1:] + 1 > d2[:-1]     # neighbour above
    edge[:, :-1] |= d2[:, :-1] + 2 * dc[:, :-1] + 1 > d2[:, 1:]  # right
    edge[:, 1:] |= d2[:, 1:] - 2 * dc[:, 1:] + 1 > d2[:, :-1]    # left
    return edge


def _close(mask: np.ndarray, radius: int = 1) -> np.ndarray:
    """Binary closing: dilation (0 outside the image) then erosion (1 outside), so it never
    removes a pixel (skimage's ``binary_closing``)."""
    fp = disk(radius)
    dil = ndimage.binary_dilation(mask, structure=fp, border_value=0)
    return ndimage.binary_erosion(dil, structure=fp, border_value=1)


def _voronoi_from_nearest(d2: np.ndarray, dr: np.ndarray, dc: np.ndarray,
                          close_edges: bool) -> np.ndarray:
    edges = _edges(d2, dr, dc)
    if close_edges:
        edges = _close(edges, 1)
    label = np.full(d2.shape, IGNORE_INDEX, np.uint8)
    label[edges] = 0
    label[d2 <= NUCLEUS_RADIUS**2] = 1
    return label


def voronoi_label(points_xy: np.ndarray, shape: Sequence[int],
                  close_edges: bool = False) -> np.ndarray:
    """Voronoi label (Qu et al., sect. II.A.1, Fig. 1(e)) of the points (x, y) in an (H, W)
    image: uint8, 0 = Voronoi edge, 1 = within disk(2) of a point pixel (wins over edges),
    255 = ignore. Zero points -> all 255. Tie rule and edge definition: module docstring.

    Args:
        points_xy: (N, 2) float (x, y), continuous pixel coordinates.
        shape: (H, W) (extra trailing dims, e.g. channels, are ignored).
        close_edges: close the edge map with disk(1) (off: the authors' code).
    """
    h, w = _check_shape(shape)
    rows, cols = point_pixels(points_xy, (h, w))
    if len(rows) == 0:
        return np.full((h, w), IGNORE_INDEX, np.uint8)
    return _voronoi_from_nearest(*_nearest(rows, cols, (h, w)), close_edges)


def check_label_map(label: np.ndarray, shape: Tuple[int, int], name: str) -> np.ndarray:
    """``label`` as uint8 after checking it is an (H, W) map with values in {0, 1, 255};
    ValueError naming ``name`` otherwise."""
    arr = np.asarray(label)
    if arr.shape != tuple(shape):
        raise ValueError(f'{name}: expected an {shape[1]}x{shape[0]} (H, W) label map, got '
                         f'shape {arr.shape}')
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f'{name}: expected an integer label map, got dtype {arr.dtype}')
    bad = (arr != 0) & (arr != 1) & (arr != IGNORE_INDEX)
    if bad.any():
        raise ValueError(f'{name}: label values must be 0, 1 or {IGNORE_INDEX}, found '
                         f'{np.unique(arr[bad])[:5].tolist()}')
    return arr.astype(np.uint8)


def _rgb(image: np.ndarray, name: str = 'image') -> np.ndarray:
    """(H, W, 3) float64 RGB on the 0..255 scale; a grey image (H, W) or (H, W, 1) is used
    in all three channels."""
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f'{name}: expected an RGB (H, W, 3) or grey (H, W) image, got shape '
                         f'{arr.shape}')
    if arr.shape[0] * arr.shape[1] < 3:
        raise ValueError(f'{name}: k-means with 3 clusters needs at least 3 pixels, got shape '
                         f'{arr.shape}')
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number) or np.issubdtype(
            arr.dtype, np.complexfloating):
        raise ValueError(f'{name}: expected a numeric image, got dtype {arr.dtype}')
    is_u8 = arr.dtype == np.uint8
    arr = arr.astype(np.float64)
    if not is_u8 and (not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 255):
        raise ValueError(f'{name}: values must be finite and lie in [0, 255] (8-bit scale; '
                         f'convert with projects.common.io.to_uint8), got range '
                         f'[{np.nanmin(arr)}, {np.nanmax(arr)}]')
    return arr


def _fit_kmeans(feats: np.ndarray, seed: int, max_samples: Optional[int], n_init: int):
    """sklearn KMeans(3, random_state=seed) fitted on at most ``max_samples`` pixels drawn
    without replacement with ``np.random.default_rng(seed)`` (None: every pixel); returns
    the cluster of every pixel (nearest fitted centre)."""
    from sklearn.cluster import KMeans
    km = KMeans(n_clusters=3, random_state=seed, n_init=n_init)
    n = len(feats)
    if max_samples is None or n <= max_samples:
        return km.fit(feats).labels_
    idx = np.sort(np.random.default_rng(seed).choice(n, size=max_samples, replace=False))
    km.fit(feats[idx])
    return km.predict(feats)


def _refine_cells(initial: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """Per Voronoi cell: nuclei in the cell, dilate disk(5), fill holes, erode disk(7)
    (1 outside the image), OR over cells.

    Exactness of the crop: each cell is processed in the bounding box of its nucleus
    pixels padded by p = 5 + 1 = 6 px (clipped to the image). The dilation only reads
    nucleus pixels, all inside the crop, and reaches 5 px beyond the box, so the outermost
    row / column of every padded side that is not the image border is background. Hole
    filling: background touching that ring is border-connected in the full image too
    (every pixel outside the dilated box walks straight to the image border), and the
    ring is the crop border, so the same holes are filled. Erosion (1 outside the crop):
    if the disk around a crop pixel x reaches a pixel o beyond a non-border side, the
    pixel e where the segment from o along the side's normal enters the crop is nearer to
    x (same tangential offset, smaller normal offset) and background, so x is eroded in
    the crop as in the full image; beyond an image-border side both use 1. Hence the crop
    result equals the full-image result (tested against it; p = 5 is not enough).
    """
    h, w = initial.shape
    pad = REFINE_DILATION + 1
    fp_dil, fp_ero = disk(REFINE_DILATION), disk(REFINE_EROSION)
    owner = np.where(initial, cells, 0)
    refined = np.zeros((h, w), bool)
    for k, sl in enumerate(ndimage.find_objects(owner), start=1):
        if sl is None:
            continue
        r0, r1 = max(sl[0].start - pad, 0), min(sl[0].stop + pad, h)
        c0, c1 = max(sl[1].start - pad, 0), min(sl[1].stop + pad, w)
        m = owner[r0:r1, c0:c1] == k
        m = ndimage.binary_dilation(m, structure=fp_dil, border_value=0)
        m = ndimage.binary_fill_holes(m)
        m = ndimage.binary_erosion(m, structure=fp_ero, border_value=1)
        refined[r0:r1, c0:c1] |= m
    return refined


def refine_nuclei(nuclei: np.ndarray, voronoi: np.ndarray) -> np.ndarray:
    """Refine a nucleus-cluster mask with the Voronoi cells (Qu et al., sect. II.A.1; the
    authors' ``create_cluster_label``): drop 8-connected components < 30 px; cells =
    8-connected components of ``voronoi != 0`` grey-dilated by disk(2); per cell, its nuclei
    dilated by disk(5), holes filled, eroded by disk(7) (1 outside the image); OR over the
    cells. Returns a bool (H, W) mask."""
    nuclei = np.asarray(nuclei, bool)
    if nuclei.ndim != 2:
        raise ValueError(f'nuclei: expected an (H, W) mask, got shape {nuclei.shape}')
    voronoi = check_label_map(voronoi, nuclei.shape, 'voronoi')
    comp, n_comp = ndimage.label(nuclei, structure=_EIGHT)
    keep = np.bincount(comp.ravel(), minlength=n_comp + 1) >= MIN_NUCLEUS_SIZE
    keep[0] = False
    cells, _ = ndimage.label(voronoi != 0, structure=_EIGHT)
    # max filter; reflected border values lie within the footprint, as with skimage
    cells = ndimage.grey_dilation(cells, footprint=disk(CELL_DILATION))
    return _refine_cells(keep[comp], cells)


def cluster_label(image: np.ndarray, points_xy: np.ndarray, seed: int = 0,
                  voronoi: Optional[np.ndarray] = None,
                  max_samples: Optional[int] = DEFAULT_MAX_SAMPLES, n_init: int = 10,
                  close_edges: bool = False) -> np.ndarray:
    """Cluster label (Qu et al., sect. II.A.1, Fig. 1(f)): uint8, 1 = refined nucleus
    cluster, 0 = background cluster away from points, 255 = ignore. Zero points -> all 255
    (no cluster can be called nucleus). Algorithm: module docstring.

    Args:
        image: RGB (H, W, 3) on the 0..255 scale (uint8, or a float / int array within
            [0, 255]); a grey (H, W) or (H, W, 1) image (fluorescence, an H-component) is
            used as R = G = B.
        points_xy: (N, 2) float (x, y), continuous pixel coordinates.
        seed: ``random_state`` of KMeans and seed of the pixel subsample.
        voronoi: the image's Voronoi label (e.g. read from disk), else computed here
            with :func:`voronoi_label` from the same points (it must come from them).
        max_samples: pixels used to fit k-means (then every pixel goes to its nearest
            centre); None fits on every pixel, as the authors do. With 100000 the label
            agreed with the authors' full-image computation on 99.9 % of the pixels of
            1000 x 1000 synthetic tiles (tools/analysis_tools/benchmark_point_labels.py).
        n_init: k-means restarts (10 = the scikit-learn default of the authors' code).
        close_edges: passed to the Voronoi label when it is computed here.
    """
    img = _rgb(image)
    h, w = img.shape[:2]
    rows, cols = point_pixels(points_xy, (h, w))
    if voronoi is not None:
        voronoi = check_label_map(voronoi, (h, w), 'voronoi')
    if max_samples is not None and (isinstance(max_samples, bool) or int(max_samples) < 3):
        raise ValueError(f'max_samples: expected None or an int >= 3, got {max_samples!r}')
    if len(rows) == 0:
        return np.full((h, w), IGNORE_INDEX, np.uint8)
    d2, dr, dc = _nearest(rows, cols, (h, w))
    if voronoi is None:
        voronoi = _voronoi_from_nearest(d2, dr, dc, close_edges)
    del dr, dc

    # k-means on [RGB / 10, min(distance, 20)]
    feats = np.empty((h * w, 4), np.float64)
    feats[:, :3] = img.reshape(-1, 3) / COLOUR_SCALE
    feats[:, 3] = np.minimum(np.sqrt(d2.ravel().astype(np.float64)), CLUSTER_DIST_CLIP)
    clusters = _fit_kmeans(feats, seed, max_samples, n_init).reshape(h, w)
    del feats

    nuc = int(np.argmax(np.bincount(clusters[rows, cols], minlength=3)))
    others = np.array([c for c in range(3) if c != nuc])
    near = np.bincount(clusters[d2 <= BG_OVERLAP_RADIUS**2], minlength=3)[others]
    bg = int(others[np.argmin(near)])

    refined = refine_nuclei(clusters == nuc, voronoi)

    label = np.full((h, w), IGNORE_INDEX, np.uint8)
    label[(clusters == bg) & ~refined & (d2 > BG_EXCLUSION_RADIUS**2)] = 0
    label[refined] = 1
    return label
