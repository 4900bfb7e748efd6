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
peak resident memory of the process is printed too (``ru_maxrss``). ``--workers N`` reads
the tiles in N background processes (``tools/infer_slide.py --workers``).

``--ratios`` adds the pipeline ratios of issue 19, measured in the same call:

* ceiling: with a null model (no objects, no cost), tiles/s of the whole pipeline over
  tiles/s of raw reads of the same tiles with the same number of reader processes
  (target >= 0.9); printed for the tile loop and with the per-slide thumbnail; these
  runs are short, so each is the best of ``--repeat``;
* wall / pure model forwards of the real model with ``--workers`` (target <= 1.05);
* scaling: null-model tiles/s with 2 reader processes over 1;
* ``--cohort K``: the slide plus K - 1 pyramids cut from it (uncompressed tiled TIFF,
  3 levels) through ``tools/infer_slide.py`` with 1 and with 2 ranks (torchrun, gloo on
  a CPU; one torch thread per rank in both): tiles/s of the slide processing (the
  longest rank) and of the whole command.
"""
import argparse
import csv
import os
import os.path as osp
import resource
import socket
import subprocess
import sys
import tempfile
import time
from typing import List, Optional

import torch
from mmengine.config import DictAction

import projects  # noqa: F401
from projects.common.export import ObjectWriter, write_overview
from projects.common.slide import TISSUE_METHODS, open_slide
from projects.common.slide_inference import (RegionTiles, SlideInference, TileLoader,
                                             class_names_and_colours, load_model, parse_roi,
                                             region_in_level)

TOOLS = osp.dirname(osp.dirname(osp.abspath(__file__)))


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
    p.add_argument('--workers', type=int, default=0,
                   help='background processes reading tiles (infer_slide.py --workers)')
    p.add_argument('--ratios', action='store_true',
                   help='also the pipeline ratios: null-model ceiling vs raw reads, 1 vs 2 '
                   'reader processes (and --cohort)')
    p.add_argument('--repeat', type=int, default=3,
                   help='with --ratios: the null-model and raw-read runs are short; each is '
                   'the best (fastest) of this many')
    p.add_argument('--cohort', type=int, default=0,
                   help='with --ratios: this many slides (the slide + generated pyramids) '
                   'through infer_slide.py with 1 and 2 ranks')
    p.add_argument('--cfg-options', nargs='+', action=DictAction)
    return p.parse_args(argv)


def null_detector():
    """A detector that returns no object at no cost (no data preprocessing beyond
    mmengine's device cast): what is left of a run is the pipeline."""
    from mmdet.models.detectors import BaseDetector
    from mmengine.model import BaseDataPreprocessor
    from mmengine.structures import InstanceData

    class NullDetector(BaseDetector):

        def __init__(self) -> None:
            super().__init__(data_preprocessor=BaseDataPreprocessor())

        def predict(self, batch_inputs, batch_data_samples, rescale=True):
            for sample in batch_data_samples:
                inst = InstanceData()
                inst.bboxes, inst.scores = torch.zeros((0, 4)), torch.zeros(0)
                inst.labels = torch.zeros(0, dtype=torch.int64)
                sample.pred_instances = inst
            return batch_data_samples

        def loss(self, *args, **kwargs):
            raise NotImplementedError

        def _forward(self, *args, **kwargs):
            raise NotImplementedError

        def extract_feat(self, *args, **kwargs):
            raise NotImplementedError

    return NullDetector().eval()


def timed_run(engine: SlideInference, args, roi, names, colours, overview: bool = True):
    """One run on a freshly opened slide (no reader cache carried over), with the outputs
    of infer_slide.py in a temporary folder: (run, objects, wall s, overview s)."""
    slide = open_slide(args.slide, args.backend)
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        with ObjectWriter(osp.join(out, 's.geojson'), osp.join(out, 's.csv'), names,
                          colours) as writer:
            run = engine.run(slide, args.level, roi, tissue=args.tissue_mask,
                             sink=writer.write)
        t1 = time.perf_counter()
        if overview:
            d = run.downsample
            write_overview(osp.join(out, 's.png'), run.thumbnail, run.thumbnail_scale,
                           run.centres, run.labels, names, colours, run.mask,
                           [v * d for v in run.region])
        wall = time.perf_counter() - t0
    slide.close()
    return run, writer.count, wall, time.perf_counter() - t1


def raw_reads(args, run, workers: int) -> float:
    """Seconds to read the tiles of ``run`` (the same ones, the same batches) with
    ``workers`` reader processes (0: in this thread), from a freshly opened slide."""
    slide = open_slide(args.slide, args.backend)
    reader = RegionTiles(slide, run.resolution, run.region[:2])
    tiles = run.tiles[run.keep]
    t0 = time.perf_counter()
    if workers:
        for _ in TileLoader(reader, tiles, args.batch_size, workers):
            pass
    else:
        for x0, y0, x1, y1 in tiles:
            reader(int(x0), int(y0), int(x1 - x0), int(y1 - y0))
    t = time.perf_counter() - t0
    slide.close()
    return t


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def make_pyramids(slide_path: str, backend: str, k: int, folder: str) -> List[str]:
    """``k`` uncompressed 3-level tiled pyramids cut from level 0 of the slide, each a
    quarter smaller in area than the previous (starting at three quarters of the slide)."""
    import numpy as np
    import tifffile
    slide = open_slide(slide_path, backend)
    w0, h0 = slide.dimensions
    paths = []
    for i in range(k):
        f = (0.75 ** (i + 1)) ** 0.5
        w, h = int(w0 * f) // 4 * 4, int(h0 * f) // 4 * 4
        img = slide.read_level(0, (w0 - w) // 2, (h0 - h) // 2, w, h)
        path = osp.join(folder, f'pyramid{i}_{w}x{h}.tif')
        with tifffile.TiffWriter(path) as tw:
            for lv in range(3):
                tw.write(np.ascontiguousarray(img), tile=(256, 256), photometric='rgb',
                         subfiletype=1 if lv else 0, metadata=None)
                img = img.reshape(img.shape[0] // 2, 2, img.shape[1] // 2, 2, 3).mean(
                    (1, 3)).round().astype(np.uint8) if lv < 2 else img
        paths.append(path)
    slide.close()
    return paths


def cohort_rate(args, slides: List[str], ranks: int, out: str) -> dict:
    """tools/infer_slide.py over ``slides`` with ``ranks`` processes: tiles/s of the slide
    processing (total tiles / the longest rank's summed slide wall times) and of the whole
    command (start-up and model loading included)."""
    tool = osp.join(TOOLS, 'infer_slide.py')
    opts = [args.config, args.checkpoint, *slides, '--out', out, '--tile', str(args.tile),
            '--overlap', str(args.overlap), '--batch-size', str(args.batch_size),
            '--workers', str(args.workers), '--score-thr', str(args.score_thr),
            '--device', args.device, '--no-progress', '--backend', args.backend]
    if args.tissue_mask:
        opts += ['--tissue-mask', args.tissue_mask]
    if ranks == 1:
        cmd = [sys.executable, tool, *opts]
    else:
        cmd = [sys.executable, '-m', 'torch.distributed.run', f'--nproc_per_node={ranks}',
               f'--master_port={_free_port()}', tool, *opts, '--launcher', 'pytorch']
    # one thread per rank in both runs (torchrun's default for several ranks): the ranks,
    # not the threads, are what is compared
    env = dict(os.environ, OMP_NUM_THREADS='1',
               PYTHONPATH=os.pathsep.join([osp.dirname(TOOLS), os.environ.get('PYTHONPATH', '')]))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f'{" ".join(cmd)} exited {proc.returncode}:\n{proc.stderr[-3000:]}')
    with open(osp.join(out, 'cohort_summary.csv'), newline='') as f:
        rows = list(csv.DictReader(f))
    span = [0.0] * ranks
    for r in rows:
        span[int(r['rank'])] += float(r['wall_s'])
    tiles = sum(int(r['tiles_run']) for r in rows)
    return dict(tiles=tiles, span_s=max(span), command_s=wall, tps=tiles / max(span),
                command_tps=tiles / wall)


def pipeline_ratios(args, roi, real: dict) -> dict:
    """The ratios of issue 19 (module docstring), printed and returned."""
    workers = args.workers
    names, colours = ['object'], [(255, 0, 0)]

    def null(w: int):
        engine = SlideInference(null_detector(), tile_size=args.tile, overlap=args.overlap,
                                batch_size=args.batch_size, progress=False, workers=w)
        best = None
        for _ in range(args.repeat):
            run, _, wall, _ = timed_run(engine, args, roi, names, colours, overview=False)
            loop = wall - run.timings['thumbnail_mask_s']
            if best is None or loop < best[2]:
                best = (run, wall, loop)
        return best

    run, _, _ = null(workers)  # warm-up: the file in the page cache, reader processes
    n = int(run.keep.sum())
    _, wall, loop = null(workers)
    raw = min(raw_reads(args, run, workers) for _ in range(args.repeat))
    out = dict(tiles=n, null_wall_s=wall, null_loop_s=loop, raw_s=raw,
               ceiling=raw / loop, ceiling_with_thumbnail=raw / wall)
    print(f'pipeline ratios ({n} tiles, {workers} reader process(es))')
    print(f'  null model, tile loop    {n / loop:8.2f} tiles/s ({n / wall:.2f} with the '
          'thumbnail + mask)')
    print(f'  raw reads, same tiles    {n / raw:8.2f} tiles/s')
    print(f'  ceiling = pipeline / raw {out["ceiling"]:8.3f}   (target >= 0.9: '
          f'{"met" if out["ceiling"] >= 0.9 else "NOT met"}; '
          f'{out["ceiling_with_thumbnail"]:.3f} with the thumbnail)')
    print(f'  real model: wall / forwards {real["wall_s"] / real["forward_s"]:.3f} (tile loop '
          f'{real["loop_s"] / real["forward_s"]:.3f}; target <= 1.05)')
    one = null(1)[2]
    two = null(2)[2]
    out.update(null_tps_1=n / one, null_tps_2=n / two, scaling_2_over_1=one / two)
    print(f'  null model, 1 vs 2 reader processes: {n / one:.2f} vs {n / two:.2f} tiles/s '
          f'-> x{one / two:.2f}')
    if args.cohort:
        with tempfile.TemporaryDirectory() as tmp:
            slides = [args.slide] + make_pyramids(args.slide, args.backend, args.cohort - 1, tmp)
            c1 = cohort_rate(args, slides, 1, osp.join(tmp, 'r1'))
            c2 = cohort_rate(args, slides, 2, osp.join(tmp, 'r2'))
        out.update(cohort_1=c1, cohort_2=c2, cohort_scaling=c2['tps'] / c1['tps'])
        print(f'  cohort of {len(slides)} slides ({c1["tiles"]} tiles, 1 thread per rank): 1 rank '
              f'{c1["tps"]:.2f} tiles/s ({c1["command_tps"]:.2f} for the whole command), '
              f'2 ranks {c2["tps"]:.2f} ({c2["command_tps"]:.2f}) -> x{c2["tps"] / c1["tps"]:.2f}')
    return out


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
                            progress=False, workers=args.workers)
    # warm-up: one model call on one tile (lazy initialisation is not inference cost)
    x, y, w, h = region
    tile = slide.read_level(args.level, x, y, min(w, args.tile), min(h, args.tile))
    with torch.no_grad():
        if engine.task == 'detection':
            engine.det._predict_batch([tile], torch.device(args.device))
        else:
            engine._predict_seg([tile], torch.device(args.device))
    slide.close()
    run, count, wall, overview_s = timed_run(engine, args, roi, names, colours)
    tm = run.timings
    fwd = tm['forward_s']
    n_run = int(run.keep.sum())
    overhead = wall - fwd
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(f'[mmhisto] {osp.basename(args.slide)} level {args.level}, region {w}x{h} px, '
          f'{engine.task} ({osp.basename(args.config)}), tile {args.tile} / overlap '
          f'{args.overlap}, batch {args.batch_size}, device {args.device}, '
          f'{torch.get_num_threads()} threads, {args.workers} reader process(es)')
    print(f'  tiles run / skipped      {n_run} / {len(run.keep) - n_run}')
    print(f'  objects                  {count}')
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
    result = dict(tiles=len(run.keep), processed=n_run, objects=count, wall_s=wall,
                  forward_s=fwd, overhead_s=overhead, ratio=ratio,
                  loop_s=wall - overview_s - tm['thumbnail_mask_s'])
    if args.ratios:
        result['ratios'] = pipeline_ratios(args, roi, result)
    return result


if __name__ == '__main__':
    main()
