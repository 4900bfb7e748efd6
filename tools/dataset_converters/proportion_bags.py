"""Convert annotated slides + proportion-only slides into the bag layout of negative pseudo
labelling (Tokunaga et al. 2020, sect. 5.1).

Example::

    python tools/dataset_converters/proportion_bags.py \\
        --classes lepidic,acinar,papillary,micropapillary,solid \\
        --labelled-images raw/labelled --masks raw/masks \\
        --weak-images raw/weak --ratios raw/ratios.csv \\
        --val-fraction 0.1 --test-fraction 0.2 --seed 0 \\
        --patch-size 224 --min-tissue 0.5 --out data/my_bags

Input:

- ``--labelled-images DIR`` slides with pixel annotations and ``--masks DIR`` their region
  masks, matched by file stem (``a.jpg`` <-> ``a.png``); a mask is a single-channel
  integer image of the slide's size with values 0..C-1 (class index in ``--classes``
  order) or ``--ignore-index`` (default 255; unannotated / vague / non-tumour regions).
- ``--weak-images DIR`` proportion-only slides and ``--ratios CSV`` with header
  ``name,<class>,...`` (columns in any order, exactly the classes), one row per slide
  (``name`` = file stem), fractions or percentages (normalised to sum 1).
- ``--tissue-masks DIR`` (optional) tissue / tumour proposal masks of the weak slides
  (non-zero = tissue), matched by stem; without it tissue is found by Otsu's threshold on
  HSV saturation (``projects.negative_pseudo_labels.bags.tissue_mask``).
- val / test slides come only from the labelled slides: ``--val-list`` / ``--test-list``
  (text files, one stem per line, ``#`` comments) or ``--val-fraction`` /
  ``--test-fraction`` with ``--seed`` (sorted stems permuted by
  ``numpy.random.default_rng(seed).permutation``; the first round(test_fraction * n) go to
  test, the next round(val_fraction * n) to val, at least one each when the fraction is
  > 0; train must keep a labelled slide). A split without a slide gets no json file.

Output (``projects/negative_pseudo_labels/README.md``): ``images/<stem><ext>`` (copied
byte for byte, or symlinked with ``--link``; every image is decoded once to validate it
and to read its size), ``masks/<stem>.png`` (uint8), ``train.json`` (labelled +
proportion-only bags), ``val.json``, ``test.json``, ``summary.json``. Every mismatch
(unmatched files either way, size mismatch, CSV row without an image or image without a
row, corrupt image, bad mask value, slide without a patch) is an error naming the files;
``--skip-empty`` turns "no patch reaches --min-tissue" into a reported skip. Inputs
are matched before anything is written; an error while converting a slide can leave a
partial output folder (rerun with ``--overwrite``).
"""
import argparse
import os
import os.path as osp
import shutil
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence

import numpy as np

from projects.common.io import read_image, read_rgb_uint8, write_image, write_json
from projects.common.layout import seeded_split, split_count
from projects.negative_pseudo_labels.bags import (NoPatchError, patch_grid, prepare_out_dir,
                                                  read_ratio_csv, tissue_grid, tissue_mask,
                                                  write_bag_json)

IMAGE_EXTS = ('.png', '.jpg', '.jpeg', '.tif', '.tiff', '.bmp')
MASK_EXTS = ('.png', '.tif', '.tiff', '.bmp')


