"""Tests of the synthetic H&E generator (projects/common/synthetic.py)."""
import importlib.util
import json
import os
import os.path as osp
import re

import numpy as np
import pytest
from scipy import ndimage

from projects.common.io import read_image, read_instance_map, read_points
from projects.common.synthetic import (CLASS_COLOURS, NUCLEUS_CLASSES, REGION_CLASSES, SPLITS,
                                       compose_stains, generate_dataset, generate_tile,
                                       render_preview, stain_matrix, tile_seed)

TUMOUR, LYMPHOCYTE, STROMAL, MITOSIS = (NUCLEUS_CLASSES.index(c) for c in
                                        ('tumour', 'lymphocyte', 'stromal', 'mitosis'))
# region weights (background, tumour, stroma, lymphocytic, necrosis): a bit of everything
MIXED = (0.05, 0.4, 0.25, 0.3, 0.0)
ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


@pytest.fixture(scope='module')
def mixed_tiles():
    return [generate_tile(s, (128, 128), region_weights=MIXED) for s in range(4)]


def test_same_seed_gives_identical_arrays_and_other_seed_differs():
    a = generate_tile(11, (96, 80))
    b = generate_tile(11, (96, 80))
    c = generate_tile(12, (96, 80))
    for key in ('image', 'inst_map', 'labels', 'points', 'boxes', 'semantic', 'region_map'):
        assert a[key].dtype == b[key].dtype and a[key].tobytes() == b[key].tobytes(), key
    assert a['image'].shape == (96, 80, 3) and a['image'].dtype == np.uint8
    assert not np.array_equal(a['image'], c['image'])


def test_outputs_agree_with_independent_references(mixed_tiles):
    total = 0
    for t in mixed_tiles:
        inst = t['inst_map']
        assert inst.dtype == np.int32 and t['labels'].dtype == np.int64
        k = len(t['labels'])
        total += k
        ids = np.unique(inst)
        ids = ids[ids > 0]
        # ids are 1..K, one label / point / box each
        np.testing.assert_array_equal(ids, np.arange(1, k + 1))
        assert t['points'].shape == (k, 2) and t['boxes'].shape == (k, 4)
        assert np.all((t['labels'] >= 0) & (t['labels'] < len(NUCLEUS_CLASSES)))
        # centroid of the visible pixels in continuous pixel coordinates (pixel (r, c)
        # covers [c, c+1) x [r, r+1)): scipy's (row, col) centre of mass + 0.5 -> (x, y)
        com = np.array(ndimage.center_of_mass(np.ones(inst.shape), inst, ids))
        np.testing.assert_allclose(t['points'], com[:, ::-1] + 0.5, atol=1e-9)
        for j in range(k):
            ys, xs = np.nonzero(inst == j + 1)  # brute-force pixel extent
            assert len(ys) >= 10  # min_pixels default
            np.testing.assert_array_equal(t['boxes'][j], [xs.min(), ys.min(), xs.max() + 1,
                                                          ys.max() + 1])
        np.testing.assert_array_equal(t['semantic'], (inst > 0).astype(np.uint8))
        assert t['region_map'].dtype == np.uint8 and t['region_map'].max() < len(REGION_CLASSES)
    assert total > 100  # the checks above ran on real nuclei


def test_min_pixels_drops_small_visible_parts_everywhere():
    lo = generate_tile(3, (96, 96), region_weights=MIXED, min_pixels=10)
    hi = generate_tile(3, (96, 96), region_weights=MIXED, min_pixels=80)
    areas = np.bincount(hi['inst_map'].ravel())[1:]
    assert len(areas) == len(hi['labels']) == len(hi['points']) and areas.min() >= 80
    # lymphocytes (~pi * 4^2 = 50 px) cannot reach 80 px: fewer instances, no lymphocyte
    assert len(hi['labels']) < len(lo['labels']) and LYMPHOCYTE not in hi['labels']
    assert LYMPHOCYTE in lo['labels']


