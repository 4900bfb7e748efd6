"""Tests for projects.common.tiling: tile layout, NMS merge, sliding-window inference."""
import numpy as np
import pytest
import torch
from mmdet.models.detectors import BaseDetector
from mmdet.registry import MODELS
from mmengine.config import ConfigDict
from mmengine.registry import DefaultScope
from mmengine.structures import InstanceData
from scipy import ndimage
from torch import nn

from projects.common.tiling import (SlidingWindowInference, crop_patches, merge_detections,
                                    tile_grid)

# ----------------------------------------------------------------------------- helpers


@MODELS.register_module(name='TilingTestDarkBlobDetector', force=True)
class DarkBlobDetector(BaseDetector):
    """Test-only deterministic detector: one box per dark connected blob of its input.

    A pixel is dark when its channel mean is < 100 (the test images are white with dark
    squares). Box = the blob's bounding box, score = area / (area + 10) (so a whole square
    beats a part of it cut by a tile border), label 0 when channel 0 of the model input
    (R after the preprocessor's bgr_to_rgb) is brighter than channel 2 (B), else 1: a
    wrong channel order swaps the labels. Records the batch size of every call.
    """

    def __init__(self, data_preprocessor=None, init_cfg=None) -> None:
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.dummy = nn.Parameter(torch.zeros(1))  # gives the model a device
        self.calls = []

    def predict(self, batch_inputs, batch_data_samples, rescale=True):
        self.calls.append(len(batch_data_samples))
        for img, sample in zip(batch_inputs, batch_data_samples):
            h, w = sample.img_shape
            x = img[:, :h, :w].cpu().numpy()
            lab, _ = ndimage.label(x.mean(0) < 100)
            boxes, scores, labels = [], [], []
            for i, (sl_y, sl_x) in enumerate(ndimage.find_objects(lab), start=1):
                blob = lab == i
                area = float(blob.sum())
                boxes.append([sl_x.start, sl_y.start, sl_x.stop, sl_y.stop])
                scores.append(area / (area + 10.0))
                labels.append(0 if x[0][blob].mean() > x[2][blob].mean() else 1)
            inst = InstanceData()
            scale = torch.tensor(sample.scale_factor, dtype=torch.float32).repeat(2)
            inst.bboxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4) / scale
            inst.scores = torch.tensor(scores, dtype=torch.float32)
            inst.labels = torch.tensor(labels, dtype=torch.int64)
            sample.pred_instances = inst
        return batch_data_samples

    def loss(self, batch_inputs, batch_data_samples):
        raise NotImplementedError

    def _forward(self, batch_inputs, batch_data_samples=None):
        raise NotImplementedError

    def extract_feat(self, batch_inputs):
        raise NotImplementedError


def _build(cfg: dict) -> nn.Module:
    with DefaultScope.overwrite_default_scope('mmdet'):
        return MODELS.build(ConfigDict(cfg))  # as from a config file: attribute access


def _blob_detector() -> DarkBlobDetector:
    return _build(dict(type='TilingTestDarkBlobDetector',
                       data_preprocessor=dict(type='DetDataPreprocessor', mean=[0, 0, 0],
                                              std=[1, 1, 1], bgr_to_rgb=True,
                                              pad_size_divisor=1)))


def _tiny_retinanet() -> nn.Module:
    """Randomly initialised RetinaNet, ResNet-18 with 8 base channels (seed 0)."""
    torch.manual_seed(0)
    model = _build(dict(
        type='RetinaNet',
        data_preprocessor=dict(type='DetDataPreprocessor', mean=[123.675, 116.28, 103.53],
                               std=[58.395, 57.12, 57.375], bgr_to_rgb=True,
                               pad_size_divisor=32),
        backbone=dict(type='ResNet', depth=18, base_channels=8, num_stages=4,
                      out_indices=(0, 1, 2, 3), frozen_stages=-1, norm_eval=True,
                      style='pytorch', init_cfg=None),
        neck=dict(type='FPN', in_channels=[8, 16, 32, 64], out_channels=16, start_level=1,
                  add_extra_convs='on_input', num_outs=5),
        bbox_head=dict(
            type='RetinaHead', num_classes=2, in_channels=16, stacked_convs=1,
            feat_channels=16,
            anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4,
                                  scales_per_octave=3, ratios=[0.5, 1.0, 2.0],
                                  strides=[8, 16, 32, 64, 128]),
            bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0] * 4,
                            target_stds=[1.0] * 4),
            loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25),
            loss_bbox=dict(type='L1Loss')),
        test_cfg=dict(nms_pre=1000, min_bbox_size=0, score_thr=0.0,
                      nms=dict(type='nms', iou_threshold=0.5), max_per_img=1000)))
    return model.eval()


