"""Convert MoNuSeg (MICCAI 2018 Multi-Organ Nuclei Segmentation) to MMHisto's layouts.

Example (the protocol of Lin et al., point-supervised nuclei segmentation, sect. III.A:
30 training and 14 test images of 1000 x 1000 pixels)::

    python tools/dataset_converters/monuseg.py \\
        --train-root "MoNuSeg 2018 Training Data" --test-root MoNuSegTestData \\
        --out data/monuseg
    python tools/dataset_converters/monuseg.py --train-root ... --test-root ... \\
        --out data/monuseg --num-val 4 --seed 0 --skip-degenerate

Input (the challenge data as downloaded)::

    <train-root>/Tissue Images/<TCGA-id>.tif   RGB TIFF (.tiff and .png also accepted)
    <train-root>/Annotations/<TCGA-id>.xml     Aperio ImageScope XML, one Region per nucleus
    <test-root>/<TCGA-id>.tif + <TCGA-id>.xml  MoNuSegTestData: images and XML side by side

Either root may use either layout: when ``Tissue Images`` / ``Annotations`` sub-folders
exist they are used, otherwise the images and XML files are looked up in the root itself.
The XML is ``<Annotations><Annotation><Regions><Region Id=..><Vertices><Vertex X=.. Y=..
[Z=..]/>...``; every ``Region`` of the file (document order) is one nucleus.

Output (docs/data_layout.md; one class ``nucleus``, label 0)::

    images/<TCGA-id>.png, annotations/{train,val,test}.json     COCO detection layout
    img_dir/{train,val,test}/<TCGA-id>.png                      RGB uint8
    ann_dir/{train,val,test}/<TCGA-id>.png                      0 background, 1 nucleus
    inst_dir/{train,val,test}/<TCGA-id>.png                     uint16 instance map
    points/{train,val,test}/<TCGA-id>.csv                       x,y,label (box centres)
    annotations/unlabeled.json, img_dir/unlabeled/              only with --allow-unlabeled

Choices:

- **Splits.** ``--train-root`` -> ``train`` and ``val``: the labelled image ids are sorted,
  permuted with ``numpy.random.default_rng(seed).permutation`` and the first ``--num-val``
  (default 0: the paper uses the 30 training images for training and the 14 test images
  for testing) go to ``val``; ``train`` keeps at least one image. ``--test-root`` ->
  ``test``. A split that gets no image writes no file.
- **Rasterisation.** Vertex ``X`` is the column axis, ``Y`` the row axis, read as MMHisto's
  continuous pixel coordinates (docs/data_layout.md: pixel (r, c) covers [c, c+1) x
  [r, r+1)). A pixel belongs to a region when its centre (c + 0.5, r + 0.5) lies inside
  the polygon: ``skimage.draw.polygon(Y - 0.5, X - 0.5, (H, W))``. So a polygon with
  integer, axis-aligned vertices covers exactly the pixels it encloses (the square with
  corners (3, 4) and (9, 10) -> rows 4..9, columns 3..8). The common alternative
  ``polygon(Y, X)`` (pixel centres at integers) shifts masks by half a pixel up-left.
  Parts of a polygon outside the image are clipped (regions with a vertex outside
  [0, W] x [0, H] are counted in the summary).
- **Overlaps.** Region k (1-based, document order) becomes instance id k and is drawn in
  order: where polygons overlap, the later region wins. Pixels claimed by two or more
  regions and regions left with no pixel (fully covered by later ones; their id is then
  absent) are counted in the summary.
- **Degenerate regions** (fewer than 3 vertices, zero polygon area, or no pixel centre
  inside the polygon) raise a ValueError naming the XML file and the region ``Id``; with
  ``--skip-degenerate`` they are skipped, counted and listed in the summary.
- **Points** are the bounding-box centres ((x1 + x2) / 2, (y1 + y2) / 2) of the final
  instances, not centroids: the convention of the authors' code (DESIGN 4.3), computed by
  ``projects.common.instances.instance_geometry`` through
  ``LayoutWriter(point_mode='bbox')``. Boxes are tight (or ``--box-size N`` boxes centred
  on the point); COCO ``point`` is the same box centre.
- **Bad input** raises an error naming the file: an unreadable image, XML that does not
  parse or holds no Region, a vertex without numeric X / Y, two images with the same id,
  an XML file without its image, an image without its XML (unless ``--allow-unlabeled``:
  it is then written to the split ``unlabeled`` with no annotation file, as in dsb2018.py).
"""
import argparse
import os
import os.path as osp
import sys
import xml.etree.ElementTree as ET
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from skimage.draw import polygon as draw_polygon

