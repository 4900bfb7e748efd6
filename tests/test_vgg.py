"""VGG16 backbone: strides, layer inventory, torchvision key layout, freezing, Faster R-CNN."""
import os.path as osp

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from projects.pu_detection.vgg import VGG16

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))

# torchvision.models.vgg16().features, written out by hand (index: (out_ch, in_ch)):
# convs at 0, 2 | pool 4 | 5, 7 | pool 9 | 10, 12, 14 | pool 16 | 17, 19, 21 | pool 23 |
# 24, 26, 28 | pool 30 (ReLUs at the odd indices in between).
TV_VGG16_CONVS = {0: (64, 3), 2: (64, 64), 5: (128, 64), 7: (128, 128), 10: (256, 128),
                  12: (256, 256), 14: (256, 256), 17: (512, 256), 19: (512, 512),
                  21: (512, 512), 24: (512, 512), 26: (512, 512), 28: (512, 512)}
# torchvision.models.vgg16_bn().features: conv, bn, relu per layer, pool after each block:
# convs at 0, 3 | pool 6 | 7, 10 | pool 13 | 14, 17, 20 | pool 23 | 24, 27, 30 | pool 33 |
# 34, 37, 40 | pool 43; the BN of the conv at k sits at k + 1.
TV_VGG16_BN_CONVS = [0, 3, 7, 10, 14, 17, 20, 24, 27, 30, 34, 37, 40]


def torchvision_vgg16_state_dict() -> dict:
    """Keys and shapes of torchvision's vgg16 'features', each tensor a distinct constant."""
    sd = {}
    for k, (out_ch, in_ch) in TV_VGG16_CONVS.items():
        sd[f'features.{k}.weight'] = torch.full((out_ch, in_ch, 3, 3), k / 100.0)
        sd[f'features.{k}.bias'] = torch.full((out_ch, ), -k / 100.0)
    return sd


def reference_vgg16(x: torch.Tensor, sd: dict, last_pool: bool = True) -> list:
    """Independent VGG16 with torch.nn.functional from a torchvision-layout state dict:
    returns the output of every block after its 2x2 max pool."""
    blocks = [[0, 2], [5, 7], [10, 12, 14], [17, 19, 21], [24, 26, 28]]
    outs = []
    for b, convs in enumerate(blocks):
        for k in convs:
            x = F.relu(F.conv2d(x, sd[f'features.{k}.weight'], sd[f'features.{k}.bias'],
                                padding=1))
        if b < 4 or last_pool:
            x = F.max_pool2d(x, 2)
        outs.append(x)
    return outs


def test_strides_and_channels_on_64x64():
    torch.manual_seed(0)
    model = VGG16(out_indices=(0, 1, 2, 3, 4)).eval()
    outs = model(torch.rand(1, 3, 64, 64))
    # stage i has stride 2**(i+1): 64/2=32, 64/4=16, 64/8=8, 64/16=4, 64/32=2
    assert [tuple(o.shape) for o in outs] == [(1, 64, 32, 32), (1, 128, 16, 16),
                                              (1, 256, 8, 8), (1, 512, 4, 4), (1, 512, 2, 2)]
    model = VGG16(out_indices=(1, 2, 3, 4))
    assert model.out_channels == (128, 256, 512, 512)
    outs = model.eval()(torch.rand(2, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(2, 128, 16, 16), (2, 256, 8, 8),
                                              (2, 512, 4, 4), (2, 512, 2, 2)]
    # without pool5, stage 4 is conv5_3 at stride 16: 64/16 = 4
    outs = VGG16(out_indices=(4, ), with_last_pool=False).eval()(torch.rand(1, 3, 64, 64))
    assert tuple(outs[0].shape) == (1, 512, 4, 4)


@pytest.mark.parametrize('last_pool', [True, False])
def test_forward_equals_functional_reference(last_pool):
    torch.manual_seed(1)
    sd = {k: torch.randn_like(v) * 0.1 for k, v in torchvision_vgg16_state_dict().items()}
    model = VGG16(out_indices=(1, 2, 3, 4), with_last_pool=last_pool)
    model.load_state_dict(sd, strict=True)
    x = torch.rand(1, 3, 32, 32)
    ref = reference_vgg16(x, sd, last_pool)
    outs = model.eval()(x)
    for got, want in zip(outs, ref[1:]):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_layer_inventory():
    model = VGG16()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 13
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert len(list(model.parameters())) == 2 * 13  # weight + bias per conv
    # sum over convs of 9*cin*cout + cout: 1792 + 36928 + 73856 + 147584 + 295168
    # + 2*590080 + 1180160 + 5*2359808 = 14,714,688 (torchvision's vgg16.features)
    assert sum(p.numel() for p in model.parameters()) == 14_714_688
    bn_model = VGG16(with_bn=True)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in bn_model.modules()) == 13
    # 13 convs * (weight, bias) + 13 BN * (weight, bias) = 52 tensors; BN adds
    # 2 * (64*2 + 128*2 + 256*3 + 512*6) = 2 * 4224 = 8448 parameters
    assert len(list(bn_model.parameters())) == 52
    assert sum(p.numel() for p in bn_model.parameters()) == 14_714_688 + 8448


