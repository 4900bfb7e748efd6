"""Convert the mnfinder nucleus / micronucleus data to MMHisto's layouts.

Example::

    python tools/dataset_converters/mnfinder.py --root /path/to/mnfinder --out data/mnfinder
    python tools/dataset_converters/mnfinder.py --root ... --out ... --box-size 32 --min-area 4
    python tools/dataset_converters/mnfinder.py --root ... --out ... --val-from-train 6 --seed 1

Input (mnfinder 1.2.3 training data, hatch-lab, MIT)::

    <root>/training-data/<set>/images/<name>.tif          grey, uint8 or uint16
    <root>/training-data/<set>/nucleus_masks/<name>.png   RGBA instance mask
    <root>/training-data/<set>/mn_masks/<name>.png        RGBA instance mask (micronuclei)
    <root>/validation-data/<set>/...                      same
    <root>/test-data/...                                  HELD OUT: skipped, never read

``<root>`` may also be one split folder or one ``<set>`` folder (its split is then taken
from the parent folder name; a set outside training-/validation-data is refused).

Splits: validation-data -> ``test``; ``--val-from-train K`` (default 4) images of
training-data -> ``val``; the other training-data images -> ``train``. The validation split
is taken from the training data so that everything tuned on validation labels (thresholds,
best checkpoint, convergence checks) never reads the images that are reported on, and
mnfinder's own test-data stays held out. The K images are chosen by :func:`choose_val`:
a stratified round-robin over the sets (one image from every set before a second from any;
larger sets first, sets of equal size in a seeded order; within a set, a seeded order),
deterministic for ``--seed``. K must be between 1 and the number of training images minus
1 (train keeps one); without training-data under ``<root>`` only ``test`` is written.

Choices (measured on the 33 images of mnfinder 1.2.3):

- ``images/<name>.png`` next to each tif is a contrast-stretched 8-bit (or 16-bit) preview
  of the tif (pixel correlation > 0.998 on every image): not independent data. The raw
  ``.tif`` is converted (``projects.common.io.to_uint8``: 0.5-99.5 percentile stretch for
  uint16, uint8 kept as is) and the previews are ignored.
- Masks: alpha 0 = background; every other pixel belongs to the instance of its colour
  key R<<16 | G<<8 | B (black, key 0, is a valid colour: one real micronucleus is black).
  A colour can cover several separate objects: in ``mn_masks`` the colour is that of the
  parent nucleus (most micronucleus colours also occur in ``nucleus_masks``), so one colour
  = all micronuclei of one cell (1447 colours, 2127 separate micronuclei), and 24 nucleus
  colours cover two separate blobs (mostly two whole nuclei). By default an instance is
  therefore one 8-connected component of one colour (``--instances component``);
  ``--instances colour`` keeps one instance per colour.
- Where a micronucleus pixel overlaps a nucleus pixel (at most 10 px per image), the
  micronucleus wins (semantic 2, micronucleus id): it is the rarer class, drawn over the
  nucleus. Boxes, points and areas of both layouts are computed from this final instance
  map, so the two layouts agree exactly; a nucleus left with no pixel would be dropped and
  counted in the printed summary.
- ``--min-area N`` drops instances with fewer than N pixels (before the overlap step);
  the number dropped is printed. Default 1 keeps everything as annotated: 3 of the 2624
  nucleus instances are 1-3 px specks with a colour of their own (2 of them lie under
  micronuclei and vanish: "2 nuclei fully covered" in the summary), and 38 of the 2127
  micronucleus components have 1-3 px (103 have 4 px), so a threshold trades specks
  against real small micronuclei: choose it per experiment.
- Points are centroids and boxes are tight ([first col, first row, n cols, n rows]), both
  from ``projects.common.instances.instance_geometry`` (called by
  ``projects.common.layout.LayoutWriter`` on the instance map it writes) in MMHisto's
  continuous pixel coordinates (docs/data_layout.md: pixel (r, c) covers [c, c+1) x
  [r, r+1), so a centroid is (mean column + 0.5, mean row + 0.5) and a rectangle's
  centroid is its box centre); with ``--box-size N``, N x N boxes centred on the point
  (not clipped to the image). COCO ``area`` is the pixel count (tight boxes) or N * N.

Output (docs/data_layout.md): ``images/<split>_<set>_<name>.png`` (RGB uint8; ``<split>``
is the output split: train and val images come from training-data, test images from
validation-data, which reuses set and image names) and ``annotations/{train,val,test}.json``
(COCO, categories 1 nucleus, 2 micronucleus -> labels 0, 1); ``img_dir``, ``ann_dir`` (0
background, 1 nucleus, 2 micronucleus), ``inst_dir`` (uint16 PNG; ids unique across both
classes: nuclei first), ``points`` (CSV x,y,label with label 0 nucleus, 1 micronucleus),
each under ``{train,val,test}/``.
"""
import argparse
import os
import os.path as osp
import sys
from typing import Dict, List, Optional, Tuple