def test_beer_lambert_composition_by_hand():
    # identity OD vectors: I = 255 * exp(-c) per channel; 255 e^-1 = 93.8092, 255 e^-0.5 = 154.6653
    out = compose_stains(np.array([[1.0, 0.5, 0.0]]), np.eye(3))
    np.testing.assert_allclose(out, [[93.8093, 154.6653, 255.0]], atol=1e-4)
    s = stain_matrix('macenko')
    np.testing.assert_allclose(np.linalg.norm(s, axis=1), 1.0)
    for c in (0.3, 1.2, 2.5):  # pure hematoxylin: OD = -log(I/255) = c * h, parallel to h
        od = -np.log(compose_stains(np.array([c, 0.0, 0.0]), s) / 255.0)
        np.testing.assert_allclose(od / np.linalg.norm(od), s[0], atol=1e-12)
        assert np.linalg.norm(od) == pytest.approx(c)
    od = -np.log(compose_stains(np.array([0.5, 0.25, 0.0]), s) / 255.0)  # OD is linear
    np.testing.assert_allclose(od, 0.5 * s[0] + 0.25 * s[1], atol=1e-12)
    # |[0.65, 0.70, 0.29]| = sqrt(0.4225 + 0.49 + 0.0841) = sqrt(0.9966) = 0.99830
    np.testing.assert_allclose(stain_matrix('ruifrok')[0],
                               np.array([0.65, 0.70, 0.29]) / 0.998298, atol=1e-6)


def test_tile_image_is_the_beer_lambert_image_of_its_concentrations():
    t = generate_tile(5, (64, 64), noise_std=0.0)
    ref = np.clip(np.rint(compose_stains(t['concentrations'], t['stain_matrix'])), 0, 255)
    np.testing.assert_array_equal(t['image'], ref.astype(np.uint8))
    # the per-tile stain jitter moves the vectors slightly away from the reference
    cos = np.sum(t['stain_matrix'][:2] * stain_matrix('macenko')[:2], axis=1)
    assert np.all(cos > 0.97) and np.all(cos < 1.0)


def _areas_by_class(tiles):
    out = {c: [] for c in range(len(NUCLEUS_CLASSES))}
    for t in tiles:
        areas = np.bincount(t['inst_map'].ravel())[1:]
        for lab, a in zip(t['labels'], areas):
            out[int(lab)].append(a)
    return out


def test_nucleus_classes_differ_in_size_and_shape(mixed_tiles):
    areas = _areas_by_class(mixed_tiles)
    assert len(areas[LYMPHOCYTE]) > 20 and len(areas[TUMOUR]) > 20
    # lymphocyte radius 3.4-4.7 px (~50 px^2) vs tumour semi-axes 7-11.5 px (~200 px^2)
    assert np.mean(areas[LYMPHOCYTE]) < 0.5 * np.mean(areas[TUMOUR])

    def elongation(t, k):  # sqrt of the ratio of the pixel-coordinate covariance eigenvalues
        ys, xs = np.nonzero(t['inst_map'] == k + 1)
        ev = np.linalg.eigvalsh(np.cov(np.stack([xs, ys])))
        return np.sqrt(ev[1] / max(ev[0], 1e-9))

    el = {c: [elongation(t, k) for t in mixed_tiles for k in np.flatnonzero(t['labels'] == c)]
          for c in (LYMPHOCYTE, STROMAL)}
    assert len(el[STROMAL]) >= 3
    # spindles: semi-axes 8-13 vs 2.1-3.1 px (ratio ~4); lymphocytes: ratio 1-1.2
    assert np.median(el[STROMAL]) > 2.5 and np.median(el[LYMPHOCYTE]) < 1.4


def test_mitoses_rare_but_present_and_rate_option():
    labels = np.concatenate([generate_tile(tile_seed(0, 'train', i))['labels'] for i in range(30)])
    n_mit = int(np.sum(labels == MITOSIS))
    # default rate 0.02 of tumour-region tumour nuclei: a few dozen among thousands of nuclei
    assert 0 < n_mit < 0.05 * len(labels)
    tum = [generate_tile(s, (128, 128), region_weights=(0, 1, 0, 0, 0), mitosis_rate=0.5)
           for s in range(2)]
    lab = np.concatenate([t['labels'] for t in tum])
    # tumour region mix: 0.9 tumour-type, half of them mitoses -> ~45% of the nuclei
    assert np.mean(lab == MITOSIS) > 0.3


def test_nuclei_are_darker_than_stroma_and_lymphocytes_darkest():
    t = generate_tile(2, (128, 128), region_weights=(0, 0.3, 0.5, 0.2, 0))
    grey = t['image'].astype(np.float64).mean(2)
    inst = t['inst_map']
    far = ~ndimage.binary_dilation(inst > 0, iterations=3)
    stroma = grey[far & (t['region_map'] == REGION_CLASSES.index('stroma'))]
    nuclei = grey[inst > 0]
    assert len(stroma) > 500 and len(nuclei) > 500
    assert nuclei.mean() < stroma.mean() - 40
    lab = t['labels'][inst[inst > 0] - 1]
    assert grey[inst > 0][lab == LYMPHOCYTE].mean() < grey[inst > 0][lab == TUMOUR].mean()


