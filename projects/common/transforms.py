"""Loading transforms for images, points and instance maps, and the sparse-label simulator.

All are :class:`mmcv.transforms.BaseTransform` subclasses registered in both mmdet's and
mmseg's TRANSFORMS, so the same names work in detection and segmentation pipelines.

Where the transforms go in a pipeline
-------------------------------------
- ``StrictLoadImageFromFile`` replaces mmcv's ``LoadImageFromFile`` as the first step:
  same output for ordinary 8-bit grey / RGB files, but a clear ValueError naming the
  file for corrupt, RGBA, multi-channel or wrongly sized images instead of a bare
  ``assert`` or a silent conversion.
- ``LoadInstanceAnnotations`` right after the image / semantic-map loading: it appends
  ``'gt_instance_map'`` to ``results['seg_fields']``, so mmseg's RandomFlip / RandomCrop /
  Resize move it together with ``gt_seg_map`` (nearest-neighbour, exact ids).
- ``SparsifyAnnotations`` right after the loading transforms, before any transform that
  crops or filters instances: the kept subset is drawn from the complete annotation of the
  image (the same subset as ``tools/sparsify_annotations.py`` writes).
- ``PackPatchInputs`` last in a patch / cell-crop classification pipeline (negative
  pseudo labelling, the cell GAN): ``inputs`` (3, H, W) uint8 tensor and a plain
  :class:`mmengine.structures.BaseDataElement` with ``gt_label``.
- ``LoadPointAnnotations``: neither mmdet's nor mmseg's geometric transforms know
  ``gt_points``. In a **detection** pipeline put it *after* the geometric transforms: it
  maps the instances' points through ``results['homography_matrix']``, which mmdet's
  Resize / RandomFlip / RandomCrop / RandomAffine ... record, and keeps only the points of
  the boxes that survived (crops, filters). In a **segmentation** pipeline (mmseg records
  no homography) put it *before* geometric transforms (e.g. to build point labels with
  ``PointsToVoronoiLabel``); it raises if it sees a flipped / resized image without a
  homography, instead of returning misplaced points.

Coordinates
-----------
Points are continuous pixel coordinates, the convention of mmdet's boxes
(docs/data_layout.md): pixel (r, c) covers [c, c+1) x [r, r+1), a centroid is
``center_of_mass + 0.5`` (:func:`projects.common.instances.instance_geometry`). So
mmdet's homographies map points exactly like boxes: a horizontal flip x -> W - x, a
resize x -> s * x, a crop x -> x - x0, with no half-pixel correction.
"""
import io
import os.path as osp
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
from mmcv.transforms import BaseTransform, LoadImageFromFile
from mmengine.structures import BaseDataElement

from .instances import box_centres
from .io import check_points_inside, read_instance_map, read_points, to_uint8
from .registry import TRANSFORMS, register
from .sparsify import image_seed, select_kept, sparsify_label_maps

__all__ = ['StrictLoadImageFromFile', 'LoadPointAnnotations', 'LoadInstanceAnnotations',
           'SparsifyAnnotations', 'PackPatchInputs']


def _box_array(boxes) -> np.ndarray:
    """(N, 4) float64 numpy array from mmdet boxes, a tensor or an array."""
    if hasattr(boxes, 'tensor'):  # mmdet BaseBoxes
        boxes = boxes.tensor
    if hasattr(boxes, 'detach'):
        boxes = boxes.detach().cpu().numpy()
    return np.asarray(boxes, np.float64).reshape(-1, 4)


def _project(points: np.ndarray, hmat: np.ndarray) -> np.ndarray:
    """Apply a 3x3 homography to (N, 2) points."""
    if len(points) == 0:
        return points.copy()
    ph = np.concatenate([points, np.ones((len(points), 1))], 1) @ np.asarray(hmat, np.float64).T
    return ph[:, :2] / ph[:, 2:3]


def _project_boxes(boxes: np.ndarray, hmat: np.ndarray) -> np.ndarray:
    """Project xyxy boxes by their 4 corners and take the enclosing box (mmdet's rule)."""
    if len(boxes) == 0:
        return boxes.copy()
    x1, y1, x2, y2 = boxes.T
    corners = np.stack([np.stack([x1, y1], 1), np.stack([x2, y1], 1),
                        np.stack([x1, y2], 1), np.stack([x2, y2], 1)], 1)  # (N, 4, 2)
    pc = _project(corners.reshape(-1, 2), hmat).reshape(-1, 4, 2)
    return np.concatenate([pc.min(1), pc.max(1)], 1)


def _original_shape(results: dict) -> tuple:
    """(H, W) of the image as loaded: ori_shape, else the dataset's height / width."""
    if results.get('ori_shape') is not None:
        return tuple(results['ori_shape'][:2])
    if 'height' in results and 'width' in results:
        return int(results['height']), int(results['width'])
    if results.get('img_shape') is not None:
        return tuple(results['img_shape'][:2])
    raise ValueError(f'{results.get("img_path", "<unknown image>")}: no image shape to check '
                     f'points against (load the image first or give height/width)')


