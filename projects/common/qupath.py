"""QuPath annotations to training sets: read QuPath's GeoJSON, cut slides into labelled tiles.

Reading (:func:`read_geojson`) accepts what QuPath writes with *File > Export objects as
GeoJSON* (and the ``exportObjectsToGeoJson`` script command), in every version we know:

========  ==================================================================================
version   layout
========  ==================================================================================
0.2       a bare list of Features; the type in ``id`` (``PathAnnotationObject``,
          ``PathDetectionObject``, ``PathCellObject``); ``classification`` {name,
          colorRGB: signed 32-bit ARGB int}; ``measurements`` a list of {name, value}
0.3       as 0.2, the type in ``properties.object_type``
0.4-0.6   a FeatureCollection (or a list); ``id`` a UUID; ``properties.objectType``
          (annotation / detection / cell / tile ...); ``classification`` {name (or names,
          a derived class: joined by ': ' as QuPath prints it), color: [r, g, b]};
          ``measurements`` a flat name -> number map; ``isLocked``; ellipses flagged
          ``isEllipse`` but written as polygons; cells carry ``nucleusGeometry``; the
          Points tool gives one MultiPoint annotation per class
========  ==================================================================================

Geometries: Point and MultiPoint (one object per point), Polygon and MultiPolygon (one
object; rings: exterior first, then holes), in level-0 pixels (x = column, y = row, origin
at the top-left corner of the full-resolution image). A cell's ``nucleusGeometry`` is used
instead of its cell outline (nuclei are what MMHisto detects and segments). Annotations,
detections and cells are labels; other object types (tiles, TMA cores) are skipped by the
converter with a warning.

Bad input: a file that is not JSON or not GeoJSON raises ValueError naming it; a feature
that cannot be used (unknown geometry type, a ring with fewer than 3 distinct points or no
area, non-numeric coordinates) is skipped with a warning naming the file and the feature
index, and counted.

Converting (:func:`convert`): see ``tools/dataset_converters/qupath.py`` and the root
README ("Train on your own slides"). Tiles are read at one resolution per slide
(:func:`projects.common.slide.choose_resolution` / :func:`read_tile`); a tile whose
top-left corner is level-0 ``offset`` at ``scale`` level-0 pixels per output pixel maps
an output point p back as level0 = offset + p * scale, so a level-0 point (x, y) lands at
((x - offset_x) / scale, (y - offset_y) / scale). Offsets are snapped to the pixel grid of
the level read, so this holds exactly.
"""
import glob
import math
import os
import os.path as osp
import shutil
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    'GEOMETRY_TYPES', 'SLIDE_EXTS', 'ANNOTATION_EXTS', 'QuPathObject', 'read_geojson',
    'check_qupath_geojson',
    'qupath_colour', 'expand_paths', 'pair_slides', 'ConvertOptions', 'read_box_sizes',
    'convert', 'tile_starts', 'draw_tiles'
]

GEOMETRY_TYPES = ('Point', 'MultiPoint', 'Polygon', 'MultiPolygon')
SLIDE_EXTS = ('.svs', '.tif', '.tiff', '.ndpi', '.mrxs', '.scn', '.vms', '.vmu', '.bif',
              '.svslide', '.qptiff')
ANNOTATION_EXTS = ('.geojson', '.json')
LEGACY_TYPES = {'PathAnnotationObject': 'annotation', 'PathDetectionObject': 'detection',
                'PathCellObject': 'cell', 'PathTileObject': 'tile',
                'TMACoreObject': 'tma_core'}
UNCLASSIFIED = '<unclassified>'
LABEL_TYPES = ('annotation', 'detection', 'cell')  # QuPath tiles / TMA cores are not cells
# a complete tile keeps at least this fraction of its pixels inside its complete region
MIN_REGION_FRACTION = 0.25
TASKS = ('det', 'seg', 'both')


# ============================================================================ reading
@dataclass
class QuPathObject:
    """One object of a QuPath GeoJSON file, in level-0 pixels.

    ``index``: the feature's index in the file (0-based; a MultiPoint's points share it and
    differ by ``part``); ``point`` (2,) for points, ``polygons`` (a list of polygons, each
    a list of closed rings (K, 2), exterior first) otherwise.
    """
    index: int
    object_type: str
    class_name: Optional[str]
    name: Optional[str] = None
    colour: Optional[Tuple[int, int, int]] = None
    point: Optional[np.ndarray] = None
    polygons: Optional[List[List[np.ndarray]]] = None
    part: int = 0

    @property
    def is_point(self) -> bool:
        return self.point is not None

    @property
    def where(self) -> str:
        return f'feature {self.index}' + (f' point {self.part}' if self.part else '')

    def bounds(self) -> Tuple[float, float, float, float]:
        """x0, y0, x1, y1."""
        if self.is_point:
            x, y = (float(v) for v in self.point)
            return x, y, x, y
        xy = np.concatenate([poly[0] for poly in self.polygons])
        return (float(xy[:, 0].min()), float(xy[:, 1].min()), float(xy[:, 0].max()),
                float(xy[:, 1].max()))

    def centre(self) -> np.ndarray:
        """The point, or the area centroid of the polygons (holes subtracted)."""
        if self.is_point:
            return np.asarray(self.point, np.float64)
        total, acc = 0.0, np.zeros(2)
        for poly in self.polygons:
            for k, ring in enumerate(poly):
                a, c = _ring_area_centroid(ring)
                a = abs(a) * (1 if k == 0 else -1)
                total += a
                acc += a * c
        return acc / total


