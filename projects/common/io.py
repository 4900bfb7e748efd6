"""Reading and writing images, instance maps and point files with errors that name the file.

Every reader raises :class:`ValueError` (or :class:`FileNotFoundError`) with the offending
path in the message; nothing is skipped silently. Writers are atomic: they write to a
temporary name in the same folder and rename.
"""
import os
import os.path as osp
import shutil
import tempfile
from typing import List, Optional, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError


def _check_exists(path: str, what: str) -> None:
    if not osp.isfile(path):
        raise FileNotFoundError(f'{path}: {what} file not found')


def read_image(path: str, channels: Optional[int] = 3) -> np.ndarray:
    """Read an image as a numpy array (H, W, C) for ``channels`` = 3, (H, W) for 1.

    Grey images are repeated to 3 channels, RGBA is rejected unless ``channels`` is None
    (then the array is returned as stored). TIFF files are read with tifffile so 16-bit
    fluorescence images keep their range. Raises ValueError naming the file if it is
    corrupt, empty or has an unsupported channel count.
    """
    _check_exists(path, 'image')
    try:
        if path.lower().endswith(('.tif', '.tiff')):
            import tifffile
            arr = tifffile.imread(path)
        else:
            with Image.open(path) as im:
                im.load()
                arr = np.asarray(im)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise ValueError(f'{path}: corrupt or unreadable image ({err})') from err
    if arr.size == 0:
        raise ValueError(f'{path}: image is empty')
    if channels is None:
        return arr
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)  # channel-first TIFF
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if channels == 1:
        if arr.ndim != 2:
            raise ValueError(f'{path}: expected a single-channel image, got shape {arr.shape}')
        return arr
    if channels != 3:
        raise ValueError(f'channels must be 1, 3 or None, got {channels}')
    if arr.ndim == 2:
        return np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(f'{path}: expected an RGB or grey image, got shape {arr.shape} '
                         f'({arr.shape[-1] if arr.ndim == 3 else arr.ndim} channels)')
    return arr


def to_uint8(img: np.ndarray, low_pct: float = 0.5, high_pct: float = 99.5) -> np.ndarray:
    """Scale any-range image (e.g. uint16 fluorescence) to uint8 by percentiles."""
    if img.dtype == np.uint8:
        return img
    img = img.astype(np.float64)
    lo, hi = np.percentile(img, [low_pct, high_pct])
    if hi <= lo:
        hi = lo + 1.0
    return (np.clip((img - lo) / (hi - lo), 0, 1) * 255 + 0.5).astype(np.uint8)


def read_rgb_uint8(path: str) -> np.ndarray:
    """RGB uint8 (H, W, 3) of a grey, RGB, or RGBA / LA image whose alpha is opaque.

    16-bit images are stretched with :func:`to_uint8`; a non-integer image, a transparent
    pixel or another channel count raises ValueError naming the file.
    """
    raw = read_image(path, channels=None)
    if raw.dtype == bool or not np.issubdtype(raw.dtype, np.integer):
        raise ValueError(f'{path}: expected an 8- or 16-bit integer image, got {raw.dtype}')
    if raw.ndim == 3 and raw.shape[-1] in (2, 4):  # LA / RGBA: the alpha must be opaque
        alpha = raw[..., -1]
        opaque = np.iinfo(raw.dtype).max
        n_bad = int(np.count_nonzero(alpha != opaque))
        if n_bad:
            raise ValueError(f'{path}: alpha channel is not opaque ({n_bad} of {alpha.size} '
                             f'pixels below {opaque})')
        raw = raw[..., :-1]
    if raw.ndim == 3 and raw.shape[-1] == 1:
        raw = raw[..., 0]
    if raw.ndim == 2:
        raw = np.repeat(raw[..., None], 3, axis=2)
    if raw.ndim != 3 or raw.shape[-1] != 3:
        raise ValueError(f'{path}: expected a grey, RGB or RGBA image, got shape {raw.shape}')
    return to_uint8(raw)


def read_instance_map(path: str) -> np.ndarray:
    """Read an instance map (uint16/int32 PNG or TIFF, or .npy) as int32 (H, W)."""
    _check_exists(path, 'instance map')
    if path.endswith('.npy'):
        try:
            arr = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as err:
            raise ValueError(f'{path}: corrupt instance map ({err})') from err
    else:
        arr = read_image(path, channels=None)
    if arr.ndim != 2:
        raise ValueError(f'{path}: an instance map must be 2-D, got shape {arr.shape}')
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f'{path}: an instance map must hold integers, got {arr.dtype}')
    if arr.min() < 0:
        raise ValueError(f'{path}: instance map has negative ids')
    return arr.astype(np.int32)


def read_points(path: str, shape: Optional[tuple] = None) -> tuple:
    """Read a point CSV (header ``x,y[,label]``) -> (points (N, 2) float32, labels (N,) int64).

    An empty file with only the header is valid (no points). ``shape`` = (H, W) checks that
    every point lies inside the image.
    """
    _check_exists(path, 'point')
    with open(path) as f:
        header = f.readline().strip().replace(' ', '').lower()
        if not header:
            raise ValueError(f'{path}: point file is empty (expected a header "x,y,label")')
        cols = header.split(',')
        if cols[:2] != ['x', 'y']:
            raise ValueError(f'{path}: header must start with "x,y", got "{header}"')
        rows = [ln.strip() for ln in f if ln.strip()]
    pts = np.zeros((len(rows), 2), np.float32)
    labels = np.zeros(len(rows), np.int64)
    for i, row in enumerate(rows):
        vals = row.split(',')
        try:
            pts[i] = float(vals[0]), float(vals[1])
            if len(cols) > 2 and cols[2] == 'label' and len(vals) > 2:
                labels[i] = int(vals[2])
        except (ValueError, IndexError) as err:
            raise ValueError(f'{path}: line {i + 2} "{row}" is not "x,y[,label]"') from err
    if shape is not None:
        check_points_inside(pts, shape, path)
    return pts, labels