@register(TRANSFORMS)
class LoadPointAnnotations(BaseTransform):
    """Load key points into ``results['gt_points']`` (float32 (N, 2), x, y in continuous
    pixel coordinates, see the module docstring) and ``results['gt_point_labels']``
    (int64 (N,)).

    Sources: with ``from_instances=True`` and ``results['instances']`` present
    (detection, :class:`CellDetDataset`), each instance's ``'point'`` (else its box
    centre) and ``'bbox_label'``; otherwise the CSV at ``results['points_path']``
    (segmentation, :class:`NucleiSegDataset`; columns x, y, label). Zero points is valid.
    An image whose dataset flag ``labeled`` is False and has no point file is passed
    through unchanged.

    Points must lie inside the loaded image (``ori_shape``, else ``height`` / ``width``):
    otherwise ValueError naming the point file / image and the point. Then they are
    mapped to the current frame with ``results['homography_matrix']`` (mmdet's geometric
    transforms) and clipped to the current image (a cell cut by a crop keeps its point on
    the border). In detection, when boxes were dropped (crop, filter), only the points of
    the surviving boxes are kept, in box order: surviving boxes are matched in order to
    the projected (and clipped) original boxes, within 0.5 px. ``gt_points[i]`` belongs to
    ``gt_bboxes[i]``, ignored (crowd) instances included: mmdet's ``PackDetInputs`` moves
    those to ``ignored_instances``, so select with ``~gt_ignore_flags`` to align with
    ``gt_instances``. PackDetInputs does not pack ``gt_points``: add ``'gt_points'`` /
    ``'gt_point_labels'`` to its ``meta_keys`` (then ``data_sample.metainfo['gt_points']``).
    See the module docstring for where to put this transform.
    """

    def __init__(self, from_instances: bool = True, match_tol: float = 0.5) -> None:
        self.from_instances = from_instances
        self.match_tol = match_tol

    def transform(self, results: dict) -> Optional[dict]:
        img_path = results.get('img_path', '<unknown image>')
        boxes0 = None
        if self.from_instances and 'instances' in results:
            insts = results['instances']
            pts = np.zeros((len(insts), 2), np.float64)
            labels = np.zeros(len(insts), np.int64)
            boxes0 = np.zeros((len(insts), 4), np.float64)
            for i, inst in enumerate(insts):
                boxes0[i] = inst['bbox']
                x1, y1, x2, y2 = inst['bbox']
                pts[i] = inst.get('point', ((x1 + x2) / 2.0, (y1 + y2) / 2.0))[:2]
                labels[i] = inst.get('bbox_label', 0)
            source = img_path
        else:
            path = results.get('points_path')
            if path is None:
                if results.get('labeled', True) is False:
                    return results
                raise ValueError(f'{img_path}: no "instances" and no "points_path" to load '
                                 f'points from (configure data_prefix points_path)')
            pts, labels = read_points(path)
            pts = pts.astype(np.float64)
            source = f'{path} (image {img_path})'
        check_points_inside(pts, _original_shape(results), source)

        hmat = results.get('homography_matrix')
        if hmat is not None:
            pts = _project(pts, hmat)
        elif results.get('flip', False) or (results.get('img_shape') is not None
                                            and results.get('ori_shape') is not None and
                                            tuple(results['img_shape'][:2]) !=
                                            tuple(results['ori_shape'][:2])):
            raise ValueError(f'{img_path}: the image was flipped / resized / cropped by a '
                             f'transform that records no homography_matrix; put '
                             f'LoadPointAnnotations before the geometric transforms')

        if boxes0 is not None and results.get('gt_bboxes') is not None:
            cur = _box_array(results['gt_bboxes'])
            if len(cur) != len(boxes0):
                idx = self._match(boxes0, cur, hmat, results, img_path)
                pts, labels = pts[idx], labels[idx]
        if results.get('img_shape') is not None and len(pts):
            h, w = results['img_shape'][:2]
            pts[:, 0] = np.clip(pts[:, 0], 0, w)
            pts[:, 1] = np.clip(pts[:, 1], 0, h)
        results['gt_points'] = pts.astype(np.float32).reshape(-1, 2)
        results['gt_point_labels'] = labels.astype(np.int64)
        return results

    def _match(self, boxes0: np.ndarray, cur: np.ndarray, hmat, results: dict,
               img_path: str) -> np.ndarray:
        """Index of the original instance behind each current box (order is preserved)."""
        proj = _project_boxes(boxes0, hmat) if hmat is not None else boxes0.copy()
        cands = [proj]
        if results.get('img_shape') is not None:
            h, w = results['img_shape'][:2]
            cands.append(np.clip(proj, 0, [w, h, w, h]))
        idx, i = [], 0
        for j, box in enumerate(cur):
            while i < len(proj) and not any(
                    np.abs(c[i] - box).max() <= self.match_tol for c in cands):
                i += 1
            if i == len(proj):
                raise ValueError(
                    f'{img_path}: box {j} {box.round(1).tolist()} matches no annotated '
                    f'instance; a transform changed the boxes without recording a '
                    f'homography_matrix, or reordered them')
            idx.append(i)
            i += 1
        return np.asarray(idx, np.int64)

    def __repr__(self) -> str:
        return f'{type(self).__name__}(from_instances={self.from_instances})'


