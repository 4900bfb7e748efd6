"""Voronoi / cluster label generation: ours against a straightforward re-implementation of
the authors' algorithm, in the same run, with the same seed (issue 5).

DESIGN.md sect. 5: the speed figure is a ratio against a named peer measured in the same
run. The peer ("authors") follows Qu et al.'s label script (huiqu18/WeaklySegPointAnno
``prepare_data.py``; DESIGN.md 4.3) step by step, written here from that description:

- Voronoi: ``scipy.spatial.Voronoi`` of the point pixels (row, col), made finite by
  mirroring the points across the 4 image borders, each cell clipped to the box
  [0, H] x [0, W] with shapely (the authors' clip; vertices within 1e-9 of a border are
  snapped onto it, qhull leaves 1e-15 of noise there), rasterised with
  ``skimage.draw.polygon``, its inner boundary ``mask & ~erosion(mask, disk(1))`` on the
  full image, edges OR-ed (``--close-edges`` adds ``binary_closing(disk(1))`` in both),
  points dilated by disk(2).
- Cluster: ``KMeans(3, random_state=seed, n_init)`` fitted on every pixel; nucleus /
  background cluster choice; ``measure.label`` + ``remove_small_objects`` (< 30 px); cells
  = ``measure.label`` of the non-edge pixels of the Voronoi edge channel, grey-dilated by
  disk(2); per cell full-image ``binary_dilation(disk(5))``, ``binary_fill_holes``,
  ``binary_erosion(disk(7))``; final label.

Ours: :func:`projects.point_supervision.labels.voronoi_label` and
:func:`~projects.point_supervision.labels.cluster_label` (given our Voronoi label).

Test image (default): a seeded synthetic H&E tile (``projects.common.synthetic``) of
``--size`` x ``--size`` at ``scale=2`` (about 0.25 um/px, 40x like MoNuSeg) with region
weights tumour / stroma / lymphocytic = 1 / 1 / 1 (no empty background, no necrosis),
which gives 700-850 nuclei at 1000 x 1000; points = bounding-box centres of the instances
(the authors' convention). Or ``--image PNG --points CSV`` (x,y[,label]).

    python tools/analysis_tools/benchmark_point_labels.py --size 1000 --seed 0 \\
        --out-json work_dirs/bench_point_labels.json

Prints the absolute times, the ratio authors / ours per label and in total (target >= 10)
and the share of identical pixels per label (targets: Voronoi >= 0.99, cluster >= 0.97).
"""
import argparse
import os.path as osp
import sys
import time
import warnings
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
from projects.common.instances import point_to_pixel  # noqa: E402
from projects.common.io import read_image, read_points, write_json  # noqa: E402
from projects.point_supervision import labels as L  # noqa: E402

TARGETS = dict(speedup=10.0, voronoi=0.99, cluster=0.97)