import numpy as np
from scipy import ndimage

from projects.common.io import read_image, to_uint8
from projects.common.layout import LayoutWriter, track

# mnfinder folder -> output split (training-data images chosen by choose_val go to 'val')
SPLITS = {'training-data': 'train', 'validation-data': 'test'}
HELD_OUT = ('test-data', )
CLASSES = ('nucleus', 'micronucleus')
MASK_DIRS = ('nucleus_masks', 'mn_masks')


def read_rgba_keys(path: str) -> np.ndarray:
    """Colour key map (int64, -1 = background) of an RGBA instance mask PNG."""
    arr = read_image(path, channels=None)
    if arr.ndim != 3 or arr.shape[-1] != 4:
        raise ValueError(f'{path}: expected an RGBA instance mask, got shape {arr.shape}')
    if arr.dtype != np.uint8:
        raise ValueError(f'{path}: expected 8-bit RGBA, got {arr.dtype}')
    a = arr.astype(np.int64)
    keys = (a[..., 0] << 16) | (a[..., 1] << 8) | a[..., 2]
    keys[arr[..., 3] == 0] = -1
    return keys


def keys_to_instances(keys: np.ndarray, split_components: bool = True) -> np.ndarray:
    """Instance map (int32, 1..K) from a colour key map: one instance per colour, or per
    8-connected component of each colour. Order: colour key ascending, then raster order
    of the components."""
    fg = keys >= 0
    colour = np.zeros(keys.shape, np.int32)
    _, inv = np.unique(keys[fg], return_inverse=True)
    colour[fg] = inv.reshape(-1) + 1
    if not split_components:
        return colour
    inst = np.zeros(keys.shape, np.int32)
    nxt = 0
    for c, sl in enumerate(ndimage.find_objects(colour), start=1):
        if sl is None:
            continue
        lab, n = ndimage.label(colour[sl] == c, structure=np.ones((3, 3), bool))
        view = inst[sl]
        view[lab > 0] = lab[lab > 0] + nxt
        nxt += n
    return inst


def _drop_small(inst: np.ndarray, min_area: int) -> Tuple[np.ndarray, int]:
    """Remove instances with fewer than ``min_area`` pixels; relabel 1..K in order."""
    ids, counts = np.unique(inst[inst > 0], return_counts=True)
    keep = ids[counts >= min_area]
    lut = np.zeros(int(inst.max(initial=0)) + 1, np.int32)
    lut[keep] = np.arange(1, len(keep) + 1, dtype=np.int32)
    return lut[inst], int(len(ids) - len(keep))