from projects.common.io import read_rgb_uint8
from projects.common.layout import LayoutWriter, check_box_size, seeded_split, track

CLASSES = ('nucleus', )
IMAGE_EXTS = ('.tif', '.tiff', '.png')
IMAGE_DIR, ANN_DIR = 'Tissue Images', 'Annotations'
UNLABELED_SPLIT = 'unlabeled'

Region = Tuple[str, np.ndarray]  # (region Id, vertices (N, 2) float64 as (x, y))


def parse_regions(xml_path: str) -> List[Region]:
    """Every ``Region`` of an ImageScope XML file in document order, as (Id, vertices).

    A Region without an ``Id`` attribute is named ``#k`` (its 1-based position). Raises
    ValueError naming the file if it does not parse, holds no Region, or a vertex lacks a
    finite numeric X / Y.
    """
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as err:
        raise ValueError(f'{xml_path}: XML does not parse ({err})') from err
    except OSError as err:
        raise ValueError(f'{xml_path}: cannot read annotation file ({err})') from err
    regions = []
    for k, reg in enumerate(root.iter('Region'), start=1):
        rid = reg.get('Id') or f'#{k}'
        xy = []
        for v in reg.iter('Vertex'):
            try:
                xy.append((float(v.get('X')), float(v.get('Y'))))
            except (TypeError, ValueError) as err:
                raise ValueError(f'{xml_path}: region Id={rid}: vertex {dict(v.attrib)} has '
                                 f'no numeric X / Y') from err
        pts = np.asarray(xy, np.float64).reshape(-1, 2)
        if not np.isfinite(pts).all():
            raise ValueError(f'{xml_path}: region Id={rid}: non-finite vertex coordinate')
        regions.append((rid, pts))
    if not regions:
        raise ValueError(f'{xml_path}: no <Region> element (expected one Region per nucleus '
                         f'in ImageScope XML)')
    return regions