def _sorted_boxes(result: InstanceData) -> list:
    """[(x0, y0, x1, y1, label), ...] sorted by position, for order-free comparison."""
    rows = torch.cat([result.bboxes, result.labels[:, None].float()], 1).tolist()
    return sorted(tuple(round(v, 4) for v in r) for r in rows)


def _squares_image(height: int, width: int, squares: list) -> np.ndarray:
    """White RGB image with filled squares [(x0, y0, x1, y1, label)]: 0 red, 1 blue."""
    img = np.full((height, width, 3), 255, np.uint8)
    colour = {0: (90, 20, 20), 1: (20, 20, 90)}  # channel mean 43 < 100: dark
    for x0, y0, x1, y1, lab in squares:
        img[y0:y1, x0:x1] = colour[lab]
    return img


# ----------------------------------------------------------------------------- tile_grid


def test_tile_grid_paper_layout():
    # 1000 px, tile 500, overlap 100 -> stride 400: starts 0, 400 (400 + 500 = 900 < 1000)
    # then the last tile is shifted to end at the border: 1000 - 500 = 500
    grid = tile_grid(1000, 1000, 500, 100)
    starts = [0, 400, 500]
    expected = [[x, y, x + 500, y + 500] for y in starts for x in starts]
    np.testing.assert_array_equal(grid, expected)
    assert grid.dtype == np.int64
    # every pixel covered (brute force), the last tiles end exactly at the border
    cover = np.zeros((1000, 1000), bool)
    for x0, y0, x1, y1 in grid:
        cover[y0:y1, x0:x1] = True
    assert cover.all()
    assert grid[:, 2].max() == 1000 and grid[:, 3].max() == 1000


def test_tile_grid_pairs_exact_fit_and_small_image():
    # height 300, tile 200, overlap 50: stride 150, starts 0 (150 + 200 > 300), shifted 100
    # width 900, tile 500, overlap 100: starts 0, 400; 400 + 500 = 900 fits, no shift
    grid = tile_grid(300, 900, (200, 500), (50, 100))
    np.testing.assert_array_equal(grid, [[0, 0, 500, 200], [400, 0, 900, 200],
                                         [0, 100, 500, 300], [400, 100, 900, 300]])
    # image smaller than a tile: one tile of the image size
    np.testing.assert_array_equal(tile_grid(300, 200, 500, 100), [[0, 0, 200, 300]])
    # smaller along one axis only: 120 < 500 high, 1000 wide as in the paper layout
    np.testing.assert_array_equal(tile_grid(120, 1000, 500, 100),
                                  [[0, 0, 500, 120], [400, 0, 900, 120], [500, 0, 1000, 120]])


@pytest.mark.parametrize('args, match', [
    ((100, 100, 64, 64), 'smaller than tile_size'),
    ((100, 100, (64, 32), (10, 40)), 'smaller than tile_size'),
    ((100, 100, 0, 0), 'tile_size must be positive'),
    ((100, 100, 64, -1), 'overlap must be >= 0'),
    ((0, 100, 64, 16), 'height must be a positive int'),
    ((100, -5, 64, 16), 'width must be a positive int'),
    ((100, 100, 64.0, 16), 'tile_size must be an int'),
    ((100, 100, (64, 64, 3), 16), 'tile_size must be an int'),
])
def test_tile_grid_errors(args, match):
    with pytest.raises(ValueError, match=match):
        tile_grid(*args)


def test_crop_patches_views_and_offsets():
    img = np.arange(10 * 12).reshape(10, 12)
    # 10 x 12, tile 6, overlap 2: stride 4; rows 0, 4 (4 + 6 = 10 fits); cols 0, 4, then
    # 4 + 6 = 10 < 12 -> shifted 6
    patches = crop_patches(img, 6, 2)
    assert [off for _, off in patches] == [(0, 0), (4, 0), (6, 0), (0, 4), (4, 4), (6, 4)]
    for patch, (x0, y0) in patches:
        np.testing.assert_array_equal(patch, img[y0:y0 + 6, x0:x0 + 6])
    with pytest.raises(ValueError, match='shape'):
        crop_patches(np.zeros((2, 2, 2, 2)), 6, 2)


# ----------------------------------------------------------------------------- merge