def test_class_mix_and_density_depend_on_region():
    counts = np.zeros((len(REGION_CLASSES), len(NUCLEUS_CLASSES)))
    pixels = np.zeros(len(REGION_CLASSES))
    # density x3 so that the sparse stroma holds a few dozen nuclei
    for t in [generate_tile(s, (256, 256), region_weights=MIXED, density=3.0) for s in (0, 1)]:
        pixels += np.bincount(t['region_map'].ravel(), minlength=len(REGION_CLASSES))
        xy = np.floor(t['points']).astype(int)  # the pixel holding each centroid
        reg = t['region_map'][xy[:, 1], xy[:, 0]]
        np.add.at(counts, (reg, t['labels']), 1)
    frac = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    r_t, r_s, r_l = (REGION_CLASSES.index(r) for r in ('tumour', 'stroma', 'lymphocytic'))
    # generating mixes: tumour 0.9 (x 0.98 non-mitotic), stroma 0.75 stromal, lymphocytic 0.92
    assert frac[r_t, TUMOUR] > 0.7 and frac[r_s, STROMAL] > 0.5 and frac[r_l, LYMPHOCYTE] > 0.8
    assert counts[r_s].sum() > 20
    dens = counts.sum(1) / np.maximum(pixels, 1)
    # 3 x (70 vs 3.5) nuclei per 10^4 px; packing caps the lymphocytes below 210 per 10^4
    assert dens[r_l] > 4 * dens[r_s]


def _check_tile_files(root, split, i, n, tile):
    name = f'{split}_{i:04d}'
    img = read_image(osp.join(root, 'images', f'{name}.png'))
    np.testing.assert_array_equal(img, tile['image'])
    np.testing.assert_array_equal(read_image(osp.join(root, 'img_dir', split, f'{name}.png')),
                                  tile['image'])
    np.testing.assert_array_equal(
        read_image(osp.join(root, 'ann_dir', split, f'{name}.png'), channels=1), tile['semantic'])
    np.testing.assert_array_equal(
        read_instance_map(osp.join(root, 'inst_dir', split, f'{name}.png')), tile['inst_map'])
    np.testing.assert_array_equal(
        read_image(osp.join(root, 'region_dir', split, f'{name}.png'), channels=1),
        tile['region_map'])
    pts, lab = read_points(osp.join(root, 'points', split, f'{name}.csv'), shape=img.shape)
    np.testing.assert_allclose(pts, tile['points'], atol=0.0051)  # CSV keeps 2 decimals
    np.testing.assert_array_equal(lab, tile['labels'])


def test_generate_dataset_writes_coco_and_mmseg_layouts(tmp_path):
    from pycocotools.coco import COCO
    root = str(tmp_path / 'syn')
    summary = generate_dataset(root, 3, 1, 1, size=(96, 96), seed=5,
                               region_weights=MIXED)
    n = {'train': 3, 'val': 1, 'test': 1}
    for split in SPLITS:
        coco = COCO(osp.join(root, 'annotations', f'{split}.json'))
        cats = coco.loadCats(coco.getCatIds())
        assert [(c['id'], c['name']) for c in cats] == [(i + 1, c) for i, c in
                                                         enumerate(NUCLEUS_CLASSES)]
        assert len(coco.getImgIds()) == n[split]
        n_inst = 0
        for i, img_id in enumerate(sorted(coco.getImgIds())):
            tile = generate_tile(tile_seed(5, split, i), (96, 96), region_weights=MIXED)
            info = coco.loadImgs(img_id)[0]
            assert info['file_name'] == f'{split}_{i:04d}.png'
            anns = sorted(coco.loadAnns(coco.getAnnIds(imgIds=img_id)), key=lambda a: a['id'])
            assert len(anns) == len(tile['labels'])
            n_inst += len(anns)
            for k, ann in enumerate(anns):
                x1, y1, x2, y2 = tile['boxes'][k]
                assert ann['bbox'] == [x1, y1, x2 - x1, y2 - y1] and ann['iscrowd'] == 0
                assert ann['category_id'] == tile['labels'][k] + 1
                mask = coco.annToMask(ann)  # RLE decoded by pycocotools
                np.testing.assert_array_equal(mask, tile['inst_map'] == k + 1)
                assert ann['area'] == mask.sum()
                np.testing.assert_allclose(ann['point'], tile['points'][k])
            _check_tile_files(root, split, i, n[split], tile)
        assert summary['splits'][split]['instances'] == n_inst > 0
    with open(osp.join(root, 'summary.json')) as f:
        assert json.load(f)['splits'] == summary['splits']


