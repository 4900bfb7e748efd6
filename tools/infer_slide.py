"""Run a trained detector or segmentor over whole-slide images, tile by tile.

    python tools/infer_slide.py CONFIG CHECKPOINT SLIDE [SLIDE ...] --out DIR
        [--level 0 | --mpp 0.5] [--tile 500 --overlap 100] [--roi x,y,w,h]
        [--tissue-mask [saturation|od]] [--batch-size 4] [--workers 2] [--score-thr 0.5]
        [--device cpu] [--overwrite] [--launcher none|pytorch] [--cfg-options k=v ...]
    bash tools/dist_infer_slide.sh CONFIG CHECKPOINT GPUS SLIDE [SLIDE ...] --out DIR ...

Each SLIDE is a slide file, a folder (its slide files), a glob or a ``.txt`` list (one
entry a line). Reads with OpenSlide (``pip install "mmhisto[slide]"``) or, without it,
with tifffile (pyramidal TIFF / SVS); never loads a whole level. Detectors (mmdet
configs): boxes merged across tile borders by NMS. Segmentors (mmseg configs): class maps
stitched tile by tile into instances (8-connected components per class), outlined as
polygons. Everything is written in level-0 pixels to DIR:

    <slide>.geojson        QuPath objects (File > Import objects): one detection per object,
                           Polygon (box / outline) or Point (--geometry point), with its
                           classification (name, colour) and measurements (score, ...)
    <slide>.csv            x,y,class,score (box centre / instance centroid)
    <slide>_overview.png   thumbnail + objects + tissue-mask outline
    <slide>_summary.json   tiles run / skipped, counts per class, timings (written last:
                           a slide with a summary is complete)
    cohort_summary.csv     one row per slide: status (done / failed / skipped), error,
                           level and mpp, tiles, objects per class and per mm^2 of tissue,
                           wall time, tiles/s

Every file is written under a temporary name and renamed when complete. A rerun skips the
slides whose summary is complete (``--overwrite`` redoes them) and refuses a DIR that
holds another model's results (another config, checkpoint or object-changing option).
Several slides: a slide that cannot be read or whose --level / --mpp cannot be met is a
failed row and the others go on; the exit status is 0 when every slide is done (or
skipped as complete) and 3 when any failed. One slide file: an error stops the tool with
exit status 1 and writes nothing. ``--launcher pytorch`` (under torchrun) deals the
slides to the ranks, largest file first; rank 0 writes cohort_summary.csv. ``--workers N``
reads tiles in N background processes; the next slide is opened and its thumbnail read,
and the previous slide's overview and summary written, while the model runs on the
current one.
"""
import argparse
import glob
import os
import os.path as osp
import sys
import time
import warnings
from typing import Callable, List, Optional

from mmengine.config import DictAction

import projects  # noqa: F401  (torch.load fix for mmengine checkpoints)
from projects.common.cohort import (EXIT_SLIDES_FAILED, cohort_row, deal_slides, expand_slides,
                                    failed_row, remove_stale_temporaries, results_fingerprint,
                                    slide_stem, tissue_area_mm2, write_cohort_summary)
from projects.common.export import ObjectWriter, write_overview
from projects.common.io import read_json, write_json
from projects.common.runner_utils import load_config
from projects.common.slide import (TISSUE_METHODS, choose_resolution, open_slide, slide_mpp,
                                   tissue_mask)
from projects.common.slide_inference import (SlideInference, class_names_and_colours,
                                             load_model, parse_roi, region_at)

# options that change the objects written (with the config and checkpoint: the fingerprint)
RESULT_OPTIONS = ('level', 'mpp', 'tile', 'overlap', 'roi', 'tissue_mask', 'score_thr',
                  'nms_iou', 'max_per_tile', 'drop_border_boxes', 'border_margin', 'min_size',
                  'simplify', 'geometry', 'thumbnail_size', 'channel_order')