def _ring_area_centroid(ring: np.ndarray) -> Tuple[float, np.ndarray]:
    """Signed area (shoelace) and centroid of a closed ring (K, 2)."""
    x, y = ring[:-1, 0], ring[:-1, 1]
    x1, y1 = ring[1:, 0], ring[1:, 1]
    cross = x * y1 - x1 * y
    a = cross.sum() / 2.0
    if a == 0:
        return 0.0, ring[:-1].mean(0)
    return a, np.array([((x + x1) * cross).sum(), ((y + y1) * cross).sum()]) / (6.0 * a)


def qupath_colour(classification) -> Optional[Tuple[int, int, int]]:
    """(r, g, b) of a QuPath classification: ``color`` [r, g, b] (0.4+) or ``colorRGB``
    (0.2 / 0.3: a signed 32-bit ARGB int, e.g. -65536 = opaque red), else None."""
    if not isinstance(classification, dict):
        return None
    col = classification.get('color')
    if isinstance(col, (list, tuple)) and len(col) >= 3:
        return tuple(int(v) for v in col[:3])
    rgb = classification.get('colorRGB')
    if isinstance(rgb, int) and not isinstance(rgb, bool):
        v = rgb & 0xFFFFFF
        return (v >> 16) & 255, (v >> 8) & 255, v & 255
    return None


def _class_name(classification) -> Optional[str]:
    if isinstance(classification, str):
        return classification or None
    if not isinstance(classification, dict):
        return None
    if isinstance(classification.get('names'), list) and classification['names']:
        return ': '.join(str(n) for n in classification['names'])
    name = classification.get('name')
    if name in (None, ''):
        return None
    parent = _class_name(classification.get('parentClass'))  # 0.2 / 0.3 derived classes
    return f'{parent}: {name}' if parent else str(name)


def _object_type(feature: dict, props: dict) -> str:
    t = props.get('objectType') or props.get('object_type')
    if t:
        return str(t).lower()
    return LEGACY_TYPES.get(str(feature.get('id')), 'annotation')


def _ring(coords, where: str) -> np.ndarray:
    try:
        ring = np.asarray(coords, np.float64)
    except (TypeError, ValueError):
        raise ValueError(f'{where}: ring coordinates are not numbers') from None
    if ring.ndim != 2 or ring.shape[1] < 2 or not np.isfinite(ring[:, :2]).all():
        raise ValueError(f'{where}: ring is not a list of finite [x, y] positions')
    ring = ring[:, :2]
    if not np.array_equal(ring[0], ring[-1]):
        ring = np.vstack([ring, ring[:1]])  # GeoJSON closes rings; accept an open one
    if len(np.unique(ring[:-1], axis=0)) < 3:
        raise ValueError(f'{where}: polygon ring has fewer than 3 distinct points')
    if _ring_area_centroid(ring)[0] == 0:
        raise ValueError(f'{where}: polygon ring has zero area')
    return ring


def _point(coords, where: str) -> np.ndarray:
    try:
        p = np.asarray(coords, np.float64)
    except (TypeError, ValueError):
        raise ValueError(f'{where}: point coordinates are not numbers') from None
    if p.ndim != 1 or len(p) < 2 or not np.isfinite(p[:2]).all():
        raise ValueError(f'{where}: point is not a finite [x, y] position')
    return p[:2]


def _features(doc, path: str) -> list:
    if isinstance(doc, list):  # QuPath 0.2 / 0.3 without FEATURE_COLLECTION
        return doc
    if isinstance(doc, dict):
        if doc.get('type') == 'FeatureCollection':
            if not isinstance(doc.get('features'), list):
                raise ValueError(f'{path}: FeatureCollection without a "features" list')
            return doc['features']
        if doc.get('type') == 'Feature':
            return [doc]
    kind = doc.get('type') if isinstance(doc, dict) else type(doc).__name__
    raise ValueError(f'{path}: not QuPath GeoJSON: expected a FeatureCollection, a Feature '
                     f'or a list of Features, got {kind!r}')