@register(TRANSFORMS)
class LoadInstanceAnnotations(BaseTransform):
    """Load ``results['inst_map_path']`` into ``results['gt_instance_map']`` (int32, 0 =
    background) and append ``'gt_instance_map'`` to ``results['seg_fields']``.

    mmseg's RandomFlip / RandomCrop and mmcv's Resize (nearest) act on every key in
    ``seg_fields``; they keep int32 ids exact (tested). The map must have the size of the
    image (or of ``gt_seg_map``): otherwise ValueError naming both files. An image whose
    dataset flag ``labeled`` is False and has no instance map is passed through unchanged.
    """

    def transform(self, results: dict) -> dict:
        img_path = results.get('img_path', '<unknown image>')
        path = results.get('inst_map_path')
        if path is None:
            if results.get('labeled', True) is False:
                return results
            raise ValueError(f'{img_path}: no "inst_map_path" (configure data_prefix '
                             f'inst_path)')
        inst = read_instance_map(path)
        if results.get('img') is not None:
            ref = tuple(results['img'].shape[:2])
            if inst.shape != ref:
                raise ValueError(f'{path}: instance map is {inst.shape[1]}x{inst.shape[0]} '
                                 f'but image {img_path} is {ref[1]}x{ref[0]} (load it '
                                 f'before geometric transforms)')
        if results.get('gt_seg_map') is not None:
            ref = tuple(results['gt_seg_map'].shape[:2])
            if inst.shape != ref:
                raise ValueError(f'{path}: instance map is {inst.shape[1]}x{inst.shape[0]} '
                                 f'but semantic map {results.get("seg_map_path")} is '
                                 f'{ref[1]}x{ref[0]}')
        results['gt_instance_map'] = inst.astype(np.int32)
        fields = results.setdefault('seg_fields', [])
        if 'gt_instance_map' not in fields:
            fields.append('gt_instance_map')
        return results


