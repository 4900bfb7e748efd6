"""Convert CPM-15 / CPM-17 (Computational Precision Medicine nuclei segmentation) to
MMHisto's layouts, split per tumour type as in the point-supervised segmentation paper.

Example (Lin et al., sect. III.A: the 32 CPM-17 images of four tumour types; per type one
validation and two test images, the rest train -> 20 / 4 / 8)::

    python tools/dataset_converters/cpm.py --root CPM17/train --out data/cpm \\
        --types-csv cpm17_types.csv --seed 0
    python tools/dataset_converters/cpm.py --root CPM15 --out data/cpm15 \\
        --type-regex '^([a-z]+)_'            # type = first group of the file name

Input (as distributed with HoVer-Net)::

    <root>/Images/<name>.png    RGB (.tif / .tiff also accepted)
    <root>/Labels/<name>.mat    MATLAB file with the key ``inst_map`` (H, W); a
                                <name>.png / .tif / .tiff (integer instance mask) or
                                <name>.npy (2-D integer array) is accepted instead

Output (docs/data_layout.md; one class ``nucleus``, label 0)::

    images/<name>.png, annotations/{train,val,test}.json   COCO detection layout
    img_dir/{train,val,test}/<name>.png                    RGB uint8
    ann_dir/{train,val,test}/<name>.png                    semantic: 0 background, 1 nucleus
    inst_dir/{train,val,test}/<name>.png                   uint16 instance map
    points/{train,val,test}/<name>.csv                     x,y,label (box centres)
    annotations/unlabeled.json, img_dir/unlabeled/         only with --allow-unlabeled

Choices:

- **Tumour types.** From ``--types-csv`` (header ``name,type``; ``name`` is the file stem
  or file name; every labelled image must be listed and every listed name must exist),
  or from ``--type-regex`` applied with ``re.search`` to the file stem (type = group 1 if
  the pattern has a group, else the whole match; a name it does not match is an error).
  With neither, all images are one type. The CPM-17 file names (``image_00`` ...) do not
  carry the type: give a CSV.
- **Split.** Types are taken in sorted order; within a type the names are sorted and
  permuted with one ``numpy.random.default_rng(seed)`` (one ``permutation`` call per type,
  in that order): the first ``--num-val`` (default 1) go to ``val``, the next
  ``--num-test`` (default 2) to ``test``, the rest to ``train``; every type must keep at
  least one training image. The same files, types and seed give the same split anywhere.
  Unlabeled images (``--allow-unlabeled``) take no part in the split.
- **Instances.** ``inst_map`` is read as stored (MATLAB doubles are accepted when every
  value is a non-negative integer) and renumbered 1..K in ascending order of the stored
  ids (so any id range fits the uint16 PNG); instances are not re-split into connected
  components. Other keys of the .mat file (``type_map``, ``inst_type``, ...) are ignored.
- **Points** are the bounding-box centres ((x1 + x2) / 2, (y1 + y2) / 2) of the instances
  (continuous pixel coordinates, docs/data_layout.md), not centroids: the convention of
  the authors' code (DESIGN 4.3), via ``LayoutWriter(point_mode='bbox')``. Boxes are tight
  (or ``--box-size N`` boxes centred on the point).
- **Bad input** raises an error naming the file: an unreadable image or label file, a .mat
  without ``inst_map``, a non-integer or negative instance map, a mask whose shape differs
  from the image's, two label files for one image, a label without its image, an image
  without a label (unless ``--allow-unlabeled``: written to the split ``unlabeled`` with
  no annotation file, as in dsb2018.py). Other files in ``Images`` / ``Labels`` are
  ignored and their number is printed.
"""
import argparse
import csv
import os
import os.path as osp
import re
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from projects.common.io import read_instance_map, read_rgb_uint8
from projects.common.layout import LayoutWriter, check_box_size, track

CLASSES = ('nucleus', )
IMAGE_EXTS = ('.png', '.tif', '.tiff')
LABEL_EXTS = ('.mat', '.png', '.tif', '.tiff', '.npy')
IMAGE_DIR, LABEL_DIR = 'Images', 'Labels'
SPLITS = ('train', 'val', 'test')
UNLABELED_SPLIT = 'unlabeled'