def list_files(folder: str, exts: Sequence[str], what: str) -> Dict[str, str]:
    """{stem: path} of the files of ``folder`` with one of ``exts`` (case-insensitive).

    Other files are ignored and reported; two files with the same stem raise ValueError.
    """
    if not osp.isdir(folder):
        raise FileNotFoundError(f'{folder}: {what} folder not found')
    out: Dict[str, str] = {}
    ignored = []
    for fname in sorted(os.listdir(folder)):
        path = osp.join(folder, fname)
        stem, ext = osp.splitext(fname)
        if fname.startswith('.') or not osp.isfile(path) or ext.lower() not in exts:
            ignored.append(fname)
            continue
        if stem in out:
            raise ValueError(f'{folder}: two {what} files have the stem {stem!r}: '
                             f'{osp.basename(out[stem])} and {fname}')
        out[stem] = path
    if ignored:
        print(f'[proportion_bags] {folder}: ignored {len(ignored)} entries that are not '
              f'{"/".join(exts)} files: {ignored[:5]}{"..." if len(ignored) > 5 else ""}')
    if not out:
        raise ValueError(f'{folder}: no {what} file ({"/".join(exts)})')
    return out


def match_stems(left: Dict[str, str], right: Dict[str, str], left_what: str,
                right_what: str, left_dir: str, right_dir: str) -> None:
    """ValueError naming the files of either side that have no partner on the other."""
    only_l = sorted(set(left) - set(right))
    only_r = sorted(set(right) - set(left))
    if only_l or only_r:
        parts = []
        if only_l:
            parts.append(f'{len(only_l)} {left_what} file(s) without a matching {right_what} in '
                         f'{right_dir}: '
                         f'{[osp.basename(left[s]) for s in only_l[:10]]}')
        if only_r:
            parts.append(f'{len(only_r)} {right_what} file(s) without a matching {left_what} in '
                         f'{left_dir}: '
                         f'{[osp.basename(right[s]) for s in only_r[:10]]}')
        raise ValueError('; '.join(parts) + ' (files are matched by stem)')


def read_label_image(path: str, shape: tuple, img_path: str, what: str) -> np.ndarray:
    """Single-channel integer image of ``shape`` (H, W); errors name both files."""
    arr = read_image(path, channels=None)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise ValueError(f'{path}: expected a single-channel {what}, got shape {arr.shape}')
    if arr.dtype != bool and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f'{path}: expected an integer {what}, got {arr.dtype}')
    if arr.shape != tuple(shape[:2]):
        raise ValueError(f'{path}: {what} is {arr.shape[1]}x{arr.shape[0]} (WxH) but image '
                         f'{img_path} is {shape[1]}x{shape[0]}')
    return arr