@register(TRANSFORMS)
class SparsifyAnnotations(BaseTransform):
    """Simulate sparse (non-exhaustive) labels inside a pipeline.

    Args:
        fraction: share of instances kept, in (0, 1] (``mode='nested'``).
        mode: 'nested' (:func:`projects.common.sparsify.nested_subsets`: every instance
            kept at 10% is kept at 30%, ...) or 'one_per_patch' (PU detection paper:
            :func:`projects.common.sparsify.one_per_patch`).
        seed: global seed; the image's own seed mixes it with ``zlib.crc32`` of the image
            file name, so every epoch (and the offline tool) keeps the same subset.
        patch_size, overlap: patch grid of 'one_per_patch'.
        ignore_index: semantic ignore label (kept as is).

    Detection (``gt_bboxes`` present): drops the same entries from ``gt_bboxes``
    (mmdet boxes, tensor or array), ``gt_bboxes_labels``, ``gt_ignore_flags``,
    ``gt_masks``, ``gt_points``, ``gt_point_labels`` and ``instances``. One-per-patch
    positions are ``gt_points`` if loaded, else the instances' points / box centres.
    Segmentation: instances from ``gt_instance_map`` (else the connected components of
    ``gt_seg_map``, else the points); removed instances become 0 in ``gt_instance_map``
    and background (0) in ``gt_seg_map`` (an unannotated cell looks like background);
    points of removed instances are removed. ``results['sparsify_kept']`` records the kept
    indices (into the instance order; segmentation: ascending instance ids, which are in
    ``results['sparsify_kept_ids']``).
    """

    def __init__(self,
                 fraction: Optional[float] = None,
                 mode: str = 'nested',
                 seed: int = 0,
                 patch_size: int = 500,
                 overlap: int = 100,
                 ignore_index: int = 255) -> None:
        if mode not in ('nested', 'one_per_patch'):
            raise ValueError(f'SparsifyAnnotations: mode must be "nested" or '
                             f'"one_per_patch", got {mode!r}')
        if mode == 'nested' and (fraction is None or not 0 < fraction <= 1):
            raise ValueError(f'SparsifyAnnotations: mode="nested" needs fraction in (0, 1], '
                             f'got {fraction}')
        self.fraction = None if fraction is None else float(fraction)
        self.mode = mode
        self.seed = seed
        self.patch_size = patch_size
        self.overlap = overlap
        self.ignore_index = ignore_index

    def _shape(self, results: dict) -> tuple:
        if results.get('img_shape') is not None:
            return tuple(results['img_shape'][:2])
        return _original_shape(results)

    def transform(self, results: dict) -> dict:
        img_path = results.get('img_path')
        if not img_path:
            raise ValueError('SparsifyAnnotations needs results["img_path"] to seed the '
                             'image deterministically')
        seed = image_seed(self.seed, osp.basename(img_path))
        if results.get('gt_bboxes') is not None:
            return self._detection(results, seed, img_path)
        if any(results.get(k) is not None for k in ('gt_instance_map', 'gt_seg_map',
                                                     'gt_points')):
            return self._segmentation(results, seed)
        if results.get('labeled', True) is False:
            return results
        raise ValueError(f'{img_path}: SparsifyAnnotations found no annotation to sparsify '
                         f'(load gt_bboxes, gt_instance_map, gt_seg_map or gt_points first)')

    def _detection(self, results: dict, seed: int, img_path: str) -> dict:
        boxes = results['gt_bboxes']
        n = len(boxes)
        insts = results.get('instances')
        if insts is not None and len(insts) != n:
            raise ValueError(f'{img_path}: {n} boxes but {len(insts)} annotated instances: '
                             f'put SparsifyAnnotations before transforms that drop boxes')
        points = None
        if self.mode == 'one_per_patch':
            if results.get('gt_points') is not None and len(results['gt_points']) == n:
                points = np.asarray(results['gt_points'], np.float64)
            elif insts is not None:
                points = np.asarray([i.get('point', ((i['bbox'][0] + i['bbox'][2]) / 2,
                                                     (i['bbox'][1] + i['bbox'][3]) / 2))
                                     for i in insts], np.float64).reshape(-1, 2)
            else:
                points = box_centres(_box_array(boxes))
        kept = select_kept(self.mode, n, seed, self.fraction, points, self._shape(results),
                           self.patch_size, self.overlap)
        for key in ('gt_bboxes', 'gt_bboxes_labels', 'gt_ignore_flags', 'gt_masks',
                    'gt_points', 'gt_point_labels'):
            val = results.get(key)
            if val is None:
                continue
            if len(val) != n:
                raise ValueError(f'{img_path}: results["{key}"] has {len(val)} entries, '
                                 f'gt_bboxes has {n}')
            results[key] = self._index(val, kept)
        if insts is not None:
            results['instances'] = [insts[i] for i in kept]
        results['sparsify_kept'] = kept
        return results

    @staticmethod
    def _index(val, kept: np.ndarray):
        if hasattr(val, 'tensor') or hasattr(val, 'detach'):  # mmdet boxes / tensors
            import torch
            return val[torch.as_tensor(kept, dtype=torch.long)]
        if isinstance(val, np.ndarray):
            return val[kept]
        return val[kept]  # mmdet BitmapMasks / PolygonMasks accept an index array

    def _segmentation(self, results: dict, seed: int) -> dict:
        pts = results.get('gt_points')
        out = sparsify_label_maps(
            seed, self.mode, self.fraction,
            inst_map=results.get('gt_instance_map'),
            seg_map=results.get('gt_seg_map'),
            points=pts,
            image_shape=self._shape(results),
            patch_size=self.patch_size,
            overlap=self.overlap,
            ignore_index=self.ignore_index)
        if out['inst_map'] is not None:
            results['gt_instance_map'] = out['inst_map']
        if out['seg_map'] is not None:
            results['gt_seg_map'] = out['seg_map']
        if pts is not None:
            keep = out['point_keep']
            results['gt_points'] = np.asarray(pts)[keep]
            if results.get('gt_point_labels') is not None:
                results['gt_point_labels'] = np.asarray(results['gt_point_labels'])[keep]
        results['sparsify_kept'] = out['kept']
        if out['kept_ids'] is not None:
            results['sparsify_kept_ids'] = out['kept_ids']
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(fraction={self.fraction}, mode={self.mode!r}, '
                f'seed={self.seed}, patch_size={self.patch_size}, overlap={self.overlap})')


# ----------------------------------------------------------------- image loading
_TIFF_MAGIC = (b'II*\x00', b'MM\x00*', b'II+\x00', b'MM\x00+')
_COLOR_TYPES = ('color', 'grayscale', 'unchanged', 'color_ignore_orientation',
                'grayscale_ignore_orientation')
_ORIENTATION_TAG = 274  # EXIF / TIFF "Orientation"


def _channel_message(filename: str, shape: tuple, channels: int) -> str:
    """The error for an image that is neither grey nor RGB, with a hint on what to do."""
    if channels == 2:
        hint = ('grey + alpha, or two separate channels: save one grey channel or an RGB '
                'image')
    elif channels == 4:
        hint = ('RGBA (or grey + alpha): save it as RGB, or set drop_alpha=True to accept '
                'images whose alpha channel is fully opaque')
    else:
        hint = ('a multi-channel stack (e.g. fluorescence channels): select or merge the '
                'channels into one grey or RGB image')
    return (f'{filename}: image has {channels} channels (shape {tuple(shape)}); expected 1 '
            f'(grey) or 3 (RGB). It looks like {hint}')


