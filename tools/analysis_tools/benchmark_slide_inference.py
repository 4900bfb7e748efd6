"""Speed of whole-slide inference: tiles per second and the cost of everything that is not
the model (reading / decoding tiles, tissue mask, tiling, NMS or stitching, export).

    python tools/analysis_tools/benchmark_slide_inference.py CONFIG CHECKPOINT SLIDE \
        [--level 0] [--tile 500 --overlap 100] [--roi x,y,w,h] [--tissue-mask] \
        [--batch-size 4] [--device cpu]

One run of :class:`projects.common.slide_inference.SlideInference` with the outputs of
``tools/infer_slide.py`` (GeoJSON + CSV + overview PNG, written to a temporary folder).
Inside that run the model calls (data preprocessor + ``predict``, batch by batch) are
timed; the overhead is the rest of the wall time:

    overhead = wall - sum(model forwards),   ratio = overhead / sum(model forwards)

(target: ratio <= 0.20). A warm-up model call on one tile precedes the timed run. The
peak resident memory of the process is printed too (``ru_maxrss``).
"""
import argparse
import os.path as osp
import resource
import tempfile
import time
from typing import List, Optional

import torch
from mmengine.config import DictAction

import projects  # noqa: F401
from projects.common.export import ObjectWriter, write_overview
from projects.common.slide import TISSUE_METHODS, open_slide
from projects.common.slide_inference import (SlideInference, class_names_and_colours,
                                             load_model, parse_roi, region_in_level)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description='Benchmark whole-slide inference overhead',
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('config')
    p.add_argument('checkpoint')
    p.add_argument('slide')
    p.add_argument('--level', type=int, default=0)
    p.add_argument('--tile', type=int, default=500)
    p.add_argument('--overlap', type=int, default=100)
    p.add_argument('--roi', default=None, help='x,y,w,h in level-0 pixels')
    p.add_argument('--tissue-mask', nargs='?', const='saturation', default=None,
                   choices=TISSUE_METHODS)
    p.add_argument('--batch-size', type=int, default=4)
    p.add_argument('--score-thr', type=float, default=0.5)
    p.add_argument('--backend', choices=['auto', 'openslide', 'tifffile'], default='auto')
    p.add_argument('--device', default='cpu')
    p.add_argument('--threads', type=int, default=None, help='torch.set_num_threads')
    p.add_argument('--cfg-options', nargs='+', action=DictAction)
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    roi = parse_roi(args.roi)
    slide = open_slide(args.slide, args.backend)
    region = region_in_level(slide, args.level, roi)
    model, cfg, meta = load_model(args.config, args.checkpoint, args.device, args.cfg_options)
    names, colours = class_names_and_colours(model, cfg, meta)
    engine = SlideInference(model, tile_size=args.tile, overlap=args.overlap,
                            batch_size=args.batch_size, score_thr=args.score_thr,
                            progress=False)
    # warm-up: one model call on one tile (lazy initialisation is not inference cost)
    x, y, w, h = region
    tile = slide.read_level(args.level, x, y, min(w, args.tile), min(h, args.tile))
    with torch.no_grad():
        if engine.task == 'detection':
            engine.det._predict_batch([tile], torch.device(args.device))
        else:
            engine._predict_seg([tile], torch.device(args.device))
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        with ObjectWriter(osp.join(out, 's.geojson'), osp.join(out, 's.csv'), names,
                          colours) as writer:
            run = engine.run(slide, args.level, roi, tissue=args.tissue_mask,
                             sink=writer.write)
        t1 = time.perf_counter()
        d = run.downsample
        write_overview(osp.join(out, 's.png'), run.thumbnail, run.thumbnail_scale, run.centres,
                       run.labels, names, colours, run.mask,
                       [v * d for v in run.region])
        wall = time.perf_counter() - t0
        overview_s = time.perf_counter() - t1
    slide.close()
    tm = run.timings
    fwd = tm['forward_s']
    n_run = int(run.keep.sum())
    overhead = wall - fwd
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(f'[mmhisto] {osp.basename(args.slide)} level {args.level}, region {w}x{h} px, '
          f'{engine.task} ({osp.basename(args.config)}), tile {args.tile} / overlap '
          f'{args.overlap}, batch {args.batch_size}, device {args.device}, '
          f'{torch.get_num_threads()} threads')
    print(f'  tiles run / skipped      {n_run} / {len(run.keep) - n_run}')
    print(f'  objects                  {writer.count}')
    print(f'  wall time                {wall:8.2f} s   ({n_run / wall:.2f} tiles/s)')
    print(f'  model forwards (sum)     {fwd:8.2f} s   ({n_run / max(fwd, 1e-9):.2f} tiles/s)')
    print(f'  overhead                 {overhead:8.2f} s')
    print(f'    thumbnail + mask       {tm["thumbnail_mask_s"]:8.2f} s')
    print(f'    reading tiles          {tm["read_s"]:8.2f} s')
    print(f'    merge / stitch         {tm["merge_s"]:8.2f} s')
    print(f'    GeoJSON + CSV          {tm["export_s"]:8.2f} s')
    print(f'    overview PNG           {overview_s:8.2f} s')
    rest = overhead - (tm['thumbnail_mask_s'] + tm['read_s'] + tm['merge_s'] + tm['export_s']
                       + overview_s)
    print(f'    other (selection, ...) {rest:8.2f} s')
    ratio = overhead / max(fwd, 1e-9)
    print(f'  overhead / forwards      {ratio:8.3f}   (target <= 0.20: '
          f'{"met" if ratio <= 0.20 else "NOT met"})')
    print(f'  peak RSS                 {rss:8.0f} MB')
    return dict(tiles=len(run.keep), processed=n_run, objects=writer.count, wall_s=wall,
                forward_s=fwd, overhead_s=overhead, ratio=ratio)


if __name__ == '__main__':
    main()