def test_torchvision_vgg16_checkpoint_loads_without_renaming():
    sd = torchvision_vgg16_state_dict()
    model = VGG16()
    model.load_state_dict(sd, strict=True)  # raises on any missing / unexpected key
    # conv1_1 is features.0 (value 0/100), conv5_3 is features.28 (value 28/100)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs[0].weight.flatten()[0].item() == 0.0
    assert convs[-1].weight.flatten()[0].item() == pytest.approx(0.28)
    assert convs[-1].bias.flatten()[0].item() == pytest.approx(-0.28)


def test_pretrained_init_cfg_loads_a_torchvision_file(tmp_path):
    # mmengine's Pretrained init on a file laid out like torchvision's vgg16-397923af.pth
    # (features.* plus classifier.*, which the backbone does not have and ignores)
    sd = torchvision_vgg16_state_dict()
    sd['classifier.0.weight'] = torch.zeros(4, 25088)
    path = str(tmp_path / 'vgg16_torchvision_layout.pth')
    torch.save(sd, path)
    model = VGG16(init_cfg=dict(type='Pretrained', checkpoint=path))
    model.init_weights()
    for k in TV_VGG16_CONVS:
        torch.testing.assert_close(model.features[k].weight, sd[f'features.{k}.weight'])
        torch.testing.assert_close(model.features[k].bias, sd[f'features.{k}.bias'])


def test_torchvision_vgg16_bn_checkpoint_loads_without_renaming():
    chans = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    sd, in_ch = {}, 3
    for k, out_ch in zip(TV_VGG16_BN_CONVS, chans):
        sd[f'features.{k}.weight'] = torch.zeros(out_ch, in_ch, 3, 3)
        sd[f'features.{k}.bias'] = torch.zeros(out_ch)
        for name in ('weight', 'bias', 'running_mean', 'running_var'):
            sd[f'features.{k + 1}.{name}'] = torch.full((out_ch, ), float(k))
        sd[f'features.{k + 1}.num_batches_tracked'] = torch.tensor(k)
        in_ch = out_ch
    model = VGG16(with_bn=True)
    model.load_state_dict(sd, strict=True)
    assert model.features[41].running_mean[0].item() == 40.0  # BN of conv5_3 (conv at 40)


