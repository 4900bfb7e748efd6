"""The shared resolution rule (projects.common.slide.choose_resolution / read_tile), used
by the QuPath converter and tools/infer_slide.py; values worked by hand."""
import numpy as np
import pytest

from projects.common.slide import SlideReader, choose_resolution, read_tile, slide_mpp


class ArraySlide(SlideReader):
    """An in-memory pyramid: level k is the k-th array, downsample w0 / wk."""

    backend = 'array'

    def __init__(self, levels, mpp=None, path='mem.tif'):
        super().__init__(path)
        self.levels = levels
        self.level_dimensions = [(a.shape[1], a.shape[0]) for a in levels]
        w0 = levels[0].shape[1]
        self.level_downsamples = [w0 / a.shape[1] for a in levels]
        if mpp is not None:
            self.properties['mpp'] = str(mpp)

    def _read(self, level, x, y, w, h):
        return self.levels[level][y:y + h, x:x + w].copy()


def _slide(mpp=0.25):
    # downsamples 1, 4, 16 at 0.25 um/px: 0.25, 1.0, 4.0 um/px
    return ArraySlide([np.zeros((64, 64, 3), np.uint8), np.zeros((16, 16, 3), np.uint8),
                       np.zeros((4, 4, 3), np.uint8)], mpp=mpp, path='cohort/a.tif')


@pytest.mark.parametrize('target,level,scale,mpp,resized', [
    (0.5, 0, 2.0, 0.5, True),     # between levels 0 and 1: the finer one, shrunk by 2
    (1.0, 1, 4.0, 1.0, False),    # exactly level 1
    (1.005, 1, 4.0, 1.0, False),  # within 1% of level 1: read as is, true mpp reported
    (2.0, 1, 8.0, 2.0, True),     # between 1 and 2: level 1, shrunk by 2
    (8.0, 2, 32.0, 8.0, True),    # coarser than the last level: the last, shrunk by 2
    (0.1, 0, 0.4, 0.1, True),     # finer than level 0: level 0, enlarged
])
def test_choose_resolution_by_hand(target, level, scale, mpp, resized):
    res = choose_resolution(_slide(), mpp=target)
    assert (res.level, res.resized) == (level, resized)
    assert res.scale == pytest.approx(scale)
    assert res.mpp == pytest.approx(mpp)


def test_choose_resolution_level_and_errors():
    res = choose_resolution(_slide(), level=2)
    assert (res.level, res.scale, res.mpp, res.resized) == (2, 16.0, 4.0, False)
    assert choose_resolution(_slide(mpp=None), level=1).mpp is None
    assert choose_resolution(_slide()).level == 0
    with pytest.raises(ValueError, match=r'cohort/a\.tif.*no microns-per-pixel'):
        choose_resolution(_slide(mpp=None), mpp=0.5)
    with pytest.raises(ValueError, match='not both'):
        choose_resolution(_slide(), mpp=0.5, level=1)
    with pytest.raises(ValueError, match='positive'):
        choose_resolution(_slide(), mpp=-1.0)
    with pytest.raises(ValueError, match='level 3 does not exist in cohort/a.tif'):
        choose_resolution(_slide(), level=3)
    assert slide_mpp(_slide(mpp='nan')) is None


def test_read_tile_by_hand():
    lv0 = np.arange(64, dtype=np.uint8).reshape(8, 8, 1).repeat(3, 2) * 3
    slide = ArraySlide([lv0], mpp=0.25)
    res = choose_resolution(slide, mpp=0.5)  # level 0, 2 level-0 px per output px
    tile = read_tile(slide, res, 2, 4, 2, 2)
    # output (i, j) = mean of level-0 rows 4+2i..5+2i, cols 2+2j..3+2j
    want = np.array([[lv0[4:6, 2:4, 0].mean(), lv0[4:6, 4:6, 0].mean()],
                     [lv0[6:8, 2:4, 0].mean(), lv0[6:8, 4:6, 0].mean()]])
    np.testing.assert_allclose(tile[..., 0], want, atol=0.5)
    # unresized, partly outside the slide: the outside is white
    tile = read_tile(slide, choose_resolution(slide), -1, 6, 3, 3)
    assert (tile[:, 0] == 255).all() and (tile[2:] == 255).all()
    np.testing.assert_array_equal(tile[:2, 1:], lv0[6:8, 0:2])
