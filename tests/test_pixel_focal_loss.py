"""PixelFocalLoss (the CPU-usable focal peer of the U-Net benchmark): hand values."""
import math

import pytest
import torch

from projects.exclusive_ce.focal_loss import PixelFocalLoss, sigmoid_focal


def test_one_pixel_by_hand():
    # 2 classes, label 1, logits (0, ln 3): column 0 target 0, p = 0.5 -> p_t = 0.5,
    # alpha_t = 0.5, (1 - p_t)^2 = 0.25, CE = ln 2 -> 0.5 * 0.25 * ln 2;
    # column 1 target 1, p = 0.75 = p_t, alpha_t = 0.5, (0.25)^2, CE = -ln 0.75
    logits = torch.tensor([0.0, math.log(3)]).view(1, 2, 1, 1)
    label = torch.tensor([[[1]]])
    col0 = 0.5 * 0.25 * math.log(2)
    col1 = 0.5 * 0.0625 * -math.log(0.75)
    out = sigmoid_focal(logits, label)
    assert out[0, :, 0, 0].tolist() == pytest.approx([col0, col1])
    assert PixelFocalLoss()(logits, label).item() == pytest.approx((col0 + col1) / 2)


def test_ignored_pixels_count_nowhere():
    logits = torch.tensor([0.0, math.log(3)]).view(1, 2, 1, 1).repeat(1, 1, 1, 2)
    label = torch.tensor([[[1, 255]]])
    one = PixelFocalLoss()(logits[..., :1], label[..., :1])
    assert PixelFocalLoss()(logits, label, ignore_index=255).item() == pytest.approx(one.item())
    assert sigmoid_focal(logits, label)[..., 1].abs().sum() == 0


def test_matches_torch_focal_formula_on_random_input():
    torch.manual_seed(0)
    x, y = torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4))
    t = torch.nn.functional.one_hot(y, 3).permute(0, 3, 1, 2).float()
    p = x.sigmoid()
    ref = -(0.5 * t * (1 - p) ** 2 * torch.log(p) + 0.5 * (1 - t) * p ** 2 * torch.log(1 - p))
    assert torch.allclose(sigmoid_focal(x, y), ref, atol=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match='alpha'):
        PixelFocalLoss(alpha=1.5)
    with pytest.raises(ValueError, match='loss_name'):
        PixelFocalLoss(loss_name='focal')