# ------------------------------------------------------------------ authors' algorithm
def reference_voronoi(point_rc: np.ndarray, shape: Tuple[int, int],
                      close_edges: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """The authors' Voronoi label of integer point pixels (M, 2) (row, col): returns the
    uint8 label (0 edge, 1 nucleus, 255 ignore) and the raw edge map (their channel 0)."""
    from scipy.spatial import Voronoi
    from shapely.geometry import Polygon
    from skimage import draw, morphology

    h, w = shape
    pts = np.asarray(point_rc, np.float64)
    copies = [pts]
    for axis, bound in ((0, 0.0), (0, float(h)), (1, 0.0), (1, float(w))):
        m = pts.copy()
        m[:, axis] = 2 * bound - m[:, axis]
        copies.append(m[m[:, axis] != pts[:, axis]])  # a point on the line is its mirror
    vor = Voronoi(np.concatenate(copies))
    box = Polygon([[0, 0], [0, w], [h, w], [h, 0]])
    edges = np.zeros((h, w), bool)
    fp1 = morphology.disk(1)
    for i in range(len(pts)):
        region = vor.regions[vor.point_region[i]]
        if not region or -1 in region:
            raise RuntimeError(f'reference_voronoi: cell of point {i} is not finite')
        poly = Polygon(vor.vertices[region]).intersection(box)
        coords = np.asarray(poly.exterior.coords)
        for axis, bound in ((0, 0.0), (0, float(h)), (1, 0.0), (1, float(w))):
            near = np.abs(coords[:, axis] - bound) < 1e-9  # qhull's 1e-15 noise on the
            coords[near, axis] = bound  # mirror bisector would drop the border row
        rr, cc = draw.polygon(coords[:, 0], coords[:, 1], (h, w))
        mask = np.zeros((h, w), bool)
        mask[rr, cc] = True
        edges |= mask & ~morphology.erosion(mask, fp1)
    if close_edges:
        edges = morphology.binary_closing(edges, fp1)
    point_map = np.zeros((h, w), np.uint8)
    point_map[pts[:, 0].astype(int), pts[:, 1].astype(int)] = 255
    label = np.full((h, w), 255, np.uint8)
    label[edges] = 0
    label[morphology.dilation(point_map, morphology.disk(2)) > 0] = 1
    return label, edges


def reference_cluster(image: np.ndarray, point_rc: np.ndarray, edges: np.ndarray,
                      seed: int = 0, n_init: int = 10) -> np.ndarray:
    """The authors' cluster label: full-image k-means and full-image per-cell morphology;
    ``edges`` is the raw Voronoi edge map (their ``label_vor[:, :, 0] > 0``)."""
    from skimage import measure, morphology
    from sklearn.cluster import KMeans

    h, w = image.shape[:2]
    label_point = np.zeros((h, w), np.uint8)
    label_point[point_rc[:, 0], point_rc[:, 1]] = 255
    dist = np.clip(ndimage.distance_transform_edt(255 - label_point).reshape(-1, 1), 0, 20)
    emb = np.concatenate([np.asarray(image, np.float64).reshape(-1, 3) / 10, dist], axis=1)
    clusters = KMeans(n_clusters=3, random_state=seed, n_init=n_init).fit(emb).labels_
    clusters = clusters.reshape(h, w)

    nuc = int(np.argmax([np.sum((clusters == i) * label_point) for i in range(3)]))
    remain = np.delete(np.arange(3), nuc)
    near = morphology.binary_dilation(label_point > 0, morphology.disk(5))
    bg = remain[np.argmin([np.sum((clusters == i) * near) for i in remain])]

    nuclei_labeled = measure.label(clusters == nuc)
    initial = morphology.remove_small_objects(nuclei_labeled, max_size=29)  # < 30 px
    cells = measure.label(~edges)
    cells = morphology.dilation(cells, morphology.disk(2))
    refined = np.zeros((h, w), bool)
    fp5, fp7 = morphology.disk(5), morphology.disk(7)
    for idx in np.unique(cells):
        if idx == 0:
            continue
        nucleus_i = (cells == idx) & (initial > 0)
        dil = morphology.binary_dilation(nucleus_i, fp5)
        filled = ndimage.binary_fill_holes(dil)
        refined |= morphology.binary_erosion(filled, fp7)

    far = morphology.dilation(label_point, morphology.disk(10)) == 0
    label = np.full((h, w), 255, np.uint8)
    label[(clusters == bg) & ~refined & far] = 0
    label[refined] = 1
    return label


# ------------------------------------------------------------------ the benchmark
def test_image(size: int, seed: int) -> Tuple[np.ndarray, np.ndarray, str]:
    """Synthetic H&E tile (see the module docstring) and its box-centre points (x, y)."""
    from projects.common.synthetic import generate_tile
    tile = generate_tile(seed, (size, size), scale=2.0, region_weights=(0, 1, 1, 1, 0))
    b = tile['boxes']
    pts = np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2], axis=1)
    return tile['image'], pts, f'synthetic tile seed {seed}, {size}x{size}, scale 2'