def read_label(path: str) -> np.ndarray:
    """Instance map int32 (H, W) renumbered 1..K (ascending stored id) from a .mat file
    (key ``inst_map``), an integer mask image or a .npy array."""
    if path.lower().endswith('.mat'):
        import scipy.io
        try:
            mat = scipy.io.loadmat(path)
        except (scipy.io.matlab.MatReadError, ValueError, TypeError, OSError,
                NotImplementedError) as err:  # NotImplementedError: MATLAB v7.3 (HDF5)
            raise ValueError(f'{path}: unreadable .mat file ({err})') from err
        if 'inst_map' not in mat:
            keys = sorted(k for k in mat if not k.startswith('__'))
            raise ValueError(f'{path}: no key "inst_map" in the .mat file (keys: {keys})')
        arr = np.asarray(mat['inst_map'])
        if arr.ndim != 2:
            raise ValueError(f'{path}: inst_map must be 2-D, got shape {arr.shape}')
        if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer)
                                     or np.issubdtype(arr.dtype, np.floating)):
            raise ValueError(f'{path}: inst_map must hold numbers, got {arr.dtype}')
        if np.issubdtype(arr.dtype, np.floating):
            bad = ~np.isfinite(arr) | (arr != np.round(arr))
            if bad.any():
                r, c = np.argwhere(bad)[0]
                raise ValueError(f'{path}: inst_map holds {int(bad.sum())} non-integer '
                                 f'values (first {arr[r, c]} at row {r}, col {c})')
        if arr.size and arr.min() < 0:
            raise ValueError(f'{path}: inst_map has negative ids (min {arr.min()})')
        arr = arr.astype(np.int64)
    else:
        arr = read_instance_map(path)
    _, inv = np.unique(arr, return_inverse=True)
    inst = inv.reshape(arr.shape).astype(np.int32)
    if arr.size and arr.min() > 0:  # no background: ids start at 1 already
        inst += 1
    return inst


def find_samples(root: str, allow_unlabeled: bool = False) -> Tuple[List[tuple], int]:
    """(name, image path, label path or None) of every image under ``<root>/Images``,
    sorted by name (see the module docstring for the accepted files), and the number of
    other files ignored in ``Images`` and ``Labels``."""
    root = osp.abspath(root)
    img_dir, lab_dir = osp.join(root, IMAGE_DIR), osp.join(root, LABEL_DIR)
    if not osp.isdir(img_dir):
        raise FileNotFoundError(f'{img_dir}: CPM image folder not found (expected '
                                f'<root>/{IMAGE_DIR} and <root>/{LABEL_DIR})')
    images: Dict[str, str] = {}
    ignored = 0
    for name in sorted(os.listdir(img_dir)):
        stem, ext = osp.splitext(name)
        path = osp.join(img_dir, name)
        if ext.lower() not in IMAGE_EXTS or not osp.isfile(path):
            ignored += 1
            continue
        if stem in images:
            raise ValueError(f'{path}: two images named "{stem}" ({images[stem]})')
        images[stem] = path
    if not images:
        raise FileNotFoundError(f'{img_dir}: no CPM image ({", ".join(IMAGE_EXTS)})')
    labels: Dict[str, str] = {}
    for name in sorted(os.listdir(lab_dir)) if osp.isdir(lab_dir) else []:
        stem, ext = osp.splitext(name)
        path = osp.join(lab_dir, name)
        if ext.lower() not in LABEL_EXTS or not osp.isfile(path):
            ignored += 1
            continue
        if stem in labels:
            raise ValueError(f'{path}: two label files for image "{stem}" ({labels[stem]})')
        if stem not in images:
            raise FileNotFoundError(f'{path}: label without its image {stem}'
                                    f'{{{",".join(IMAGE_EXTS)}}} in {img_dir}')
        labels[stem] = path
    samples = []
    for stem, path in images.items():
        lab = labels.get(stem)
        if lab is None and not allow_unlabeled:
            raise FileNotFoundError(f'{path}: no label file {stem}{{{",".join(LABEL_EXTS)}}} '
                                    f'in {lab_dir} (--allow-unlabeled writes such images as '
                                    f'unlabeled)')
        samples.append((stem, path, lab))
    return samples, ignored