def _bgr_order(arr: np.ndarray) -> np.ndarray:
    """RGB[A...] -> BGR[A...] for arrays with >= 3 channels (a copy); others unchanged."""
    if arr.ndim == 3 and arr.shape[2] >= 3:
        return arr[..., [2, 1, 0] + list(range(3, arr.shape[2]))]
    return arr


def _apply_orientation(img: np.ndarray, orientation: int) -> np.ndarray:
    """Rotate / flip (H, W[, C]) as the EXIF / TIFF Orientation tag asks (EXIF 2.32,
    tag 274; what OpenCV's IMREAD_COLOR and Pillow's ``exif_transpose`` do)."""
    if orientation == 2:  # mirrored horizontally
        return img[:, ::-1]
    if orientation == 3:  # rotated 180
        return img[::-1, ::-1]
    if orientation == 4:  # mirrored vertically
        return img[::-1]
    if orientation == 5:  # transpose (flip along the main diagonal)
        return img.swapaxes(0, 1)
    if orientation == 6:  # rotate 90 clockwise
        return np.rot90(img, -1)
    if orientation == 7:  # transverse (flip along the anti-diagonal)
        return img.swapaxes(0, 1)[::-1, ::-1]
    if orientation == 8:  # rotate 90 counter-clockwise
        return np.rot90(img, 1)
    return img


def _exif_orientation(content: bytes) -> int:
    """EXIF orientation of a JPEG / PNG / WebP file (1 when it has no EXIF block)."""
    if not any(tag in content for tag in (b'Exif', b'eXIf', b'EXIF')):
        return 1  # cheap test first: reading a PNG's EXIF with Pillow decodes the image
    from PIL import Image
    try:
        with Image.open(io.BytesIO(content)) as im:
            value = int(im.getexif().get(_ORIENTATION_TAG, 1))
    except Exception:  # an EXIF block that cannot be parsed is ignored by OpenCV too
        return 1
    return value if 1 <= value <= 8 else 1


def _inspect_tiff(content: bytes, filename: str) -> int:
    """Check a TIFF header (one 2-D image, 1 / 3 / 4 samples); return its orientation.

    Needed because OpenCV silently reads only the first page of a stack and only the
    first sample of a 2-sample image.
    """
    import tifffile
    try:
        with tifffile.TiffFile(io.BytesIO(content)) as tif:
            series = tif.series[0]
            axes, shape, npages = series.axes, tuple(series.shape), len(tif.pages)
            tag = tif.pages[0].tags.get(_ORIENTATION_TAG)
            orientation = int(tag.value) if tag is not None else 1
    except Exception as err:  # tifffile raises many types on a broken file
        raise ValueError(f'{filename}: corrupt or unreadable image (TIFF header: '
                         f'{type(err).__name__}: {err})') from err
    if axes not in ('YX', 'YXS', 'SYX'):
        raise ValueError(f'{filename}: TIFF holds an image stack of shape {shape} (axes '
                         f'{axes!r}, {npages} pages); expected one 2-D grey or RGB image '
                         f'(OpenCV would silently read only the first plane): export a '
                         f'single image')
    channels = shape[axes.index('S')] if 'S' in axes else 1
    if channels not in (1, 3, 4):
        raise ValueError(_channel_message(filename, shape, channels))
    return orientation if 1 <= orientation <= 8 else 1


def _decode_tifffile(content: bytes, filename: str) -> np.ndarray:
    """Decode the first series of a TIFF as stored (channels last, BGR order)."""
    import tifffile
    with tifffile.TiffFile(io.BytesIO(content)) as tif:
        series = tif.series[0]
        photometric = tif.pages[0].photometric
        if photometric in (tifffile.PHOTOMETRIC.PALETTE, tifffile.PHOTOMETRIC.MINISWHITE):
            raise ValueError(f'{filename}: {photometric.name} TIFF is not decoded by the '
                             f'tifffile backend; use imdecode_backend="cv2"')
        arr = series.asarray()
        if series.axes == 'SYX':
            arr = np.moveaxis(arr, 0, -1)
    return _bgr_order(arr)


def _decode_pillow(content: bytes) -> np.ndarray:
    """Decode with Pillow as stored, but with palettes expanded and grey + alpha as 4
    channels (as OpenCV does), and a TIFF oriented (as OpenCV does); BGR order."""
    from PIL import Image
    with Image.open(io.BytesIO(content)) as im:
        im.load()
        # Pillow (13 here) applies a TIFF's orientation while loading and drops the tag;
        # an orientation still present is applied below
        tiff_orientation = im.getexif().get(_ORIENTATION_TAG, 1) if im.format == 'TIFF' else 1
        mode = im.mode
        if mode in ('P', 'PA'):
            im = im.convert('RGBA' if mode == 'PA' or 'transparency' in im.info else 'RGB')
        elif mode == '1':
            im = im.convert('L')
        elif mode == 'LA':
            im = im.convert('RGBA')
        elif mode in ('CMYK', 'YCbCr', 'LAB', 'HSV'):
            im = im.convert('RGB')
        arr = np.array(im)
    return _bgr_order(_apply_orientation(arr, int(tiff_orientation)))


