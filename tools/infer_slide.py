"""Run a trained detector or segmentor over a whole-slide image, tile by tile.

    python tools/infer_slide.py CONFIG CHECKPOINT SLIDE --out DIR [--level 0]
        [--tile 500 --overlap 100] [--roi x,y,w,h] [--tissue-mask [saturation|od]]
        [--batch-size 4] [--score-thr 0.5] [--device cpu] [--cfg-options k=v ...]

Reads the slide with OpenSlide (``pip install "mmhisto[slide]"``) or, without it, with
tifffile (pyramidal TIFF / SVS); never loads a whole level. Detectors (mmdet configs):
boxes merged across tile borders by NMS. Segmentors (mmseg configs): class maps stitched
tile by tile into instances (8-connected components per class), outlined as polygons.
Everything is written in level-0 pixels to DIR:

    <slide>.geojson        QuPath objects (File > Import objects): one detection per object,
                           Polygon (box / outline) or Point (--geometry point), with its
                           classification (name, colour) and measurements (score, ...)
    <slide>.csv            x,y,class,score (box centre / instance centroid)
    <slide>_overview.png   thumbnail + objects + tissue-mask outline
    <slide>_summary.json   tiles run / skipped, counts per class, timings
"""
import argparse
import os.path as osp
import sys
import time
from typing import List, Optional

from mmengine.config import DictAction

import projects  # noqa: F401  (torch.load fix for mmengine checkpoints)
from projects.common.export import ObjectWriter, write_overview
from projects.common.io import write_json
from projects.common.slide import TISSUE_METHODS, open_slide
from projects.common.slide_inference import (SlideInference, class_names_and_colours,
                                             load_model, parse_roi, region_in_level)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description='Whole-slide inference: detections / instances as QuPath GeoJSON + CSV',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('config', help='mmdet or mmseg config of the trained model')
    p.add_argument('checkpoint', help='checkpoint of that config (loaded strictly)')
    p.add_argument('slide', help='whole-slide image (SVS, pyramidal TIFF, any OpenSlide format)')
    p.add_argument('--out', required=True, help='output directory')
    p.add_argument('--level', type=int, default=0, help='pyramid level to run the model on')
    p.add_argument('--tile', type=int, default=500, help='tile size (level pixels)')
    p.add_argument('--overlap', type=int, default=100, help='tile overlap (level pixels)')
    p.add_argument('--roi', default=None, help='x,y,w,h in level-0 pixels (default: all)')
    p.add_argument('--tissue-mask', nargs='?', const='saturation', default=None,
                   choices=TISSUE_METHODS, help='skip tiles without tissue (Otsu on the '
                   'saturation or the optical density of a thumbnail of the lowest level)')
    p.add_argument('--batch-size', type=int, default=4, help='tiles per model call')
    p.add_argument('--score-thr', type=float, default=0.5, help='detections: keep score > thr')
    p.add_argument('--nms-iou', type=float, default=0.5, help='detections: NMS IoU across tiles')
    p.add_argument('--max-per-tile', type=int, default=100,
                   help='detections: best boxes kept per tile (-1: all)')
    p.add_argument('--drop-border-boxes', action='store_true',
                   help='detections: drop boxes cut by an inner tile border when another '
                   'tile saw them whole (before NMS)')
    p.add_argument('--border-margin', type=float, default=2.0,
                   help='detections: margin (px) of --drop-border-boxes')
    p.add_argument('--min-size', type=int, default=0,
                   help='segmentation: drop instances with fewer pixels (inference level)')
    p.add_argument('--simplify', type=float, default=0.0,
                   help='segmentation: Douglas-Peucker tolerance of the outlines (level '
                   'pixels; 0: exact outlines, only collinear vertices dropped)')
    p.add_argument('--geometry', choices=['polygon', 'point'], default='polygon',
                   help='GeoJSON geometry: boxes / outlines, or centres')
    p.add_argument('--backend', choices=['auto', 'openslide', 'tifffile'], default='auto',
                   help='slide reader (auto: OpenSlide if installed)')
    p.add_argument('--thumbnail-size', type=int, default=1024,
                   help='longer side of the thumbnail for the tissue mask and the overview')
    p.add_argument('--channel-order', choices=['bgr', 'rgb'], default='bgr',
                   help="order fed to the model ('bgr': as mmcv's LoadImageFromFile)")
    p.add_argument('--device', default='cpu', help='torch device, e.g. cpu or cuda:0')
    p.add_argument('--no-progress', action='store_true', help='no progress bar')
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='override config settings, e.g. model.test_cfg.score_thr=0.1')
    return p.parse_args(argv)


def slide_stem(path: str) -> str:
    """File name without its extension (``a/b/slide.ome.tiff`` -> ``slide.ome``)."""
    return osp.splitext(osp.basename(path))[0]


