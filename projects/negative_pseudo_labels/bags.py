"""Bags of patches with class proportions: patch grids, tissue masks, ratio CSVs, bag JSON.

Tokunaga et al., "Negative Pseudo Labeling using Class Proportion for Semantic Segmentation
in Pathology", ECCV 2020, sect. 5.1: every slide (a *bag*) is cut by a non-overlapping
sliding window of p x p pixels; fully annotated slides give labelled patches, weakly
annotated slides only give the class ratio of the slide (pathologists' percentages) and
their tumour-region patches (found there by a tissue / tumour proposal CNN).

The on-disk layout (``<split>.json`` + ``images/`` + ``masks/``) is described in
``projects/negative_pseudo_labels/README.md``; :func:`write_bag_json` writes it and
:func:`read_bag_json` validates it. Patch order everywhere: row-major over the grid
(by y, then x). Coordinates: (x, y) = (column, row) of the patch's top-left pixel.
Numpy / scipy / skimage only (no torch).
"""
import csv
import os.path as osp
from typing import Dict, List, Sequence

import numpy as np

from projects.common import io
from projects.common.io import read_json, write_json

__all__ = ['NoPatchError', 'patch_grid', 'tissue_grid', 'tissue_mask', 'read_ratio_csv',
           'write_bag_json', 'read_bag_json', 'prepare_out_dir', 'BAG_OUTPUTS', 'SPLITS']

SPLITS = ('train', 'val', 'test')
#: Entries of a bag data root written by the converters (removed by ``--overwrite``).
BAG_OUTPUTS = ('images', 'masks', 'train.json', 'val.json', 'test.json', 'weak_truth.json',
               'summary.json')
_BAG_KEYS = ('name', 'img_path', 'mask_path', 'labelled', 'height', 'width', 'ratio',
             'patches', 'labels', 'pixel_counts')
_META_KEYS = ('classes', 'patch_size', 'ignore_index', 'min_tissue')


class NoPatchError(ValueError):
    """No grid patch of a slide reaches the tissue threshold (a ValueError, so callers
    that do not expect it still fail loudly; converters may catch it to skip a slide)."""


def _check_grid_args(shape: tuple, patch_size: int, min_tissue: float, source: str) -> None:
    if isinstance(patch_size, bool) or not isinstance(patch_size, (int, np.integer)) \
            or patch_size < 1:
        raise ValueError(f'{source}: patch_size must be a positive int, got {patch_size!r}')
    if not (isinstance(min_tissue, (int, float, np.floating)) and 0 < min_tissue <= 1):
        raise ValueError(f'{source}: min_tissue must lie in (0, 1], got {min_tissue!r}')
    h, w = shape
    if h < patch_size or w < patch_size:
        raise NoPatchError(f'{source}: the {w}x{h} (WxH) image is smaller than one '
                           f'{patch_size}x{patch_size} patch')


def _block_counts(hit: np.ndarray, patch_size: int) -> np.ndarray:
    """Number of True pixels of ``hit`` (H, W) bool in each p x p block of the
    non-overlapping grid (blocks that do not fit are dropped), row-major (gh * gw,)."""
    p = patch_size
    gh, gw = hit.shape[0] // p, hit.shape[1] // p
    blocks = hit[:gh * p, :gw * p].reshape(gh, p, gw, p)
    return blocks.sum(axis=(1, 3), dtype=np.int64).ravel()