def test_empty_tiles_are_kept_and_overwrite_is_explicit(tmp_path):
    from pycocotools.coco import COCO
    root = str(tmp_path / 'empty')
    summary = generate_dataset(root, 2, 0, 1, size=64, seed=1, region_weights=(1, 0, 0, 0, 0))
    coco = COCO(osp.join(root, 'annotations', 'train.json'))
    assert len(coco.getImgIds()) == 2 and len(coco.getAnnIds()) == 0
    assert len(COCO(osp.join(root, 'annotations', 'val.json')).getImgIds()) == 0
    assert summary['splits']['train']['empty_images'] == 2
    pts, lab = read_points(osp.join(root, 'points', 'train', 'train_0001.csv'))
    assert pts.shape == (0, 2) and lab.shape == (0,)
    assert read_instance_map(osp.join(root, 'inst_dir', 'train', 'train_0001.png')).max() == 0
    with pytest.raises(ValueError, match='images'):
        generate_dataset(root, 1, 0, 0, size=64)
    stale = osp.join(root, 'img_dir', 'train', 'stale.png')
    open(stale, 'w').close()
    generate_dataset(root, 1, 0, 0, size=64, overwrite=True)
    assert not osp.exists(stale) and sorted(os.listdir(osp.join(root, 'images'))) == [
        'train_0000.png']


@pytest.mark.parametrize('kwargs, match', [
    (dict(size=(8, 64)), 'size'),
    (dict(size='big'), 'size'),
    (dict(wobble=1), 'wobble'),
    (dict(region_weights=(1, 0)), 'region_weights'),
    (dict(mitosis_rate=1.5), 'mitosis_rate'),
    (dict(stains=np.ones((4, 3))), 'stains'),
    (dict(stains='trichrome'), 'trichrome'),
])
def test_bad_arguments_raise_named_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        generate_tile(0, **kwargs)


def test_bad_seed_and_split_raise():
    with pytest.raises(ValueError, match='seed'):
        generate_tile(-1)
    with pytest.raises(ValueError, match='split'):
        tile_seed(0, 'training', 0)
    # tiles are independent of each other: (seed, split, index) -> distinct seeds
    seeds = {tile_seed(s, sp, i) for s in range(2) for sp in SPLITS for i in range(5)}
    assert len(seeds) == 30


def test_render_preview_outlines_by_class():
    t = generate_tile(7, (96, 96), region_weights=MIXED)
    out = render_preview(t)
    h, w = t['inst_map'].shape
    assert out.shape == (h + 16, 2 * w + 4, 3)  # two panels, 4 px gap, legend strip
    np.testing.assert_array_equal(out[:h, :w], t['image'])
    right = out[:h, w + 4:]
    inst = t['inst_map']
    assert len(t['labels']) >= 10
    for k, lab in enumerate(t['labels'][:10]):
        # boundary: pixels of k with a 4-neighbour outside k (the image border does not count)
        ys, xs = np.nonzero((inst == k + 1) & ~ndimage.binary_erosion(inst == k + 1,
                                                                       border_value=1))
        px, py = t['points'][k]  # pixel (r, c) has its centre at (c + 0.5, r + 0.5)
        far = np.argmax((xs + 0.5 - px) ** 2 + (ys + 0.5 - py) ** 2)  # away from the dot
        assert tuple(right[ys[far], xs[far]]) == CLASS_COLOURS[NUCLEUS_CLASSES[lab]]
    # a pixel far from every nucleus is the unchanged image
    bg = np.argwhere(~ndimage.binary_dilation(inst > 0, iterations=3))[0]
    np.testing.assert_array_equal(right[bg[0], bg[1]], t['image'][bg[0], bg[1]])


def test_cli_smoke(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location(
        'synthetic_cli', osp.join(ROOT, 'tools', 'dataset_converters', 'synthetic.py'))
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    out = str(tmp_path / 'cli')
    preview = str(tmp_path / 'preview.png')
    assert cli.main(['--out', out, '--num-train', '2', '--num-val', '1', '--num-test', '0',
                     '--size', '64', '--seed', '3', '--preview', preview]) == 0
    text = capsys.readouterr().out
    with open(osp.join(out, 'summary.json')) as f:
        summary = json.load(f)
    row = re.search(r'^train\s+(\d+)\s+(\d+)\s+(\d+)', text, re.M)  # split images empty nuclei
    assert row is not None and summary['size'] == [64, 64]
    assert int(row.group(1)) == 2 and int(row.group(3)) == summary['splits']['train']['instances']
    assert read_image(preview).shape[0] == 2 * 64 + 30  # zoom 2 + two legend rows
    assert cli.main(['--out', out, '--num-train', '1', '--num-val', '0', '--num-test', '0',
                     '--size', '64']) == 1  # refuses to mix with the existing dataset