def read_geojson(path: str) -> Tuple[List[QuPathObject], List[str]]:
    """Objects of a QuPath GeoJSON export and warnings about skipped features.

    ValueError naming the file when it is missing, not JSON or not GeoJSON. A feature
    that is not a Feature, has an unknown geometry type, a ring with fewer than 3
    distinct points or zero area, or non-numeric coordinates is skipped; its warning
    names the file and the feature index.
    """
    from .io import read_json
    doc = read_json(path, 'QuPath GeoJSON')
    objects: List[QuPathObject] = []
    warnings: List[str] = []
    for i, feat in enumerate(_features(doc, path)):
        where = f'{path}: feature {i}'
        if not isinstance(feat, dict) or not isinstance(feat.get('geometry'), dict):
            warnings.append(f'{where}: not a Feature with a geometry (skipped)')
            continue
        props = feat.get('properties') or {}
        if not isinstance(props, dict):
            props = {}
        geom = feat['geometry']
        if isinstance(props.get('nucleusGeometry'), dict):
            geom = props['nucleusGeometry']
        elif isinstance(feat.get('nucleusGeometry'), dict):
            geom = feat['nucleusGeometry']
        cls = props.get('classification')
        base = dict(index=i, object_type=_object_type(feat, props), class_name=_class_name(cls),
                    name=props.get('name'), colour=qupath_colour(cls))
        gtype, coords = geom.get('type'), geom.get('coordinates')
        try:
            if gtype not in GEOMETRY_TYPES:
                raise ValueError(f'{where}: unknown geometry type {gtype!r} (QuPath objects '
                                 f'are {", ".join(GEOMETRY_TYPES)})')
            if not isinstance(coords, list) or not coords:
                raise ValueError(f'{where}: {gtype} without coordinates')
            if gtype == 'Point':
                objects.append(QuPathObject(point=_point(coords, where), **base))
            elif gtype == 'MultiPoint':
                pts = [_point(c, f'{where} point {k}') for k, c in enumerate(coords)]
                objects += [QuPathObject(point=p, part=k, **base) for k, p in enumerate(pts)]
            else:
                parts = [coords] if gtype == 'Polygon' else coords
                polys = [[_ring(r, f'{where} polygon {j} ring {k}') for k, r in enumerate(p)]
                         for j, p in enumerate(parts)]
                if not all(polys):
                    raise ValueError(f'{where}: polygon without rings')
                objects.append(QuPathObject(polygons=polys, **base))
        except ValueError as err:
            warnings.append(f'{err} (skipped)')
    return objects, warnings


def check_qupath_geojson(doc, where: str = 'GeoJSON') -> List[str]:
    """Problems of a GeoJSON document against the conventions QuPath 0.4+ writes and
    reads (empty list: conformant): a FeatureCollection of Features; ``objectType``;
    ``classification`` with a name and an [r, g, b] colour of ints in 0..255;
    ``measurements`` (if any) a flat name -> number map; Point / MultiPoint / Polygon /
    MultiPolygon geometries with finite level-0 coordinates >= 0; polygon rings closed,
    with at least 4 positions and non-zero area."""
    out = []
    if not isinstance(doc, dict) or doc.get('type') != 'FeatureCollection' or \
            not isinstance(doc.get('features'), list):
        return [f'{where}: not a FeatureCollection']
    for i, f in enumerate(doc['features']):
        at = f'{where}: feature {i}'
        props = f.get('properties') if isinstance(f, dict) else None
        if not isinstance(props, dict) or f.get('type') != 'Feature':
            out.append(f'{at}: not a Feature with properties')
            continue
        if props.get('objectType') not in ('annotation', 'detection', 'cell', 'tile'):
            out.append(f'{at}: objectType {props.get("objectType")!r}')
        cls = props.get('classification')
        col = cls.get('color') if isinstance(cls, dict) else None
        if not (isinstance(cls, dict) and isinstance(cls.get('name'), str)
                and isinstance(col, list) and len(col) == 3
                and all(isinstance(c, int) and 0 <= c <= 255 for c in col)):
            out.append(f'{at}: classification is not {{name, color: [r, g, b]}}: {cls!r}')
        meas = props.get('measurements', {})
        if not isinstance(meas, dict) or not all(
                isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool)
                for k, v in meas.items()):
            out.append(f'{at}: measurements are not a name -> number map')
        geom = f.get('geometry') or {}
        gtype, coords = geom.get('type'), geom.get('coordinates')
        if gtype not in GEOMETRY_TYPES:
            out.append(f'{at}: geometry type {gtype!r}')
            continue
        parts = {'Point': lambda c: [[[c]]], 'MultiPoint': lambda c: [[c]],
                 'Polygon': lambda c: [c], 'MultiPolygon': lambda c: c}[gtype](coords)
        for poly in parts:
            for ring in poly:
                r = np.asarray(ring, np.float64)
                if r.ndim != 2 or r.shape[1] != 2 or not np.isfinite(r).all() or r.min() < 0:
                    out.append(f'{at}: coordinates are not finite level-0 [x, y] >= 0')
                elif 'Polygon' in gtype and (len(r) < 4 or not np.array_equal(r[0], r[-1])
                                             or _ring_area_centroid(r)[0] == 0):
                    out.append(f'{at}: ring not closed, shorter than 4 positions or of '
                               'zero area')
    return out


