"""Whole-slide images read region by region, and a tissue mask to skip the background.

Two back-ends behind one interface (:class:`SlideReader`):

* :class:`OpenSlideReader`: OpenSlide (PyPI ``openslide-python`` + ``openslide-bin``, the
  optional ``slide`` extra), for every format OpenSlide reads (SVS, NDPI, MRXS, generic
  tiled TIFF, ...).
* :class:`TiffSlideReader`: tifffile, for pyramidal TIFF / SVS when OpenSlide is absent.
  It decodes only the TIFF tiles (or strips) that a region touches, so a gigapixel level
  is never loaded. JPEG tiles (Aperio SVS, most pyramidal TIFFs) are decoded with Pillow
  from the page's JPEG tables + the tile's abbreviated stream; other compressions go
  through tifffile's own decoders.

Levels and downsamples follow OpenSlide: level k has ``level_dimensions[k] = (w, h)``
and ``level_downsamples[k] = (w0 / wk + h0 / hk) / 2``. For SVS the levels are the
pyramid pages of the baseline series (the stripped thumbnail / label / macro pages are
not levels), as in OpenSlide. Pixels are RGB uint8; transparent pixels (OpenSlide's
outside-of-scan areas, a missing TIFF tile) are white.

Coordinates: ``read_region(x, y, level, w, h)`` takes the top-left corner in level-0
pixels (OpenSlide's convention; QuPath's too) and returns ``h x w`` pixels of ``level``;
``read_level(level, x, y, w, h)`` takes it in that level's pixels. Level-k pixel column
c covers level-0 columns [c * d, (c + 1) * d) with d the level's downsample (the
continuous convention of docs/data_layout.md). OpenSlide interpolates when x / d is not
an integer (a non-integer downsample), tifffile takes floor(x / d): the two agree pixel
for pixel at integer level positions.

Tissue mask (:func:`tissue_mask`): Otsu's threshold on the HSV saturation (or on the mean
optical density, :func:`projects.common.stain.optical_density`) of a thumbnail of the
lowest-resolution level; blank glass is unsaturated / transparent, stained tissue is not.
"""
import math
import os
import os.path as osp
from collections import OrderedDict
from typing import Dict, List, NamedTuple, Optional, Tuple

import numpy as np

__all__ = [
    'SlideReader', 'OpenSlideReader', 'TiffSlideReader', 'open_slide', 'openslide_available',
    'tissue_mask', 'TISSUE_METHODS', 'Resolution', 'slide_mpp', 'choose_resolution',
    'read_tile'
]

TISSUE_METHODS = ('saturation', 'od')
# Otsu splits any image in two, even a blank one: these floors keep near-white noise
# (saturation of a 250 +- 3 grey is below 0.03, its OD below 0.04) out of the tissue.
_TISSUE_FLOOR = dict(saturation=0.05, od=0.05)


def openslide_available() -> bool:
    """True if ``import openslide`` works (the Python package and its C library)."""
    try:
        import openslide  # noqa: F401
    except (ImportError, OSError):
        return False
    return True


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