def check_points_inside(points: np.ndarray, shape: tuple, source: str) -> None:
    """Raise ValueError naming ``source`` if a point (x, y) lies outside an (H, W) image."""
    h, w = shape[:2]
    if len(points) == 0:
        return
    bad = ~np.isfinite(points).all(1) | (points[:, 0] < 0) | (points[:, 1] < 0) | \
        (points[:, 0] > w) | (points[:, 1] > h)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        x, y = points[i]
        raise ValueError(f'{source}: point {i} at (x={x:.1f}, y={y:.1f}) lies outside the '
                         f'{w}x{h} image')


def _current_umask() -> int:
    """The process umask, read without changing it where possible.

    Linux >= 4.7 reports it in /proc/self/status; elsewhere it is read by setting and
    immediately restoring it (``os.umask`` has no read-only form).
    """
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('Umask:'):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str, write) -> None:
    """Call ``write(tmp)`` on a temporary file next to ``path``, then rename it to ``path``.

    ``tempfile.mkstemp`` creates the file with mode 0600 and ``os.replace`` keeps it, so
    the mode is set to what ``open`` would give a new file (0666 & ~umask) before the
    rename.
    """
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    suffix = osp.splitext(path)[1]
    fd, tmp = tempfile.mkstemp(dir=folder, prefix='.tmp_', suffix=suffix)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_current_umask())
        os.replace(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise


def write_image(path: str, arr: np.ndarray) -> None:
    """Write a uint8/uint16 image (PNG, TIFF or JPEG by extension), atomically."""
    if path.lower().endswith(('.tif', '.tiff')):
        import tifffile
        atomic_write(path, lambda tmp: tifffile.imwrite(tmp, arr))
    else:
        atomic_write(path, lambda tmp: Image.fromarray(arr).save(tmp))


def write_instance_map(path: str, inst: np.ndarray) -> None:
    """Write an instance map as uint16 PNG (or .npy int32 if ids exceed 65535)."""
    if path.endswith('.npy'):
        atomic_write(path, lambda tmp: np.save(tmp, inst.astype(np.int32)))
        return
    if inst.max(initial=0) > 65535:
        raise ValueError(f'{path}: {inst.max()} instance ids do not fit a uint16 PNG; use .npy')
    write_image(path, inst.astype(np.uint16))


def write_points(path: str, points: np.ndarray, labels: Optional[np.ndarray] = None) -> None:
    """Write points (N, 2) and optional labels as CSV with header ``x,y,label``."""
    if labels is None:
        labels = np.zeros(len(points), np.int64)
    lines = ['x,y,label'] + [f'{x:.2f},{y:.2f},{int(c)}' for (x, y), c in zip(points, labels)]

    def write(tmp: str) -> None:
        with open(tmp, 'w') as f:
            f.write('\n'.join(lines) + '\n')

    atomic_write(path, write)


def write_json(path: str, obj) -> None:
    """Write JSON atomically."""
    import json

    def write(tmp: str) -> None:
        with open(tmp, 'w') as f:
            json.dump(obj, f)

    atomic_write(path, write)


def read_json(path: str, what: str = 'JSON'):
    """Read a JSON file; errors name the file and say what it should be (``what``):
    missing, empty or invalid."""
    import json
    _check_exists(path, what)
    if osp.getsize(path) == 0:
        raise ValueError(f'{path}: {what} file is empty')
    try:
        with open(path) as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f'{path}: not valid JSON ({err})') from err


def read_coco(path: str) -> dict:
    """Read a COCO annotation file; errors name the file (missing, empty, invalid, no images)."""
    coco = read_json(path, 'annotation')
    if not isinstance(coco, dict) or not coco.get('images'):
        raise ValueError(f'{path}: no "images" (an empty or non-COCO annotation file)')
    return coco


def prepare_out_dir(out: str, outputs: Sequence[str], overwrite: bool, what: str) -> List[str]:
    """Make ``out`` ready for a tool's data set: refuse a non-empty folder unless
    ``overwrite``, which removes only the entries named in ``outputs`` (other files are kept
    and returned, sorted). ``what`` names the data set in the error."""
    if osp.exists(out) and not osp.isdir(out):
        raise ValueError(f'{out}: output path exists and is not a folder')
    if osp.isdir(out) and os.listdir(out):
        if not overwrite:
            raise ValueError(f'{out}: output folder is not empty; pass --overwrite to replace '
                             f'{what} or choose another --out')
        for entry in outputs:
            full = osp.join(out, entry)
            if osp.isdir(full) and not osp.islink(full):
                shutil.rmtree(full)
            elif osp.lexists(full):
                os.remove(full)
    os.makedirs(out, exist_ok=True)
    return sorted(os.listdir(out))
