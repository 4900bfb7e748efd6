"""Augmentation options of the cell GAN: the symmetries of the square (dihedral), the
RandomDihedral transform's subgroups, and the config variants that select them."""
import glob
import os.path as osp

import numpy as np
import pytest
from mmengine.config import Config

from projects.cell_gan import RandomDihedral, dihedral, symmetry_group
from projects.cell_gan.dataset import DIHEDRAL_NAMES
from conftest import REPO

# a 2 x 3 array with distinct entries:  0 1 2
#                                       3 4 5
A = np.arange(6).reshape(2, 3)


def test_dihedral_by_hand():
    assert dihedral(A, 0).tolist() == [[0, 1, 2], [3, 4, 5]]
    assert dihedral(A, 1).tolist() == [[2, 5], [1, 4], [0, 3]]      # 90 deg counter-clockwise
    assert dihedral(A, 2).tolist() == [[5, 4, 3], [2, 1, 0]]        # 180 deg
    assert dihedral(A, 3).tolist() == [[3, 0], [4, 1], [5, 2]]      # 270 deg
    assert dihedral(A, 4).tolist() == [[2, 1, 0], [5, 4, 3]]        # flip left-right
    assert dihedral(A, 5).tolist() == [[0, 3], [1, 4], [2, 5]]      # transpose
    assert dihedral(A, 6).tolist() == [[3, 4, 5], [0, 1, 2]]        # flip up-down
    assert dihedral(A, 7).tolist() == [[5, 2], [4, 1], [3, 0]]      # anti-transpose
    assert len(DIHEDRAL_NAMES) == 8 and DIHEDRAL_NAMES[6] == 'flip-ud'
    # an (H, W, 3) image turns as a whole; channels stay in place
    img = np.stack([A, A + 10, A + 20], axis=-1)
    assert dihedral(img, 1)[..., 2].tolist() == (dihedral(A, 1) + 20).tolist()
    with pytest.raises(ValueError, match='k must be an int in 0..7'):
        dihedral(A, 8)


def test_subgroups_are_closed_under_composition():
    # composing two symmetries of a subgroup gives a symmetry of the same subgroup
    images = {k: dihedral(A, k).tolist() for k in range(8)}
    for rot, flip, size in ((True, True, 8), (True, False, 4), (False, True, 4),
                            (False, False, 1)):
        group = symmetry_group(rot, flip)
        assert len(set(group)) == size and group[0] == 0
        for a in group:
            for b in group:
                out = dihedral(dihedral(A, a), b).tolist()
                assert out in [images[k] for k in group], (rot, flip, a, b)
    assert symmetry_group(False, True) == (0, 4, 6, 2)  # identity, lr, ud, both (= 180 deg)


@pytest.mark.parametrize('rotations,flips', [(True, True), (True, False), (False, True),
                                             (False, False)])
def test_random_dihedral_draws_its_subgroup_uniformly(rotations, flips):
    t = RandomDihedral(rotations=rotations, flips=flips)
    group = symmetry_group(rotations, flips)
    np.random.seed(0)
    img = np.stack([A, A, A], axis=-1).astype(np.uint8)
    counts = dict.fromkeys(group, 0)
    n = 200 * len(group)
    for _ in range(n):
        out = t.transform(dict(img=img.copy(), img_shape=(2, 3)))
        k = out['dihedral']
        counts[k] += 1
        assert np.array_equal(out['img'], dihedral(img, k))
        assert out['img_shape'] == out['img'].shape[:2]
    # every member drawn, each about 1/|group| of the time: binomial sd = sqrt(200 * (1 - p))
    # < 14.2, so 200 +- 60 is more than 4 sd
    assert set(counts) == set(group)
    assert all(140 <= c <= 260 for c in counts.values()), counts
    with pytest.raises(ValueError, match='rotations must be True or False'):
        RandomDihedral(rotations=1)


GAN_CFGS = sorted(glob.glob(osp.join(REPO, 'configs', 'cell_gan', '*_synthetic-cells.py')))
DEFAULT = osp.join(REPO, 'configs', 'cell_gan',
                   'cell-infowgan_res-c16_z32-c5_100e_synthetic-cells.py')


def _augment(cfg: Config) -> tuple:
    steps = [t for t in cfg.train_dataloader.dataset.pipeline if t['type'] == 'RandomDihedral']
    assert len(steps) == 1, 'one RandomDihedral in the training pipeline'
    return steps[0].get('rotations', True), steps[0].get('flips', True)


def _without(cfg: Config) -> dict:
    """The resolved config without the parts a variant may change."""
    d = cfg.to_dict()
    d['model'] = {k: v for k, v in d['model'].items()
                  if k not in ('num_categories', 'q_loss_in_generator_step')}
    d['train_dataloader']['dataset'].pop('pipeline')
    return d


def test_variant_configs_change_only_what_their_name_says():
    base = Config.fromfile(DEFAULT)
    assert _augment(base) == (True, True) and base.model.num_categories == 5
    assert base.model.q_loss_in_generator_step is True
    assert base.optim_wrapper.auxiliary.modules == ['auxiliary', 'generator']
    seen = set()
    for path in GAN_CFGS:
        name = osp.basename(path)
        if '_100e_' not in name:
            continue
        cfg = Config.fromfile(path)
        k = int(name.split('_z32-c')[1].split('_')[0])
        aug = ((False, False) if '_noaug_' in name else (True, False) if '_rot_' in name
               else (False, True) if '_flip_' in name else (True, True))
        old = '_lq-in-qstep_' in name
        assert cfg.model.num_categories == k, name
        assert _augment(cfg) == aug, name
        assert cfg.model.q_loss_in_generator_step is not old, name
        assert cfg.optim_wrapper.auxiliary.modules == ['auxiliary', 'generator'], name
        assert _without(cfg) == _without(base), name
        seen.add((k, aug, old))
    # the settings to compare: K = 2, 4, 5; no / rotation / flip / all augmentation; the
    # set-up before the lambda2 fix
    assert {(2, (True, True), False), (4, (True, True), False), (5, (False, False), False),
            (5, (True, False), False), (5, (False, True), False), (5, (True, True), True),
            (4, (False, False), False)} <= seen