# a model trained at train_mpp run on tiles more than this far from it: a warning
MPP_TOLERANCE = 0.10


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description='Whole-slide inference: detections / instances as QuPath GeoJSON + CSV',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('config', help='mmdet or mmseg config of the trained model')
    p.add_argument('checkpoint', help='checkpoint of that config (loaded strictly)')
    p.add_argument('slide', nargs='+', help='whole-slide images (SVS, pyramidal TIFF, any '
                   'OpenSlide format): files, folders, globs or .txt lists')
    p.add_argument('--out', required=True, help='output directory')
    p.add_argument('--level', type=int, default=None,
                   help='pyramid level to run the model on (default 0)')
    p.add_argument('--mpp', type=float, default=None,
                   help='run at this many microns per pixel: the pyramid level closest above '
                   'it, tiles resized to it (instead of --level)')
    p.add_argument('--tile', type=int, default=500, help='tile size (pixels of the model)')
    p.add_argument('--overlap', type=int, default=100, help='tile overlap (pixels)')
    p.add_argument('--roi', default=None, help='x,y,w,h in level-0 pixels (default: all)')
    p.add_argument('--tissue-mask', nargs='?', const='saturation', default=None,
                   choices=TISSUE_METHODS, help='skip tiles without tissue (Otsu on the '
                   'saturation or the optical density of a thumbnail of the lowest level)')
    p.add_argument('--batch-size', type=int, default=4, help='tiles per model call')
    p.add_argument('--workers', type=int, default=0,
                   help='background processes reading tiles ahead of the model (0: read in '
                   "the model's thread); with N >= 1 segmentation stitching and writing run "
                   'on a thread too')
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
    p.add_argument('--device', default='cpu',
                   help='torch device, e.g. cpu or cuda (under torchrun: cuda:LOCAL_RANK)')
    p.add_argument('--overwrite', action='store_true',
                   help="redo complete slides; replace another model's results in --out")
    p.add_argument('--launcher', choices=['none', 'pytorch'], default='none',
                   help='pytorch: one process per rank under torchrun, slides dealt to ranks')
    p.add_argument('--local_rank', '--local-rank', type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument('--no-progress', action='store_true', help='no progress bar')
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='override config settings, e.g. model.test_cfg.score_thr=0.1')
    args = p.parse_args(argv)
    if args.workers < 0:
        raise ValueError(f'--workers {args.workers}: must be >= 0')
    if args.mpp is not None and not args.mpp > 0:
        raise ValueError(f'--mpp {args.mpp}: must be a positive number of microns per pixel')
    if args.mpp is not None and args.level is not None:
        raise ValueError(f'--mpp {args.mpp} and --level {args.level}: give one of them')
    return args


def _single(specs: List[str]) -> bool:
    """One slide file named directly (not a folder, glob or list): the old behaviour,
    where an error stops the tool."""
    s = specs[0]
    return (len(specs) == 1 and not osp.isdir(s) and not s.lower().endswith('.txt')
            and not any(c in s for c in '*?['))


def _init_ranks(args) -> tuple:
    """(rank, world size, device); initialises the process group under torchrun."""
    if args.launcher == 'none':
        return 0, 1, args.device
    import torch
    import torch.distributed as dist
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    local = int(os.environ['LOCAL_RANK'])
    device = args.device
    if device.startswith('cuda') and torch.cuda.is_available():
        device = f'cuda:{local}'
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend='nccl' if device.startswith('cuda') else 'gloo')
    return dist.get_rank(), dist.get_world_size(), device