# ============================================================================ inputs
def expand_paths(items: Sequence[str], exts: Sequence[str], what: str) -> List[str]:
    """Files, folders (their files with one of ``exts``) or glob patterns, in order, each
    once; a pattern or path that matches nothing raises FileNotFoundError naming it."""
    out: List[str] = []
    for item in items:
        if osp.isdir(item):
            found = sorted(osp.join(item, f) for f in os.listdir(item)
                           if osp.splitext(f)[1].lower() in exts)
        elif osp.isfile(item):
            found = [item]
        else:
            found = sorted(p for p in glob.glob(item) if osp.isfile(p))
        if not found:
            raise FileNotFoundError(f'{item}: no {what} found (a file, a folder with '
                                    f'{"/".join(exts)} files, or a glob)')
        out += [osp.normpath(p) for p in found if osp.normpath(p) not in out]
    return out


def _stem(path: str, exts: Sequence[str]) -> str:
    name = osp.basename(path)
    for _ in range(2):  # 'a.svs.geojson' -> 'a'
        base, ext = osp.splitext(name)
        if ext.lower() in exts:
            name = base
    return name


def pair_slides(slides: Sequence[str], annotations: Sequence[str]) -> List[Tuple[str, str]]:
    """(slide, annotation file) pairs. ``annotations`` entries are files / folders / globs
    paired by name (``a.svs`` with ``a.geojson`` or ``a.svs.geojson``), or explicit
    ``SLIDE=GEOJSON`` mappings (SLIDE: a path or a file name of one of ``slides``). A
    slide without annotation file, or an annotation file without slide, raises
    ValueError naming them."""
    slide_files = expand_paths(slides, SLIDE_EXTS, 'slide')
    explicit: Dict[str, str] = {}
    plain = []
    for item in annotations:
        if '=' in item and not osp.exists(item):
            s, _, a = item.partition('=')
            match = [p for p in slide_files if osp.normpath(s) in (p, osp.basename(p))]
            if not match:
                raise ValueError(f'{item}: slide {s!r} of this mapping is not among --slides')
            if not osp.isfile(a):
                raise FileNotFoundError(f'{a}: annotation file of mapping {item!r} not found')
            explicit[match[0]] = osp.normpath(a)
        else:
            plain.append(item)
    ann_files = expand_paths(plain, ANNOTATION_EXTS, 'annotation file') if plain else []
    by_stem: Dict[str, str] = {}
    for a in ann_files:
        stem = _stem(a, ANNOTATION_EXTS + SLIDE_EXTS)
        if stem in by_stem:
            raise ValueError(f'{a}: two annotation files for slide name {stem!r} '
                             f'({by_stem[stem]})')
        by_stem[stem] = a
    pairs, used = [], set(explicit.values())
    missing = []
    for s in slide_files:
        a = explicit.get(s) or by_stem.get(_stem(s, SLIDE_EXTS))
        if a is None:
            missing.append(s)
            continue
        used.add(a)
        pairs.append((s, a))
    if missing:
        raise ValueError(f'{missing[0]}: no annotation file for this slide (looked for '
                         f'{_stem(missing[0], SLIDE_EXTS)}.geojson / .json; '
                         f'{len(missing)} slide(s) without one; map explicitly with '
                         f'SLIDE=GEOJSON)')
    orphans = [a for a in ann_files if a not in used]
    if orphans:
        raise ValueError(f'{orphans[0]}: annotation file without a slide among --slides '
                         f'({len(orphans)} such file(s))')
    return pairs


def read_box_sizes(path: str) -> Dict[str, float]:
    """``class,box_size`` CSV (header optional): the box side (output pixels) of the
    point annotations of each class."""
    import csv
    sizes = {}
    with open(path, newline='') as f:
        for n, row in enumerate(csv.reader(f), start=1):
            if not row or row[0].strip().startswith('#'):
                continue
            if len(row) != 2:
                raise ValueError(f'{path}: line {n}: expected "class,box_size", got {row}')
            try:
                v = float(row[1])
            except ValueError:
                if n == 1:
                    continue  # header
                raise ValueError(f'{path}: line {n}: box size {row[1]!r} is not a number'
                                 ) from None
            if not math.isfinite(v) or v <= 0:
                raise ValueError(f'{path}: line {n}: box size must be > 0, got {v}')
            sizes[row[0].strip()] = v
    return sizes


# ============================================================================ tiling
def tile_starts(lo: float, hi: float, size: float, step: float) -> List[float]:
    """Starts of tiles of ``size`` covering [lo, hi] with ``step``: from ``lo``, the last
    shifted inward to end at ``hi`` (no tile sticks out); one tile centred on the interval
    when it is shorter than a tile."""
    if hi - lo <= size:
        return [(lo + hi - size) / 2.0]
    starts = list(np.arange(lo, hi - size, step))
    if not starts or starts[-1] + size < hi:
        starts.append(hi - size)
    return [float(s) for s in starts]