def _why_undecodable(content: bytes) -> str:
    """A short reason why ``content`` cannot be decoded (Pillow's diagnosis)."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(io.BytesIO(content)) as im:
            im.load()
    except UnidentifiedImageError:
        return 'not a recognised image format'
    except Exception as err:
        return f'{type(err).__name__}: {err}'
    return 'OpenCV cannot decode it, Pillow can: try imdecode_backend="pillow"'


@register(TRANSFORMS)
class StrictLoadImageFromFile(LoadImageFromFile):
    """mmcv's ``LoadImageFromFile`` that refuses bad images with an error naming the file.

    mmcv's loader fails on a corrupt file with ``assert img is not None``, silently drops
    an alpha channel, reads only the first plane of a TIFF stack / 2-sample TIFF, and
    turns 16-bit images into 8-bit by dividing by 256 (a dark fluorescence image becomes
    almost black). This loader reads the bytes with :func:`mmengine.fileio.get` (so
    ``backend_args`` work as before), decodes them *unchanged* and checks the result:

    - empty, truncated or undecodable bytes: ValueError ``'<file>: corrupt or unreadable
      image (...)'``; a missing file: FileNotFoundError naming it.
    - 1 (grey) and 3 (RGB) channels are accepted. Anything else (2 channels, RGBA, a
      multi-channel or multi-page TIFF) is a ValueError naming the file, the shape and the
      channel count, with a hint. With ``drop_alpha=True`` an RGBA image (or grey +
      alpha, which OpenCV decodes as 4 channels) whose alpha is fully opaque (the dtype's
      maximum everywhere) is accepted and its alpha dropped; any other alpha still
      raises, since dropping it would expose whatever colour lies under transparent
      pixels.
    - integer images deeper than 8 bits (uint16, int32, ...): with ``rescale_16bit=True``
      (default) scaled to uint8 by :func:`projects.common.io.to_uint8` with the
      ``percentiles`` (default 0.5 / 99.5, over all channels jointly); with False a
      ValueError. Floating-point images: ValueError.
    - grey images become 3 identical channels for ``color_type='color'`` (as mmcv gives
      them) and stay (H, W) for ``'grayscale'``; colour images become grey for
      ``'grayscale'`` (8-bit RGB: decoded again by mmcv, so the values are OpenCV's /
      Pillow's own conversion). ``'unchanged'`` keeps grey as (H, W) and colour as BGR.
      The EXIF orientation is applied for ``'color'`` and ``'grayscale'``, the TIFF
      orientation always, as OpenCV does.
    - ``check_size=True``: when ``results`` carries ``height`` / ``width`` (CellDetDataset
      and mmdet's CocoDataset copy them from the COCO file) and the decoded image has
      another size, ValueError naming the file and both sizes.

    The output is what mmcv's loader gives for ordinary files: ``results['img']`` BGR
    uint8 (H, W, 3) (float32 with ``to_float32``), ``'img_shape'`` and ``'ori_shape'``
    = ``img.shape[:2]``; for an 8-bit grey / RGB PNG or JPEG the array is identical.

    Args:
        to_float32, color_type, imdecode_backend, file_client_args, backend_args: as
            mmcv's ``LoadImageFromFile``. ``imdecode_backend``: 'cv2', 'pillow' or
            'tifffile' ('turbojpeg' cannot decode unchanged). The 'tifffile' backend
            returns BGR too (mmcv's returns the stored RGB order).
        ignore_empty: return None (mmengine's dataset then draws another sample in
            training) for a missing or 0-byte file only; a file that exists but is
            corrupt or unusable always raises.
        drop_alpha: accept RGBA images with a fully opaque alpha channel.
        rescale_16bit: scale integer images deeper than 8 bits to uint8 by percentiles.
        percentiles: (low, high) percentiles of that scaling.
        check_size: compare with the dataset's ``height`` / ``width`` when present.
    """

    def __init__(self,
                 to_float32: bool = False,
                 color_type: str = 'color',
                 imdecode_backend: str = 'cv2',
                 file_client_args: Optional[dict] = None,
                 ignore_empty: bool = False,
                 *,
                 backend_args: Optional[dict] = None,
                 drop_alpha: bool = False,
                 rescale_16bit: bool = True,
                 percentiles: Tuple[float, float] = (0.5, 99.5),
                 check_size: bool = True) -> None:
        super().__init__(to_float32=to_float32, color_type=color_type,
                         imdecode_backend=imdecode_backend,
                         file_client_args=file_client_args, ignore_empty=ignore_empty,
                         backend_args=backend_args)
        if color_type not in _COLOR_TYPES:
            raise ValueError(f'StrictLoadImageFromFile: color_type must be one of '
                             f'{_COLOR_TYPES}, got {color_type!r}')
        if imdecode_backend not in ('cv2', 'pillow', 'tifffile'):
            raise ValueError(f'StrictLoadImageFromFile: imdecode_backend must be "cv2", '
                             f'"pillow" or "tifffile", got {imdecode_backend!r}')
        lo, hi = (float(p) for p in percentiles)
        if not 0 <= lo < hi <= 100:
            raise ValueError(f'StrictLoadImageFromFile: percentiles must satisfy '
                             f'0 <= low < high <= 100, got {percentiles}')
        self.drop_alpha = bool(drop_alpha)
        self.rescale_16bit = bool(rescale_16bit)
        self.percentiles = (lo, hi)
        self.check_size = bool(check_size)

    # -------------------------------------------------------------- steps
    def _read_bytes(self, filename: str) -> Optional[bytes]:
        import mmengine.fileio as fileio
        try:
            if self.file_client_args is not None:
                client = fileio.FileClient.infer_client(self.file_client_args, filename)
                content = client.get(filename)
            else:
                content = fileio.get(filename, backend_args=self.backend_args)
        except FileNotFoundError as err:
            if self.ignore_empty:
                return None
            raise FileNotFoundError(f'{filename}: image file not found') from err
        if not content:
            if self.ignore_empty:
                return None
            raise ValueError(f'{filename}: corrupt or unreadable image (the file is empty, '
                             f'0 bytes)')
        return content

    def _decode(self, content: bytes, filename: str, tiff: bool) -> Tuple[np.ndarray, bool]:
        """Decode unchanged; also say whether the decoder applied the orientation tag
        (OpenCV's TIFF decoder always does, whatever the flag)."""
        import cv2
        raw, reason, oriented = None, '', False
        try:
            if self.imdecode_backend == 'tifffile':
                raw = _decode_tifffile(content, filename)
            elif self.imdecode_backend == 'pillow':
                raw = _decode_pillow(content)
                oriented = tiff
            else:
                raw = cv2.imdecode(np.frombuffer(content, np.uint8), cv2.IMREAD_UNCHANGED)
                oriented = tiff and raw is not None
        except ValueError as err:
            if str(err).startswith(f'{filename}:'):
                raise
            reason = f'{type(err).__name__}: {err}'
        except Exception as err:  # decoders raise many types on broken data
            reason = f'{type(err).__name__}: {err}'
        if raw is None and tiff and self.imdecode_backend == 'cv2':
            try:  # a TIFF variant OpenCV does not read: tifffile may
                raw = _decode_tifffile(content, filename)
            except Exception as err:
                reason = f'{type(err).__name__}: {err}'
        if raw is None or raw.size == 0:
            reason = reason or _why_undecodable(content)
            raise ValueError(f'{filename}: corrupt or unreadable image ({len(content)} '
                             f'bytes; {reason})')
        return raw, oriented

    def _grey_or_bgr(self, raw: np.ndarray, filename: str) -> np.ndarray:
        """(H, W) grey or (H, W, 3) BGR from the raw decode, or ValueError."""
        if raw.ndim == 3 and raw.shape[2] == 1:
            raw = raw[..., 0]
        if raw.ndim == 2 or (raw.ndim == 3 and raw.shape[2] == 3):
            return raw
        if raw.ndim != 3:
            raise ValueError(f'{filename}: decoded image has shape {raw.shape}; expected '
                             f'(H, W) grey or (H, W, 3) RGB')
        channels = raw.shape[2]
        if channels == 4 and self.drop_alpha:
            alpha = raw[..., 3]
            opaque = np.iinfo(raw.dtype).max if np.issubdtype(raw.dtype, np.integer) else 1
            n = int(np.count_nonzero(alpha != opaque))
            if n == 0:
                return np.ascontiguousarray(raw[..., :3])
            raise ValueError(f'{filename}: RGBA image (shape {raw.shape}, 4 channels) whose '
                             f'alpha channel is not fully opaque ({n} of {alpha.size} '
                             f'pixels have alpha < {opaque}); drop_alpha=True only drops '
                             f'an all-opaque alpha: flatten the image onto a background '
                             f'and save it as RGB')
        raise ValueError(_channel_message(filename, raw.shape, channels))

    def _to_uint8(self, img: np.ndarray, filename: str) -> np.ndarray:
        if img.dtype == np.uint8:
            return img
        if img.dtype == np.bool_:
            return img.astype(np.uint8) * 255
        if np.issubdtype(img.dtype, np.integer):
            if not self.rescale_16bit:
                raise ValueError(f'{filename}: {img.dtype} image (values {img.min()}..'
                                 f'{img.max()}); expected 8-bit pixels. Set rescale_16bit=True '
                                 f'to scale it to uint8 by the {self.percentiles[0]}/'
                                 f'{self.percentiles[1]} percentiles, or convert the file')
            return to_uint8(img, *self.percentiles)
        raise ValueError(f'{filename}: floating-point image ({img.dtype}, values '
                         f'{float(img.min()):.4g}..{float(img.max()):.4g}); expected 8-bit '
                         f'(or 16-bit integer) pixels: convert the file')

    def transform(self, results: dict) -> Optional[dict]:
        """Load ``results['img_path']`` into ``img``, ``img_shape``, ``ori_shape``."""
        import cv2
        import mmcv
        filename = results['img_path']
        content = self._read_bytes(filename)
        if content is None:
            return None
        tiff = content[:4] in _TIFF_MAGIC
        orientation = _inspect_tiff(content, filename) if tiff else None
        raw, decoder_oriented = self._decode(content, filename, tiff)
        img = self._to_uint8(self._grey_or_bgr(raw, filename), filename)

        # TIFF: always oriented (OpenCV's TIFF decoder ignores the flag); other formats
        # only for 'color' / 'grayscale', as OpenCV's IMREAD_* flags do
        orient = not decoder_oriented if tiff else self.color_type in ('color', 'grayscale')
        if self.color_type.startswith('color') and img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)  # = cv2.COLOR_GRAY2BGR
        elif self.color_type.startswith('grayscale') and img.ndim == 3:
            if (raw.ndim == 3 and raw.shape[2] == 3 and raw.dtype == np.uint8
                    and not tiff and self.imdecode_backend in ('cv2', 'pillow')):
                # checked, ordinary 8-bit colour: the decoder's own grey conversion
                # (OpenCV's differs from cvtColor by up to 1), orientation included
                img = mmcv.imfrombytes(content, flag=self.color_type,
                                       backend=self.imdecode_backend)
                orient = False
            else:
                img = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_BGR2GRAY)
        if orient:
            if orientation is None:
                orientation = _exif_orientation(content)
            img = _apply_orientation(img, orientation)
        img = np.ascontiguousarray(img)

        h, w = img.shape[:2]
        exp_h, exp_w = results.get('height'), results.get('width')
        if (self.check_size and exp_h is not None and exp_w is not None
                and (int(exp_h), int(exp_w)) != (h, w)):
            raise ValueError(f'{filename}: the image is {w}x{h} (width x height) but the '
                             f'dataset says {int(exp_w)}x{int(exp_h)} (the annotation '
                             f'file\'s "width" / "height"): fix the annotation file or '
                             f'the image')
        if self.to_float32:
            img = img.astype(np.float32)
        results['img'] = img
        results['img_shape'] = img.shape[:2]
        results['ori_shape'] = img.shape[:2]
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(ignore_empty={self.ignore_empty}, '
                f'to_float32={self.to_float32}, color_type={self.color_type!r}, '
                f'imdecode_backend={self.imdecode_backend!r}, '
                f'backend_args={self.backend_args}, drop_alpha={self.drop_alpha}, '
                f'rescale_16bit={self.rescale_16bit}, percentiles={self.percentiles}, '
                f'check_size={self.check_size})')


@register(TRANSFORMS)
class PackPatchInputs(BaseTransform):
    """Pack a patch or cell crop: ``inputs`` (3, p, p) uint8 tensor, ``data_samples`` a
    :class:`BaseDataElement` with data ``gt_label`` (-1 when absent; and ``pixel_counts``
    when present) and as metainfo every key of :attr:`META_KEYS` found in ``results``:
    ``sample_idx``, ``img_path``, ``img_shape``, ``ori_shape``; the bag keys of
    negative pseudo labelling (``grid``, ``bag_index``, ``bag_name``, ``bag_shape``,
    ``patch_size``, ``x``, ``y``); the cell-crop keys of the cell GAN (``image_id``,
    ``inst_id``). The channel order is kept (the model's data preprocessor converts).
    """

    META_KEYS: Sequence[str] = ('sample_idx', 'grid', 'bag_index', 'bag_name', 'bag_shape',
                                'patch_size', 'img_path', 'img_shape', 'ori_shape', 'x', 'y',
                                'image_id', 'inst_id')

    def transform(self, results: dict) -> dict:
        img = results['img']
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f'{results.get("img_path")}: expected an RGB patch, got shape '
                             f'{img.shape}')
        inputs = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
        sample = BaseDataElement(metainfo={k: results[k] for k in self.META_KEYS if k in results})
        sample.gt_label = torch.tensor(int(results.get('gt_label', -1)), dtype=torch.long)
        counts: Optional[np.ndarray] = results.get('pixel_counts')
        if counts is not None:
            sample.pixel_counts = torch.as_tensor(np.asarray(counts), dtype=torch.long)
        return dict(inputs=inputs, data_samples=sample)

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}()'
