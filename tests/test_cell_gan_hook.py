"""The sample grid of CellGANSampleHook: layout and latent codes."""
import numpy as np
import pytest
import torch

from projects.cell_gan import CellGANSampleHook, CellInfoWGAN, sample_grid


def test_sample_grid_layout_by_hand():
    # four 1x2 images with values 1..4, 2 rows x 2 columns, border 1 filled with 0:
    # row 0: border, img1, border, img2, border (width 1+2+1+2+1 = 7)
    imgs = np.stack([np.full((1, 2, 3), v, np.uint8) for v in (1, 2, 3, 4)])
    grid = sample_grid(imgs, rows=2, cols=2, border=1, fill=0)
    expected = np.array([[0, 0, 0, 0, 0, 0, 0],
                         [0, 1, 1, 0, 2, 2, 0],
                         [0, 0, 0, 0, 0, 0, 0],
                         [0, 3, 3, 0, 4, 4, 0],
                         [0, 0, 0, 0, 0, 0, 0]], np.uint8)
    np.testing.assert_array_equal(grid[..., 0], expected)
    with pytest.raises(ValueError, match='do not fill 3 x 2'):
        sample_grid(imgs, rows=3, cols=2)


def test_latent_grid_rows_are_z_and_columns_are_c():
    model = CellInfoWGAN(z_dim=4, num_categories=3, channels=4)
    z, c = CellGANSampleHook(num_rows=2, seed=7).latent_grid(model)
    # row r = entries 3r .. 3r+2: one z repeated, c = 0, 1, 2
    assert c.tolist() == [0, 1, 2, 0, 1, 2]
    assert torch.equal(z[0], z[1]) and torch.equal(z[1], z[2]) and not torch.equal(z[0], z[3])
    # fixed by the seed, so grids of different iterations compare
    z2, _ = CellGANSampleHook(num_rows=2, seed=7).latent_grid(model)
    assert torch.equal(z, z2)
    expected = torch.randn(2, 4, generator=torch.Generator().manual_seed(7))
    assert torch.equal(z[::3], expected)
    with pytest.raises(ValueError, match='interval'):
        CellGANSampleHook(interval=0)