def convert_image(img_path: str, mask_paths: Tuple[str, str], min_area: int = 1,
                  split_components: bool = True) -> dict:
    """Convert one image + its two masks.

    Returns ``image`` uint8 RGB, ``inst`` int32, ``sem`` uint8, ``labels`` (int64, class
    index of each instance in ascending id order: 0 nucleus, 1 micronucleus; the geometry
    is computed from ``inst`` by :class:`projects.common.layout.LayoutWriter`),
    ``dropped_small``, ``covered`` (nuclei with no pixel left under micronuclei).
    """
    raw = read_image(img_path, channels=None)
    if raw.ndim == 3 and raw.shape[-1] == 1:
        raw = raw[..., 0]
    if raw.ndim == 2:
        img = np.repeat(to_uint8(raw)[..., None], 3, axis=2)
    elif raw.ndim == 3 and raw.shape[-1] == 3:
        img = to_uint8(raw)
    else:
        raise ValueError(f'{img_path}: expected a grey or RGB image, got shape {raw.shape}')
    h, w = img.shape[:2]
    maps, dropped = [], 0
    for mpath in mask_paths:
        keys = read_rgba_keys(mpath)
        if keys.shape != (h, w):
            raise ValueError(f'{mpath}: mask is {keys.shape[1]}x{keys.shape[0]} but image '
                             f'{img_path} is {w}x{h}')
        inst, n_small = _drop_small(keys_to_instances(keys, split_components), min_area)
        maps.append(inst)
        dropped += n_small
    nuc, mn = maps
    n_nuc = int(nuc.max(initial=0))
    inst = nuc.copy()
    inst[mn > 0] = mn[mn > 0] + n_nuc
    sem = np.zeros((h, w), np.uint8)
    sem[nuc > 0] = 1
    sem[mn > 0] = 2
    present = np.unique(inst[inst > 0])
    covered = int(n_nuc - np.count_nonzero(present <= n_nuc))
    labels = (present > n_nuc).astype(np.int64)  # present = ids ascending
    return dict(image=img, inst=inst, sem=sem, labels=labels, dropped_small=dropped,
                covered=covered)


def find_sets(root: str) -> List[Tuple[str, str, str]]:
    """(split, set name, set folder) for every set under ``root``; held-out folders are
    reported and skipped."""
    root = osp.abspath(root)
    if not osp.isdir(root):
        raise FileNotFoundError(f'{root}: mnfinder root folder not found')
    base = osp.basename(root)
    if base in HELD_OUT or osp.basename(osp.dirname(root)) in HELD_OUT:
        raise ValueError(f'{root}: the mnfinder {base if base in HELD_OUT else "test-data"} '
                         f'split is held out (never train, tune or report on it)')
    if base in SPLITS:
        return [(SPLITS[base], d, osp.join(root, d)) for d in sorted(os.listdir(root))
                if osp.isdir(osp.join(root, d))]
    if osp.isdir(osp.join(root, 'images')):  # one set folder
        parent = osp.basename(osp.dirname(root))
        if parent not in SPLITS:
            raise ValueError(f'{root}: a set folder must sit in training-data or '
                             f'validation-data to know its split (found in "{parent}")')
        return [(SPLITS[parent], base, root)]
    sets = []
    found = False
    for d in sorted(os.listdir(root)):
        path = osp.join(root, d)
        if not osp.isdir(path):
            continue
        if d in HELD_OUT:
            print(f'[mnfinder] skipping held-out split {path} (not converted)')
            continue
        if d not in SPLITS:
            print(f'[mnfinder] ignoring unknown folder {path}')
            continue
        found = True
        sets += [(SPLITS[d], s, osp.join(path, s)) for s in sorted(os.listdir(path))
                 if osp.isdir(osp.join(path, s))]
    if not found:
        raise FileNotFoundError(f'{root}: no training-data or validation-data folder')
    return sets


