"""Stain augmentation and normalisation transforms (issue 18): RandomStainJitter (Tellez et
al. 2018 HED jitter) and StainNormalize (Macenko / Reinhard to a target), on hand values and
on the real H&E crops of tests/data/he; the stain-shifted synthetic variant."""
import os.path as osp

import numpy as np
import pytest

from projects.common.io import read_rgb_uint8
from projects.common.stain import (HED_FROM_RGB, RGB_FROM_HED, RandomStainJitter,
                                   StainNormalize, hed_jitter, macenko_stain_matrix,
                                   separate_stains)

HE = osp.join(osp.dirname(osp.abspath(__file__)), 'data', 'he')
CROPS = ['he_tumour_crop_256.png', 'tcga_he_300x500.jpg']


@pytest.fixture(scope='module', params=CROPS)
def crop(request):
    return read_rgb_uint8(osp.join(HE, request.param))


def test_hed_jitter_hand_values():
    # a pure-hematoxylin pixel of concentration 1: I = 255 exp(-(0.65, 0.70, 0.29)); alpha_H
    # = 2 doubles its OD: 255 exp(-(1.30, 1.40, 0.58)) = (69.50, 62.88, 142.77) -> 69, 63, 143
    h = 255 * np.exp(-RGB_FROM_HED[0])[None, None]
    assert hed_jitter(h, [2, 1, 1], [0, 0, 0]).tolist() == [[[69, 63, 143]]]
    # white glass has no stain; beta_H = 0.1 adds 0.1 H: 255 exp(-0.1 (0.65, 0.70, 0.29)) =
    # (238.95, 237.76, 247.71) -> 239, 238, 248
    white = np.full((1, 1, 3), 255.0)
    assert hed_jitter(white, [1, 1, 1], [0.1, 0, 0]).tolist() == [[[239, 238, 248]]]


def test_jitter_with_sigma_and_bias_zero_is_the_identity(crop):
    results = dict(img=crop[..., ::-1].copy())  # BGR, as mmcv loads it
    out = RandomStainJitter(sigma=0, bias=0)(results)
    diff = np.abs(out['img'].astype(int) - crop[..., ::-1])
    # OD clips I at >= 1, so only a 0 could come back as 1: within one grey level
    assert diff.max() <= 1
    assert np.all((diff == 0) | (crop[..., ::-1] == 0))
    np.testing.assert_array_equal(out['stain_jitter'][0], np.ones(3))


def test_jitter_range_holds_on_real_crops(crop):
    """Draws lie in [1 - sigma, 1 + sigma] x [-bias, bias], and every unclipped pixel's
    H, E, DAB concentrations come out as alpha * c + beta up to the uint8 rounding."""
    sigma, bias = 0.2, 0.1
    t = RandomStainJitter(sigma=sigma, bias=bias)
    c = separate_stains(crop, RGB_FROM_HED)
    # rounding moves I by <= 0.5: for I >= 20 the OD moves by <= ln(20.5 / 20) = 0.0247 per
    # channel, a concentration by <= 0.0247 x (largest column sum of |HED_FROM_RGB|)
    tol = np.log(20.5 / 20) * np.abs(HED_FROM_RGB).sum(0).max()
    np.random.seed(0)
    alphas, betas = [], []
    for _ in range(12):
        out = t(dict(img=crop[..., ::-1].copy()))
        alpha, beta = out['stain_jitter']
        alphas.append(alpha)
        betas.append(beta)
        rgb = out['img'][..., ::-1]
        ok = (rgb.min(2) >= 20) & (rgb.max(2) <= 254) & (crop.min(2) >= 1)
        assert ok.mean() > 0.5
        err = np.abs(separate_stains(rgb, RGB_FROM_HED) - (alpha * c + beta))[ok]
        assert err.max() <= tol
    alphas, betas = np.array(alphas), np.array(betas)
    assert np.all(np.abs(alphas - 1) <= sigma) and np.all(np.abs(betas) <= bias)
    assert np.ptp(alphas) > sigma and np.ptp(betas) > bias  # the range is used, not a point


def test_jitter_is_seeded_by_mmengine():
    from mmengine.runner import set_random_seed
    img = read_rgb_uint8(osp.join(HE, CROPS[0]))[:32, :32, ::-1].copy()
    t = RandomStainJitter(sigma=0.1, bias=0.05)
    runs = []
    for seed in (5, 5, 6):
        set_random_seed(seed)
        runs.append(t(dict(img=img.copy()))['img'])
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


@pytest.mark.parametrize('method', ['macenko', 'reinhard'])
def test_normalising_a_crop_to_itself_is_the_identity(crop, method):
    t = StainNormalize(crop, method=method)
    out = t(dict(img=crop[..., ::-1].copy()))['img'][..., ::-1]
    assert np.abs(out.astype(int) - crop).max() <= 1


def test_macenko_normalisation_moves_the_stains_to_the_target():
    src, tgt = (read_rgb_uint8(osp.join(HE, n)) for n in CROPS[::-1])
    t = StainNormalize(osp.join(HE, CROPS[0]), method='macenko')
    out = t.normalize(src)
    # eosin vectors (unit): cosine 0.989 between the TCGA tile's and the target's (8.6
    # degrees); after normalisation 0.9986 (3.1 degrees; not 1: Macenko re-estimated on
    # the output with the residual kept)
    e_src, e_tgt, e_out = (macenko_stain_matrix(x)[1] for x in (src, tgt, out))
    assert np.dot(e_out, e_tgt) > 0.995 > np.dot(e_src, e_tgt)
    # without the residual it is Macenko's projection: a crop is no longer its own image
    flat = StainNormalize(tgt, keep_residual=False).normalize(tgt)
    assert np.abs(flat.astype(int) - tgt).max() > 10


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg'])
def test_transforms_are_registered_in_both_scopes(scope):
    import importlib
    reg = importlib.import_module(f'{scope}.registry').TRANSFORMS
    jit = reg.build(dict(type='RandomStainJitter', sigma=0.1, bias=0.02))
    norm = reg.build(dict(type='StainNormalize', target=osp.join(HE, CROPS[0]),
                          method='reinhard'))
    assert (jit.sigma, jit.bias, norm.method) == (0.1, 0.02, 'reinhard')


def test_bad_arguments():
    with pytest.raises(ValueError, match='sigma must be a number'):
        RandomStainJitter(sigma=-0.1)
    with pytest.raises(ValueError, match="method must be one of"):
        StainNormalize(np.zeros((4, 4, 3), np.uint8), method='vahadane')
    with pytest.raises(ValueError, match='BGR uint8'):
        RandomStainJitter()(dict(img=np.zeros((4, 4), np.uint8), img_path='x.png'))


def test_stain_shifted_synthetic_tile_has_the_same_cells_in_other_stains():
    from projects.common.synthetic import STAIN_SHIFT, generate_tile
    a = generate_tile(3, (64, 64))
    b = generate_tile(3, (64, 64), **STAIN_SHIFT)
    np.testing.assert_array_equal(a['inst_map'], b['inst_map'])
    # the hematoxylin amount is multiplied by 1.3 before the tanh saturation of the
    # generator: the nuclei hold more H, and the image is not the same
    nuc = a['inst_map'] > 0
    assert b['concentrations'][..., 0][nuc].mean() > 1.1 * a['concentrations'][..., 0][nuc].mean()
    assert np.abs(a['image'].astype(int) - b['image']).mean() > 5