def test_frozen_stages_freeze_exactly_those_params():
    # frozen_stages=1: blocks 0 and 1 = convs features.0, .2, .5, .7 -> 8 tensors frozen,
    # the other 9 convs -> 18 tensors trainable
    model = VGG16(frozen_stages=1, with_bn=True, norm_eval=False)
    model.train()
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    # with BN the block-0/1 convs are at 0, 3, 7, 10 and their BNs at 1, 4, 8, 11
    expect = {f'features.{k}.{w}' for k in (0, 1, 3, 4, 7, 8, 10, 11)
              for w in ('weight', 'bias')}
    assert frozen == expect
    stage_end = 14  # first layer of block 2 (conv3_1) in the BN layout
    for i, m in enumerate(model.features):
        assert m.training == (i >= stage_end), f'features.{i} training={m.training}'
    # frozen BN keeps its running statistics in training
    before = model.features[1].running_mean.clone()
    model(torch.rand(2, 3, 32, 32))
    torch.testing.assert_close(model.features[1].running_mean, before)
    # the BN of conv3_1 (features.15, 256 channels) is not frozen: its statistics move
    assert not torch.equal(model.features[15].running_mean, torch.zeros(256))

    plain = VGG16(frozen_stages=1).train()
    frozen = {n for n, p in plain.named_parameters() if not p.requires_grad}
    assert frozen == {f'features.{k}.{w}' for k in (0, 2, 5, 7) for w in ('weight', 'bias')}
    assert len([p for p in plain.parameters() if p.requires_grad]) == 18


def test_norm_eval_keeps_every_bn_in_eval_mode():
    model = VGG16(with_bn=True, norm_eval=True).train()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 13 and not any(m.training for m in bns)
    assert model.features[0].training  # convs stay in training mode


@pytest.mark.parametrize('kwargs, field', [(dict(out_indices=(5, )), 'out_indices'),
                                           (dict(out_indices=()), 'out_indices'),
                                           (dict(out_indices=(3, 1)), 'out_indices'),
                                           (dict(frozen_stages=5), 'frozen_stages')])
def test_bad_arguments_raise(kwargs, field):
    with pytest.raises(ValueError, match=field):
        VGG16(**kwargs)


def test_faster_rcnn_vgg16_config_trains_one_step():
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmengine.structures import InstanceData

    import projects.pu_detection  # noqa: F401  (registers VGG16 via custom_imports too)
    cfg = Config.fromfile(
        osp.join(REPO, 'configs/baselines/faster-rcnn_vgg16_fpn_2k_synthetic.py'))
    assert cfg.model.backbone == dict(type='VGG16', out_indices=(1, 2, 3, 4), init_cfg=None)
    with DefaultScope.overwrite_default_scope('mmdet'):
        torch.manual_seed(0)
        model = MODELS.build(cfg.model)
        model.init_weights()
        model.train()
        sample = DetDataSample(metainfo=dict(img_shape=(64, 64), ori_shape=(64, 64),
                                             scale_factor=(1.0, 1.0)))
        sample.gt_instances = InstanceData(bboxes=torch.tensor([[10., 10., 26., 24.]]),
                                           labels=torch.tensor([1]))
        batch = dict(inputs=[torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)],
                     data_samples=[sample])
        data = model.data_preprocessor(batch, True)
        feats = model.extract_feat(data['inputs'])
        # FPN levels at strides 4, 8, 16, 32, 64 on 64x64: 16, 8, 4, 2, 1 px a side,
        # i.e. exactly the RPN anchor strides and (first four) the RoI featmap strides
        assert [f.shape[-1] for f in feats] == [16, 8, 4, 2, 1]
        assert model.rpn_head.prior_generator.strides == [(4, 4), (8, 8), (16, 16), (32, 32),
                                                          (64, 64)]
        assert model.roi_head.bbox_roi_extractor.featmap_strides == [4, 8, 16, 32]
        losses = model(**data, mode='loss')
    total = 0.0
    for name, value in losses.items():
        if 'loss' in name:
            for v in (value if isinstance(value, (list, tuple)) else [value]):
                assert torch.isfinite(v).all(), name
                total = total + v.sum()
    assert float(total.detach()) > 0  # random init: classification losses are positive
    total.backward()
    grad = model.backbone.features[0].weight.grad  # conv1_1 receives a gradient
    assert grad is not None and grad.abs().sum() > 0