class Job:
    """What every slide of one call shares: the options, the model (loaded on first
    use), its class names, the fingerprint of its results."""

    def __init__(self, args, device: str) -> None:
        self.args, self.device = args, device
        self.roi = parse_roi(args.roi)
        if not osp.isfile(args.checkpoint):
            raise FileNotFoundError(f'{args.checkpoint}: checkpoint file not found')
        self.cfg = load_config(args.config, args.cfg_options)
        opts = {k: getattr(args, k) for k in RESULT_OPTIONS}
        self.fingerprint = results_fingerprint(self.cfg.pretty_text, args.checkpoint, opts)
        self.train_mpp = self.cfg.get('train_mpp', None)
        self.model = self.engine = None
        self.t_model = 0.0

    def load(self) -> None:
        if self.model is not None:
            return
        t0 = time.perf_counter()
        a = self.args
        self.model, cfg, dataset_meta = load_model(a.config, a.checkpoint, self.device,
                                                   a.cfg_options)
        self.names, self.colours = class_names_and_colours(self.model, cfg, dataset_meta)
        self.engine = SlideInference(
            self.model, tile_size=a.tile, overlap=a.overlap, batch_size=a.batch_size,
            score_thr=a.score_thr, max_per_tile=a.max_per_tile, nms_iou=a.nms_iou,
            drop_border_boxes=a.drop_border_boxes, border_margin=a.border_margin,
            min_size=a.min_size, simplify=a.simplify, channel_order=a.channel_order,
            progress=not a.no_progress, workers=a.workers)
        self.t_model = time.perf_counter() - t0

    def paths(self, slide_path: str) -> dict:
        stem = osp.join(self.args.out, slide_stem(slide_path))
        return dict(geojson=stem + '.geojson', csv=stem + '.csv',
                    overview=stem + '_overview.png', summary=stem + '_summary.json')

    def complete(self, slide_path: str) -> Optional[dict]:
        """The summary of a complete earlier run of this slide with this fingerprint."""
        paths = self.paths(slide_path)
        if self.args.overwrite or not osp.isfile(paths['summary']):
            return None
        try:
            summary = read_json(paths['summary'], 'slide summary')
        except ValueError:  # unreadable: the slide is redone
            return None
        if summary.get('fingerprint') != self.fingerprint:
            return None
        if not all(osp.isfile(p) for p in paths.values()):
            return None
        return summary

    def check_out_dir(self) -> None:
        """ValueError if DIR holds results with another fingerprint (unless --overwrite)."""
        if self.args.overwrite:
            return
        for path in sorted(glob.glob(osp.join(self.args.out, '*_summary.json'))):
            try:
                other = read_json(path, 'slide summary').get('fingerprint')
            except ValueError:  # an unreadable summary: that slide is redone
                continue
            if other != self.fingerprint:
                raise ValueError(
                    f'--out {self.args.out}: {osp.basename(path)} holds the results of '
                    f'another model or other options (fingerprint {other}, this run '
                    f'{self.fingerprint}: config {self.args.config}, checkpoint '
                    f'{self.args.checkpoint}); pass --overwrite to replace them, or choose '
                    'another --out')

    def prepare(self, slide_path: str) -> dict:
        """What a slide needs before the model: opened, its --level / --mpp and --roi
        checked, its thumbnail read (raises on any error). Several slides: run on a thread
        for the next slide while the model runs on the current one."""
        a = self.args
        t0 = time.perf_counter()
        slide = open_slide(slide_path, a.backend)
        try:
            if a.level is not None:
                slide.check_level(a.level, '--level')
            res = choose_resolution(slide, mpp=a.mpp, level=a.level)
            region = region_at(slide, res, self.roi)
            thumbnail = slide.thumbnail(a.thumbnail_size)
        except BaseException:
            slide.close()
            raise
        return dict(slide=slide, res=res, region=region, thumbnail=thumbnail,
                    prepare_s=time.perf_counter() - t0)

    def infer(self, slide_path: str) -> dict:
        """Run one slide and write all its outputs; returns its summary (raises on any
        error, writing nothing under a final name for that slide)."""
        return self.run(slide_path)(True)

    def run(self, slide_path: str, prepared=None, on_reading=None) -> Callable[[bool], dict]:
        """Run the model over one slide and write its GeoJSON and CSV; returns
        ``finish(inline)``, which writes the overview and, last, the summary, and returns
        the summary (several slides: it runs on a thread while the model runs on the next
        slide; ``inline``: it runs on the model's thread, whose time the summary's wall_s
        counts). ``prepared``: :meth:`prepare` of the slide, or a future of it (the wall
        time counts the wait for it); ``on_reading``: called once its tiles are being read
        (``SlideInference.run``)."""
        a = self.args
        t0 = time.perf_counter()
        if prepared is None:  # slide, level / mpp and ROI checked before the model loads
            prepared = self.prepare(slide_path)
        elif not isinstance(prepared, dict):
            prepared = prepared.result()
        slide, res, region = prepared['slide'], prepared['res'], prepared['region']
        try:
            t_wait = time.perf_counter() - t0  # 0 when the slide was prepared ahead
            self.load()
            self._check_mpp(slide_path, res)
            engine, names, colours = self.engine, self.names, self.colours
            paths = self.paths(slide_path)
            lw, lh = slide.level_dimensions[res.level]
            where = (f'{res.mpp:.4g} um/px (level {res.level}, resized by '
                     f'{res.level_downsample / res.scale:.4g})' if res.resized else
                     f'level {res.level} {lw}x{lh} (downsample {res.level_downsample:g}'
                     + (f', {res.mpp:.4g} um/px)' if res.mpp else ')'))
            print(f'[mmhisto] {slide.path} ({slide.backend}): {where}, region x={region[0]}, '
                  f'y={region[1]}, w={region[2]}, h={region[3]} pixels; {engine.task} model '
                  f'{osp.basename(a.config)}', flush=True)
            with ObjectWriter(paths['geojson'], paths['csv'], names, colours,
                              geometry=a.geometry) as writer:
                run = engine.run(slide, roi=self.roi, tissue=a.tissue_mask,
                                 thumbnail_size=a.thumbnail_size, sink=writer.write,
                                 resolution=res, thumbnail=prepared['thumbnail'],
                                 on_reading=on_reading)
            backend, mpp0 = slide.backend, slide_mpp(slide)
        finally:
            slide.close()
        t_model = self.t_model
        self.t_model = 0.0  # the model is loaded once per call
        held = time.perf_counter() - t0

        def finish(inline: bool) -> dict:
            t1 = time.perf_counter()
            d = run.downsample
            x, y, w, h = run.region
            region0 = [x * d, y * d, w * d, h * d]
            n_run, n_all = int(run.keep.sum()), len(run.keep)
            where = f'level {res.level}' if not res.resized else f'{res.mpp:.4g} um/px'
            title = (f'{osp.basename(slide_path)}: {writer.count} objects, {where}, '
                     f'{n_run}/{n_all} tiles run' +
                     (f' (tissue mask: {a.tissue_mask})' if a.tissue_mask else ''))
            skipped = (run.tiles[~run.keep] + [x, y, x, y]) * d
            write_overview(paths['overview'], run.thumbnail, run.thumbnail_scale, run.centres,
                           run.labels, names, colours, run.mask, region0,
                           title + ('; grey: skipped tiles' if len(skipped) else ''), skipped)
            mask = run.mask if run.mask is not None else tissue_mask(run.thumbnail)[0]
            tissue = tissue_area_mm2(mask, run.thumbnail_scale, region0, mpp0)
            finish_s = time.perf_counter() - t1
            timings = dict(open_s=t_wait, prepare_s=prepared['prepare_s'],
                           model_load_s=t_model, **run.timings, overview_s=finish_s)
            # the time the slide held the model's thread
            timings['wall_s'] = held + (finish_s if inline else 0.0)
            summary = dict(
                slide=osp.abspath(slide_path), backend=backend, task=engine.task,
                config=osp.abspath(a.config), checkpoint=osp.abspath(a.checkpoint),
                fingerprint=self.fingerprint, level=res.level,
                level_dimensions=[lw, lh], downsample=d, mpp=res.mpp, resized=res.resized,
                train_mpp=self.train_mpp, roi_level0=list(self.roi) if self.roi else None,
                region_level=[int(v) for v in run.region], region_level0=region0,
                tile=a.tile, overlap=a.overlap, batch_size=a.batch_size, workers=a.workers,
                score_thr=a.score_thr if engine.task == 'detection' else None,
                tissue_mask=(dict(method=a.tissue_mask, threshold=run.mask_threshold,
                                  thumbnail_scale=run.thumbnail_scale,
                                  tissue_fraction=float(run.mask.mean()))
                             if a.tissue_mask else None),
                tissue_mm2=tissue,
                tiles=dict(total=n_all, processed=n_run, skipped=n_all - n_run),
                objects=writer.count, counts=dict(writer.counts),
                removed_small=run.removed_small if engine.task == 'segmentation' else None,
                classes=names, timings_s={k: round(v, 4) for k, v in timings.items()},
                outputs={k: osp.abspath(v) for k, v in paths.items()})
            write_json(paths['summary'], summary)  # last: the slide is complete
            per = ', '.join(f'{k} {v}' for k, v in sorted(writer.counts.items())) or 'none'
            print(f'[mmhisto] {slide_path}: {n_run} of {n_all} tiles run ({n_all - n_run} '
                  f'skipped), {writer.count} objects ({per}) in {timings["wall_s"]:.1f} s '
                  f'(model forwards {timings["forward_s"]:.1f} s)', flush=True)
            return summary

        return finish

    def _check_mpp(self, slide_path: str, res) -> None:
        t = self.train_mpp
        if t and res.mpp and abs(res.mpp / float(t) - 1) > MPP_TOLERANCE:
            warnings.warn(f'{slide_path}: tiles at {res.mpp:.4g} um/px but the model was '
                          f'trained at {float(t):.4g} um/px (train_mpp of {self.args.config}); '
                          f'--mpp {float(t):g} reads the slide at that scale')


