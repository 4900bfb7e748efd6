"""Write sparse-annotation variants of a dataset (nested k% subsets, or one per patch).

Examples::

    # COCO detection: train_10pct.json, train_30pct.json, train_50pct.json (nested)
    python tools/sparsify_annotations.py --ann-file data/x/annotations/train.json \\
        --fractions 0.1 0.3 0.5 --seed 0 --out-dir data/x/annotations
    # PU paper rule: train_one_per_patch.json
    python tools/sparsify_annotations.py --ann-file .../train.json --one-per-patch \\
        --patch-size 500 --overlap 100 --out-dir ...
    # segmentation layout: ann_dir_10pct/train, inst_dir_10pct/train, points_10pct/train
    python tools/sparsify_annotations.py --seg-root data/x --split train \\
        --fractions 0.1 0.3 --out-dir data/x

Sparsification is **per image** (each image keeps round(f * n_i) of its own n_i
instances, half rounded up), which is what the ``SparsifyAnnotations`` transform does:
with the same seed, the tool's files and the transform keep exactly the same instances
(see ``projects/common/sparsify.py``). Per-image nesting: every instance kept at 10% is
kept at 30%. The dataset total is the sum of per-image counts, so it can differ slightly
from round(f * N); both are printed. Images are never removed (an image that keeps no
instance is unlabeled data).

Segmentation: removed instances become background (0) in ann_dir and 0 in inst_dir, and
their points are removed (a point belongs to the instance under it, else the nearest).
img_dir is unchanged: point your config's data_prefix at the new folders.
"""
import argparse
import os
import os.path as osp
import sys
from typing import Dict, List, Optional

import numpy as np

from projects.common.io import (read_coco, read_image, read_instance_map, read_points,
                                write_image, write_instance_map, write_json, write_points)
from projects.common.sparsify import (image_seed, nested_subsets, one_per_patch_keep,
                                      sparsify_label_maps, subset_coco)


def variant_suffix(fraction: Optional[float]) -> str:
    """'_10pct' for 0.1, '_12.5pct' for 0.125, '_one_per_patch' for None."""
    if fraction is None:
        return '_one_per_patch'
    return f'_{round(fraction * 100, 6):g}pct'


def sparsify_coco_file(ann_file: str, out_dir: str, fractions: List[float], seed: int,
                       one_per_patch: bool = False, patch_size: int = 500,
                       overlap: int = 100) -> Dict[str, int]:
    """Write the variants of one COCO file; returns output path -> kept annotation count."""
    coco = read_coco(ann_file)
    stem = osp.splitext(osp.basename(ann_file))[0]
    total = len(coco.get('annotations', []))
    variants = [(f, dict(fraction=f)) for f in fractions]
    if one_per_patch:
        variants.append((None, dict(keep_fn=one_per_patch_keep(patch_size, overlap))))
    out = {}
    for f, kwargs in variants:
        sub = subset_coco(coco, seed=seed, source=ann_file, **kwargs)
        path = osp.join(out_dir, stem + variant_suffix(f) + '.json')
        write_json(path, sub)
        n = len(sub['annotations'])
        per_img = {img['id']: 0 for img in sub['images']}
        for a in sub['annotations']:
            per_img[a['image_id']] += 1
        empty = sum(v == 0 for v in per_img.values())
        target = '' if f is None else f' (round(f*N) = {int(np.floor(f * total + 0.5))})'
        print(f'[sparsify] {path}: kept {n} of {total} annotations{target}; '
              f'{empty} of {len(per_img)} images without annotation')
        out[path] = n
    return out


def _find(folder: str, name: str, suffixes) -> Optional[str]:
    for s in suffixes:
        p = osp.join(folder, name + s)
        if osp.isfile(p):
            return p
    return None


