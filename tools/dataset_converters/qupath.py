"""QuPath annotations (GeoJSON) + whole slides -> COCO detection / mmseg segmentation tiles.

Example (QuPath: File > Export objects as GeoJSON, one file per slide, named after it)::

    python tools/dataset_converters/qupath.py --slides slides/ --annotations qupath/ \\
        --out data/mine --mpp 0.5 --tile 512 --classes tumour,lymphocyte \\
        --complete-region-class Complete --sparse-tiles

Points (and each point of a MultiPoint) become point annotations with boxes of
``--box-size`` output pixels (per class with ``--box-sizes CSV``: ``class,box_size``);
polygons become instances (mask, tight box, centroid). Annotations of
``--complete-region-class`` (by class or by name) mark regions where every cell is
labelled: tiles cut inside them go to split ``--split`` (COCO image ``complete: true``;
in ``ann_dir`` pixels outside the region are 255 = ignore); with ``--sparse-tiles`` the
labels outside every region get tiles too, in split ``<split>_sparse`` (``complete:
false``; only labelled pixels are known). Tiles without tissue are skipped. Each COCO
image records ``parent`` (slide), ``offset`` (level-0 x, y of its top-left corner) and
``scale`` (level-0 pixels per tile pixel): level0 = offset + p * scale.

Bad input (not JSON / not GeoJSON, a slide without annotation file or the reverse, a
slide without mpp for ``--mpp``, objects outside the slide without ``--clip``) stops with
an error naming the file; unusable features and classes not in ``--classes`` are skipped
with a warning naming the file and feature index, and counted in ``summary.json``.
"""
import argparse
import os.path as osp
import sys
from typing import List, Optional

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if REPO not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, REPO)

from projects.common.io import prepare_out_dir  # noqa: E402
from projects.common.layout import LAYOUT_DIRS  # noqa: E402
from projects.common.qupath import (TASKS, ConvertOptions, convert, pair_slides,  # noqa: E402
                                    read_box_sizes)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description='QuPath GeoJSON annotations + slides -> COCO / mmseg training tiles',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--slides', nargs='+', required=True,
                   help='slide files, folders or globs (SVS, pyramidal TIFF, OpenSlide formats)')
    p.add_argument('--annotations', nargs='+', required=True,
                   help='GeoJSON files, folders or globs, paired by name (a.svs <-> '
                   'a.geojson), or SLIDE=GEOJSON mappings')
    p.add_argument('--out', required=True, help='dataset root to write')
    res = p.add_mutually_exclusive_group()
    res.add_argument('--mpp', type=float, default=None,
                     help='microns per tile pixel (level closest above, then resized)')
    res.add_argument('--level', type=int, default=None, help='pyramid level (default 0)')
    p.add_argument('--tile', type=int, default=512, help='tile side (output pixels)')
    p.add_argument('--overlap', type=int, default=0, help='overlap of complete tiles (px)')
    p.add_argument('--classes', default=None,
                   help='comma-separated class names in label order (default: every class '
                   'found, sorted); objects of other classes are skipped and counted')
    p.add_argument('--complete-region-class', default='Complete',
                   help='class or name of the regions where every cell is labelled')
    p.add_argument('--sparse-tiles', action='store_true',
                   help='also cut tiles around labels outside every complete region')
    p.add_argument('--task', choices=TASKS, default='both',
                   help='det: COCO only; seg: mmseg only (annotations/*.json kept as the '
                   'tile index); both')
    p.add_argument('--box-size', type=float, default=16.0,
                   help='box side of point annotations (output pixels)')
    p.add_argument('--box-sizes', default=None, metavar='CSV',
                   help='"class,box_size" rows overriding --box-size per class')
    p.add_argument('--clip', action='store_true',
                   help='drop points / clip polygons outside the slide (else: an error)')
    p.add_argument('--min-tissue', type=float, default=0.05,
                   help='skip tiles with a smaller tissue fraction (tissue mask)')
    p.add_argument('--split', default='train', help='split name of the complete tiles')
    p.add_argument('--backend', choices=['auto', 'openslide', 'tifffile'], default='auto')
    p.add_argument('--overview', default=None, metavar='PNG',
                   help='picture of the first slide with its tiles and labels')
    p.add_argument('--overwrite', action='store_true', help='replace a dataset in --out')
    p.add_argument('--no-progress', action='store_true', help='no progress bar')
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        opts = ConvertOptions(
            mpp=args.mpp, level=args.level, tile=args.tile, overlap=args.overlap,
            classes=[c.strip() for c in args.classes.split(',')] if args.classes else None,
            complete_region_class=args.complete_region_class, task=args.task,
            box_size=args.box_size,
            box_sizes=read_box_sizes(args.box_sizes) if args.box_sizes else {},
            sparse_tiles=args.sparse_tiles, clip=args.clip, min_tissue=args.min_tissue,
            split=args.split, backend=args.backend)
        opts.check()
        pairs = pair_slides(args.slides, args.annotations)
        prepare_out_dir(args.out, LAYOUT_DIRS + ('summary.json', ), args.overwrite,
                        'the dataset')
        for slide, ann in pairs:
            print(f'{slide} <- {ann}')
        summary = convert(pairs, args.out, opts, progress=not args.no_progress,
                          overview=args.overview)
    except (ValueError, FileNotFoundError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    print(f'{"slide":<28} {"class":<16} {"kept":>6} {"outside tiles":>13} '
          f'{"outside slide":>13} {"unknown":>7}')
    for slide, s in summary['slides'].items():
        t = s['tiles']
        for c, n in s['per_class'].items():
            print(f'{osp.basename(slide)[:28]:<28} {c[:16]:<16} {n["kept"]:>6} '
                  f'{n["outside_tiles"]:>13} {n["outside_slide"]:>13} {n["unknown_class"]:>7}')
        print(f'  level {s["level"]}, {s["scale"]:g} level-0 px per tile px '
              f'({s["mpp"] or "?"} um/px): {t["complete"]} complete, {t["sparse"]} sparse '
              f'tiles, {t["no_tissue"]} skipped without tissue; {s["invalid_features"]} '
              f'unusable feature(s), {s["clipped"]} clipped')
        for w in s['warnings'][:10]:
            print(f'  warning: {w}')
        if len(s['warnings']) > 10:
            print(f'  ... {len(s["warnings"]) - 10} more warnings in summary.json')
    print(f'wrote {args.out} (summary.json)' + (f' and {args.overview}' if args.overview
                                                 else ''))
    return 0


if __name__ == '__main__':
    sys.exit(main())