def list_images(set_dir: str) -> List[Tuple[str, str, Tuple[str, str]]]:
    """(name, tif path, (nucleus mask, mn mask)) of a set; every tif needs both masks and
    every mask needs a tif."""
    img_dir = osp.join(set_dir, 'images')
    if not osp.isdir(img_dir):
        raise FileNotFoundError(f'{img_dir}: images folder not found')
    names = sorted(osp.splitext(f)[0] for f in os.listdir(img_dir)
                   if f.lower().endswith(('.tif', '.tiff')))
    if not names:
        raise FileNotFoundError(f'{img_dir}: no .tif image (the .png files there are previews '
                                f'and are not converted)')
    tifs = {osp.splitext(f)[0]: osp.join(img_dir, f) for f in os.listdir(img_dir)
            if f.lower().endswith(('.tif', '.tiff'))}
    out = []
    for name in names:
        masks = tuple(osp.join(set_dir, m, name + '.png') for m in MASK_DIRS)
        for m in masks:
            if not osp.isfile(m):
                raise FileNotFoundError(f'{m}: mask of image {tifs[name]} not found')
        out.append((name, tifs[name], masks))
    for m in MASK_DIRS:
        mdir = osp.join(set_dir, m)
        if not osp.isdir(mdir):
            continue
        for f in sorted(os.listdir(mdir)):
            if f.endswith('.png') and osp.splitext(f)[0] not in tifs:
                raise FileNotFoundError(f'{osp.join(mdir, f)}: mask without image '
                                        f'(no {osp.splitext(f)[0]}.tif in {img_dir})')
    return out


def _check_val_from_train(k) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f'--val-from-train must be >= 1, got {k!r}: the validation split '
                         f'(thresholds, best checkpoint, convergence checks) must not be the '
                         f'test split (mnfinder validation-data)')


def choose_val(sets: Dict[str, List[str]], k: int, seed: int = 0) -> List[Tuple[str, str]]:
    """The ``k`` (set, image name) pairs of ``sets`` (set name -> image names) that go to
    the validation split, in the order they are taken.

    A stratified round-robin over the sets: every round takes the next image of each set
    that has one left, so no set gives a second image before every set has given one. The
    sets are visited largest first (a large set loses the smallest share of its images);
    sets of equal size in the order of ``rng.permutation(n_sets)`` over the sorted set
    names, and each set's images in the order of ``rng.permutation(n_images)`` over its
    sorted names (drawn set by set in sorted order), ``rng = numpy.random.default_rng(seed)``.
    """
    names = {s: sorted(v) for s, v in sets.items()}
    n = sum(len(v) for v in names.values())
    _check_val_from_train(k)
    if k > n - 1:
        raise ValueError(f'--val-from-train {k}: only {n} training-data images, so at most '
                         f'{n - 1} can go to val (train keeps at least one)')
    rng = np.random.default_rng(seed)
    order = sorted(names)
    tie = dict(zip(order, rng.permutation(len(order)).tolist()))
    queues = {s: [names[s][i] for i in rng.permutation(len(names[s]))] for s in order}
    visit = sorted(order, key=lambda s: (-len(names[s]), tie[s]))
    chosen: List[Tuple[str, str]] = []
    for rnd in range(max(len(v) for v in names.values())):
        for s in visit:
            if len(chosen) < k and rnd < len(queues[s]):
                chosen.append((s, queues[s][rnd]))
    return chosen