@dataclass
class ConvertOptions:
    """Options of :func:`convert` (the CLI flags of tools/dataset_converters/qupath.py)."""
    mpp: Optional[float] = None
    level: Optional[int] = None
    tile: int = 512
    overlap: int = 0
    classes: Optional[Sequence[str]] = None
    complete_region_class: str = 'Complete'
    task: str = 'both'
    box_size: float = 16.0
    box_sizes: Dict[str, float] = field(default_factory=dict)
    sparse_tiles: bool = False
    clip: bool = False
    min_tissue: float = 0.05
    tissue_method: str = 'saturation'
    split: str = 'train'
    point_radius: int = 2
    backend: str = 'auto'

    def check(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f'--task must be one of {TASKS}, got {self.task!r}')
        if not isinstance(self.tile, int) or self.tile < 8:
            raise ValueError(f'--tile must be an int >= 8, got {self.tile!r}')
        if not 0 <= self.overlap < self.tile:
            raise ValueError(f'--overlap must lie in [0, tile), got {self.overlap}')
        for name, v in [('--box-size', self.box_size)] + list(self.box_sizes.items()):
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f'{name}: box size must be a number > 0, got {v!r}')
        if not 0 <= self.min_tissue <= 1:
            raise ValueError(f'--min-tissue must lie in [0, 1], got {self.min_tissue}')


def _is_region(obj: QuPathObject, region_class: str) -> bool:
    return bool(region_class) and region_class in (obj.class_name, obj.name)


def _to_tile(xy: np.ndarray, offset: Tuple[float, float], scale: float) -> np.ndarray:
    return (np.asarray(xy, np.float64) - np.asarray(offset)) / scale


def _raster(polys: List[List[np.ndarray]], offset, scale: float, size: int) -> np.ndarray:
    """Pixels of a tile whose centres lie inside the polygons (exteriors minus holes)."""
    from skimage.draw import polygon as fill
    mask = np.zeros((size, size), bool)
    for poly in polys:
        part = np.zeros((size, size), bool)
        for k, ring in enumerate(poly):
            t = _to_tile(ring, offset, scale) - 0.5  # skimage: pixel centres at integers
            rr, cc = fill(t[:, 1], t[:, 0], shape=(size, size))
            if k == 0:
                part[rr, cc] = True
            else:
                part[rr, cc] = False
        mask |= part
    return mask


def _clip_object(obj: QuPathObject, w: float, h: float) -> Optional[QuPathObject]:
    """``obj`` with its vertices clamped to [0, w] x [0, h] (points outside: None; a
    polygon that keeps no area: None)."""
    if obj.is_point:
        x, y = obj.point
        return obj if 0 <= x <= w and 0 <= y <= h else None
    polys = []
    for poly in obj.polygons:
        rings = [np.stack([np.clip(r[:, 0], 0, w), np.clip(r[:, 1], 0, h)], 1) for r in poly]
        if _ring_area_centroid(rings[0])[0] != 0:
            polys.append([r for r in rings if _ring_area_centroid(r)[0] != 0])
    if not polys:
        return None
    return QuPathObject(obj.index, obj.object_type, obj.class_name, obj.name, obj.colour,
                        polygons=polys, part=obj.part)


def _outside(obj: QuPathObject, w: float, h: float) -> bool:
    x0, y0, x1, y1 = obj.bounds()
    return x0 < 0 or y0 < 0 or x1 > w or y1 > h