def test_merge_same_object_from_two_tiles():
    # tile A at (0, 0) sees [410, 100, 442, 132], score 0.9; tile B at (400, 0) sees the
    # same cell at local [12, 102, 44, 134] -> global [412, 102, 444, 134], score 0.8.
    # IoU = 30*30 / (32*32 + 32*32 - 900) = 900 / 1148 = 0.784 > 0.5 -> B suppressed.
    # tile C at (400, 400): local [0, 0, 10, 10] -> global [400, 400, 410, 410].
    boxes = [torch.tensor([[410., 100., 442., 132.]]), torch.tensor([[12., 102., 44., 134.]]),
             torch.tensor([[0., 0., 10., 10.]])]
    scores = [torch.tensor([0.9]), torch.tensor([0.8]), torch.tensor([0.7])]
    labels = [torch.tensor([0]), torch.tensor([0]), torch.tensor([0])]
    offsets = [(0, 0), (400, 0), (400, 400)]
    b, s, lab = merge_detections(boxes, scores, labels, offsets, iou_thr=0.5)
    torch.testing.assert_close(b, torch.tensor([[410., 100., 442., 132.],
                                                [400., 400., 410., 410.]]))
    torch.testing.assert_close(s, torch.tensor([0.9, 0.7]))
    assert lab.tolist() == [0, 0] and lab.dtype == torch.int64
    # max_num keeps the best one only
    b1, s1, _ = merge_detections(boxes, scores, labels, offsets, max_num=1)
    assert b1.tolist() == [[410., 100., 442., 132.]] and s1.tolist() == pytest.approx([0.9])
    # with iou_thr 0.8 (> 0.784) the two views of the cell both survive
    b2, _, _ = merge_detections(boxes, scores, labels, offsets, iou_thr=0.8)
    assert len(b2) == 3


def test_merge_different_classes_not_suppressed():
    # same geometry as above, but tile B calls the cell class 1: class-aware NMS keeps both
    boxes = [torch.tensor([[410., 100., 442., 132.]]), torch.tensor([[12., 102., 44., 134.]])]
    scores = [torch.tensor([0.9]), torch.tensor([0.8])]
    labels = [torch.tensor([0]), torch.tensor([1])]
    b, s, lab = merge_detections(boxes, scores, labels, [(0, 0), (400, 0)])
    torch.testing.assert_close(b, torch.tensor([[410., 100., 442., 132.],
                                                [412., 102., 444., 134.]]))
    torch.testing.assert_close(s, torch.tensor([0.9, 0.8]))
    assert lab.tolist() == [0, 1]


def test_merge_empty_and_errors():
    empty = torch.zeros((0, 4))
    b, s, lab = merge_detections([empty, empty], [torch.zeros(0)] * 2,
                                 [torch.zeros(0, dtype=torch.long)] * 2, [(0, 0), (5, 0)])
    assert b.shape == (0, 4) and s.shape == (0, ) and lab.shape == (0, )
    with pytest.raises(ValueError, match='scores_per_tile has 1 entries but offsets has 2'):
        merge_detections([empty, empty], [torch.zeros(0)], [torch.zeros(0)] * 2,
                         [(0, 0), (5, 0)])
    with pytest.raises(ValueError, match='tile 0: 1 boxes, 2 scores'):
        merge_detections([torch.zeros((1, 4))], [torch.zeros(2)], [torch.zeros(1)], [(0, 0)])


def test_merge_border_filter():
    # tiles of a 64 x 112 image, tile 64, overlap 16: [0, 0, 64, 64] and [48, 0, 112, 64].
    # Tile 0's right side (x = 64) and tile 1's left side (x = 48) are inner borders.
    tiles = tile_grid(64, 112, 64, 16)
    np.testing.assert_array_equal(tiles, [[0, 0, 64, 64], [48, 0, 112, 64]])
    # a cell at x [58, 72): tile 0 sees the part [58, 64), tile 1 the whole; IoU
    # 6*10 / (14*10) = 0.43 < 0.5, so NMS alone keeps both.
    # a class-1 cell at x [40, 64) in tile 0 touches x = 64 too, but 40 < 48 + 2: no
    # other tile holds it whole -> kept.
    boxes = [torch.tensor([[58., 20., 64., 30.], [40., 40., 64., 50.]]),
             torch.tensor([[10., 20., 24., 30.]])]  # local; global [58, 20, 72, 30]
    scores = [torch.tensor([0.85, 0.6]), torch.tensor([0.9])]
    labels = [torch.tensor([0, 1]), torch.tensor([0])]
    offsets = tiles[:, :2].tolist()
    b, _, _ = merge_detections(boxes, scores, labels, offsets)
    assert sorted(b.tolist()) == [[40., 40., 64., 50.], [58., 20., 64., 30.],
                                  [58., 20., 72., 30.]]
    # filter: [58, 20, 64, 30] touches tile 0's inner side (64 >= 64 - 2) and lies in
    # tile 1 with clearance (58 > 48 + 2; tile 1's right side is the image border) -> dropped
    b, s, lab = merge_detections(boxes, scores, labels, offsets, tiles=tiles, border_margin=2)
    assert sorted(b.tolist()) == [[40., 40., 64., 50.], [58., 20., 72., 30.]]
    with pytest.raises(ValueError, match='tiles\\[:, :2\\] must equal offsets'):
        merge_detections(boxes, scores, labels, [(0, 0), (40, 0)], tiles=tiles)


