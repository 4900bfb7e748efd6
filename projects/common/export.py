"""Export of whole-slide results: QuPath GeoJSON, CSV, an overview picture, a summary.

GeoJSON (RFC 7946 FeatureCollection, the layout QuPath >= 0.4 reads with File > Import
objects and writes with Export objects as GeoJSON): one Feature per object,

    {"type": "Feature",
     "geometry": {"type": "Polygon", "coordinates": [[[x, y], ..., [x0, y0]]]}
                 (or {"type": "Point", "coordinates": [x, y]}),
     "properties": {"objectType": "detection",
                    "classification": {"name": "tumour", "color": [242, 60, 60]},
                    "measurements": {"score": 0.93, ...}}}

with coordinates in level-0 pixels (QuPath's image space: x = column, y = row, origin at
the top-left corner of the slide). CSV: ``x,y,class,score`` per object (centre of the
box or centroid of the instance, level-0 pixels). Both are written while objects
arrive (:class:`ObjectWriter`), to temporary names renamed at the end, so an
interrupted run leaves no half file under the final name.
"""
import json
import os
import os.path as osp
import tempfile
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .io import _current_umask, atomic_write

__all__ = ['ObjectWriter', 'box_ring', 'write_overview']

GEOMETRIES = ('polygon', 'point')