class _SlideJob:
    """One slide: its objects sorted into regions and labels, its tiles, its counts."""

    def __init__(self, slide: str, ann: str, opts: ConvertOptions,
                 classes: Optional[Sequence[str]]) -> None:
        from .slide import choose_resolution, open_slide
        self.slide, self.ann, self.opts = slide, ann, opts
        objects, self.warnings = read_geojson(ann)
        self.invalid = len(self.warnings)
        self.reader = open_slide(slide, backend=opts.backend)
        try:
            self.res = choose_resolution(self.reader, mpp=opts.mpp, level=opts.level)
        except ValueError:
            self.reader.close()
            raise
        w0, h0 = self.reader.dimensions
        outside = [o for o in objects if _outside(o, w0, h0)]
        if outside and not opts.clip:
            self.reader.close()
            shown = ', '.join(o.where for o in outside[:5])
            raise ValueError(f'{ann}: {len(outside)} object(s) lie (partly) outside the '
                             f'{w0}x{h0} slide {slide} ({shown}{", ..." * (len(outside) > 5)})'
                             f'; pass --clip to drop points and clip polygons at the border')
        self.clipped = 0
        self.outside_slide: Dict[str, int] = {}
        kept = []
        for o in objects:
            if _outside(o, w0, h0):
                c = _clip_object(o, w0, h0)
                key = o.class_name or UNCLASSIFIED
                self.outside_slide[key] = self.outside_slide.get(key, 0) + (c is None)
                self.clipped += c is not None
                self.warnings.append(f'{ann}: {o.where} ({key}) outside the {w0}x{h0} slide: '
                                     + ('clipped' if c is not None else 'dropped'))
                if c is None:
                    continue
                o = c
            kept.append(o)
        self.regions = [o for o in kept if _is_region(o, opts.complete_region_class)]
        for r in self.regions:
            if r.is_point:
                self.warnings.append(f'{ann}: {r.where}: a "{opts.complete_region_class}" '
                                     'region must be a polygon, got a point (skipped)')
                self.invalid += 1
        self.regions = [r for r in self.regions if not r.is_point]
        self.labels = []
        for o in kept:
            if _is_region(o, opts.complete_region_class):
                continue
            if o.object_type not in LABEL_TYPES:
                self.warnings.append(f'{ann}: {o.where}: a QuPath {o.object_type!r} object is '
                                     f'not a label (labels: {", ".join(LABEL_TYPES)}; skipped)')
                self.invalid += 1
                continue
            self.labels.append(o)
        self.unknown: Dict[str, int] = {}
        if classes is not None:
            known = []
            for o in self.labels:
                name = o.class_name or UNCLASSIFIED
                if name in classes:
                    known.append(o)
                    continue
                self.unknown[name] = self.unknown.get(name, 0) + 1
                self.warnings.append(f'{ann}: {o.where}: class {name!r} is not in --classes '
                                     f'{list(classes)} (skipped)')
            self.labels = known

    # -------------------------------------------------------------- tiles
    def _snap(self, v: float) -> float:
        d = self.res.level_downsample
        return float(round(v / d) * d)

    def tiles(self) -> List[Tuple[float, float, bool]]:
        """(x0, y0, complete) in level-0 pixels, complete tiles first, each place once."""
        opts, s = self.opts, self.res.scale
        size, step = opts.tile * s, (opts.tile - opts.overlap) * s
        out: Dict[Tuple[float, float], bool] = {}
        for r in self.regions:
            x0, y0, x1, y1 = r.bounds()
            for ty in tile_starts(y0, y1, size, step):
                for tx in tile_starts(x0, x1, size, step):
                    key = (self._snap(tx), self._snap(ty))
                    frac = _raster(r.polygons, key, s, opts.tile).mean()
                    if frac >= MIN_REGION_FRACTION:
                        out.setdefault(key, True)
        if opts.sparse_tiles:
            covered = self._covered([(x, y) for x, y in out])
            for o, c in zip(self.labels, covered):
                if c:
                    continue
                cx, cy = o.centre()
                key = (self._snap(math.floor(cx / size) * size),
                       self._snap(math.floor(cy / size) * size))
                out.setdefault(key, False)
        return [(x, y, c) for (x, y), c in out.items()]

    def _covered(self, offsets) -> List[bool]:
        size = self.opts.tile * self.res.scale
        cov = []
        for o in self.labels:
            cx, cy = o.centre()
            cov.append(any(x <= cx <= x + size and y <= cy <= y + size for x, y in offsets))
        return cov

    def tissue_fractions(self, tiles) -> np.ndarray:
        """Tissue fraction of each tile from the slide's tissue mask (of a thumbnail)."""
        from .slide import tissue_mask
        thumb, tscale = self.reader.thumbnail(1024)
        mask, _ = tissue_mask(thumb, self.opts.tissue_method)
        size = self.opts.tile * self.res.scale
        fr = []
        for x, y, _ in tiles:
            c0, r0 = int(math.floor(x / tscale)), int(math.floor(y / tscale))
            c1, r1 = int(math.ceil((x + size) / tscale)), int(math.ceil((y + size) / tscale))
            n = max(1, (c1 - c0) * (r1 - r0))
            fr.append(mask[max(r0, 0):max(r1, 0), max(c0, 0):max(c1, 0)].sum() / n)
        return np.asarray(fr)

    # -------------------------------------------------------------- one tile
    def labels_in_tile(self, x: float, y: float, complete: bool, class_index: Dict[str, int]):
        """(semantic, inst_map, labels, (points, boxes), kept object indices) of a tile."""
        opts, s, T = self.opts, self.res.scale, self.opts.tile
        size = T * s
        inst = np.zeros((T, T), np.int32)
        drawn: List[int] = []
        points = []
        for j, o in enumerate(self.labels):
            x0, y0, x1, y1 = o.bounds()
            if x1 < x or y1 < y or x0 > x + size or y0 > y + size:
                continue
            if o.is_point:
                points.append(j)
                continue
            m = _raster(o.polygons, (x, y), s, T)
            if m.any():
                drawn.append(j)
                inst[m] = len(drawn)
        n_poly = len(drawn)
        r = opts.point_radius
        for j in points:
            px, py = _to_tile(self.labels[j].point, (x, y), s)
            col, row = min(int(math.floor(px)), T - 1), min(int(math.floor(py)), T - 1)
            r0, c0 = max(row - r - 1, 0), max(col - r - 1, 0)
            win = inst[r0:row + r + 2, c0:col + r + 2]  # a view: writes go to inst
            yy, xx = np.mgrid[r0:r0 + win.shape[0], c0:c0 + win.shape[1]]
            drawn.append(j)
            win[((xx + 0.5 - px) ** 2 + (yy + 0.5 - py) ** 2 <= r * r) & (win == 0)] = len(drawn)
            inst[row, col] = len(drawn)
        unknown_extent = inst > n_poly
        from .instances import instance_geometry
        ids, cents, tight = instance_geometry(inst)
        keep = [drawn[i - 1] for i in ids]
        labels = np.array([class_index[self.labels[j].class_name or UNCLASSIFIED]
                           for j in keep], np.int64)
        pts = np.zeros((len(ids), 2))
        boxes = np.zeros((len(ids), 4))
        for k, (i, j) in enumerate(zip(ids, keep)):
            if i <= n_poly:
                pts[k], boxes[k] = cents[k], tight[k]
            else:
                o = self.labels[j]
                b = opts.box_sizes.get(o.class_name, opts.box_size)
                pts[k] = _to_tile(o.point, (x, y), s)
                boxes[k] = [pts[k, 0] - b / 2, pts[k, 1] - b / 2, pts[k, 0] + b / 2,
                            pts[k, 1] + b / 2]
        semantic = np.where(inst > 0, 1, 0).astype(np.uint8)
        semantic[unknown_extent] = 255  # a point says where a nucleus is, not its extent
        if complete:
            region = np.zeros((T, T), bool)
            for reg in self.regions:
                region |= _raster(reg.polygons, (x, y), s, T)
            semantic[~region] = 255
        else:
            semantic[inst == 0] = 255  # sparse: unlabelled pixels are unknown
        return semantic, inst, labels, (pts, boxes), keep


