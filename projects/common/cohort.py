"""Many slides through one model: the slide list, its split across ranks, resuming, and the
cohort summary (``tools/infer_slide.py SLIDE [SLIDE...]``).

* :func:`expand_slides`: files, folders (the slide files directly inside), globs and
  ``.txt`` lists (one entry a line, ``#`` comments; relative entries are relative to the
  list) -> one sorted list without duplicates. A named file that does not exist stays in
  the list (it becomes a failed row); a glob that matches nothing, an empty folder or
  list, and an empty result are errors naming the argument.
* :func:`deal_slides`: largest first (file size), each slide to the rank with the least
  work so far, so that the ranks finish together (longest-processing-time rule).
* :func:`results_fingerprint`: what makes two runs' outputs comparable (the resolved
  config, the checkpoint's SHA-256 and the options that change the objects); an output
  folder whose summaries carry another fingerprint belongs to another model.
* :func:`cohort_row` / :func:`write_cohort_summary`: one CSV row per slide.
"""
import csv
import glob
import hashlib
import json
import os
import os.path as osp
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np

from .io import atomic_write

__all__ = [
    'SLIDE_EXTENSIONS', 'EXIT_SLIDES_FAILED', 'expand_slides', 'slide_stem', 'deal_slides',
    'results_fingerprint', 'tissue_area_mm2', 'cohort_row', 'failed_row',
    'cohort_columns', 'write_cohort_summary', 'remove_stale_temporaries'
]

# what a folder contributes (OpenSlide's formats plus plain TIFF)
SLIDE_EXTENSIONS = ('.svs', '.tif', '.tiff', '.ndpi', '.mrxs', '.scn', '.vms', '.vmu',
                    '.svslide', '.bif', '.qptiff')
# exit status of tools/infer_slide.py when at least one slide failed (the others are done)
EXIT_SLIDES_FAILED = 3
STATUSES = ('done', 'failed', 'skipped')


def slide_stem(path: str) -> str:
    """File name without its extension (``a/b/slide.ome.tiff`` -> ``slide.ome``)."""
    return osp.splitext(osp.basename(path))[0]


def _is_slide(path: str) -> bool:
    return osp.isfile(path) and path.lower().endswith(SLIDE_EXTENSIONS)


def _has_magic(text: str) -> bool:
    return any(c in text for c in '*?[')


def _expand_one(spec: str, base: str, seen_lists: tuple) -> List[str]:
    path = spec if osp.isabs(spec) else osp.join(base, spec)
    if _has_magic(spec):
        found = sorted(p for p in glob.glob(path, recursive=True) if osp.isfile(p))
        if not found:
            raise ValueError(f'{spec}: the glob matches no file')
        return found
    if osp.isdir(path):
        found = sorted(osp.join(path, f) for f in os.listdir(path)
                       if _is_slide(osp.join(path, f)))
        if not found:
            raise ValueError(f'{spec}: the folder holds no slide file '
                             f'({", ".join(SLIDE_EXTENSIONS)})')
        return found
    if spec.lower().endswith('.txt'):
        if not osp.isfile(path):
            raise FileNotFoundError(f'{spec}: slide list not found')
        if osp.abspath(path) in seen_lists:
            raise ValueError(f'{spec}: the slide list includes itself')
        with open(path) as f:
            entries = [ln.split('#', 1)[0].strip() for ln in f]
        entries = [e for e in entries if e]
        if not entries:
            raise ValueError(f'{spec}: the slide list is empty')
        out = []
        for e in entries:
            out += _expand_one(e, osp.dirname(path), seen_lists + (osp.abspath(path), ))
        return out
    return [path]  # a slide file (a missing one becomes a failed row)


def expand_slides(specs: Sequence[str]) -> List[str]:
    """The slides named by ``specs`` (module docstring), sorted, each once."""
    if not specs:
        raise ValueError('SLIDE: no slide given (files, folders, globs or .txt lists)')
    found: List[str] = []
    for spec in specs:
        found += _expand_one(str(spec), '', ())
    slides = sorted(set(osp.normpath(p) for p in found))
    stems: Dict[str, str] = {}
    for p in slides:
        other = stems.setdefault(slide_stem(p), p)
        if other != p:
            raise ValueError(f'{other} and {p}: two slides with the same name would write the '
                             'same output files; rename one or run them into separate --out')
    return slides


def deal_slides(slides: Sequence[str], world_size: int,
                sizes: Optional[Sequence[float]] = None) -> List[List[str]]:
    """The slides of each rank: largest first (``sizes``, default the file sizes; a
    missing file counts 0), each to the rank with the least total size so far (ties: the
    lower rank). Every slide goes to exactly one rank; each rank's list keeps that order."""
    if sizes is None:
        sizes = [osp.getsize(p) if osp.isfile(p) else 0 for p in slides]
    order = sorted(range(len(slides)), key=lambda i: (-sizes[i], slides[i]))
    load = [0.0] * world_size
    out: List[List[str]] = [[] for _ in range(world_size)]
    for i in order:
        r = min(range(world_size), key=lambda k: (load[k], k))
        out[r].append(slides[i])
        load[r] += sizes[i]
    return out