def read_name_list(path: str, labelled: Dict[str, str], weak: Dict[str, str]) -> List[str]:
    """Stems listed in a val / test list file (one per line, ``#`` comments, blank lines
    ignored; a file name with its extension is accepted too)."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'{path}: split list not found')
    by_fname = {osp.basename(p): s for s, p in labelled.items()}
    names = []
    with open(path) as f:
        for line_no, line in enumerate(f, 1):
            name = line.split('#', 1)[0].strip()
            if not name:
                continue
            name = by_fname.get(name, name)
            if name in weak and name not in labelled:
                raise ValueError(f'{path}: line {line_no}: {name!r} is a proportion-only slide; '
                                 f'val / test slides must be labelled')
            if name not in labelled:
                raise ValueError(f'{path}: line {line_no}: {name!r} is not a labelled slide')
            if name in names:
                raise ValueError(f'{path}: line {line_no}: {name!r} is listed twice')
            names.append(name)
    return names


def split_labelled(names: Sequence[str], val_fraction: float, test_fraction: float,
                   seed: int) -> Dict[str, List[str]]:
    """Seeded split of the labelled stems (see the module docstring); each list sorted."""
    for what, f in (('--val-fraction', val_fraction), ('--test-fraction', test_fraction)):
        if not 0 <= f < 1:
            raise ValueError(f'{what} must lie in [0, 1), got {f}')
    names = sorted(names)
    n = len(names)
    n_test, n_val = split_count(test_fraction, n), split_count(val_fraction, n)
    if n_test + n_val >= n:
        raise ValueError(f'{n} labelled slides cannot give {n_test} test and {n_val} val slides '
                         f'and keep one for training; lower --val-fraction / --test-fraction')
    return seeded_split(names, [('test', n_test), ('val', n_val)], seed)


def _place_image(src: str, dst: str, link: bool) -> None:
    """Copy (or symlink) ``src`` to ``dst`` through a temporary name, then rename."""
    folder = osp.dirname(dst)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix='.tmp_', suffix=osp.splitext(dst)[1])
    os.close(fd)
    try:
        if link:
            os.remove(tmp)
            os.symlink(osp.abspath(src), tmp)
        else:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        if osp.lexists(tmp):
            os.remove(tmp)
        raise


def convert(classes: Sequence[str], labelled_images: str, masks: str, out: str,
            weak_images: Optional[str] = None, ratios: Optional[str] = None,
            tissue_masks: Optional[str] = None, val_list: Optional[str] = None,
            test_list: Optional[str] = None, val_fraction: Optional[float] = None,
            test_fraction: Optional[float] = None, seed: int = 0, patch_size: int = 224,
            min_tissue: float = 0.5, ignore_index: int = 255, link: bool = False,
            skip_empty: bool = False, overwrite: bool = False, progress: bool = True) -> dict:
    """Convert the slides (see the module docstring) into ``out``; return the summary."""
    from projects.common.layout import track
    classes = [c.strip() for c in classes]
    C = len(classes)
    if C < 2 or any(not c for c in classes) or len(set(classes)) != C:
        raise ValueError(f'--classes: expected two or more distinct names, got {classes}')
    if not (0 <= ignore_index <= 255) or ignore_index < C:
        raise ValueError(f'--ignore-index {ignore_index} must lie in {C}..255 (a uint8 value '
                         f'that is not a class index)')
    if (weak_images is None) != (ratios is None):
        raise ValueError('--weak-images and --ratios go together')
    if tissue_masks is not None and weak_images is None:
        raise ValueError('--tissue-masks needs --weak-images')
    lists = val_list is not None or test_list is not None
    if lists and (val_fraction is not None or test_fraction is not None):
        raise ValueError('give --val-list / --test-list or --val-fraction / --test-fraction, '
                         'not both')

    # ---- match everything before writing anything
    lab_imgs = list_files(labelled_images, IMAGE_EXTS, 'image')
    lab_masks = list_files(masks, MASK_EXTS, 'mask')
    match_stems(lab_imgs, lab_masks, 'image', 'mask', labelled_images, masks)
    weak_imgs: Dict[str, str] = {}
    ratio_of: Dict[str, np.ndarray] = {}
    tissue_of: Dict[str, str] = {}
    if weak_images is not None:
        weak_imgs = list_files(weak_images, IMAGE_EXTS, 'image')
        ratio_of = read_ratio_csv(ratios, classes)
        no_row = sorted(set(weak_imgs) - set(ratio_of))
        if no_row:
            raise ValueError(f'{ratios}: no ratio row for the weak image(s) '
                             f'{[weak_imgs[s] for s in no_row[:10]]}')
        no_img = sorted(set(ratio_of) - set(weak_imgs))
        if no_img:
            raise ValueError(f'{ratios}: row(s) {no_img[:10]} have no image in {weak_images}')
        both = sorted(set(weak_imgs) & set(lab_imgs))
        if both:
            raise ValueError(f'{both[:10]}: these stems are both labelled ({labelled_images}) '
                             f'and proportion-only ({weak_images}) slides; bag names must be '
                             f'unique')
        if tissue_masks is not None:
            tissue_of = list_files(tissue_masks, MASK_EXTS, 'tissue mask')
            match_stems(weak_imgs, tissue_of, 'weak image', 'tissue mask', weak_images,
                        tissue_masks)
    if lists:
        val = read_name_list(val_list, lab_imgs, weak_imgs) if val_list else []
        test = read_name_list(test_list, lab_imgs, weak_imgs) if test_list else []
        both = sorted(set(val) & set(test))
        if both:
            raise ValueError(f'{val_list}, {test_list}: {both[:10]} are in both lists')
        rest = sorted(set(lab_imgs) - set(val) - set(test))
        if not rest:
            raise ValueError(f'{val_list}, {test_list}: every labelled slide is in val or test; '
                             f'train must keep one')
        split_of = {**{s: 'train' for s in rest}, **{s: 'val' for s in val},
                    **{s: 'test' for s in test}}
    else:
        parts = split_labelled(list(lab_imgs), 0.1 if val_fraction is None else val_fraction,
                               0.2 if test_fraction is None else test_fraction, seed)
        split_of = {s: split for split, names in parts.items() for s in names}

    prepare_out_dir(out, overwrite)
    tasks = [(s, True) for s in sorted(lab_imgs)] + [(s, False) for s in sorted(weak_imgs)]
    split_bags: Dict[str, list] = {'train': [], 'val': [], 'test': []}
    skipped = []
    print(f'[proportion_bags] {len(lab_imgs)} labelled + {len(weak_imgs)} proportion-only '
          f'slides, {patch_size}-px patches, min tissue {min_tissue} -> {out}')
    for stem, labelled in track(tasks, progress):
        src = lab_imgs[stem] if labelled else weak_imgs[stem]
        img = read_rgb_uint8(src)
        h, w = img.shape[:2]
        try:
            if labelled:
                mask = read_label_image(lab_masks[stem], img.shape, src, 'mask')
                grid = patch_grid(mask, patch_size, C, ignore_index, min_tissue,
                                  source=lab_masks[stem])
            elif stem in tissue_of:
                tissue = read_label_image(tissue_of[stem], img.shape, src, 'tissue mask') != 0
                patches = tissue_grid(tissue, patch_size, min_tissue, source=tissue_of[stem])
            else:
                patches = tissue_grid(tissue_mask(img, src), patch_size, min_tissue,
                                      source=f'{src} (Otsu tissue mask)')
        except NoPatchError as err:
            if not skip_empty:
                raise ValueError(f'{err}; pass --skip-empty to skip such slides') from err
            skipped.append(src)
            continue
        img_path = f'images/{stem}{osp.splitext(src)[1]}'
        _place_image(src, osp.join(out, img_path), link)
        bag = dict(name=stem, img_path=img_path, labelled=labelled, height=h, width=w)
        if labelled:
            mask_path = f'masks/{stem}.png'
            write_image(osp.join(out, mask_path), mask.astype(np.uint8))
            bag.update(mask_path=mask_path, ratio=grid['ratio'], patches=grid['patches'],
                       labels=grid['labels'], pixel_counts=grid['pixel_counts'])
            split_bags[split_of[stem]].append(bag)
        else:
            bag.update(mask_path=None, ratio=ratio_of[stem], patches=patches, labels=None,
                       pixel_counts=None)
            split_bags['train'].append(bag)

    summary = dict(out_dir=out, classes=classes, patch_size=patch_size,
                   min_tissue=min_tissue, ignore_index=ignore_index,
                   tissue=('given' if tissue_masks else 'otsu') if weak_images else None,
                   skipped=skipped, splits={})
    for split, bags in split_bags.items():
        if not bags:
            print(f'[proportion_bags] {split}: no slide, {split}.json not written')
            continue
        write_bag_json(osp.join(out, f'{split}.json'), classes, patch_size, bags, ignore_index,
                       min_tissue)
        lab = [b for b in bags if b['labelled']]
        cls = np.zeros(C, np.int64)
        for b in lab:
            cls += np.bincount(b['labels'], minlength=C)
        summary['splits'][split] = dict(
            bags=len(bags), labelled_bags=len(lab), weak_bags=len(bags) - len(lab),
            names=[b['name'] for b in bags],
            patches=int(sum(len(b['patches']) for b in bags)),
            labelled_patches=int(sum(len(b['patches']) for b in lab)),
            class_patches={c: int(v) for c, v in zip(classes, cls)})
    if 'train' not in summary['splits']:
        raise ValueError(f'{out}: no train slide left (all skipped)')
    if not summary['splits']['train']['labelled_bags']:
        print('[proportion_bags] warning: train.json holds no labelled bag (all skipped); '
              'the supervised step has nothing to learn from')
    write_json(osp.join(out, 'summary.json'), summary)
    return summary


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description='Convert annotated slides (image + region mask) and proportion-only '
        'slides (image + class ratio) into the bag layout of negative pseudo labelling '
        '(train.json / val.json / test.json, images/, masks/).')
    p.add_argument('--classes', required=True,
                   help='comma-separated class names; mask value k = k-th class')
    p.add_argument('--labelled-images', required=True, help='folder of annotated slides')
    p.add_argument('--masks', required=True, help='folder of their region masks (same stems)')
    p.add_argument('--weak-images', default=None, help='folder of proportion-only slides')
    p.add_argument('--ratios', default=None,
                   help='CSV name,<class>,... of the proportion-only slides (percent or '
                   'fractions)')
    p.add_argument('--tissue-masks', default=None,
                   help='folder of tissue masks of the proportion-only slides (non-zero = '
                   'tissue); default: Otsu on HSV saturation')
    p.add_argument('--val-list', default=None, help='text file of val slide stems')
    p.add_argument('--test-list', default=None, help='text file of test slide stems')
    p.add_argument('--val-fraction', type=float, default=None,
                   help='fraction of labelled slides in val (default 0.1 without lists)')
    p.add_argument('--test-fraction', type=float, default=None,
                   help='fraction of labelled slides in test (default 0.2 without lists)')
    p.add_argument('--seed', type=int, default=0, help='seed of the val / test split')
    p.add_argument('--patch-size', type=int, default=224, help='patch side in px (default 224)')
    p.add_argument('--min-tissue', type=float, default=0.5,
                   help='keep a patch when this fraction is tissue / annotated (default 0.5)')
    p.add_argument('--ignore-index', type=int, default=255,
                   help='mask value of unannotated pixels (default 255)')
    p.add_argument('--out', required=True, help='output bag data root')
    p.add_argument('--link', action='store_true', help='symlink the images instead of copying')
    p.add_argument('--skip-empty', action='store_true',
                   help='skip (and report) slides without a qualifying patch instead of failing')
    p.add_argument('--overwrite', action='store_true',
                   help='replace an existing bag data set in --out')
    p.add_argument('--no-progress', action='store_true', help='no progress bar')
    args = p.parse_args(argv)
    if args.patch_size < 1:
        p.error('--patch-size must be >= 1')
    if not 0 < args.min_tissue <= 1:
        p.error('--min-tissue must lie in (0, 1]')
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    t0 = time.time()
    try:
        summary = convert(args.classes.split(','), args.labelled_images, args.masks, args.out,
                          args.weak_images, args.ratios, args.tissue_masks, args.val_list,
                          args.test_list, args.val_fraction, args.test_fraction, args.seed,
                          args.patch_size, args.min_tissue, args.ignore_index, args.link,
                          args.skip_empty, args.overwrite, not args.no_progress)
    except (ValueError, FileNotFoundError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    for split, s in summary['splits'].items():
        print(f'[proportion_bags] {split}: {s["bags"]} bags ({s["labelled_bags"]} labelled, '
              f'{s["weak_bags"]} proportion-only), {s["patches"]} patches; labelled patches '
              f'per class ' + ', '.join(f'{c} {v}' for c, v in s['class_patches'].items()))
    if summary['skipped']:
        print(f'[proportion_bags] skipped {len(summary["skipped"])} slides without a '
              f'qualifying patch: {summary["skipped"]}')
    print(f'[proportion_bags] done in {time.time() - t0:.1f} s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