# ----------------------------------------------------------------------------- inference


def test_single_tile_equals_direct_prediction():
    # a 50 x 60 image fits in one 64 px tile: tiled inference must reproduce mmdet's own
    # pipeline (LoadImageFromNDArray on the BGR array -> PackDetInputs -> test_step)
    from mmcv.transforms import Compose
    from mmdet.datasets.transforms import LoadImageFromNDArray, PackDetInputs, Resize
    from mmengine.dataset import pseudo_collate

    model = _tiny_retinanet()
    rgb = np.random.default_rng(0).integers(0, 256, (50, 60, 3), dtype=np.uint8)
    pipeline = Compose([LoadImageFromNDArray(), Resize(scale=(60, 50), keep_ratio=False),
                        PackDetInputs(meta_keys=('img_id', 'img_shape', 'ori_shape',
                                                 'scale_factor'))])
    data = pseudo_collate([pipeline(dict(img=np.ascontiguousarray(rgb[..., ::-1]), img_id=0))])
    with torch.no_grad():
        ref = model.test_step(data)[0].pred_instances
    assert len(ref) > 10  # score_thr 0: the random model returns boxes
    sw = SlidingWindowInference(model, tile_size=64, overlap=16, score_thr=0.0,
                                max_per_tile=-1)
    out = sw(rgb)
    assert out.img_shape == (50, 60)
    order = ref.scores.argsort(descending=True)
    torch.testing.assert_close(out.scores, ref.scores[order], atol=1e-4, rtol=0)
    torch.testing.assert_close(out.bboxes, ref.bboxes[order], atol=1e-4, rtol=0)
    assert out.labels.tolist() == ref.labels[order].tolist()


def test_boxes_mapped_back_and_merged():
    # 160 x 224 image, tile 64, overlap 16 (stride 48):
    #   columns x0 = 0, 48, 96, 144 and the shifted 224 - 64 = 160; rows y0 = 0, 48, 96
    #   (96 + 64 = 160 fits): 15 tiles
    squares = [
        (8, 8, 20, 20, 0),  # inside tile (0, 0) only
        (50, 10, 60, 22, 1),  # inside the overlap x [48, 64): seen whole by 2 tiles
        # crosses x = 64 (right side of column 0): column 0 sees [52, 64) (area 120,
        # score 120/130), column 48 the whole (area 160, score 160/170); IoU 12/16 = 0.75
        # -> NMS keeps the whole one
        (52, 70, 68, 80, 0),
        (98, 50, 108, 60, 1),  # in the overlap of 2 columns x 2 rows: seen whole by 4 tiles
        (210, 140, 220, 156, 0),  # in the shifted last column x0 = 160 only
    ]
    img = _squares_image(160, 224, squares)
    model = _blob_detector()
    out = SlidingWindowInference(model, tile_size=64, overlap=16, batch_size=4)(img)
    assert _sorted_boxes(out) == sorted(tuple(map(float, s)) for s in squares)
    # 15 tiles in batches of 4: one model call per batch
    assert model.calls == [4, 4, 4, 3]
    whole = out.bboxes.tolist().index([52., 70., 68., 80.])
    assert out.scores[whole].item() == pytest.approx(160 / 170)
    # feeding RGB where the preprocessor expects BGR swaps the colours -> labels flip
    rgb_fed = SlidingWindowInference(model, tile_size=64, overlap=16, channel_order='rgb')(img)
    assert sorted(rgb_fed.labels.tolist()) == sorted(1 - s[4] for s in squares)


def test_deep_cut_needs_border_filter():
    # 64 x 112 image, tiles [0, 64) and [48, 112) in x; a square x [58, 72): the first tile
    # sees [58, 64) (area 60, score 60/70 = 0.857 > 0.5), the second the whole (area 140).
    # IoU 60/140 = 0.43 < 0.5: plain NMS (the paper's) keeps both; the filter drops the cut
    img = _squares_image(64, 112, [(58, 20, 72, 30, 0)])
    model = _blob_detector()
    plain = SlidingWindowInference(model, tile_size=64, overlap=16)(img)
    assert _sorted_boxes(plain) == [(58., 20., 64., 30., 0.), (58., 20., 72., 30., 0.)]
    filt = SlidingWindowInference(model, tile_size=64, overlap=16, drop_border_boxes=True)(img)
    assert _sorted_boxes(filt) == [(58., 20., 72., 30., 0.)]


