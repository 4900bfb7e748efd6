"""The picture of the README's "Train on your own slides": demo QuPath points on a slide,
converted to tiles by tools/dataset_converters/qupath.py, drawn over the slide.

    python tools/analysis_tools/qupath_demo.py \\
        --slide ../shared/data/samples/cmu_small_region.svs --out docs/qupath_tiles.png

Stands in for a pathologist's QuPath project: nuclei are found by thresholding the
hematoxylin density (Macenko stains, Otsu, 8-connected blobs of 20-400 level-0 pixels);
every nucleus inside the ``--region`` rectangle (the "Complete" region) and ``--sparse`` of
the others become points of a MultiPoint annotation (what QuPath's Points tool exports),
written as QuPath 0.5 GeoJSON next to the picture's work folder. Then the converter cuts
complete and sparse tiles (``--mpp``, ``--tile``) and draws them (its ``--overview``).
"""
import argparse
import json
import os.path as osp
import sys
import tempfile

import numpy as np

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from projects.common.qupath import ConvertOptions, convert  # noqa: E402
from projects.common.slide import open_slide  # noqa: E402


def demo_points(rgb: np.ndarray) -> np.ndarray:
    """(N, 2) level-0 centroids of the hematoxylin blobs of an RGB level-0 image."""
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    from projects.common.instances import instance_geometry
    from projects.common.stain import hematoxylin
    h = hematoxylin(rgb, 'macenko')
    mask = ndimage.binary_opening(h > threshold_otsu(h[h > 0.05]), np.ones((3, 3), bool))
    lab, _ = ndimage.label(mask, structure=np.ones((3, 3)))
    area = np.bincount(lab.ravel())
    keep = (area >= 20) & (area <= 400)
    keep[0] = False
    _, points, _ = instance_geometry(np.where(keep[lab], lab, 0))
    return points


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--slide', default=osp.join(REPO, '..', 'shared', 'data', 'samples',
                                               'cmu_small_region.svs'))
    p.add_argument('--out', default=osp.join(REPO, 'docs', 'qupath_tiles.png'))
    p.add_argument('--region', default='950,1400,640,640', help='x,y,w,h (level 0)')
    p.add_argument('--sparse', type=int, default=30, help='points outside the region')
    p.add_argument('--mpp', type=float, default=1.0)
    p.add_argument('--tile', type=int, default=128)
    p.add_argument('--seed', type=int, default=0)
    args = p.parse_args(argv)
    x, y, w, h = (float(v) for v in args.region.split(','))
    with open_slide(args.slide) as reader:
        w0, h0 = reader.dimensions
        if w0 * h0 > 4096 * 4096:
            raise SystemExit(f'{args.slide}: {w0}x{h0} is too large for this demo')
        pts = demo_points(reader.read_level(0, 0, 0, w0, h0))
    inside = (pts[:, 0] >= x) & (pts[:, 0] <= x + w) & (pts[:, 1] >= y) & (pts[:, 1] <= y + h)
    rng = np.random.default_rng(args.seed)
    outside = np.flatnonzero(~inside)
    picked = rng.choice(outside, min(args.sparse, len(outside)), replace=False)
    chosen = np.concatenate([pts[inside], pts[np.sort(picked)]])
    ring = [[x, y], [x + w, y], [x + w, y + h], [x, y + h], [x, y]]
    doc = dict(type='FeatureCollection', features=[
        dict(type='Feature', id='00000000-0000-4000-8000-000000000001',
             geometry=dict(type='Polygon', coordinates=[ring]),
             properties=dict(objectType='annotation', name='Complete',
                             classification=dict(name='Complete', color=[0, 160, 0]),
                             isLocked=False)),
        dict(type='Feature', id='00000000-0000-4000-8000-000000000002',
             geometry=dict(type='MultiPoint', coordinates=np.round(chosen, 2).tolist()),
             properties=dict(objectType='annotation',
                             classification=dict(name='nucleus', color=[200, 0, 0]),
                             isLocked=False))])
    with tempfile.TemporaryDirectory() as tmp:
        ann = osp.join(tmp, osp.splitext(osp.basename(args.slide))[0] + '.geojson')
        with open(ann, 'w') as f:
            json.dump(doc, f)
        s = convert([(args.slide, ann)], osp.join(tmp, 'tiles'),
                    ConvertOptions(mpp=args.mpp, tile=args.tile, sparse_tiles=True),
                    overview=args.out)
    t = s['slides'][args.slide]['tiles']
    print(f'{int(inside.sum())} points in the region, {len(picked)} outside; {t["complete"]} '
          f'complete and {t["sparse"]} sparse tiles, {t["no_tissue"]} without tissue; '
          f'picture: {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