class SlideReader:
    """Common interface of the slide back-ends (see the module docstring).

    Attributes: ``path``, ``backend`` ('openslide' / 'tifffile'), ``level_count``,
    ``level_dimensions`` [(w, h)], ``level_downsamples`` [float], ``properties`` (dict of
    str; ``mpp`` in microns per level-0 pixel when the file says).
    """

    backend = ''

    def __init__(self, path: str) -> None:
        self.path = path
        self.level_dimensions: List[Tuple[int, int]] = []
        self.level_downsamples: List[float] = []
        self.properties: Dict[str, str] = {}

    # ---------------------------------------------------------------- interface
    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    @property
    def dimensions(self) -> Tuple[int, int]:
        """(width, height) of level 0."""
        return self.level_dimensions[0]

    def _read(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> 'SlideReader':
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f'{type(self).__name__}({self.path!r}, levels={self.level_dimensions}, '
                f'downsamples={[round(d, 4) for d in self.level_downsamples]})')

    # ---------------------------------------------------------------- checks
    def check_level(self, level, name: str = 'level') -> int:
        """``level`` as an int; ValueError naming the slide and its levels otherwise."""
        if not _is_int(level) or not 0 <= level < self.level_count:
            dims = ', '.join(f'{k}: {w}x{h}' for k, (w, h) in enumerate(self.level_dimensions))
            raise ValueError(f'{name} {level!r} does not exist in {self.path}: it has '
                             f'{self.level_count} level(s) ({dims})')
        return int(level)

    def _check_box(self, level: int, x: int, y: int, w: int, h: int) -> None:
        for name, v in (('x', x), ('y', y), ('w', w), ('h', h)):
            if not _is_int(v):
                raise ValueError(f'{self.path}: region {name} must be an int, got {v!r}')
        lw, lh = self.level_dimensions[level]
        if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > lw or y + h > lh:
            raise ValueError(f'{self.path}: region x={x}, y={y}, w={w}, h={h} (level {level} '
                             f'pixels) is empty or outside level {level} ({lw}x{lh})')

    # ---------------------------------------------------------------- reading
    def read_level(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        """RGB uint8 (h, w, 3) of ``level`` at column ``x``, row ``y`` (level pixels)."""
        level = self.check_level(level)
        self._check_box(level, x, y, w, h)
        return self._read(level, int(x), int(y), int(w), int(h))

    def read_region(self, x: int, y: int, level: int, w: int, h: int) -> np.ndarray:
        """RGB uint8 (h, w, 3) of ``level`` whose top-left corner is (``x``, ``y``) in
        level-0 pixels (OpenSlide's convention; level position floor(x / downsample))."""
        level = self.check_level(level)
        d = self.level_downsamples[level]
        return self.read_level(level, int(math.floor(x / d + 1e-9)),
                               int(math.floor(y / d + 1e-9)), w, h)

    def thumbnail(self, max_size: int = 1024, level: Optional[int] = None,
                  chunk: int = 2048) -> Tuple[np.ndarray, float]:
        """A thumbnail of ``level`` (default: the lowest-resolution one) whose longer side
        is at most ``max_size``, and its scale in level-0 pixels per thumbnail pixel.

        The level is read in chunks of about ``chunk`` x ``chunk`` pixels and reduced by
        an integer factor f = ceil(longer side / max_size) with a block mean (partial
        blocks at the right / bottom average the pixels they hold), so memory stays
        bounded by one chunk. Thumbnail pixel j covers level pixels [j f, (j + 1) f).
        """
        if not _is_int(max_size) or max_size < 1:
            raise ValueError(f'max_size must be a positive int, got {max_size!r}')
        level = self.level_count - 1 if level is None else self.check_level(level)
        lw, lh = self.level_dimensions[level]
        f = max(1, math.ceil(max(lw, lh) / max_size))
        step = f * max(1, chunk // f)
        tw, th = math.ceil(lw / f), math.ceil(lh / f)
        out = np.empty((th, tw, 3), np.uint8)
        for y0 in range(0, lh, step):
            for x0 in range(0, lw, step):
                w, h = min(step, lw - x0), min(step, lh - y0)
                out[y0 // f:(y0 + h + f - 1) // f, x0 // f:(x0 + w + f - 1) // f] = \
                    _block_mean(self._read(level, x0, y0, w, h), f)
        return out, f * self.level_downsamples[level]


def _block_mean(img: np.ndarray, f: int) -> np.ndarray:
    """Mean over f x f blocks (partial blocks at the end: mean of what they hold), rounded
    to the nearest integer (half to even), uint8."""
    if f == 1:
        return img
    h, w = img.shape[:2]
    hb, wb = -(-h // f), -(-w // f)
    ph, pw = hb * f - h, wb * f - w
    x = np.pad(img, ((0, ph), (0, pw), (0, 0))) if ph or pw else img
    # integer sums, first over the rows of each block, then over its columns
    s = x.reshape(hb, f, wb * f, 3).sum(1, dtype=np.uint32)
    s = s.reshape(hb, wb, f, 3).sum(2, dtype=np.uint32)
    rows = np.full(hb, f)
    rows[-1] = h - (hb - 1) * f
    cols = np.full(wb, f)
    cols[-1] = w - (wb - 1) * f
    n = (rows[:, None] * cols[None, :])[..., None]
    return np.rint(s / n).astype(np.uint8)


# TIFF ResolutionUnit -> microns per unit (1 = no absolute unit: no mpp)
_RESOLUTION_UNITS = {2: 25400.0, 3: 10000.0, 'inch': 25400.0, 'centimeter': 10000.0}


def _resolution_mpp(xres, unit) -> Optional[float]:
    """Microns per pixel from TIFF XResolution (pixels per unit: a number or a
    (numerator, denominator) pair) and ResolutionUnit (2 / 'inch', 3 / 'centimeter'), or
    None when either is missing, the unit is none, or the value is not positive or gives
    100 um/px or more (a desktop default such as 72 dpi = 353 um/px, not a scan)."""
    per_unit = _RESOLUTION_UNITS.get(unit if not isinstance(unit, str) else unit.lower())
    try:
        if isinstance(xres, (tuple, list)):
            xres = float(xres[0]) / float(xres[1])
        xres = float(xres)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    if per_unit is None or not math.isfinite(xres) or xres <= 0 or per_unit / xres >= 100:
        return None
    return per_unit / xres


def _rgba_to_rgb(arr: np.ndarray) -> np.ndarray:
    """Composite non-premultiplied RGBA over white (OpenSlide's transparent = no scan)."""
    rgb = arr[..., :3]
    alpha = arr[..., 3]
    if alpha.min() == 255:
        return np.ascontiguousarray(rgb)
    a = alpha.astype(np.float64)[..., None] / 255.0
    return np.clip(np.rint(rgb * a + 255.0 * (1.0 - a)), 0, 255).astype(np.uint8)


def _check_tiff_complete(path: str, pages) -> None:
    """ValueError if a tile / strip of ``pages`` lies beyond the end of the file."""
    size = osp.getsize(path)
    for k, page in enumerate(pages):
        offsets = np.asarray(page.dataoffsets, np.int64)
        counts = np.asarray(page.databytecounts, np.int64)
        if offsets.size == 0:
            raise ValueError(f'{path}: level {k} has no image data (truncated or corrupt)')
        ends = offsets + counts
        bad = np.flatnonzero(ends > size)
        if bad.size:
            i = int(bad[0])
            raise ValueError(f'{path}: truncated or corrupt slide: level {k} segment {i} '
                             f'ends at byte {int(ends[i])} but the file has {size} bytes '
                             f'({bad.size} of {ends.size} segments of that level are cut)')


# ====================================================================== OpenSlide
class OpenSlideReader(SlideReader):
    """:class:`SlideReader` on OpenSlide (``openslide.OpenSlide``)."""

    backend = 'openslide'

    def __init__(self, path: str) -> None:
        super().__init__(path)
        import openslide
        try:
            self._slide = openslide.OpenSlide(path)
        except (openslide.OpenSlideError, OSError, ValueError) as err:
            raise ValueError(f'{path}: unreadable or unsupported slide ({type(err).__name__}: '
                             f'{err})') from err
        self._error = openslide.OpenSlideError
        self.level_dimensions = [tuple(int(v) for v in d) for d in self._slide.level_dimensions]
        self.level_downsamples = [float(d) for d in self._slide.level_downsamples]
        props = dict(self._slide.properties)
        self.properties = {k: str(v) for k, v in props.items()}
        mpp = props.get('openslide.mpp-x') or _resolution_mpp(
            props.get('tiff.XResolution'), props.get('tiff.ResolutionUnit'))
        if mpp:
            self.properties['mpp'] = str(mpp)
        if not self.level_dimensions or min(min(d) for d in self.level_dimensions) <= 0:
            raise ValueError(f'{path}: the slide has no level with pixels')
        # a truncated TIFF-based file may open and fail later: check its IFDs and tiles now
        problem = None
        try:
            import tifffile
            with _TiffWarnings() as warned, tifffile.TiffFile(path) as tf:
                pages = [lv.keyframe for lv in tf.series[0].levels]
                len(tf.pages)
            if warned.offsets:
                problem = (f'{path}: truncated or corrupt slide: {warned.offsets[0]} (the '
                           f'file has {osp.getsize(path)} bytes)')
            else:
                _check_tiff_complete(path, pages)
        except ValueError as err:
            if 'truncated' in str(err) or 'no image data' in str(err):
                problem = str(err)
        except Exception:  # not a TIFF (MRXS, VMS, ...): OpenSlide's own checks only
            pass
        if problem is not None:
            self.close()
            raise ValueError(problem)

    def _read(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        d = self.level_downsamples[level]
        loc = (int(round(x * d)), int(round(y * d)))
        try:
            img = self._slide.read_region(loc, level, (w, h))
        except self._error as err:
            raise ValueError(f'{self.path}: cannot read level {level} region x={x}, y={y}, '
                             f'w={w}, h={h} (truncated or corrupt slide? {err})') from err
        return _rgba_to_rgb(np.asarray(img))

    def close(self) -> None:
        slide = getattr(self, '_slide', None)
        if slide is not None:
            slide.close()
            self._slide = None


# ====================================================================== tifffile
class _TiffWarnings:
    """Collect tifffile's log messages about invalid IFD offsets (a cut file): tifffile
    logs them and carries on with the pages it could read."""

    def __init__(self) -> None:
        import logging
        self.offsets: List[str] = []
        outer = self

        class _Handler(logging.Handler):
            def emit(self, record) -> None:
                msg = record.getMessage()
                if 'invalid' in msg and 'offset' in msg:
                    outer.offsets.append(msg)

        self._handler = _Handler(level=logging.WARNING)
        self._logger = logging.getLogger('tifffile')

    def __enter__(self) -> '_TiffWarnings':
        self._logger.addHandler(self._handler)
        return self

    def __exit__(self, *exc) -> None:
        self._logger.removeHandler(self._handler)


_ADOBE_RGB = b'\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x00'  # APP14, transform 0 = RGB
_JPEG = 7
_PHOTOMETRIC_RGB, _PHOTOMETRIC_YCBCR, _PHOTOMETRIC_GREY = 2, 6, (0, 1)


class TiffSlideReader(SlideReader):
    """:class:`SlideReader` on tifffile: pyramidal (or flat) TIFF and Aperio SVS.

    Levels are the levels of tifffile's first series (SVS baseline pyramid, SubIFD or
    successive reduced pages). Only the tiles / strips a region touches are read and
    decoded; the last ``cache_tiles`` decoded ones are kept (overlapping model tiles
    reread them).
    """

    backend = 'tifffile'

    def __init__(self, path: str, cache_tiles: int = 64) -> None:
        super().__init__(path)
        import tifffile
        self._tf = None
        try:
            with _TiffWarnings() as warned:
                self._tf = tifffile.TiffFile(path)
                series = self._tf.series[0]
                pages = [lv.keyframe for lv in series.levels]
                len(self._tf.pages)  # walks every IFD: a cut chain logs an invalid offset
        except Exception as err:  # tifffile raises many types on a corrupt file
            self.close()
            hint = '' if openslide_available() else (
                '; other formats (NDPI, MRXS, ...) need OpenSlide: pip install '
                '"mmhisto[slide]"')
            raise ValueError(f'{path}: unreadable slide: not a valid (pyramidal) TIFF / SVS, '
                             f'or truncated / corrupt ({type(err).__name__}: {err}){hint}'
                             ) from err
        if warned.offsets:
            self.close()
            raise ValueError(f'{path}: truncated or corrupt slide: {warned.offsets[0]} (the '
                             f'file has {osp.getsize(path)} bytes)')
        try:
            self._pages = [self._check_page(k, p) for k, p in enumerate(pages)]
            _check_tiff_complete(path, self._pages)
        except ValueError:
            self.close()
            raise
        self.level_dimensions = [(int(p.imagewidth), int(p.imagelength)) for p in self._pages]
        w0, h0 = self.level_dimensions[0]
        self.level_downsamples = [(w0 / w + h0 / h) / 2.0 for w, h in self.level_dimensions]
        self.properties = dict(vendor=series.kind if hasattr(series, 'kind') else '')
        desc = self._pages[0].description or ''
        for part in desc.split('|'):
            key, _, val = part.partition('=')
            if key.strip() == 'MPP':
                self.properties['mpp'] = val.strip()
        if 'mpp' not in self.properties:
            tags = self._pages[0].tags
            res, unit = tags.get('XResolution'), tags.get('ResolutionUnit')
            mpp = _resolution_mpp(res and res.value, unit and int(unit.value))
            if mpp:
                self.properties['mpp'] = str(mpp)
        self._cache: 'OrderedDict[Tuple[int, int], np.ndarray]' = OrderedDict()
        self._cache_size = int(cache_tiles)

    def _check_page(self, k: int, page):
        problems = []
        if page.planarconfig != 1 and page.samplesperpixel > 1:
            problems.append('planar (separate) samples')
        if page.bitspersample != 8 or np.dtype(page.dtype) != np.uint8:
            problems.append(f'{page.bitspersample}-bit samples (8-bit RGB expected)')
        if page.samplesperpixel not in (1, 3, 4):
            problems.append(f'{page.samplesperpixel} samples per pixel')
        if page.imagedepth > 1:
            problems.append('a volume (image depth > 1)')
        if problems:
            raise ValueError(f'{self.path}: level {k} is not supported by the tifffile '
                             f'reader: {", ".join(problems)}')
        return page

    def close(self) -> None:
        tf = getattr(self, '_tf', None)
        if tf is not None:
            tf.close()
            self._tf = None

    # ------------------------------------------------------------- segments
    def _segment_shape(self, page) -> Tuple[int, int]:
        """(rows, cols) of one tile / strip of ``page``."""
        if page.is_tiled:
            return int(page.tilelength), int(page.tilewidth)
        return int(min(page.rowsperstrip, page.imagelength)), int(page.imagewidth)

    def _decode(self, level: int, index: int) -> np.ndarray:
        key = (level, index)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        page = self._pages[level]
        rows, cols = self._segment_shape(page)
        offset, count = int(page.dataoffsets[index]), int(page.databytecounts[index])
        if count == 0:  # a missing tile: no scan there (OpenSlide: transparent -> white)
            arr = np.full((rows, cols, 3), 255, np.uint8)
        else:
            fh = self._tf.filehandle
            fh.seek(offset)
            data = fh.read(count)
            if len(data) != count:
                raise ValueError(f'{self.path}: truncated slide: level {level} segment {index} '
                                 f'has {len(data)} of {count} bytes')
            try:
                arr = self._decode_bytes(page, index, data)
            except ValueError:
                raise
            except Exception as err:
                raise ValueError(f'{self.path}: cannot decode level {level} segment {index} '
                                 f'({type(err).__name__}: {err}); corrupt slide, or a '
                                 f'compression that needs OpenSlide (pip install '
                                 f'"mmhisto[slide]")') from err
        arr = self._to_rgb(arr, page)
        if arr.shape[0] < rows or arr.shape[1] < cols:  # a short last strip
            arr = np.pad(arr, ((0, rows - arr.shape[0]), (0, cols - arr.shape[1]), (0, 0)),
                         constant_values=255)
        self._cache[key] = arr
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return arr

    def _decode_bytes(self, page, index: int, data: bytes) -> np.ndarray:
        if page.compression == _JPEG:
            import io

            from PIL import Image
            tables = page.jpegtables
            body = data[2:] if data[:2] == b'\xff\xd8' else data
            stream = b'\xff\xd8'
            if page.photometric == _PHOTOMETRIC_RGB:
                # Aperio's "JPEG/RGB": components stored as RGB, not YCbCr; the Adobe
                # marker tells libjpeg so (what libtiff / OpenSlide do for this tag)
                stream += _ADOBE_RGB
            if tables:
                stream += bytes(tables)[2:-2]  # tables without their SOI / EOI
            stream += body
            with Image.open(io.BytesIO(stream)) as im:
                im.load()
                return np.asarray(im)
        decoded, _, shape = page.decode(data, index, jpegtables=page.jpegtables)
        if decoded is None:
            raise ValueError(f'{self.path}: empty segment {index}')
        return np.asarray(decoded).reshape(shape[1:])  # (depth=1, rows, cols, samples)

    def _to_rgb(self, arr: np.ndarray, page) -> np.ndarray:
        if arr.ndim == 4:
            arr = arr[0]
        if arr.ndim == 2:
            arr = arr[..., None]
        if arr.shape[-1] == 1:
            return np.repeat(arr, 3, axis=2)
        if arr.shape[-1] == 4:
            return _rgba_to_rgb(arr)
        return arr

    def _read(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        page = self._pages[level]
        rows, cols = self._segment_shape(page)
        lw = self.level_dimensions[level][0]
        across = math.ceil(lw / cols)
        out = np.empty((h, w, 3), np.uint8)
        for ty in range(y // rows, (y + h - 1) // rows + 1):
            for tx in range(x // cols, (x + w - 1) // cols + 1):
                seg = self._decode(level, ty * across + tx)
                sy0, sx0 = ty * rows, tx * cols
                ya, yb = max(y, sy0), min(y + h, sy0 + rows)
                xa, xb = max(x, sx0), min(x + w, sx0 + cols)
                out[ya - y:yb - y, xa - x:xb - x] = seg[ya - sy0:yb - sy0, xa - sx0:xb - sx0]
        return out


# ====================================================================== opening
def open_slide(path: str, backend: str = 'auto') -> SlideReader:
    """Open a whole-slide image.

    ``backend``: ``'auto'`` (OpenSlide when it is installed and recognises the file, else
    tifffile), ``'openslide'`` or ``'tifffile'``. A missing file raises
    FileNotFoundError; an empty, truncated, corrupt or unsupported one ValueError naming
    it.
    """
    if backend not in ('auto', 'openslide', 'tifffile'):
        raise ValueError(f"backend must be 'auto', 'openslide' or 'tifffile', got {backend!r}")
    if not osp.isfile(path):
        raise FileNotFoundError(f'{path}: slide file not found')
    if os.path.getsize(path) == 0:
        raise ValueError(f'{path}: slide file is empty')
    if backend == 'openslide' or (backend == 'auto' and openslide_available()):
        if backend == 'openslide' and not openslide_available():
            raise ValueError(f'{path}: backend "openslide" requested but openslide cannot be '
                             'imported (pip install "mmhisto[slide]")')
        import openslide
        fmt = None
        try:
            fmt = openslide.OpenSlide.detect_format(path)
        except Exception:  # an unreadable file: let the reader below name the problem
            fmt = None
        if fmt is not None or backend == 'openslide':
            return OpenSlideReader(path)
    return TiffSlideReader(path)


# ====================================================================== resolution
class Resolution(NamedTuple):
    """Where tiles are read: pyramid ``level``, ``scale`` in level-0 pixels per output
    pixel (a point p of a tile whose top-left is level-0 ``offset`` maps back as
    level0 = offset + p * scale), and ``mpp`` in microns per output pixel (None when the
    slide does not say)."""
    level: int
    scale: float
    mpp: Optional[float]
    level_downsample: float = 1.0

    @property
    def resized(self) -> bool:
        """Whether tiles are resized from the level (scale is not its downsample)."""
        return self.scale != self.level_downsample


def slide_mpp(reader: SlideReader) -> Optional[float]:
    """Microns per level-0 pixel from the slide's metadata, or None."""
    val = reader.properties.get('mpp')
    try:
        mpp = float(val) if val is not None else None
    except ValueError:
        return None
    return mpp if mpp is not None and math.isfinite(mpp) and mpp > 0 else None


def choose_resolution(reader: SlideReader, mpp: Optional[float] = None,
                      level: Optional[int] = None, tol: float = 0.01) -> Resolution:
    """The level and scale that give tiles at ``mpp`` microns per pixel, or at ``level``.

    With ``mpp``: the pyramid level closest above the target (the coarsest level whose
    resolution is at least the target's, i.e. level mpp <= target), whose tiles are then
    resized by level mpp / target; when a level is within ``tol`` (relative) of the target
    it is read as is (no resize; ``mpp`` reports the level's true value). A target finer
    than level 0 reads level 0 and enlarges. A slide without mpp is a ValueError naming
    it. With ``level``: that level, unresized. With neither: level 0. Both: ValueError.
    """
    if mpp is not None and level is not None:
        raise ValueError(f'{reader.path}: give an mpp or a level, not both '
                         f'(mpp={mpp}, level={level})')
    mpp0 = slide_mpp(reader)
    if mpp is None:
        level = reader.check_level(0 if level is None else level)
        d = float(reader.level_downsamples[level])
        return Resolution(level, d, mpp0 * d if mpp0 else None, d)
    if not isinstance(mpp, (int, float)) or not math.isfinite(mpp) or mpp <= 0:
        raise ValueError(f'mpp must be a positive number, got {mpp!r}')
    if mpp0 is None:
        raise ValueError(f'{reader.path}: the slide has no microns-per-pixel in its '
                         'metadata, so --mpp cannot be met; give a --level instead')
    scale = float(mpp) / mpp0
    downs = [float(d) for d in reader.level_downsamples]
    ok = [k for k, d in enumerate(downs) if d <= scale * (1 + tol)]
    k = max(ok, key=lambda j: downs[j]) if ok else 0
    if abs(downs[k] / scale - 1) <= tol:
        scale = downs[k]
    return Resolution(k, scale, mpp0 * scale, downs[k])


def read_tile(reader: SlideReader, res: Resolution, x: float, y: float, w: int,
              h: int) -> np.ndarray:
    """RGB uint8 (h, w, 3) at ``res`` whose top-left is level-0 (``x``, ``y``): output
    pixel (i, j) covers level-0 [x + j s, x + (j + 1) s) x [y + i s, y + (i + 1) s) with
    s = res.scale. Parts outside the slide are white. Resizing (when res.scale is not the
    level's downsample) is area averaging when shrinking, bilinear when enlarging (cv2)."""
    import cv2
    d = float(reader.level_downsamples[res.level])
    lw, lh = reader.level_dimensions[res.level]
    f = res.scale / d  # level pixels per output pixel
    lx0, ly0 = x / d, y / d
    cols, rows = (w, h) if f == 1 else (max(1, int(round(w * f))), max(1, int(round(h * f))))
    ix, iy = int(math.floor(lx0 + 1e-9)), int(math.floor(ly0 + 1e-9))
    region = np.full((rows, cols, 3), 255, np.uint8)
    xa, ya, xb, yb = max(ix, 0), max(iy, 0), min(ix + cols, lw), min(iy + rows, lh)
    if xb > xa and yb > ya:
        region[ya - iy:yb - iy, xa - ix:xb - ix] = reader.read_level(
            res.level, xa, ya, xb - xa, yb - ya)
    if (cols, rows) == (w, h):
        return region
    interp = cv2.INTER_AREA if f > 1 else cv2.INTER_LINEAR
    return cv2.resize(region, (int(w), int(h)), interpolation=interp)


# ====================================================================== tissue mask
def tissue_mask(rgb: np.ndarray, method: str = 'saturation',
                min_value: Optional[float] = None, closing: int = 2,
                min_object: int = 4) -> Tuple[np.ndarray, float]:
    """Tissue (True) vs background of an RGB uint8 thumbnail by Otsu's threshold.

    ``method='saturation'``: HSV saturation (max - min) / max of each pixel (0 for black);
    ``'od'``: mean optical density over the channels, -ln(max(I, 1) / 255)
    (:func:`projects.common.stain.optical_density`). Pixels above ``max(otsu,
    min_value)`` are tissue; ``min_value`` (default 0.05 for both) keeps a blank slide
    blank, since Otsu always splits an image in two. A binary closing with a disk of
    radius ``closing`` thumbnail pixels (0 = none; the image border is padded so it does
    not erode) joins the gaps between stained fibres; 8-connected objects of fewer than
    ``min_object`` thumbnail pixels (dust, specks) are dropped. Returns (mask bool
    (H, W), the threshold used).
    """
    from skimage.filters import threshold_otsu

    from .stain import optical_density
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[-1] != 3 or rgb.dtype != np.uint8 or rgb.size == 0:
        raise ValueError('rgb: expected a non-empty RGB uint8 image (H, W, 3), got '
                         f'{rgb.dtype} {rgb.shape}')
    if method not in TISSUE_METHODS:
        raise ValueError(f'method: expected one of {TISSUE_METHODS}, got {method!r}')
    if method == 'saturation':
        mx = rgb.max(2).astype(np.float64)
        mn = rgb.min(2).astype(np.float64)
        value = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1.0), 0.0)
    else:
        value = optical_density(rgb).mean(2)
    floor = _TISSUE_FLOOR[method] if min_value is None else float(min_value)
    thr = floor
    if value.max() > value.min():
        thr = max(float(threshold_otsu(value)), floor)
    mask = value > thr
    from scipy import ndimage
    if closing > 0 and mask.any():
        r = int(closing)
        yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
        disk = xx * xx + yy * yy <= r * r
        mask = ndimage.binary_closing(np.pad(mask, r, mode='edge'), disk)[r:-r, r:-r]
    if min_object > 1 and mask.any():
        lab, _ = ndimage.label(mask, structure=np.ones((3, 3), bool))
        big = np.bincount(lab.ravel()) >= min_object
        big[0] = False
        mask = big[lab]
    return mask, thr
