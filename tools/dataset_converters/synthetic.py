"""Generate the seeded synthetic H&E dataset (detection COCO + mmseg layouts).

Example::

    python tools/dataset_converters/synthetic.py --out data/synthetic \\
        --num-train 40 --num-val 10 --num-test 10 --size 256 --seed 0 \\
        --preview data/synthetic/preview.png

Writes ``images/`` + ``annotations/{train,val,test}.json`` (COCO) and ``img_dir``,
``ann_dir``, ``inst_dir``, ``points``, ``region_dir`` (mmseg), see docs/data_layout.md,
then prints per-split counts. Every tile can be regenerated alone with
``projects.common.synthetic.generate_tile(tile_seed(seed, split, i), size)``.
"""
import argparse
import json
import os.path as osp
import sys
import time

from projects.common.io import write_image
from projects.common.synthetic import (NUCLEUS_CLASSES, REGION_CLASSES, STAIN_SHIFT,
                                       generate_dataset, generate_tile, render_preview,
                                       tile_seed)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Generate the seeded synthetic H&E dataset (COCO detection layout and '
        'mmseg segmentation layout, see docs/data_layout.md).')
    parser.add_argument('--out', required=True, help='output folder (dataset root)')
    parser.add_argument('--num-train', type=int, default=40, help='number of training tiles')
    parser.add_argument('--num-val', type=int, default=10, help='number of validation tiles')
    parser.add_argument('--num-test', type=int, default=10, help='number of test tiles')
    parser.add_argument('--size', type=int, nargs='+', default=[256, 256], metavar='N',
                        help='tile size: H W, or one int for square tiles (default 256 256)')
    parser.add_argument('--seed', type=int, default=0, help='dataset seed (default 0)')
    parser.add_argument('--mitosis-rate', type=float, default=None,
                        help='fraction of tumour nuclei drawn as mitoses (default 0.015)')
    parser.add_argument('--density', type=float, default=None,
                        help='nucleus density multiplier (default 1)')
    parser.add_argument('--scale', type=float, default=None,
                        help='nucleus / texture size multiplier (default 1, ~0.5 um/px)')
    parser.add_argument('--stain-shift', action='store_true',
                        help='the stain-shifted variant: same tissue, other stain vectors and '
                        'amounts (projects.common.synthetic.STAIN_SHIFT), e.g. to test '
                        'stain augmentation')
    parser.add_argument('--preview', default=None, metavar='PNG',
                        help='also write a preview (image | outlines by class) of train tile 0')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace an existing dataset in --out (its layout folders are '
                        'deleted first)')
    args = parser.parse_args(argv)
    if len(args.size) == 1:
        args.size = [args.size[0], args.size[0]]
    if len(args.size) != 2:
        parser.error(f'--size takes one or two ints, got {args.size}')
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    options = {k: v for k, v in (('mitosis_rate', args.mitosis_rate), ('density', args.density),
                                 ('scale', args.scale)) if v is not None}
    if args.stain_shift:
        options.update(STAIN_SHIFT)
    size = tuple(args.size)
    total = args.num_train + args.num_val + args.num_test
    print(f'Writing {total} synthetic H&E tiles of {size[0]}x{size[1]} (seed {args.seed}) '
          f'to {args.out}')
    t0 = time.time()
    try:
        summary = generate_dataset(args.out, args.num_train, args.num_val, args.num_test,
                                   size=size, seed=args.seed, overwrite=args.overwrite,
                                   progress=True, **options)
    except ValueError as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    elapsed = time.time() - t0
    header = f'{"split":<6} {"images":>6} {"empty":>5} {"nuclei":>7} ' + ' '.join(
        f'{c:>10}' for c in NUCLEUS_CLASSES)
    print(header)
    for split, s in summary['splits'].items():
        print(f'{split:<6} {s["images"]:>6} {s["empty_images"]:>5} {s["instances"]:>7} ' +
              ' '.join(f'{s["per_class"][c]:>10}' for c in NUCLEUS_CLASSES))
    for split, s in summary['splits'].items():
        if s['images']:
            print(f'{split} region fractions: ' + json.dumps(s['region_fraction']))
    print(f'regions: {", ".join(REGION_CLASSES)}')
    print(f'done in {elapsed:.1f} s; summary in {osp.join(args.out, "summary.json")}')
    if args.preview:
        tile = generate_tile(tile_seed(args.seed, 'train', 0), size, **options)
        write_image(args.preview, render_preview(tile, zoom=2 if max(size) <= 256 else 1,
                                                 show_regions=True))
        print(f'preview of train tile 0 written to {args.preview}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