def polygon_area(xy: np.ndarray) -> float:
    """Absolute shoelace area of a polygon given as (N, 2) vertices (x, y)."""
    x, y = xy[:, 0], xy[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def rasterise_regions(regions: Sequence[Region], shape: Tuple[int, int], xml_path: str,
                      skip_degenerate: bool = False) -> dict:
    """Instance map of polygon regions (see the module docstring for the conventions).

    Returns ``inst`` int32 (H, W) with id k = k-th region, ``overlap_px`` (pixels inside
    >= 2 regions), ``covered`` (Ids of regions fully covered by later ones), ``degenerate``
    ((Id, reason) of skipped regions) and ``clipped`` (regions with a vertex outside the
    image). A degenerate region raises ValueError naming ``xml_path`` and its Id unless
    ``skip_degenerate``.
    """
    h, w = shape
    if len(regions) > 65535:
        raise ValueError(f'{xml_path}: {len(regions)} regions do not fit a uint16 instance '
                         f'map')
    inst = np.zeros((h, w), np.int32)
    cover = np.zeros((h, w), np.uint16)
    degenerate, drawn, clipped = [], [], 0
    for k, (rid, xy) in enumerate(regions, start=1):
        xy = np.asarray(xy, np.float64).reshape(-1, 2)
        rr = cc = np.zeros(0, np.int64)
        if len(xy) < 3:
            reason = f'{len(xy)} vertices (fewer than 3)'
        elif polygon_area(xy) == 0:
            reason = 'zero polygon area'
        else:
            rr, cc = draw_polygon(xy[:, 1] - 0.5, xy[:, 0] - 0.5, (h, w))
            reason = None if len(rr) else 'no pixel centre inside the polygon (or outside ' \
                f'the {w}x{h} image)'
        if reason is not None:
            if not skip_degenerate:
                raise ValueError(f'{xml_path}: region Id={rid} is degenerate: {reason} '
                                 f'(--skip-degenerate skips and counts such regions)')
            degenerate.append((rid, reason))
            continue
        clipped += int(((xy < 0) | (xy > (w, h))).any())
        inst[rr, cc] = k
        cover[rr, cc] += 1
        drawn.append((k, rid))
    present = np.zeros(len(regions) + 1, bool)
    present[np.unique(inst)] = True
    covered = [rid for k, rid in drawn if not present[k]]
    return dict(inst=inst, overlap_px=int(np.count_nonzero(cover > 1)), covered=covered,
                degenerate=degenerate, clipped=clipped)


def find_samples(root: str, allow_unlabeled: bool = False) -> Tuple[List[tuple], int]:
    """(id, image path, XML path or None) of every image of a MoNuSeg folder, sorted by id,
    and the number of other files ignored. Either layout (module docstring) is accepted."""
    root = osp.abspath(root)
    if not osp.isdir(root):
        raise FileNotFoundError(f'{root}: MoNuSeg folder not found')
    img_dir = osp.join(root, IMAGE_DIR) if osp.isdir(osp.join(root, IMAGE_DIR)) else root
    ann_dir = osp.join(root, ANN_DIR) if osp.isdir(osp.join(root, ANN_DIR)) else root
    same = img_dir == ann_dir
    images: Dict[str, str] = {}
    xmls: Dict[str, str] = {}
    ignored = 0
    for folder in ((img_dir, ) if same else (img_dir, ann_dir)):
        for name in sorted(os.listdir(folder)):
            path = osp.join(folder, name)
            stem, ext = osp.splitext(name)
            ext = ext.lower()
            if osp.isdir(path) and path in (img_dir, ann_dir):
                continue  # the Tissue Images / Annotations folders themselves
            if osp.isfile(path) and ext in IMAGE_EXTS and folder == img_dir:
                if stem in images:
                    raise ValueError(f'{path}: two images with the id "{stem}" '
                                     f'({images[stem]})')
                images[stem] = path
            elif osp.isfile(path) and ext == '.xml' and folder == ann_dir:
                xmls[stem] = path
            else:
                ignored += 1
    for stem, path in xmls.items():
        if stem not in images:
            raise FileNotFoundError(f'{path}: annotation without its image {stem}'
                                    f'{{{",".join(IMAGE_EXTS)}}} in {img_dir}')
    if not images:
        raise FileNotFoundError(f'{img_dir}: no MoNuSeg image ({", ".join(IMAGE_EXTS)})')
    samples = []
    for stem, path in images.items():
        xml = xmls.get(stem)
        if xml is None and not allow_unlabeled:
            raise FileNotFoundError(f'{path}: no annotation {stem}.xml in {ann_dir} '
                                    f'(--allow-unlabeled writes such images as unlabeled)')
        samples.append((stem, path, xml))
    return samples, ignored


def split_train_val(ids: Sequence[str], num_val: int = 0, seed: int = 0) -> Dict[str, list]:
    """Seeded train / val split: the first ``num_val`` ids of
    ``default_rng(seed).permutation`` of the sorted ids go to val; each split sorted."""
    ids = sorted(ids)
    if isinstance(num_val, bool) or not isinstance(num_val, (int, np.integer)) or \
            not 0 <= num_val <= max(len(ids) - 1, 0):
        raise ValueError(f'--num-val must be an int in [0, {max(len(ids) - 1, 0)}] (train '
                         f'keeps one of the {len(ids)} labelled images), got {num_val!r}')
    return seeded_split(ids, [('val', num_val)], seed)


def convert(out: str, train_root: Optional[str] = None, test_root: Optional[str] = None,
            num_val: int = 0, seed: int = 0, box_size: Optional[float] = None,
            skip_degenerate: bool = False, allow_unlabeled: bool = False,
            progress: bool = True) -> dict:
    """Convert the MoNuSeg training and / or test folder into ``out``.

    Every XML file is parsed before anything is written. Returns ``splits`` (split ->
    sorted ids), ``stats`` (split -> images, nuclei, regions, overlap_px, covered,
    degenerate, clipped) and ``ignored`` (root -> number of other files), and
    ``degenerate`` (id -> list of (region Id, reason) skipped).
    """
    if train_root is None and test_root is None:
        raise ValueError('give --train-root and / or --test-root')
    box_size = check_box_size(box_size)
    split_of: Dict[str, str] = {}
    samples, ignored = [], {}
    for root, kind in ((train_root, 'train'), (test_root, 'test')):
        if root is None:
            continue
        found, ignored[root] = find_samples(root, allow_unlabeled)
        labelled = [s[0] for s in found if s[2] is not None]
        if kind == 'train':
            parts = split_train_val(labelled, num_val, seed)
        else:
            parts = dict(test=sorted(labelled))
        parts[UNLABELED_SPLIT] = [s[0] for s in found if s[2] is None]
        for split, ids in parts.items():
            for i in ids:
                if i in split_of:
                    raise ValueError(f'{root}: image id {i} is also in --train-root')
                split_of[i] = split
        samples += found
    regions = {s[0]: parse_regions(s[2]) for s in samples if s[2] is not None}

    writer = LayoutWriter(out, CLASSES, 'MoNuSeg {split} split converted by MMHisto',
                          source='MoNuSeg 2018 (Kumar et al.), ImageScope XML polygons',
                          box_size=box_size, point_mode='bbox')
    splits: Dict[str, list] = {}
    for i, s in sorted(split_of.items()):
        splits.setdefault(s, []).append(i)
    stats = {s: dict(images=0, nuclei=0, regions=0, overlap_px=0, covered=0, degenerate=0,
                     clipped=0) for s in splits}
    degenerate = {}
    for image_id, img_path, xml_path in track(samples, progress):
        split = split_of[image_id]
        img = read_rgb_uint8(img_path)
        if xml_path is None:
            writer.add(split, image_id, img)
            continue
        res = rasterise_regions(regions[image_id], img.shape[:2], xml_path, skip_degenerate)
        inst = res['inst']
        writer.add(split, image_id, img, (inst > 0).astype(np.uint8), inst, labels=0)
        st = stats[split]
        st['regions'] += len(regions[image_id])
        st['overlap_px'] += res['overlap_px']
        st['covered'] += len(res['covered'])
        st['degenerate'] += len(res['degenerate'])
        st['clipped'] += res['clipped']
        if res['degenerate']:
            degenerate[image_id] = res['degenerate']
    for split, counts in writer.close().items():
        stats[split].update(images=counts['images'], nuclei=counts['instances'])
    return dict(splits=splits, stats=stats, ignored=ignored, degenerate=degenerate)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Convert MoNuSeg 2018 (images + Aperio ImageScope XML polygons) to the '
        'COCO detection layout and the mmseg segmentation layout (docs/data_layout.md). '
        'Polygons are rasterised at pixel centres (later region wins where they overlap); '
        'points are instance bounding-box centres. --train-root gives train (+ val with '
        '--num-val), --test-root gives test.')
    parser.add_argument('--train-root', default=None,
                        help='training folder (Tissue Images/ + Annotations/, or images and '
                        'XML side by side)')
    parser.add_argument('--test-root', default=None,
                        help='test folder (e.g. MoNuSegTestData; either layout)')
    parser.add_argument('--out', required=True, help='output dataset root')
    parser.add_argument('--num-val', type=int, default=0,
                        help='training images moved to val by a seeded permutation '
                        '(default 0)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the val choice')
    parser.add_argument('--box-size', type=float, default=None, metavar='N',
                        help='N x N COCO boxes centred on the point instead of tight boxes')
    parser.add_argument('--skip-degenerate', action='store_true',
                        help='skip (and count) regions with < 3 vertices, zero area or no '
                        'pixel instead of failing')
    parser.add_argument('--allow-unlabeled', action='store_true',
                        help='write images without XML to the split "unlabeled" instead of '
                        'failing')
    args = parser.parse_args(argv)
    if args.train_root is None and args.test_root is None:
        parser.error('give --train-root and / or --test-root')
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    roots = ' + '.join(r for r in (args.train_root, args.test_root) if r)
    print(f'[monuseg] converting {roots} -> {args.out}')
    res = convert(args.out, args.train_root, args.test_root, args.num_val, args.seed,
                  args.box_size, args.skip_degenerate, args.allow_unlabeled)
    for split, st in res['stats'].items():
        if split == UNLABELED_SPLIT:
            print(f'[monuseg] {split}: {st["images"]} images (no annotation files)')
            continue
        print(f'[monuseg] {split}: {st["images"]} images, {st["nuclei"]} nuclei from '
              f'{st["regions"]} regions; {st["overlap_px"]} pixels in >= 2 regions (later '
              f'region wins), {st["covered"]} regions fully covered, {st["degenerate"]} '
              f'degenerate regions skipped, {st["clipped"]} regions clipped to the image')
    for image_id, regs in res['degenerate'].items():
        shown = '; '.join(f'Id={rid}: {why}' for rid, why in regs[:5])
        print(f'[monuseg] {image_id}: skipped {len(regs)} degenerate regions ({shown}'
              f'{"; ..." if len(regs) > 5 else ""})')
    for root, n in res['ignored'].items():
        if n:
            print(f'[monuseg] ignored {n} other files / folders in {root}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