def _grid_xy(index: np.ndarray, gw: int, patch_size: int) -> np.ndarray:
    return np.stack([(index % gw) * patch_size, (index // gw) * patch_size], 1).astype(np.int64)


def _no_patch_message(source: str, tissue_px: np.ndarray, patch_size: int,
                      min_tissue: float, what: str) -> str:
    frac = tissue_px / float(patch_size * patch_size)
    edges = [0.0, 0.25, 0.5, 0.75, 1.0 + 1e-9]
    hist = np.histogram(frac, bins=edges)[0]
    parts = ', '.join(f'{n} in [{lo:.2f}, {min(hi, 1.0):.2f}{"]" if hi > 1 else ")"}'
                      for n, lo, hi in zip(hist, edges[:-1], edges[1:]))
    return (f'{source}: no {patch_size}x{patch_size} patch has a {what} fraction >= '
            f'{min_tissue} ({len(frac)} grid patches, max fraction '
            f'{frac.max(initial=0.0):.3f}; fractions: {parts})')


def patch_grid(mask: np.ndarray, patch_size: int, num_classes: int, ignore_index: int = 255,
               min_tissue: float = 0.5, source: str = 'mask') -> dict:
    """Labelled patches of a region mask (Tokunaga et al. 2020, sect. 5.1 sliding window).

    mask: (H, W) integer array, values 0..C-1 (class) or ``ignore_index``. The grid is
    non-overlapping; patches that do not fit entirely are dropped. A patch is kept when
    its non-ignore fraction is >= ``min_tissue``. Returns ``patches`` (K, 2) int64 [x, y]
    (row-major order), ``labels`` (K,) int64 majority class of the non-ignore pixels (ties
    -> lowest class index), ``pixel_counts`` (K, C) int64, ``ratio`` (C,) float64 = class
    pixel areas over all non-ignore pixels of the whole mask (also outside kept patches).
    Raises ValueError naming ``source`` for bad values, :class:`NoPatchError` if no patch
    qualifies.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f'{source}: expected a 2-D region mask, got shape {mask.shape}')
    if mask.dtype == bool or not np.issubdtype(mask.dtype, np.integer):
        raise ValueError(f'{source}: expected an integer region mask, got {mask.dtype}')
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) \
            or num_classes < 1:
        raise ValueError(f'{source}: num_classes must be a positive int, got {num_classes!r}')
    if 0 <= ignore_index < num_classes:
        raise ValueError(f'{source}: ignore_index {ignore_index} is a class index '
                         f'(0..{num_classes - 1})')
    bad = ((mask < 0) | (mask >= num_classes)) & (mask != ignore_index)
    if bad.any():
        vals = np.unique(mask[bad])
        r, c = np.argwhere(bad)[0]
        raise ValueError(f'{source}: {int(bad.sum())} pixels have values outside the classes '
                         f'0..{num_classes - 1} and ignore {ignore_index}: '
                         f'{vals[:8].tolist()}{"..." if len(vals) > 8 else ""} (first at '
                         f'x={c}, y={r})')
    _check_grid_args(mask.shape, patch_size, min_tissue, source)
    C = int(num_classes)
    # one boolean pass per class (memory ~ H * W bytes, fine for large slides)
    area = np.zeros(C, np.float64)
    counts = np.zeros(((mask.shape[0] // patch_size) * (mask.shape[1] // patch_size), C),
                      np.int64)
    for k in range(C):
        hit = mask == k
        area[k] = np.count_nonzero(hit)
        counts[:, k] = _block_counts(hit, patch_size)
    tissue_px = counts.sum(1)
    keep = np.flatnonzero(tissue_px >= min_tissue * patch_size * patch_size - 1e-9)
    if len(keep) == 0:
        raise NoPatchError(_no_patch_message(source, tissue_px, patch_size, min_tissue,
                                             'non-ignore'))
    counts = counts[keep]
    return dict(patches=_grid_xy(keep, mask.shape[1] // patch_size, patch_size),
                labels=np.argmax(counts, 1).astype(np.int64),
                pixel_counts=counts.astype(np.int64), ratio=area / area.sum())


def tissue_grid(tissue: np.ndarray, patch_size: int, min_tissue: float = 0.5,
                source: str = 'tissue mask') -> np.ndarray:
    """Grid patches (K, 2) int64 [x, y] of a proportion-only slide whose tissue fraction
    (``tissue`` (H, W) bool) is >= ``min_tissue``; same grid and order as
    :func:`patch_grid`. Raises :class:`NoPatchError` naming ``source`` if none qualifies."""
    tissue = np.asarray(tissue)
    if tissue.ndim != 2 or tissue.dtype != bool:
        raise ValueError(f'{source}: expected a 2-D bool tissue mask, got {tissue.dtype} '
                         f'{tissue.shape}')
    _check_grid_args(tissue.shape, patch_size, min_tissue, source)
    tissue_px = _block_counts(tissue, patch_size)
    keep = np.flatnonzero(tissue_px >= min_tissue * patch_size * patch_size - 1e-9)
    if len(keep) == 0:
        raise NoPatchError(_no_patch_message(source, tissue_px, patch_size, min_tissue,
                                             'tissue'))
    return _grid_xy(keep, tissue.shape[1] // patch_size, patch_size)


def tissue_mask(rgb: np.ndarray, source: str = 'image') -> np.ndarray:
    """Tissue (True) vs glass (False) of an RGB slide by Otsu's threshold on HSV saturation.

    Glass is bright and grey (saturation ~ 0), stained tissue is coloured, so the
    saturation histogram of a slide is bimodal; Otsu's method (``skimage.filters.
    threshold_otsu``, 256 bins) splits it and pixels with saturation > threshold are
    tissue. It assumes that the image shows both glass and tissue: on a slide that is all
    tissue Otsu splits the tissue itself (pale vs strongly stained), and an image of
    constant saturation gives no tissue at all; give explicit tissue masks then.
    Saturation = (max - min) / max of R, G, B (0 for black pixels), skimage's rgb2hsv.
    """
    from skimage.color import rgb2hsv
    from skimage.filters import threshold_otsu
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f'{source}: expected an RGB image (H, W, 3), got shape {rgb.shape}')
    sat = rgb2hsv(rgb)[..., 1]
    if np.ptp(sat) <= 1e-12:
        return np.zeros(sat.shape, bool)
    return sat > threshold_otsu(sat)


def read_ratio_csv(path: str, classes: Sequence[str]) -> Dict[str, np.ndarray]:
    """Class ratios of proportion-only slides: CSV with header ``name,<class>,...``.

    Columns may come in any order but must be exactly ``name`` + ``classes``. Each row
    holds fractions (sum 1) or percentages (sum 100), within 1 % of the total; values
    must be finite and non-negative. Returns {name: (C,) float64 in ``classes`` order,
    normalised to sum 1}. Errors name the file and line.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'{path}: ratio CSV not found')
    classes = list(classes)
    with open(path, newline='', encoding='utf-8-sig') as f:
        rows = list(csv.reader(f))
    rows = [(i + 1, r) for i, r in enumerate(rows) if any(c.strip() for c in r)]
    if not rows:
        raise ValueError(f'{path}: ratio CSV is empty (expected a header '
                         f'"name,{",".join(classes)}")')
    header = [c.strip() for c in rows[0][1]]
    dup = sorted({c for c in header if header.count(c) > 1})
    if dup:
        raise ValueError(f'{path}: duplicate column(s) {dup} in the header')
    missing = [c for c in ['name'] + classes if c not in header]
    extra = [c for c in header if c not in ['name'] + classes]
    if missing or extra:
        raise ValueError(f'{path}: header {header} must hold "name" and exactly the classes '
                         f'{classes}; missing column(s) {missing}, extra column(s) {extra}')
    col = [header.index(c) for c in classes]
    name_col = header.index('name')
    out: Dict[str, np.ndarray] = {}
    for line, row in rows[1:]:
        if len(row) != len(header):
            raise ValueError(f'{path}: line {line} has {len(row)} fields, the header has '
                             f'{len(header)}')
        name = row[name_col].strip()
        if not name:
            raise ValueError(f'{path}: line {line} has an empty name')
        if name in out:
            raise ValueError(f'{path}: line {line}: name {name!r} appears twice')
        try:
            vals = np.array([float(row[j]) for j in col], np.float64)
        except ValueError as err:
            raise ValueError(f'{path}: line {line} ({name}): non-numeric ratio ({err})') from err
        if not np.all(np.isfinite(vals)) or np.any(vals < 0):
            raise ValueError(f'{path}: line {line} ({name}): ratios must be finite and '
                             f'non-negative, got {vals.tolist()}')
        total = float(vals.sum())
        if not (abs(total - 1.0) <= 0.01 or abs(total - 100.0) <= 1.0):
            raise ValueError(f'{path}: line {line} ({name}): ratios sum to {total:g}; expected '
                             f'1 (fractions) or 100 (percent) within 1%')
        out[name] = vals / total
    if not out:
        raise ValueError(f'{path}: ratio CSV has a header but no row')
    return out


# --------------------------------------------------------------------------- bag JSON
def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _int_array(value, shape_tail: tuple, what: str, where: str) -> np.ndarray:
    try:
        arr = np.asarray(value)
    except ValueError as err:  # ragged nested lists
        raise ValueError(f'{where}: {what} is not a regular array ({err})') from err
    if arr.size == 0 and arr.ndim == 1 and shape_tail:
        arr = arr.reshape((0,) + shape_tail)
    if arr.ndim != 1 + len(shape_tail) or arr.shape[1:] != shape_tail:
        want = '(K' + ''.join(f', {n}' for n in shape_tail) + ')'
        raise ValueError(f'{where}: {what} must have shape {want}, got {arr.shape}')
    if arr.size and (arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f'{where}: {what} must hold integers, got {arr.dtype}')
    return arr.astype(np.int64)


def _validate_meta(meta, source: str) -> dict:
    if not isinstance(meta, dict):
        raise ValueError(f'{source}: "metainfo" must be an object')
    missing = [k for k in _META_KEYS if k not in meta]
    if missing:
        raise ValueError(f'{source}: metainfo lacks {missing}')
    classes = meta['classes']
    if not isinstance(classes, (list, tuple)) or not classes or \
            not all(isinstance(c, str) and c for c in classes) or len(set(classes)) != len(classes):
        raise ValueError(f'{source}: metainfo classes must be a non-empty list of distinct '
                         f'names, got {classes!r}')
    p = meta['patch_size']
    if not _is_int(p) or p <= 0:
        raise ValueError(f'{source}: metainfo patch_size must be a positive int, got {p!r}')
    ign = meta['ignore_index']
    if not _is_int(ign) or 0 <= ign < len(classes):
        raise ValueError(f'{source}: metainfo ignore_index must be an int outside the class '
                         f'indices 0..{len(classes) - 1}, got {ign!r}')
    mt = meta['min_tissue']
    if isinstance(mt, bool) or not isinstance(mt, (int, float)) or not 0 < mt <= 1:
        raise ValueError(f'{source}: metainfo min_tissue must lie in (0, 1], got {mt!r}')
    return dict(classes=list(classes), patch_size=int(p), ignore_index=int(ign),
                min_tissue=float(mt))


def _validate_bag(bag, meta: dict, source: str, index: int) -> dict:
    """Validated copy of one bag with numpy arrays (errors name ``source`` and the bag)."""
    if not isinstance(bag, dict):
        raise ValueError(f'{source}: bag {index} is not an object')
    name = bag.get('name')
    if not isinstance(name, str) or not name or '/' in name or '\\' in name:
        raise ValueError(f'{source}: bag {index} has no valid "name" (got {name!r})')
    where = f'{source}: bag {name!r}'
    missing = [k for k in _BAG_KEYS if k not in bag]
    if missing:
        raise ValueError(f'{where} lacks key(s) {missing}')
    C, p = len(meta['classes']), meta['patch_size']
    if not isinstance(bag['img_path'], str) or not bag['img_path']:
        raise ValueError(f'{where}: img_path must be a non-empty relative path')
    labelled = bag['labelled']
    if not isinstance(labelled, (bool, np.bool_)):
        raise ValueError(f'{where}: labelled must be true or false, got {labelled!r}')
    labelled = bool(labelled)
    h, w = bag['height'], bag['width']
    if not (_is_int(h) and _is_int(w) and h > 0 and w > 0):
        raise ValueError(f'{where}: height and width must be positive ints, got {h!r}, {w!r}')
    ratio = np.asarray(bag['ratio'])
    if ratio.shape != (C,) or ratio.dtype == bool or not np.issubdtype(ratio.dtype, np.number):
        raise ValueError(f'{where}: ratio must be {C} numbers (one per class), got '
                         f'{bag["ratio"]!r}')
    ratio = ratio.astype(np.float64)
    if not np.all(np.isfinite(ratio)) or np.any(ratio < 0) or abs(ratio.sum() - 1) > 1e-3:
        raise ValueError(f'{where}: ratio must be non-negative and sum to 1 (within 1e-3), '
                         f'got {ratio.tolist()} (sum {ratio.sum():.6g})')
    patches = _int_array(bag['patches'], (2,), 'patches', where)
    if len(patches) == 0:
        raise ValueError(f'{where}: the bag has no patch')
    x, y = patches[:, 0], patches[:, 1]
    bad = (x % p != 0) | (y % p != 0) | (x < 0) | (y < 0) | (x + p > w) | (y + p > h)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise ValueError(f'{where}: patch {k} at (x={x[k]}, y={y[k]}) is not on the {p}-px grid '
                         f'inside the {w}x{h} (WxH) image')
    cell = y // p * (w // p + 1) + x // p
    if len(np.unique(cell)) != len(cell):
        raise ValueError(f'{where}: duplicate patches')
    labels, counts = bag['labels'], bag['pixel_counts']
    if labelled:
        if not isinstance(bag['mask_path'], str) or not bag['mask_path']:
            raise ValueError(f'{where}: a labelled bag needs a mask_path')
        if labels is None or counts is None:
            raise ValueError(f'{where}: a labelled bag needs labels and pixel_counts')
        labels = _int_array(labels, (), 'labels', where)
        if len(labels) != len(patches):
            raise ValueError(f'{where}: {len(labels)} labels for {len(patches)} patches')
        if np.any((labels < 0) | (labels >= C)):
            raise ValueError(f'{where}: labels must lie in 0..{C - 1}, got '
                             f'{np.unique(labels[(labels < 0) | (labels >= C)]).tolist()}')
        counts = _int_array(counts, (C,), 'pixel_counts', where)
        if len(counts) != len(patches):
            raise ValueError(f'{where}: pixel_counts has {len(counts)} rows for '
                             f'{len(patches)} patches')
        if np.any(counts < 0) or np.any(counts.sum(1) > p * p):
            raise ValueError(f'{where}: pixel_counts must be non-negative with at most {p * p} '
                             f'pixels per patch')
        if np.any(counts.sum(1) == 0):
            raise ValueError(f'{where}: patch {int(np.flatnonzero(counts.sum(1) == 0)[0])} has '
                             f'no labelled pixel')
        wrong = np.flatnonzero(np.argmax(counts, 1) != labels)
        if len(wrong):
            k = int(wrong[0])
            raise ValueError(f'{where}: label {labels[k]} of patch {k} is not the majority class '
                             f'of its pixel_counts {counts[k].tolist()} (ties -> lowest index)')
    else:
        if bag['mask_path'] is not None or labels is not None or counts is not None:
            raise ValueError(f'{where}: a proportion-only bag (labelled false) must have '
                             f'mask_path, labels and pixel_counts null')
    return dict(name=name, img_path=bag['img_path'], mask_path=bag['mask_path'],
                labelled=labelled, height=int(h), width=int(w), ratio=ratio,
                patches=patches, labels=labels if labelled else None,
                pixel_counts=counts if labelled else None)


def _validate_layout(obj, source: str) -> dict:
    if not isinstance(obj, dict) or 'metainfo' not in obj or 'bags' not in obj:
        raise ValueError(f'{source}: expected an object with "metainfo" and "bags"')
    meta = _validate_meta(obj['metainfo'], source)
    if not isinstance(obj['bags'], list) or not obj['bags']:
        raise ValueError(f'{source}: "bags" must be a non-empty list')
    bags, seen = [], set()
    for i, bag in enumerate(obj['bags']):
        b = _validate_bag(bag, meta, source, i)
        if b['name'] in seen:
            raise ValueError(f'{source}: bag {b["name"]!r} appears twice')
        seen.add(b['name'])
        bags.append(b)
    return dict(metainfo=meta, bags=bags)


def _to_json_bag(bag: dict) -> dict:
    def lst(v):
        return None if v is None else np.asarray(v).tolist()
    return dict(name=bag['name'], img_path=bag['img_path'], mask_path=bag['mask_path'],
                labelled=bool(bag['labelled']), height=int(bag['height']),
                width=int(bag['width']),
                ratio=[float(r) for r in np.asarray(bag['ratio'], np.float64)],
                patches=lst(bag['patches']), labels=lst(bag['labels']),
                pixel_counts=lst(bag['pixel_counts']))


def write_bag_json(path: str, classes: Sequence[str], patch_size: int, bags: List[dict],
                   ignore_index: int = 255, min_tissue: float = 0.5) -> None:
    """Validate ``bags`` (dicts with the keys of the layout; numpy arrays or lists) and
    write ``{"metainfo": ..., "bags": [...]}`` atomically to ``path``."""
    obj = dict(metainfo=dict(classes=list(classes), patch_size=patch_size,
                             ignore_index=ignore_index, min_tissue=min_tissue),
               bags=list(bags))
    for i, bag in enumerate(bags):
        if isinstance(bag, dict):
            missing = [k for k in _BAG_KEYS if k not in bag]
            if missing:
                raise ValueError(f'{path}: bag {bag.get("name", i)!r} lacks key(s) {missing}')
    checked = _validate_layout(obj, path)
    obj['metainfo'] = checked['metainfo']
    obj['bags'] = [_to_json_bag(b) for b in checked['bags']]
    write_json(path, obj)


def read_bag_json(path: str) -> dict:
    """Read and validate a ``<split>.json`` of the bag layout.

    Returns ``metainfo`` (classes, patch_size, ignore_index, min_tissue) and ``bags``: a
    list of dicts with name, img_path, mask_path (relative to the data root; None for
    proportion-only bags), labelled, height, width, ratio (C,) float64, patches (K, 2)
    int64 [x, y], labels (K,) int64 and pixel_counts (K, C) int64 (None for
    proportion-only bags). Every problem raises ValueError naming ``path`` and the bag.
    """
    return _validate_layout(read_json(path, 'bag'), path)


def prepare_out_dir(out: str, overwrite: bool) -> List[str]:
    """Make ``out`` ready for a bag data root: refuse a non-empty folder unless
    ``overwrite``, which removes only the entries of :data:`BAG_OUTPUTS` (other files
    are kept and returned)."""
    return io.prepare_out_dir(out, BAG_OUTPUTS, overwrite,
                              f'the bag data set ({", ".join(BAG_OUTPUTS)})')