def _file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def results_fingerprint(cfg_text: str, checkpoint: str, settings: dict) -> str:
    """SHA-256 (16 hex digits) of the resolved config text, the checkpoint's bytes and the
    ``settings`` that change the objects (JSON, sorted keys)."""
    h = hashlib.sha256()
    h.update(cfg_text.encode())
    h.update(_file_sha256(checkpoint).encode())
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def remove_stale_temporaries(out_dir: str) -> List[str]:
    """Delete the ``.tmp_*`` files a killed run left in ``out_dir`` (the temporary names of
    the atomic writers); returns them. Call it before any rank starts writing."""
    stale = sorted(glob.glob(osp.join(out_dir, '.tmp_*')))
    for p in stale:
        os.remove(p)
    return stale


def tissue_area_mm2(mask: np.ndarray, mask_scale: float, region0: Sequence[float],
                    mpp: Optional[float]) -> Optional[float]:
    """Tissue area (mm^2) inside ``region0`` (level-0 x, y, w, h): the mask pixels whose
    centre lies in the region, each mask_scale^2 level-0 pixels of mpp^2 um^2; None
    without an mpp."""
    if mpp is None or mask is None:
        return None
    h, w = mask.shape
    x, y, rw, rh = (float(v) for v in region0)
    cx = (np.arange(w) + 0.5) * mask_scale
    cy = (np.arange(h) + 0.5) * mask_scale
    inside = ((cy >= y) & (cy < y + rh))[:, None] & ((cx >= x) & (cx < x + rw))[None, :]
    n = int(np.count_nonzero(mask & inside))
    return n * (mask_scale * mpp) ** 2 / 1e6


def cohort_columns(class_names: Sequence[str]) -> List[str]:
    """The columns of ``cohort_summary.csv`` for a model with these classes."""
    return (['slide', 'status', 'error', 'rank', 'level', 'mpp', 'scale', 'tiles_run',
             'tiles_skipped', 'objects'] + [f'n_{c}' for c in class_names]
            + ['tissue_mm2', 'objects_per_mm2'] + [f'per_mm2_{c}' for c in class_names]
            + ['wall_s', 'tiles_per_s'])


def _num(v: Optional[float], nd: int) -> str:
    return '' if v is None else f'{float(v):.{nd}f}'


def cohort_row(summary: dict, status: str, rank: int) -> Dict[str, str]:
    """The row of a finished slide from its ``<slide>_summary.json`` content."""
    counts = summary.get('counts', {})
    tissue = summary.get('tissue_mm2')
    wall = summary['timings_s']['wall_s']
    run = summary['tiles']['processed']
    row = dict(slide=summary['slide'], status=status, error='', rank=str(rank),
               level=str(summary['level']), mpp=_num(summary.get('mpp'), 4),
               scale=_num(summary.get('downsample'), 4), tiles_run=str(run),
               tiles_skipped=str(summary['tiles']['skipped']), objects=str(summary['objects']),
               tissue_mm2=_num(tissue, 6),
               objects_per_mm2=_num(summary['objects'] / tissue if tissue else None, 2),
               wall_s=_num(wall, 2), tiles_per_s=_num(run / wall if wall > 0 else None, 2))
    for c in summary.get('classes', []):
        n = counts.get(c, 0)
        row[f'n_{c}'] = str(n)
        row[f'per_mm2_{c}'] = _num(n / tissue if tissue else None, 2)
    return row


def failed_row(slide: str, err: BaseException, rank: int, wall_s: float) -> Dict[str, str]:
    """The row of a slide that failed: its error (type and message, on one line)."""
    msg = str(err) if isinstance(err, (ValueError, FileNotFoundError)) else \
        f'{type(err).__name__}: {err}'
    return dict(slide=osp.abspath(slide), status='failed', error=' '.join(msg.split()),
                rank=str(rank), wall_s=_num(wall_s, 2))


def write_cohort_summary(path: str, rows: Iterable[Dict[str, str]],
                         class_names: Sequence[str]) -> None:
    """``cohort_summary.csv`` (atomically): one row per slide, empty cells where a value
    does not apply (a failed slide, a slide without mpp)."""
    cols = cohort_columns(class_names)

    def write(tmp: str) -> None:
        with open(tmp, 'w', newline='') as f:
            w = csv.DictWriter(f, fieldnames=cols, restval='', extrasaction='ignore')
            w.writeheader()
            for row in rows:
                if row['status'] not in STATUSES:
                    raise ValueError(f'{row["slide"]}: status {row["status"]!r} not in '
                                     f'{STATUSES}')
                w.writerow(row)

    atomic_write(path, write)