def box_ring(box: Sequence[float]) -> List[List[float]]:
    """Closed ring (5 positions) of an x0, y0, x1, y1 box."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]


def _r(v: float, nd: int) -> float:
    return round(float(v), nd)


class ObjectWriter:
    """Stream objects (:class:`projects.common.slide_inference.SlideObjects`) into a
    GeoJSON FeatureCollection and a CSV.

    ``geometry``: 'polygon' (instance outlines; boxes as rectangles for detections) or
    'point' (centres). ``class_names`` / ``colours`` are indexed by label. Use as a
    context manager (or call :meth:`close`); on an exception the temporary files are
    removed and nothing is renamed.
    """

    def __init__(self, geojson_path: str, csv_path: str, class_names: Sequence[str],
                 colours: Sequence[Tuple[int, int, int]], geometry: str = 'polygon',
                 decimals: int = 2) -> None:
        if geometry not in GEOMETRIES:
            raise ValueError(f'geometry must be one of {GEOMETRIES}, got {geometry!r}')
        if len(colours) < len(class_names):
            raise ValueError(f'{len(class_names)} classes but {len(colours)} colours')
        self.paths = (geojson_path, csv_path)
        self.names = [str(n) for n in class_names]
        self.colours = [[int(c) for c in col] for col in colours]
        self.geometry, self.decimals = geometry, int(decimals)
        self.count = 0
        self.counts: Dict[str, int] = {}
        self._tmp: List[str] = []
        self._files = []
        for path in self.paths:
            folder = osp.dirname(osp.abspath(path))
            os.makedirs(folder, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix='.tmp_', suffix=osp.splitext(path)[1])
            self._tmp.append(tmp)
            self._files.append(os.fdopen(fd, 'w'))
        self._files[0].write('{"type": "FeatureCollection", "features": [\n')
        self._files[1].write('x,y,class,score\n')

    def _name(self, label: int) -> str:
        if not 0 <= label < len(self.names):
            raise ValueError(f'label {label} has no class name ({len(self.names)} classes: '
                             f'{self.names})')
        return self.names[label]

    def write(self, objs) -> None:
        """Append a batch of objects (level-0 pixels)."""
        nd = self.decimals
        gj, csv = self._files
        polys = objs.polygons
        for i in range(len(objs)):
            label = int(objs.labels[i])
            name = self._name(label)
            score = float(objs.scores[i])
            cx, cy = (float(v) for v in objs.centres[i])
            if self.geometry == 'point':
                geom = dict(type='Point', coordinates=[_r(cx, nd), _r(cy, nd)])
            else:
                ring = polys[i].tolist() if polys else box_ring(objs.boxes[i])
                geom = dict(type='Polygon',
                            coordinates=[[[_r(x, nd), _r(y, nd)] for x, y in ring]])
            meas = {'score': _r(score, 6)}
            if objs.areas is not None:
                meas['area_px'] = _r(objs.areas[i], nd)
            feat = dict(type='Feature', geometry=geom,
                        properties=dict(objectType='detection',
                                        classification=dict(name=name,
                                                            color=self.colours[label]),
                                        measurements=meas))
            gj.write((',\n' if self.count else '') + json.dumps(feat, separators=(',', ':')))
            csv.write(f'{cx:.{nd}f},{cy:.{nd}f},{name},{score:.6f}\n')
            self.count += 1
            self.counts[name] = self.counts.get(name, 0) + 1

    def close(self) -> None:
        """Finish both files and rename them to their final names."""
        if not self._files:
            return
        self._files[0].write('\n]}\n')
        for f in self._files:
            f.close()
        self._files = []
        mode = 0o666 & ~_current_umask()
        for tmp, path in zip(self._tmp, self.paths):
            os.chmod(tmp, mode)
            os.replace(tmp, path)
        self._tmp = []

    def abort(self) -> None:
        """Drop both temporary files."""
        for f in self._files:
            f.close()
        self._files = []
        for tmp in self._tmp:
            if osp.exists(tmp):
                os.remove(tmp)
        self._tmp = []

    def __enter__(self) -> 'ObjectWriter':
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_overview(path: str, thumbnail: np.ndarray, scale: float, centres: np.ndarray,
                   labels: np.ndarray, class_names: Sequence[str],
                   colours: Sequence[Tuple[int, int, int]], mask: Optional[np.ndarray] = None,
                   region: Optional[Sequence[float]] = None, title: str = '',
                   skipped_tiles: Optional[np.ndarray] = None, dpi: int = 150) -> np.ndarray:
    """Thumbnail with every object as a dot of its class colour, the tissue-mask outline
    (black), the inferred region (dashed) and the tiles skipped as background (grey),
    written atomically as PNG; returns the RGB.

    ``scale``: level-0 pixels per thumbnail pixel (``SlideReader.thumbnail``); centres,
    ``region`` (x, y, w, h) and ``skipped_tiles`` (K, 4: x0, y0, x1, y1) are level-0
    pixels.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    th, tw = thumbnail.shape[:2]
    w0, h0 = tw * scale, th * scale
    side = 8.0
    fig_w, fig_h = (side, side * th / tw + 0.6) if tw >= th else (side * tw / th, side + 0.6)
    fig, ax = plt.subplots(figsize=(max(fig_w, 4.0), fig_h), dpi=dpi)
    ax.imshow(thumbnail, extent=(0, w0, h0, 0), interpolation='bilinear')
    if mask is not None and mask.any():
        ax.contour(np.pad(mask, 1).astype(float), levels=[0.5], colors='k', linewidths=0.8,
                   extent=(-scale, w0 + scale, h0 + scale, -scale), origin='upper')
    for x0, y0, x1, y1 in np.asarray(skipped_tiles if skipped_tiles is not None else [],
                                     np.float64).reshape(-1, 4):
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, facecolor=(0.5, 0.5, 0.5, 0.25),
                               edgecolor=(0.4, 0.4, 0.4, 0.6), lw=0.5))
    if region is not None:
        x, y, w, h = region
        ax.add_patch(Rectangle((x, y), w, h, fill=False, ls='--', lw=0.8, edgecolor='#222222'))
    labels = np.asarray(labels, np.int64)
    centres = np.asarray(centres, np.float64).reshape(-1, 2)
    dot = max(0.5, min(6.0, 4000.0 / max(1, len(centres)) ** 0.5))
    handles = []
    for k, name in enumerate(class_names):
        sel = labels == k
        if not sel.any():
            continue
        col = np.asarray(colours[k], float) / 255.0
        h = ax.scatter(centres[sel, 0], centres[sel, 1], s=dot, color=col, linewidths=0,
                       label=f'{name} ({int(sel.sum())})')
        handles.append(h)
    if handles:
        ax.legend(loc='upper right', fontsize=7, markerscale=max(1.0, 3.0 / dot),
                  framealpha=0.85)
    ax.set_xlim(0, w0)
    ax.set_ylim(h0, 0)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    from PIL import Image
    atomic_write(path, lambda tmp: Image.fromarray(rgb).save(tmp, format='PNG',
                                                              compress_level=3))
    return rgb