def _gather(rows: list, world: int) -> list:
    if world == 1:
        return rows
    import torch.distributed as dist
    every: list = [None] * world
    dist.all_gather_object(every, rows)
    return [r for part in every for r in part]


def run_cohort(job: Job, todo: List[str], rank: int) -> List[dict]:
    """The rows of ``todo`` (done or failed). Off the model's thread, on one helper
    thread in this order: the next slide is opened, checked and its thumbnail read, and
    the previous slide's overview and summary are written, while the model runs on the
    current slide. Both start once the current slide's reader processes are forked (a
    thread inside OpenSlide at a fork could leave a lock held in the child), and both are
    done before the next slide starts (it waits for its preparation, queued after them)."""
    from concurrent.futures import ThreadPoolExecutor
    rows: List[dict] = []
    pending: list = []  # (slide, start, future of the summary), oldest first

    def report(path: str) -> None:
        row = rows[-1]
        ok = row['status'] == 'done'
        print(f'[mmhisto] ({len(rows)}/{len(todo)}) {path}: '
              + ('done' if ok else f'FAILED: {row["error"]}'),
              file=sys.stdout if ok else sys.stderr, flush=True)

    def collect() -> None:
        path, t0, fut = pending.pop(0)
        try:
            rows.append(cohort_row(fut.result(), 'done', rank))
        except Exception as err:  # writing its overview or summary failed
            rows.append(failed_row(path, err, rank, time.perf_counter() - t0))
        report(path)

    with ThreadPoolExecutor(1) as helper:
        nxt = [helper.submit(job.prepare, todo[0])]
        finish_prev: list = []
        for k, path in enumerate(todo):
            t0 = time.perf_counter()
            cur = nxt[0]

            def background(k: int = k) -> None:  # the reader processes are forked
                for path_, t_, fin in finish_prev:
                    pending.append((path_, t_, helper.submit(fin, False)))
                finish_prev.clear()
                if k + 1 < len(todo):
                    nxt[0] = helper.submit(job.prepare, todo[k + 1])

            try:
                finish = job.run(path, cur, background)
            except Exception as err:  # one bad slide: its row says why, the others go on
                if nxt[0] is cur:  # it failed before its tiles were read
                    background()
                rows.append(failed_row(path, err, rank, time.perf_counter() - t0))
                report(path)
                continue
            finish_prev.append((path, t0, finish))
            while pending and pending[0][2].done():
                collect()
        for path, t0, fin in finish_prev:  # the last slide's
            pending.append((path, t0, helper.submit(fin, True)))
        while pending:
            collect()
    return rows


