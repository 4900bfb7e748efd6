"""Write Qu et al.'s Voronoi and cluster labels for a segmentation data set (issue 5).

For every image ``<root>/img_dir/<split>/<name>.png`` the points come from
``<root>/points/<split>/<name>.csv`` (``--points-from csv``, the default) or from the
instance map ``<root>/inst_dir/<split>/<name>.png`` (or ``.npy``): ``bbox`` = centres of
the instances' bounding boxes (the authors' convention), ``centroid`` = centroids
(:func:`projects.common.instances.instance_geometry`, continuous pixel coordinates). It
writes, atomically::

    <root>/vor_dir/<split>/<name>.png    Voronoi label, uint8 0 / 1 / 255
    <root>/clu_dir/<split>/<name>.png    cluster label, uint8 0 / 1 / 255

(:mod:`projects.point_supervision.labels`), which ``PointsToVoronoiLabel(label_dir=
'vor_dir')`` / ``PointsToClusterLabel(label_dir='clu_dir')`` read back. Example::

    python tools/generate_point_labels.py --root data/synthetic --splits train val --jobs 2

Errors (missing or corrupt files, points outside the image) name the file and stop the
run with exit code 1.
"""
import argparse
import glob
import os.path as osp
import sys
import time
from typing import List, Optional, Sequence, Tuple

import numpy as np

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
from projects.common.instances import box_centres, instance_geometry  # noqa: E402
from projects.common.io import (read_image, read_instance_map, read_points,  # noqa: E402
                                write_image)
from projects.point_supervision import labels as L  # noqa: E402

POINT_SOURCES = ('csv', 'bbox', 'centroid')


def load_points(root: str, split: str, name: str, points_from: str,
                shape: Tuple[int, int]) -> np.ndarray:
    """Points (N, 2) float64 (x, y) of image ``name``: from its CSV or its instance map."""
    if points_from == 'csv':
        pts, _ = read_points(osp.join(root, 'points', split, name + '.csv'), shape)
        return pts.astype(np.float64)
    if points_from not in POINT_SOURCES:
        raise ValueError(f'--points-from: expected one of {POINT_SOURCES}, got {points_from!r}')
    base = osp.join(root, 'inst_dir', split, name)
    path = next((base + ext for ext in ('.png', '.npy') if osp.isfile(base + ext)), None)
    if path is None:
        raise FileNotFoundError(f'{base}.png: instance map file not found (nor {base}.npy)')
    inst = read_instance_map(path)
    if inst.shape != tuple(shape):
        raise ValueError(f'{path}: instance map is {inst.shape[1]}x{inst.shape[0]} but the '
                         f'image is {shape[1]}x{shape[0]}')
    _, centroids, boxes = instance_geometry(inst, source=path)
    if points_from == 'centroid':
        return centroids
    return box_centres(boxes)


def process_image(task: tuple) -> Tuple[str, int, float, float]:
    """Labels of one image (a picklable task for the worker pool): returns (image path,
    number of points, share of labelled pixels in the Voronoi / cluster label)."""
    root, split, img_path, points_from, seed, max_samples = task
    name = osp.splitext(osp.basename(img_path))[0]
    image = read_image(img_path)
    points = load_points(root, split, name, points_from, image.shape[:2])
    try:
        vor = L.voronoi_label(points, image.shape[:2])
        clu = L.cluster_label(image, points, seed=seed, voronoi=vor, max_samples=max_samples)
    except ValueError as err:
        raise ValueError(f'{img_path}: {err}') from err
    write_image(osp.join(root, 'vor_dir', split, name + '.png'), vor)
    write_image(osp.join(root, 'clu_dir', split, name + '.png'), clu)
    return img_path, len(points), float(np.mean(vor != 255)), float(np.mean(clu != 255))


def _init_worker() -> None:
    """One BLAS / OpenMP thread per worker process (the pool supplies the parallelism)."""
    from threadpoolctl import threadpool_limits
    threadpool_limits(1)


def list_images(root: str, split: str) -> List[str]:
    folder = osp.join(root, 'img_dir', split)
    if not osp.isdir(folder):
        raise FileNotFoundError(f'{folder}: image folder not found (expected the layout of '
                                f'docs/data_layout.md)')
    paths = sorted(glob.glob(osp.join(folder, '*.png')))
    if not paths:
        raise ValueError(f'{folder}: no *.png image')
    return paths


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--root', required=True, help='data set root (holds img_dir/)')
    p.add_argument('--splits', nargs='+', default=['train'], help='splits (default train)')
    p.add_argument('--points-from', choices=POINT_SOURCES, default='csv',
                   help='csv: points/<split>/<name>.csv; bbox / centroid: from '
                   'inst_dir/<split>/<name>.png|.npy (default csv)')
    p.add_argument('--jobs', type=int, default=1, help='worker processes (default 1)')
    p.add_argument('--seed', type=int, default=0, help='k-means seed (default 0)')
    p.add_argument('--max-samples', type=int, default=L.DEFAULT_MAX_SAMPLES,
                   help=f'pixels the k-means is fitted on (default {L.DEFAULT_MAX_SAMPLES}; '
                   f'0 = every pixel, as the authors)')
    p.add_argument('--no-progress', action='store_true', help='no progress bar')
    args = p.parse_args(argv)
    if args.jobs < 1:
        p.error('--jobs must be >= 1')
    if args.max_samples != 0 and args.max_samples < 3:
        p.error('--max-samples must be 0 (every pixel) or >= 3')
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    max_samples = args.max_samples or None
    try:
        tasks = [(args.root, split, path, args.points_from, args.seed, max_samples)
                 for split in args.splits for path in list_images(args.root, split)]
    except (ValueError, FileNotFoundError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    print(f'[generate_point_labels] {len(tasks)} images of {args.root} '
          f'({", ".join(args.splits)}), points from {args.points_from}, seed {args.seed}, '
          f'{args.jobs} job(s) -> vor_dir/, clu_dir/')
    t0 = time.time()
    bar = None
    if not args.no_progress:
        from mmengine.utils import ProgressBar
        bar = ProgressBar(len(tasks))
    results = []
    try:
        if args.jobs == 1:
            for task in tasks:
                results.append(process_image(task))
                if bar is not None:
                    bar.update()
        else:
            import multiprocessing
            with multiprocessing.Pool(min(args.jobs, len(tasks)), _init_worker) as pool:
                for res in pool.imap(process_image, tasks):
                    results.append(res)
                    if bar is not None:
                        bar.update()
    except (ValueError, FileNotFoundError) as err:
        print(f'\nerror: {err}', file=sys.stderr)
        return 1
    if bar is not None:
        sys.stdout.write('\n')
    n_pts = sum(r[1] for r in results)
    vor = float(np.mean([r[2] for r in results]))
    clu = float(np.mean([r[3] for r in results]))
    print(f'done: {len(results)} images, {n_pts} points in {time.time() - t0:.1f} s; mean '
          f'labelled share: Voronoi {vor:.3f}, cluster {clu:.3f}')
    for split in args.splits:
        print(f'  {osp.join(args.root, "vor_dir", split)}  {osp.join(args.root, "clu_dir", split)}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