def main(argv: Optional[List[str]] = None) -> dict:
    args = parse_args(argv)
    t0 = time.perf_counter()
    roi = parse_roi(args.roi)
    slide = open_slide(args.slide, args.backend)
    try:
        # slide, level and ROI are checked before the (slower) model loading
        region = region_in_level(slide, args.level, roi)
        t_open = time.perf_counter() - t0
        model, cfg, dataset_meta = load_model(args.config, args.checkpoint, args.device,
                                              args.cfg_options)
        names, colours = class_names_and_colours(model, cfg, dataset_meta)
        engine = SlideInference(
            model, tile_size=args.tile, overlap=args.overlap, batch_size=args.batch_size,
            score_thr=args.score_thr, max_per_tile=args.max_per_tile, nms_iou=args.nms_iou,
            drop_border_boxes=args.drop_border_boxes, border_margin=args.border_margin,
            min_size=args.min_size, simplify=args.simplify, channel_order=args.channel_order,
            progress=not args.no_progress)
        t_model = time.perf_counter() - t0 - t_open
        stem = osp.join(args.out, slide_stem(args.slide))
        paths = dict(geojson=stem + '.geojson', csv=stem + '.csv',
                     overview=stem + '_overview.png', summary=stem + '_summary.json')
        d = slide.level_downsamples[args.level]
        print(f'[mmhisto] {slide.path} ({slide.backend}): level {args.level} '
              f'{slide.level_dimensions[args.level][0]}x{slide.level_dimensions[args.level][1]}'
              f' (downsample {d:g}), region x={region[0]}, y={region[1]}, w={region[2]}, '
              f'h={region[3]} level pixels; {engine.task} model {osp.basename(args.config)}')
        with ObjectWriter(paths['geojson'], paths['csv'], names, colours,
                          geometry=args.geometry) as writer:
            run = engine.run(slide, args.level, roi, tissue=args.tissue_mask,
                             thumbnail_size=args.thumbnail_size, sink=writer.write)
        t1 = time.perf_counter()
        x, y, w, h = run.region
        region0 = [x * d, y * d, w * d, h * d]
        n_run, n_all = int(run.keep.sum()), len(run.keep)
        counts = {n: c for n, c in writer.counts.items()}
        title = (f'{osp.basename(args.slide)}: {writer.count} objects, level {args.level}, '
                 f'{n_run}/{n_all} tiles run' +
                 (f' (tissue mask: {args.tissue_mask})' if args.tissue_mask else ''))
        skipped = (run.tiles[~run.keep] + [x, y, x, y]) * d
        write_overview(paths['overview'], run.thumbnail, run.thumbnail_scale, run.centres,
                       run.labels, names, colours, run.mask, region0,
                       title + ('; grey: skipped tiles' if len(skipped) else ''), skipped)
        timings = dict(open_s=t_open, model_load_s=t_model, **run.timings,
                       overview_s=time.perf_counter() - t1)
        timings['wall_s'] = time.perf_counter() - t0
        summary = dict(
            slide=osp.abspath(args.slide), backend=slide.backend, task=engine.task,
            config=osp.abspath(args.config), checkpoint=osp.abspath(args.checkpoint),
            level=args.level, level_dimensions=list(slide.level_dimensions[args.level]),
            downsample=d, roi_level0=list(roi) if roi else None,
            region_level=[int(v) for v in run.region], region_level0=region0,
            tile=args.tile, overlap=args.overlap, batch_size=args.batch_size,
            score_thr=args.score_thr if engine.task == 'detection' else None,
            tissue_mask=(dict(method=args.tissue_mask, threshold=run.mask_threshold,
                              thumbnail_scale=run.thumbnail_scale,
                              tissue_fraction=float(run.mask.mean()))
                         if args.tissue_mask else None),
            tiles=dict(total=n_all, processed=n_run, skipped=n_all - n_run),
            objects=writer.count, counts=counts,
            removed_small=run.removed_small if engine.task == 'segmentation' else None,
            classes=names, timings_s={k: round(v, 4) for k, v in timings.items()},
            outputs={k: osp.abspath(v) for k, v in paths.items()})
        write_json(paths['summary'], summary)
    finally:
        slide.close()
    per = ', '.join(f'{k} {v}' for k, v in sorted(counts.items())) or 'none'
    print(f'[mmhisto] {n_run} of {n_all} tiles run ({n_all - n_run} skipped), '
          f'{writer.count} objects ({per}) in {timings["wall_s"]:.1f} s '
          f'(model forwards {timings["forward_s"]:.1f} s)')
    for k, v in paths.items():
        print(f'[mmhisto] {k}: {v}')
    return summary


if __name__ == '__main__':
    try:
        main()
    except (ValueError, FileNotFoundError) as err:
        print(f'[mmhisto] error: {err}', file=sys.stderr)
        sys.exit(1)