def main(argv: Optional[List[str]] = None):
    """One slide file: its summary (errors raise). Otherwise a dict with ``rows`` (the
    cohort summary), ``failed`` (count) and ``exit_code``."""
    args = parse_args(argv)
    single = _single(args.slide)
    slides = expand_slides(args.slide)
    rank, world, device = _init_ranks(args)
    job = Job(args, device)
    job.check_out_dir()
    if rank == 0 and osp.isdir(args.out):
        for p in remove_stale_temporaries(args.out):
            print(f'[mmhisto] removed {p} (left by an interrupted run)', flush=True)
    if world > 1:
        import torch.distributed as dist
        dist.barrier()  # no rank writes before the stale temporaries are gone
    mine = deal_slides(slides, world)[rank]
    rows, summaries = [], []
    if not single:
        print(f'[mmhisto] rank {rank}/{world}: {len(mine)} of {len(slides)} slides -> '
              f'{args.out}', flush=True)
    todo = []
    for path in mine:
        done = job.complete(path)
        if done is None:
            todo.append(path)
            continue
        print(f'[mmhisto] {path}: complete in {args.out}, skipped (--overwrite redoes it)',
              flush=True)
        rows.append(dict(cohort_row(done, 'skipped', rank), slide=osp.abspath(path)))
        summaries.append(done)
    if single and todo:
        summaries.append(job.infer(todo[0]))  # errors stop the tool, as for one slide
        rows.append(cohort_row(summaries[-1], 'done', rank))
    elif todo:
        rows += run_cohort(job, todo, rank)
    rows = _gather(rows, world)
    order = {osp.abspath(p): i for i, p in enumerate(slides)}
    rows.sort(key=lambda r: order[r['slide']])
    names = job.names if job.model is not None else (
        summaries[0]['classes'] if summaries else None)
    if names is None:  # every slide failed before the model was needed
        job.load()
        names = job.names
    out_csv = osp.join(args.out, 'cohort_summary.csv')
    if rank == 0:
        write_cohort_summary(out_csv, rows, names)
    failed = sum(r['status'] == 'failed' for r in rows)
    if world > 1:
        from projects.common.runner_utils import close_process_group
        close_process_group()
    if single and summaries:  # (under torchrun the other ranks had no slide)
        for key, path in job.paths(slides[0]).items():
            print(f'[mmhisto] {key}: {path}')
        return summaries[0]
    status = {s: sum(r['status'] == s for r in rows) for s in ('done', 'skipped', 'failed')}
    if rank == 0:
        print(f'[mmhisto] {len(rows)} slides: {status["done"]} done, {status["skipped"]} '
              f'skipped (complete), {failed} failed -> {out_csv}', flush=True)
    return dict(rows=rows, failed=failed, exit_code=EXIT_SLIDES_FAILED if failed else 0)


if __name__ == '__main__':
    try:
        result = main()
    except (ValueError, FileNotFoundError) as err:
        print(f'[mmhisto] error: {err}', file=sys.stderr)
        sys.exit(1)
    sys.exit(result.get('exit_code', 0))  # EXIT_SLIDES_FAILED (3) when a slide failed