def _count(d: Dict[str, int], key: str, n: int = 1) -> None:
    d[key] = d.get(key, 0) + n


def convert(pairs: Sequence[Tuple[str, str]], out_dir: str, opts: ConvertOptions,
            progress: bool = False, overview: Optional[str] = None) -> dict:
    """Cut each (slide, QuPath GeoJSON) pair into tiles with labels; write the COCO and
    mmseg layouts (:class:`projects.common.layout.LayoutWriter`) to ``out_dir`` and
    ``summary.json``; return the summary (per slide: tiles complete / sparse / without
    tissue, per class: objects kept (in at least one written tile), outside every tile (or
    only in tiles skipped without tissue), outside the slide (dropped by ``clip``), unknown
    class; the warnings). ``overview``: a PNG of the first slide with its tiles
    (:func:`draw_tiles`).
    """
    from .io import write_json
    from .layout import LayoutWriter, track
    from .slide import read_tile
    opts.check()
    jobs = []
    try:
        for slide, ann in pairs:
            jobs.append(_SlideJob(slide, ann, opts, opts.classes))
        classes = list(opts.classes) if opts.classes else sorted(
            {o.class_name or UNCLASSIFIED for j in jobs for o in j.labels})
        if not classes:
            raise ValueError(f'no labelled object in {[a for _, a in pairs]} (only '
                             f'"{opts.complete_region_class}" regions or nothing)')
        index = {c: k for k, c in enumerate(classes)}
        sparse_split = f'{opts.split}_sparse'
        writer = LayoutWriter(out_dir, classes, f'MMHisto tiles of QuPath annotations, split '
                              '{split}', source='tools/dataset_converters/qupath.py',
                              splits=(opts.split, ) + ((sparse_split, ) if opts.sparse_tiles
                                                       else ()))
        summary = dict(out_dir=out_dir, classes=classes, options=dict(
            mpp=opts.mpp, level=opts.level, tile=opts.tile, overlap=opts.overlap,
            task=opts.task, complete_region_class=opts.complete_region_class,
            sparse_tiles=opts.sparse_tiles, clip=opts.clip, box_size=opts.box_size,
            box_sizes=opts.box_sizes, min_tissue=opts.min_tissue), slides={})
        for n_job, job in enumerate(jobs):
            tiles = job.tiles()
            frac = job.tissue_fractions(tiles) if tiles else np.zeros(0)
            stem = _stem(job.slide, SLIDE_EXTS)
            kept_objects = set()
            counts = dict(complete=0, sparse=0, no_tissue=0)
            for (x, y, complete), f in track(list(zip(tiles, frac)), progress):
                if f < opts.min_tissue:
                    counts['no_tissue'] += 1
                    continue
                img = read_tile(job.reader, job.res, x, y, opts.tile, opts.tile)
                sem, inst, labels, geom, keep = job.labels_in_tile(x, y, complete, index)
                kept_objects.update(keep)
                counts['complete' if complete else 'sparse'] += 1
                extra = dict(parent=job.slide, offset=[x, y], scale=job.res.scale,
                             level=job.res.level, mpp=job.res.mpp, complete=bool(complete))
                writer.add(opts.split if complete else sparse_split,
                           f'{stem}_x{int(round(x))}_y{int(round(y))}', img, sem, inst,
                           labels, geometry=geom, image_extra=extra)
            per_class = {c: dict(kept=0, outside_tiles=0, outside_slide=0, unknown_class=0)
                         for c in classes}
            for j, o in enumerate(job.labels):
                key = 'kept' if j in kept_objects else 'outside_tiles'
                per_class[o.class_name or UNCLASSIFIED][key] += 1
            for name, n in job.outside_slide.items():
                if name in per_class:
                    per_class[name]['outside_slide'] += n
            for name, n in job.unknown.items():
                per_class.setdefault(name, dict(kept=0, outside_tiles=0, outside_slide=0,
                                                unknown_class=0))['unknown_class'] += n
            summary['slides'][job.slide] = dict(
                annotations=job.ann, level=job.res.level, scale=job.res.scale,
                mpp=job.res.mpp, regions=len(job.regions), tiles=counts,
                invalid_features=job.invalid, clipped=job.clipped, per_class=per_class,
                warnings=job.warnings)
            if overview and n_job == 0:
                thumb, ts = job.reader.thumbnail(1024)
                draw_tiles(overview, thumb, ts, tiles, frac >= opts.min_tissue,
                           opts.tile * job.res.scale, job, classes)
        summary['splits'] = writer.close()
    finally:
        for job in jobs:
            job.reader.close()
    drop = {'det': ('img_dir', 'ann_dir', 'inst_dir', 'points'), 'seg': ('images', ),
            'both': ()}[opts.task]
    for d in drop:
        shutil.rmtree(osp.join(out_dir, d), ignore_errors=True)
    write_json(osp.join(out_dir, 'summary.json'), summary)
    return summary