def read_types_csv(path: str, names: Sequence[str],
                   known: Optional[Sequence[str]] = None) -> Dict[str, str]:
    """name -> tumour type from a ``name,type`` CSV (a name is a file stem, or a stem plus
    extension). Every name of ``names`` must be listed; every listed name must be one of
    ``known`` (default ``names``; e.g. also the unlabeled images)."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'{path}: types CSV not found')
    known = set(names if known is None else known) | set(names)
    types: Dict[str, str] = {}
    with open(path, newline='') as f:
        reader = csv.reader(f)
        header = [h.strip().lower() for h in next(reader, [])]
        if header[:2] != ['name', 'type']:
            raise ValueError(f'{path}: header must be "name,type", got {",".join(header)!r}')
        for line, row in enumerate(reader, start=2):
            if not row or not ''.join(row).strip():
                continue
            if len(row) < 2 or not row[0].strip() or not row[1].strip():
                raise ValueError(f'{path}: line {line} {row} is not "name,type"')
            name, typ = row[0].strip(), row[1].strip()
            if name not in known and osp.splitext(name)[0] in known:
                name = osp.splitext(name)[0]
            if name not in known:
                raise ValueError(f'{path}: line {line}: "{name}" is not an image of the '
                                 f'CPM root')
            if name in types:
                raise ValueError(f'{path}: line {line}: "{name}" listed twice')
            types[name] = typ
    missing = sorted(set(names) - set(types))
    if missing:
        raise ValueError(f'{path}: no type for {len(missing)} images, e.g. {missing[:5]}')
    return types


def types_from_regex(pattern: str, names: Sequence[str]) -> Dict[str, str]:
    """name -> type: group 1 (or the whole match) of ``re.search(pattern, name)``."""
    try:
        rx = re.compile(pattern)
    except re.error as err:
        raise ValueError(f'--type-regex {pattern!r} is not a valid regex ({err})') from err
    types = {}
    for name in names:
        m = rx.search(name)
        if m is None:
            raise ValueError(f'{name}: file name does not match --type-regex {pattern!r}')
        types[name] = m.group(1) if rx.groups else m.group(0)
    return types


def split_by_type(types: Dict[str, str], num_val: int = 1, num_test: int = 2,
                  seed: int = 0) -> Dict[str, list]:
    """Per-type seeded train / val / test split (module docstring); each split sorted."""
    for arg, v in (('--num-val', num_val), ('--num-test', num_test)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f'{arg} must be an int >= 0, got {v!r}')
    rng = np.random.default_rng(seed)
    split_of = {}
    for typ in sorted(set(types.values())):
        names = sorted(n for n, t in types.items() if t == typ)
        if len(names) <= num_val + num_test:
            raise ValueError(f'tumour type "{typ}" has {len(names)} images: too few for '
                             f'{num_val} val + {num_test} test + at least 1 train')
        perm = rng.permutation(len(names))
        for rank, i in enumerate(perm):
            split_of[names[i]] = ('val' if rank < num_val else
                                  'test' if rank < num_val + num_test else 'train')
    return {s: sorted(n for n, t in split_of.items() if t == s) for s in SPLITS}


def convert(root: str, out: str, types_csv: Optional[str] = None,
            type_regex: Optional[str] = None, num_val: int = 1, num_test: int = 2,
            seed: int = 0, box_size: Optional[float] = None, allow_unlabeled: bool = False,
            progress: bool = True) -> dict:
    """Convert a CPM folder into ``out``.

    Returns ``splits`` (split -> sorted names), ``types`` (name -> type of each labelled
    image), ``stats`` (split -> images, nuclei, per_type (type -> images)) and ``ignored``
    (other files in Images / Labels).
    """
    if types_csv is not None and type_regex is not None:
        raise ValueError('give --types-csv or --type-regex, not both')
    box_size = check_box_size(box_size)
    samples, ignored = find_samples(root, allow_unlabeled)
    names = [s[0] for s in samples if s[2] is not None]
    if types_csv is not None:
        types = read_types_csv(types_csv, names, [s[0] for s in samples])
    elif type_regex is not None:
        types = types_from_regex(type_regex, names)
    else:
        types = {n: 'all' for n in names}
    splits = split_by_type(types, num_val, num_test, seed)
    splits[UNLABELED_SPLIT] = [s[0] for s in samples if s[2] is None]
    splits = {s: v for s, v in splits.items() if v}
    split_of = {n: s for s, v in splits.items() for n in v}

    writer = LayoutWriter(out, CLASSES, 'CPM {split} split converted by MMHisto',
                          source='CPM-15 / CPM-17 (Vu et al. 2019), HoVer-Net layout',
                          box_size=box_size, point_mode='bbox')
    stats = {s: dict(images=0, nuclei=0, per_type={}) for s in splits}
    for name, img_path, lab_path in track(samples, progress):
        split = split_of[name]
        img = read_rgb_uint8(img_path)
        if lab_path is None:
            writer.add(split, name, img)
            continue
        inst = read_label(lab_path)
        if inst.shape != img.shape[:2]:
            raise ValueError(f'{lab_path}: instance map is {inst.shape[1]}x{inst.shape[0]} '
                             f'(WxH) but image {img_path} is {img.shape[1]}x{img.shape[0]}')
        writer.add(split, name, img, (inst > 0).astype(np.uint8), inst, labels=0)
        per_type = stats[split]['per_type']
        per_type[types[name]] = per_type.get(types[name], 0) + 1
    for split, counts in writer.close().items():
        stats[split].update(images=counts['images'], nuclei=counts['instances'])
    return dict(splits=splits, types=types, stats=stats, ignored=ignored)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Convert CPM-15 / CPM-17 (<root>/Images/*.png + <root>/Labels/*.mat with '
        'inst_map) to the COCO detection layout and the mmseg segmentation layout '
        '(docs/data_layout.md). Per tumour type, a seeded choice of --num-val images goes to '
        'val and --num-test to test, the rest to train; points are instance bounding-box '
        'centres.')
    parser.add_argument('--root', required=True, help='folder holding Images/ and Labels/')
    parser.add_argument('--out', required=True, help='output dataset root')
    group = parser.add_mutually_exclusive_group()
    group.add_argument('--types-csv', default=None,
                       help='CSV "name,type" giving the tumour type of every image')
    group.add_argument('--type-regex', default=None,
                       help='regex on the file stem; group 1 (or the match) is the type')
    parser.add_argument('--num-val', type=int, default=1, help='val images per type (1)')
    parser.add_argument('--num-test', type=int, default=2, help='test images per type (2)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the split (0)')
    parser.add_argument('--box-size', type=float, default=None, metavar='N',
                        help='N x N COCO boxes centred on the point instead of tight boxes')
    parser.add_argument('--allow-unlabeled', action='store_true',
                        help='write images without a label file to the split "unlabeled" '
                        'instead of failing')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    print(f'[cpm] converting {args.root} -> {args.out}')
    res = convert(args.root, args.out, args.types_csv, args.type_regex, args.num_val,
                  args.num_test, args.seed, args.box_size, args.allow_unlabeled)
    n_types = len(set(res['types'].values()))
    if n_types == 1 and args.types_csv is None and args.type_regex is None:
        print('[cpm] no --types-csv / --type-regex: all images form one type')
    for split, st in res['stats'].items():
        if split == UNLABELED_SPLIT:
            print(f'[cpm] {split}: {st["images"]} images (no annotation files)')
            continue
        per_type = ', '.join(f'{t}: {n}' for t, n in sorted(st['per_type'].items()))
        print(f'[cpm] {split}: {st["images"]} images ({per_type}), {st["nuclei"]} nuclei')
    if res['ignored']:
        print(f'[cpm] ignored {res["ignored"]} other files in {IMAGE_DIR}/ and {LABEL_DIR}/')
    return 0


if __name__ == '__main__':
    sys.exit(main())