def test_batch_size_does_not_change_results():
    # blob detector: 15 tiles, batches of 1 (15 calls) vs 3 (5 calls), identical output
    img = _squares_image(160, 224, [(52, 70, 68, 80, 0), (98, 50, 108, 60, 1)])
    model = _blob_detector()
    out1 = SlidingWindowInference(model, tile_size=64, overlap=16, batch_size=1)(img)
    assert model.calls == [1] * 15
    model.calls.clear()
    out3 = SlidingWindowInference(model, tile_size=64, overlap=16, batch_size=3)(img)
    assert model.calls == [3] * 5
    assert torch.equal(out1.bboxes, out3.bboxes) and torch.equal(out1.scores, out3.scores)
    assert torch.equal(out1.labels, out3.labels)
    # real RetinaNet, 96 x 112 image: rows 0, 32 (shifted), columns 0, 48 -> 4 tiles of 64,
    # batch 3 -> batches of 3 and 1; all tiles share one shape, so padding is identical
    model = _tiny_retinanet()
    rgb = np.random.default_rng(1).integers(0, 256, (96, 112, 3), dtype=np.uint8)
    kw = dict(tile_size=64, overlap=16, score_thr=0.3, max_per_tile=-1)
    r1 = SlidingWindowInference(model, batch_size=1, **kw)(rgb)
    r3 = SlidingWindowInference(model, batch_size=3, **kw)(rgb)
    assert len(r1) > 10
    torch.testing.assert_close(r3.scores, r1.scores, atol=1e-4, rtol=0)
    torch.testing.assert_close(r3.bboxes, r1.bboxes, atol=1e-4, rtol=0)
    assert r3.labels.tolist() == r1.labels.tolist()


def test_run_reads_each_tile_once_inside_image():
    squares = [(50, 10, 60, 22, 1), (210, 140, 220, 156, 0)]
    img = _squares_image(160, 224, squares)
    calls = []

    def read_tile(x, y, w, h):
        calls.append((x, y, w, h))
        return img[y:y + h, x:x + w]

    model = _blob_detector().train()
    sw = SlidingWindowInference(model, tile_size=64, overlap=16, batch_size=4)
    out = sw.run(read_tile, 160, 224)
    # columns 0, 48, 96, 144, 160 x rows 0, 48, 96, all 64 x 64, each read once
    expected = [(x, y, 64, 64) for y in (0, 48, 96) for x in (0, 48, 96, 144, 160)]
    assert sorted(calls) == sorted(expected) and len(calls) == len(set(calls))
    assert all(x >= 0 and y >= 0 and x + w <= 224 and y + h <= 160 for x, y, w, h in calls)
    assert _sorted_boxes(out) == sorted(tuple(map(float, s)) for s in squares)
    assert model.training  # previous mode restored
    # a reader returning the wrong shape is named in the error
    with pytest.raises(ValueError, match=r'read_tile\(x=0, y=0, w=64, h=64\)'):
        sw.run(lambda x, y, w, h: np.zeros((h, w), np.uint8), 160, 224)


def test_progress_bar_for_many_tiles(capsys):
    # 64 x 64 image, tile 16, no overlap: 4 x 4 = 16 tiles >= PROGRESS_MIN_TILES
    img = _squares_image(64, 64, [(2, 2, 10, 10, 0)])
    model = _blob_detector()
    SlidingWindowInference(model, tile_size=16, overlap=0, progress=True)(img)
    assert '16/16' in capsys.readouterr().out
    SlidingWindowInference(model, tile_size=16, overlap=0, progress=False)(img)
    assert '16/16' not in capsys.readouterr().out


def test_bad_arguments():
    model = _blob_detector()
    with pytest.raises(ValueError, match='BaseDetector'):
        SlidingWindowInference(nn.Linear(2, 2))
    with pytest.raises(ValueError, match='smaller than tile_size'):
        SlidingWindowInference(model, tile_size=64, overlap=64)
    with pytest.raises(ValueError, match='batch_size'):
        SlidingWindowInference(model, batch_size=0)
    sw = SlidingWindowInference(model, tile_size=64, overlap=16)
    with pytest.raises(ValueError, match='uint8'):
        sw(np.zeros((64, 64, 3), np.float32))
    with pytest.raises(ValueError, match=r'\(H, W, 3\)'):
        sw(np.zeros((64, 64), np.uint8))
