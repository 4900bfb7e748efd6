"""ResUNet (SC-Net's segmentation net S) and ColorizationHead (its colourisation net C, eq. (8))."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from projects.point_supervision.colorization import ColorizationHead, colorization_loss
from projects.point_supervision.resunet import ResUNet

SMALL = dict(decoder_channels=(32, 16, 16, 8, 8), stem_channels=(4, 8))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _r18(**kw) -> ResUNet:
    return ResUNet(encoder=dict(type='ResNet', depth=18, base_channels=8), **SMALL, **kw)


@pytest.fixture
def smooth(monkeypatch):
    """Make nets smooth for finite differences: every ReLU (modules and F.relu) becomes
    SiLU, every max-pool module an average pool, weights float64. With the kinks, steps of
    1e-6 already disagree with the derivative by 2%; the wiring, which the tests using
    this are about, is unchanged."""
    monkeypatch.setattr(F, 'relu', F.silu)

    def convert(module: nn.Module) -> nn.Module:
        for parent in list(module.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, nn.MaxPool2d):
                    setattr(parent, name, nn.AvgPool2d(child.kernel_size, child.stride,
                                                       child.padding))
        return module.double()

    return convert


def _directional(loss_fn, tensor: torch.Tensor, h: float = 1e-6):
    """(autograd <grad, d>, central difference (L(t + h d) - L(t - h d)) / 2h) for a seeded
    random direction d. For a smooth float64 net they agree to ~1e-7 unless the gradient is
    wrong or cut (a detached path gives 0 from autograd and the true change from the
    difference)."""
    d = torch.randn(tensor.shape, generator=torch.Generator().manual_seed(1),
                    dtype=tensor.dtype)
    grad, = torch.autograd.grad(loss_fn(), tensor)
    with torch.no_grad():
        tensor += h * d
        up = loss_fn().item()
        tensor -= 2 * h * d
        down = loss_fn().item()
        tensor += h * d
    return float((grad * d).sum()), (up - down) / (2 * h)


# ----------------------------------------------------------------------------- ResUNet


def test_resunet_depth18_channels_and_full_resolution_output():
    net = _r18()
    # BasicBlock (expansion 1): stage i has base_channels * 2**i = 8, 16, 32, 64 channels
    assert net.encoder_channels == (8, 16, 32, 64)
    # the encoder reads our 1-channel input (in_channels propagated into its config)
    assert net.encoder.conv1.in_channels == 1
    # decoder block k reads concat(previous, skip): 64+32, 32+16, 16+8, 16+stem 8, 8+stem 4
    assert [b.conv1.conv.in_channels for b in net.decoder] == [96, 48, 24, 24, 12]
    assert [b.conv2.conv.out_channels for b in net.decoder] == [32, 16, 16, 8, 8]
    outs = net(torch.rand(2, 1, 64, 96))
    assert isinstance(outs, tuple) and len(outs) == 1
    assert outs[0].shape == (2, 8, 64, 96) and net.out_channels == 8


def test_resunet_depth50_channels():
    net = ResUNet(encoder=dict(type='ResNet', depth=50, base_channels=16), in_channels=3,
                  **SMALL)
    # Bottleneck (expansion 4): 4 * 16 * 2**i = 64, 128, 256, 512
    assert net.encoder_channels == (64, 128, 256, 512)
    assert net.decoder[0].conv1.conv.in_channels == 512 + 256
    assert net(torch.rand(1, 3, 64, 64))[0].shape == (1, 8, 64, 64)


def test_resunet_probe_keeps_encoder_bn_statistics():
    # the channel probe runs in eval mode: running stats stay at their initial 0 / 1
    net = _r18()
    bn = net.encoder.norm1
    assert torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))
    assert torch.equal(bn.running_var, torch.ones_like(bn.running_var))
    assert net.training and net.encoder.training


@pytest.mark.parametrize('shape', [(1, 1, 64, 48), (1, 1, 40, 64)])
def test_resunet_rejects_indivisible_input(shape):
    net = _r18()
    with pytest.raises(ValueError, match=r'divisible by 32.*' + str(shape[2])):
        net(torch.rand(*shape))


def test_resunet_rejects_bad_arguments():
    with pytest.raises(ValueError, match='in_channels'):
        ResUNet(encoder=dict(type='ResNet', depth=18, in_channels=3), in_channels=1)
    with pytest.raises(ValueError, match='strides'):  # dilated ResNet: strides 4, 8, 8, 8
        ResUNet(encoder=dict(type='ResNetV1c', depth=18, base_channels=8,
                             strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4)))
    with pytest.raises(ValueError, match='4 are needed'):
        ResUNet(encoder=dict(type='ResNet', depth=18, base_channels=8, out_indices=(1, 2, 3)))
    with pytest.raises(ValueError, match='decoder_channels'):
        ResUNet(encoder=dict(type='ResNet', depth=18), decoder_channels=(8, 8, 8, 8))
    with pytest.raises(ValueError, match=r'\(B, 1, H, W\)'):
        _r18()(torch.rand(1, 3, 64, 64))


def test_resunet_gradient_reaches_every_encoder_stage_and_the_stem(smooth):
    # autograd's derivative along a random direction equals the finite difference for a
    # weight of every encoder stage and of both stem convolutions (float64)
    net = smooth(_r18())
    x = torch.rand(2, 1, 64, 64, dtype=torch.float64)
    enc = net.encoder
    for name, param in [('encoder.conv1', enc.conv1.weight),
                        ('layer1', enc.layer1[0].conv1.weight),
                        ('layer2', enc.layer2[0].conv1.weight),
                        ('layer3', enc.layer3[0].conv1.weight),
                        ('layer4', enc.layer4[0].conv1.weight),
                        ('stem_full', net.stem_full.conv.weight),
                        ('stem_half', net.stem_half.conv.weight)]:
        auto, numeric = _directional(lambda: net(x)[0].square().mean(), param)
        assert auto == pytest.approx(numeric, rel=1e-5, abs=1e-12), name
        assert numeric != 0.0, name


def test_resunet_decoder_reads_every_encoder_skip(smooth):
    # ResNet stages are sequential, so a gradient on layer1 alone does not prove that the
    # stride-4 skip is read: feed the decoder fixed tensors as the 4 encoder maps and
    # differentiate with respect to each of them
    net = smooth(_r18())
    x = torch.rand(1, 1, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        leaves = [f.clone().requires_grad_() for f in net.encoder(x)]
    net.encoder.forward = lambda inp: tuple(leaves)
    for stride, leaf in zip((4, 8, 16, 32), leaves):
        auto, numeric = _directional(lambda: net(x)[0].square().mean(), leaf)
        assert auto == pytest.approx(numeric, rel=1e-5, abs=1e-12), stride
        assert numeric != 0.0, stride


def test_resunet_output_depends_on_the_deep_path():
    # the stride-32 encoder map sees the whole 64x64 input: a change in the top-left
    # 8x8 corner must change the output at the opposite corner (the stem's 3x3 convs
    # and the stride-4 skip alone could not reach 56 pixels away)
    net = _r18().eval()
    x = torch.rand(1, 1, 64, 64)
    y = x.clone()
    y[..., :8, :8] += 1.0
    with torch.no_grad():
        a, b = net(x)[0], net(y)[0]
    assert (a[..., -1, -1] - b[..., -1, -1]).abs().max() > 1e-6


def test_resunet_and_colorization_built_through_both_registries():
    from mmdet.registry import MODELS as DET
    from mmseg.registry import MODELS as SEG
    seg_net = SEG.build(dict(type='ResUNet', encoder=dict(type='ResNet', depth=18,
                                                          base_channels=8), **SMALL))
    det_net = DET.build(dict(type='ResUNet', encoder=dict(type='mmdet.ResNet', depth=34,
                                                          base_channels=8), **SMALL))
    assert isinstance(seg_net, ResUNet) and isinstance(det_net, ResUNet)
    assert type(det_net.encoder).__module__.startswith('mmdet.')
    # depth 34 is BasicBlock too: 8, 16, 32, 64
    assert det_net.encoder_channels == (8, 16, 32, 64)
    for reg in (SEG, DET):
        head = reg.build(dict(type='ColorizationHead', base_channels=4, loss='l1'))
        assert isinstance(head, ColorizationHead) and head.loss_type == 'l1'


# -------------------------------------------------------------------- colourisation loss


def _tiny_pair():
    # one image, 3 channels, 1x2 pixels
    # pixel 0: pred (0.5, 0.5, 0.5), target (0, 1, 0.5) -> diffs 0.5, -0.5, 0
    # pixel 1: pred (1, 0, 0.2),     target (1, 0, 0.6) -> diffs 0, 0, -0.4
    pred = torch.tensor([[0.5, 1.0], [0.5, 0.0], [0.5, 0.2]]).reshape(1, 3, 1, 2)
    target = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.5, 0.6]]).reshape(1, 3, 1, 2)
    return pred, target


def test_l2_loss_by_hand():
    pred, target = _tiny_pair()
    # squared norms: 0.25 + 0.25 + 0 = 0.5 and 0.16; mean over 2 pixels = 0.33
    assert colorization_loss(pred, target).item() == pytest.approx(0.33)
    # mask keeps pixel 1 only -> 0.16
    mask = torch.tensor([[[False, True]]])
    assert colorization_loss(pred, target, mask).item() == pytest.approx(0.16)


def test_l1_loss_by_hand():
    pred, target = _tiny_pair()
    # |diffs| 0.5 + 0.5 + 0 + 0 + 0 + 0.4 = 1.4 over 6 values
    assert colorization_loss(pred, target, mode='l1').item() == pytest.approx(1.4 / 6)
    # pixel 1 only: 0.4 over 3 channels
    mask = torch.tensor([[[False, True]]])
    assert colorization_loss(pred, target, mask, mode='l1').item() == pytest.approx(0.4 / 3)


def test_losses_equal_independent_formulas():
    pred = torch.rand(2, 3, 5, 4)
    target = torch.rand(2, 3, 5, 4)
    mask = torch.rand(2, 5, 4) > 0.4
    # unmasked: eq. (8) = channels * MSE; authors' L1Loss
    assert colorization_loss(pred, target).item() == pytest.approx(
        3 * F.mse_loss(pred, target).item(), rel=1e-6)
    assert colorization_loss(pred, target, mode='l1').item() == pytest.approx(
        nn.L1Loss()(pred, target).item(), rel=1e-6)
    # masked: brute-force loop over the kept pixels
    sq, ab, n = 0.0, 0.0, 0
    for b in range(2):
        for i in range(5):
            for j in range(4):
                if mask[b, i, j]:
                    d = pred[b, :, i, j] - target[b, :, i, j]
                    sq += float((d * d).sum())
                    ab += float(d.abs().sum())
                    n += 1
    assert colorization_loss(pred, target, mask).item() == pytest.approx(sq / n, rel=1e-6)
    assert colorization_loss(pred, target, mask, mode='l1').item() == pytest.approx(
        ab / (3 * n), rel=1e-6)


def test_loss_empty_mask_is_zero_with_graph():
    pred = torch.rand(1, 3, 2, 2, requires_grad=True)
    loss = colorization_loss(pred, torch.rand(1, 3, 2, 2), torch.zeros(1, 2, 2, dtype=bool))
    assert loss.item() == 0.0 and loss.requires_grad


def test_loss_rejects_bad_input():
    pred, target = _tiny_pair()
    with pytest.raises(ValueError, match='mode'):
        colorization_loss(pred, target, mode='l3')
    with pytest.raises(ValueError, match='same'):
        colorization_loss(pred, target[:, :2])
    with pytest.raises(ValueError, match='mask'):
        colorization_loss(pred, target, torch.ones(1, 1, 3, dtype=bool))
    with pytest.raises(ValueError, match='mask'):
        colorization_loss(pred, target, torch.ones(1, 1, 2))  # float, not bool
    with pytest.raises(ValueError, match=r'\[0, 1\]'):
        colorization_loss(pred, target * 255)
    with pytest.raises(ValueError, match='loss'):
        ColorizationHead(loss='mse')


# -------------------------------------------------------------------- ColorizationHead


def test_colorization_output_in_unit_interval_and_shape():
    head = ColorizationHead(base_channels=4, num_stages=3)
    logits = []
    head.to_rgb.register_forward_hook(lambda m, i, o: logits.append(o))
    out = head(torch.randn(2, 1, 16, 24) * 50)  # extreme inputs: a sigmoid still bounds them
    assert out.shape == (2, 3, 16, 24)
    # the output is the sigmoid of the last 1x1 conv, nothing after it
    assert torch.equal(out, torch.sigmoid(logits[0]))
    # the last layer is a 1x1 conv then a sigmoid: zero weights and bias ln 3 for red
    # give sigmoid(ln 3) = 3 / (3 + 1) = 0.75 everywhere, bias 0 gives 0.5
    with torch.no_grad():
        head.to_rgb.weight.zero_()
        head.to_rgb.bias.copy_(torch.tensor([3.0, 1.0, 1.0]).log())
    out = head(torch.rand(1, 1, 8, 8))
    assert torch.allclose(out[:, 0], torch.full((1, 8, 8), 0.75))
    assert torch.allclose(out[:, 1:], torch.full((1, 2, 8, 8), 0.5))
    with pytest.raises(ValueError, match='divisible by 4'):
        head(torch.rand(1, 1, 18, 16))
    with pytest.raises(ValueError, match=r'\(B, 1, H, W\)'):
        head(torch.rand(1, 3, 16, 16))


@pytest.mark.parametrize('loss', ['l2', 'l1'])
def test_colorization_head_learns_a_fixed_target(loss):
    # nuclei (prob 1) purple (0.4, 0.1, 0.6), elsewhere pink (0.9, 0.6, 0.8)
    prob = torch.zeros(1, 1, 16, 16)
    prob[..., 4:9, 3:10] = 1.0
    purple = torch.tensor([0.4, 0.1, 0.6]).view(1, 3, 1, 1)
    pink = torch.tensor([0.9, 0.6, 0.8]).view(1, 3, 1, 1)
    target = prob * purple + (1 - prob) * pink
    head = ColorizationHead(base_channels=4, num_stages=3, loss=loss)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        opt.zero_grad()
        value = head.loss(head(prob), target)
        value.backward()
        opt.step()
        losses.append(value.item())
    assert losses[-1] < 0.3 * losses[0]


def test_colour_loss_trains_the_segmentation_net_end_to_end(smooth):
    # SC-Net: C(S(x_h)); the colour loss must reach S's encoder through the probability map
    net = smooth(_r18())
    to_prob = nn.Conv2d(net.out_channels, 1, 1).double()
    head = smooth(ColorizationHead(base_channels=4, num_stages=1))  # no (max-)pooling
    x = torch.rand(1, 1, 64, 64, dtype=torch.float64)
    target = torch.rand(1, 3, 64, 64, dtype=torch.float64)

    def loss():
        return head.loss(head(torch.sigmoid(to_prob(net(x)[0]))), target)

    auto, numeric = _directional(loss, net.encoder.conv1.weight)
    assert auto == pytest.approx(numeric, rel=1e-5, abs=1e-12)
    assert numeric != 0.0


def test_resunet_builds_mmseg_encoders_under_an_mmdet_scope():
    # mmengine builds from the current scope's registry; ResNetV1c exists in mmseg only
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmdet'):
        net = ResUNet(encoder=dict(type='ResNetV1c', depth=18, base_channels=8),
                      decoder_channels=(64, 32, 16, 8, 8))
        assert DefaultScope.get_current_instance().scope_name == 'mmdet'
    assert type(net.encoder).__name__ == 'ResNetV1c'