def sparsify_seg_split(seg_root: str, split: str, out_dir: str, fractions: List[float],
                       seed: int, one_per_patch: bool = False, patch_size: int = 500,
                       overlap: int = 100, img_suffix: str = '.png',
                       progress: bool = True) -> Dict[str, List[int]]:
    """Write sparsified ann_dir / inst_dir / points of one split of the segmentation
    layout; returns variant suffix -> [kept instances, total instances]."""
    img_dir = osp.join(seg_root, 'img_dir', split)
    if not osp.isdir(img_dir):
        raise FileNotFoundError(f'{img_dir}: image folder not found')
    names = sorted(f[:-len(img_suffix)] for f in os.listdir(img_dir) if f.endswith(img_suffix))
    if not names:
        raise ValueError(f'{img_dir}: no image with suffix "{img_suffix}"')
    dirs = {k: osp.join(seg_root, k, split) for k in ('ann_dir', 'inst_dir', 'points')}
    present = {k: osp.isdir(d) for k, d in dirs.items()}
    if not any(present.values()):
        raise FileNotFoundError(f'{seg_root}: none of ann_dir/{split}, inst_dir/{split}, '
                                f'points/{split} exists: nothing to sparsify')
    variants = [(f, 'nested') for f in fractions]
    if one_per_patch:
        variants.append((None, 'one_per_patch'))
    counts = {variant_suffix(f): [0, 0] for f, _ in variants}
    bar = None
    if progress:
        from mmengine.utils import ProgressBar
        bar = ProgressBar(len(names))
    for name in names:
        img_name = name + img_suffix
        seg = inst = pts = labels = None
        inst_path = None
        if present['ann_dir']:
            p = _find(dirs['ann_dir'], name, ['.png'])
            if p is None:
                raise FileNotFoundError(f'{osp.join(dirs["ann_dir"], name + ".png")}: '
                                        f'semantic map of image {img_name} not found')
            seg = read_image(p, channels=1)
        if present['inst_dir']:
            inst_path = _find(dirs['inst_dir'], name, ['.png', '.npy'])
            if inst_path is None:
                raise FileNotFoundError(f'{osp.join(dirs["inst_dir"], name)}.png/.npy: '
                                        f'instance map of image {img_name} not found')
            inst = read_instance_map(inst_path)
            if seg is not None and seg.shape != inst.shape:
                raise ValueError(f'{inst_path}: instance map {inst.shape} and semantic map '
                                 f'{seg.shape} differ in size')
        shape = inst.shape if inst is not None else seg.shape if seg is not None else None
        if shape is None:
            shape = read_image(osp.join(img_dir, img_name)).shape[:2]
        if present['points']:
            p = osp.join(dirs['points'], name + '.csv')
            pts, labels = read_points(p, shape=shape)
        s = image_seed(seed, img_name)
        for f, mode in variants:
            suf = variant_suffix(f)
            res = sparsify_label_maps(s, mode, f, inst_map=inst, seg_map=seg, points=pts,
                                      image_shape=shape, patch_size=patch_size,
                                      overlap=overlap)
            if res['seg_map'] is not None and seg is not None:
                write_image(osp.join(out_dir, 'ann_dir' + suf, split, name + '.png'),
                            res['seg_map'].astype(np.uint8))
            if res['inst_map'] is not None:
                ext = osp.splitext(inst_path)[1]
                write_instance_map(osp.join(out_dir, 'inst_dir' + suf, split, name + ext),
                                   res['inst_map'])
            if pts is not None:
                keep = res['point_keep']
                write_points(osp.join(out_dir, 'points' + suf, split, name + '.csv'),
                             pts[keep], labels[keep])
            counts[suf][0] += len(res['kept'])
            counts[suf][1] += res['n']
        if bar is not None:
            bar.update()
    if bar is not None:
        sys.stdout.write('\n')
    for suf, (k, n) in counts.items():
        print(f'[sparsify] {split}{suf}: kept {k} of {n} instances -> '
              f'{", ".join(d + suf for d, ok in present.items() if ok)}')
    return counts


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Write sparse-annotation variants (nested k%% subsets per image, or the '
        'PU paper\'s one-annotation-per-patch rule) of a COCO file or of one split of the '
        'segmentation layout. Same subsets as the SparsifyAnnotations transform.')
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument('--ann-file', help='COCO annotation file (detection layout)')
    src.add_argument('--seg-root', help='segmentation layout root (img_dir, ann_dir, '
                     'inst_dir, points)')
    parser.add_argument('--split', default=None, help='split of --seg-root (e.g. train)')
    parser.add_argument('--fractions', type=float, nargs='*', default=[],
                        help='kept fractions in (0, 1], e.g. 0.1 0.3 0.5')
    parser.add_argument('--seed', type=int, default=0, help='global seed (default 0)')
    parser.add_argument('--one-per-patch', action='store_true',
                        help='also write the one-annotation-per-patch variant')
    parser.add_argument('--patch-size', type=int, default=500, help='patch size (default 500)')
    parser.add_argument('--overlap', type=int, default=100,
                        help='overlap of adjacent patches (default 100)')
    parser.add_argument('--img-suffix', default='.png', help='image suffix in img_dir')
    parser.add_argument('--out-dir', required=True, help='output folder')
    args = parser.parse_args(argv)
    if not args.fractions and not args.one_per_patch:
        parser.error('give --fractions and/or --one-per-patch')
    for f in args.fractions:
        if not 0 < f <= 1:
            parser.error(f'--fractions must lie in (0, 1], got {f}')
    if args.seg_root and not args.split:
        parser.error('--seg-root needs --split')
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    fractions = sorted(set(args.fractions))
    nested_subsets(0, fractions, 0)  # validates the fractions
    if args.ann_file:
        sparsify_coco_file(args.ann_file, args.out_dir, fractions, args.seed,
                           args.one_per_patch, args.patch_size, args.overlap)
    else:
        sparsify_seg_split(args.seg_root, args.split, args.out_dir, fractions, args.seed,
                           args.one_per_patch, args.patch_size, args.overlap, args.img_suffix)
    return 0


if __name__ == '__main__':
    sys.exit(main())