def convert(root: str, out: str, box_size: Optional[float] = None, min_area: int = 1,
            split_components: bool = True, progress: bool = True, val_from_train: int = 4,
            seed: int = 0) -> Dict[str, dict]:
    """Convert every training-data / validation-data set under ``root`` into ``out``:
    ``val_from_train`` training images (:func:`choose_val` with ``seed``) -> ``val``, the
    other training images -> ``train``, validation-data -> ``test``.

    Returns per-split counts (``images``, ``nucleus``, ``micronucleus``, ``dropped_small``,
    ``covered``) and ``sources``: the ``<mnfinder split>/<set>/<name>`` of each image of the
    split, in the order written (sets and names sorted).
    """
    if min_area < 1:
        raise ValueError(f'--min-area must be >= 1, got {min_area}')
    _check_val_from_train(val_from_train)
    found = []
    for split, set_name, set_dir in find_sets(root):
        for name, tif, masks in list_images(set_dir):
            found.append((split, set_name, name, tif, masks))
    train_sets: Dict[str, List[str]] = {}
    for split, set_name, name, _, _ in found:
        if split == 'train':
            train_sets.setdefault(set_name, []).append(name)
    if train_sets:
        to_val = set(choose_val(train_sets, val_from_train, seed))
    else:
        to_val = set()
        print(f'[mnfinder] no training-data under {root}: only the test split is written')
    src = {v: k for k, v in SPLITS.items()}
    jobs = []
    for split, set_name, name, tif, masks in found:
        if split == 'train' and (set_name, name) in to_val:
            split = 'val'
        jobs.append((split, set_name, name, tif, masks))
    writer = LayoutWriter(out, CLASSES, 'mnfinder {split} split converted by MMHisto',
                          source='mnfinder 1.2.3 (hatch-lab), MIT', box_size=box_size)
    stats: Dict[str, dict] = {}
    for split, set_name, name, tif, masks in track(jobs, progress):
        res = convert_image(tif, masks, min_area, split_components)
        # the split prefix keeps names unique: validation-data (test) reuses the set and
        # image names of training-data
        writer.add(split, f'{split}_{set_name}_{name}', res['image'], res['sem'], res['inst'],
                   res['labels'])
        st = stats.setdefault(split, dict(dropped_small=0, covered=0, sources=[]))
        st['dropped_small'] += res['dropped_small']
        st['covered'] += res['covered']
        origin = src['test' if split == 'test' else 'train']
        st['sources'].append(f'{origin}/{set_name}/{name}')
    counts = writer.close()
    return {s: dict(images=counts[s]['images'], **counts[s]['per_class'], **stats[s])
            for s in sorted(counts, key=('train', 'val', 'test').index)}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Convert mnfinder (nucleus + micronucleus RGBA instance masks on grey '
        'fluorescence tifs) to the COCO detection layout and the mmseg segmentation layout '
        '(docs/data_layout.md). validation-data -> test; --val-from-train images of '
        'training-data (a seeded round-robin over its sets) -> val, the rest -> train; '
        'test-data is held out and skipped.')
    parser.add_argument('--root', required=True,
                        help='mnfinder data folder (holding training-data/ and '
                        'validation-data/), one of those, or one set folder')
    parser.add_argument('--out', required=True, help='output dataset root')
    parser.add_argument('--box-size', type=float, default=None, metavar='N',
                        help='N x N boxes centred on the centroid instead of tight boxes')
    parser.add_argument('--min-area', type=int, default=1, metavar='N',
                        help='drop instances with fewer than N pixels (default 1: keep all)')
    parser.add_argument('--instances', choices=('component', 'colour'), default='component',
                        help='an instance is one connected component of a colour (default) '
                        'or one colour')
    parser.add_argument('--val-from-train', type=int, default=4, metavar='K',
                        help='training-data images that form the val split (default 4; '
                        '1 <= K <= training images - 1), one per set before a second from '
                        'any set, larger sets first')
    parser.add_argument('--seed', type=int, default=0,
                        help='seed of the choice of the val images (default 0)')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    print(f'[mnfinder] converting {args.root} -> {args.out}')
    stats = convert(args.root, args.out, args.box_size, args.min_area,
                    args.instances == 'component', val_from_train=args.val_from_train,
                    seed=args.seed)
    if 'val' in stats:
        n_train = stats['val']['images'] + stats.get('train', dict(images=0))['images']
        print(f'[mnfinder] val: {stats["val"]["images"]} of the {n_train} training-data images '
              f'(--val-from-train {args.val_from_train}, --seed {args.seed}): '
              f'{", ".join(stats["val"]["sources"])}')
    for split, st in stats.items():
        print(f'[mnfinder] {split}: {st["images"]} images, {st["nucleus"]} nuclei, '
              f'{st["micronucleus"]} micronuclei; {st["dropped_small"]} instances below '
              f'--min-area dropped; {st["covered"]} nuclei fully covered by micronuclei')
    return 0


if __name__ == '__main__':
    sys.exit(main())