def run(image: np.ndarray, points_xy: np.ndarray, seed: int = 0, n_init: int = 10,
        max_samples: Optional[int] = L.DEFAULT_MAX_SAMPLES,
        close_edges: bool = False) -> Dict[str, float]:
    """Time and compare both implementations on one image; returns the numbers."""
    h, w = image.shape[:2]
    rows, cols = point_to_pixel(points_xy, (h, w))
    flat = np.unique(rows * w + cols)
    point_rc = np.stack([flat // w, flat % w], axis=1)

    t0 = time.perf_counter()
    ref_vor, ref_edges = reference_voronoi(point_rc, (h, w), close_edges)
    t1 = time.perf_counter()
    ref_clu = reference_cluster(image, point_rc, ref_edges, seed, n_init)
    t2 = time.perf_counter()
    our_vor = L.voronoi_label(points_xy, (h, w), close_edges=close_edges)
    t3 = time.perf_counter()
    our_clu = L.cluster_label(image, points_xy, seed=seed, voronoi=our_vor,
                              max_samples=max_samples, n_init=n_init)
    t4 = time.perf_counter()
    return dict(
        height=h, width=w, points=len(points_xy), point_pixels=len(point_rc),
        authors_voronoi_s=t1 - t0, authors_cluster_s=t2 - t1, authors_total_s=t2 - t0,
        ours_voronoi_s=t3 - t2, ours_cluster_s=t4 - t3, ours_total_s=t4 - t2,
        ratio_voronoi=(t1 - t0) / (t3 - t2), ratio_cluster=(t2 - t1) / (t4 - t3),
        ratio_total=(t2 - t0) / (t4 - t2),
        agree_voronoi=float(np.mean(ref_vor == our_vor)),
        agree_cluster=float(np.mean(ref_clu == our_clu)),
        frac_voronoi=[float(np.mean(our_vor == v)) for v in (0, 1, 255)],
        frac_cluster=[float(np.mean(our_clu == v)) for v in (0, 1, 255)])


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--image', default=None, help='RGB / grey image (default: synthetic)')
    p.add_argument('--points', default=None, help='points CSV x,y[,label] for --image')
    p.add_argument('--size', type=int, default=1000, help='synthetic image size (default 1000)')
    p.add_argument('--seed', type=int, default=0, help='synthetic tile and k-means seed')
    p.add_argument('--n-init', type=int, default=10, help='k-means restarts, both (default 10)')
    p.add_argument('--max-samples', type=int, default=L.DEFAULT_MAX_SAMPLES,
                   help=f'pixels our k-means is fitted on (default {L.DEFAULT_MAX_SAMPLES})')
    p.add_argument('--close-edges', action='store_true',
                   help='close the Voronoi edges with disk(1) (off: the authors\' code)')
    p.add_argument('--threads', type=int, default=1,
                   help='BLAS / OpenMP threads for both (default 1)')
    p.add_argument('--out-json', default=None, help='also write the numbers as JSON')
    args = p.parse_args(argv)
    if (args.image is None) != (args.points is None):
        p.error('--image and --points go together')
    if args.size < 16 or args.threads < 1 or args.n_init < 1:
        p.error('--size must be >= 16, --threads and --n-init >= 1')
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    from threadpoolctl import threadpool_limits
    if args.image is not None:
        image = read_image(args.image)
        points, _ = read_points(args.points, image.shape[:2])
        what = f'{args.image} with {args.points}'
    else:
        image, points, what = test_image(args.size, args.seed)
    print(f'[benchmark_point_labels] {what}: {len(points)} points, seed {args.seed}, '
          f'n_init {args.n_init}, our k-means on {args.max_samples} pixels, '
          f'{args.threads} thread(s)')
    with threadpool_limits(args.threads), warnings.catch_warnings():
        warnings.simplefilter('ignore', FutureWarning)
        res = run(image, points, seed=args.seed, n_init=args.n_init,
                  max_samples=args.max_samples, close_edges=args.close_edges)
    res.update(image=what, seed=args.seed, n_init=args.n_init, max_samples=args.max_samples,
               threads=args.threads, close_edges=args.close_edges, targets=TARGETS)
    print(f'{"label":<8} {"authors s":>10} {"ours s":>8} {"ratio":>7} {"identical":>10}')
    for name in ('voronoi', 'cluster'):
        print(f'{name:<8} {res[f"authors_{name}_s"]:>10.2f} {res[f"ours_{name}_s"]:>8.3f} '
              f'{res[f"ratio_{name}"]:>7.1f} {res[f"agree_{name}"]:>10.4f}')
    print(f'{"total":<8} {res["authors_total_s"]:>10.2f} {res["ours_total_s"]:>8.3f} '
          f'{res["ratio_total"]:>7.1f}')
    ok = (res['ratio_total'] >= TARGETS['speedup'] and res['agree_voronoi'] >= TARGETS['voronoi']
          and res['agree_cluster'] >= TARGETS['cluster'])
    print(f'targets: ratio >= {TARGETS["speedup"]:g}, Voronoi >= {TARGETS["voronoi"]:g}, '
          f'cluster >= {TARGETS["cluster"]:g} -> {"met" if ok else "NOT met"}')
    if args.out_json:
        write_json(args.out_json, res)
        print(f'written {args.out_json}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