# ============================================================================ picture
def draw_tiles(path: str, thumbnail: np.ndarray, scale: float, tiles, kept, size: float,
               job: '_SlideJob', classes: Sequence[str], dpi: int = 90) -> None:
    """PNG of the slide thumbnail with the complete regions (dashed), the complete tiles
    (green), the sparse tiles (orange), the tiles skipped without tissue (grey) and the
    labels (dots, one colour per class)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.patches import Polygon, Rectangle

    from .io import atomic_write
    th, tw = thumbnail.shape[:2]
    w0, h0 = tw * scale, th * scale
    fig, ax = plt.subplots(figsize=(7.0, 7.0 * th / tw + 0.4), dpi=dpi)
    ax.imshow(thumbnail, extent=(0, w0, h0, 0))
    for r in job.regions:
        for poly in r.polygons:
            ax.add_patch(Polygon(poly[0], closed=True, fill=False, ls='--', lw=1.0,
                                 edgecolor='#1f4e9c'))
    for (x, y, complete), k in zip(tiles, kept):
        col = ('#1a9850' if complete else '#f46d43') if k else '#888888'
        ax.add_patch(Rectangle((x, y), size, size, fill=False, lw=1.0, edgecolor=col,
                               alpha=1.0 if k else 0.6))
    cmap = plt.get_cmap('tab10')
    for c, name in enumerate(classes):
        objs = [o for o in job.labels if (o.class_name or UNCLASSIFIED) == name]
        if not objs:
            continue
        xy = np.array([o.centre() for o in objs]).reshape(-1, 2)
        col = np.asarray(objs[0].colour) / 255.0 if objs[0].colour else cmap(c % 10)
        ax.scatter(xy[:, 0], xy[:, 1], s=6, color=col, edgecolors='white', linewidths=0.3,
                   label=f'{name} ({len(xy)})')
    handles = [Rectangle((0, 0), 1, 1, fill=False, edgecolor=c, label=t) for c, t in (
        ('#1a9850', 'complete tile'), ('#f46d43', 'sparse tile'),
        ('#888888', 'no tissue: skipped'))]
    ax.legend(handles=handles + ax.get_legend_handles_labels()[0], loc='upper right',
              fontsize=7, framealpha=0.85, markerscale=3)
    ax.set_xlim(0, w0)
    ax.set_ylim(h0, 0)
    ax.set_xticks([])
    ax.set_yticks([])
    mpp = f'{job.res.mpp:.3g} um/px' if job.res.mpp else 'mpp unknown'
    ax.set_title(f'{osp.basename(job.slide)}: {len(tiles)} tiles of {size:.1f} level-0 px '
                 f'(tile pixels at {mpp})', fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format='png'))
    plt.close(fig)
