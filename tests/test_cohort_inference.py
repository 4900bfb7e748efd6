"""Whole cohorts through tools/infer_slide.py (issue 19): the slide list, the deal to ranks,
2 gloo ranks and the merged summary, kill-and-resume equality, a bad slide among good
ones, --mpp by hand-worked levels, pipelined reading (same objects, bounded memory),
bad input.

Slides are small tiled pyramids written here (tifffile); the model is the test double of
tests/test_slide_inference.py (one box per dark blob), registered by a module written to
a temporary folder so that tool processes started by the tests can import it.
"""
import csv
import json
import os
import os.path as osp
import signal
import subprocess
import sys
import time
import tracemalloc

import numpy as np
import pytest
import torch

from conftest import free_port
from projects.common.cohort import (deal_slides, expand_slides, tissue_area_mm2)
from projects.common.slide import open_slide
from test_slide_inference import (load_tool, pyramid_levels, tiny_unet, tissue_image,
                                  write_pyramid)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))

# the blob detector of test_slide_inference (one box per dark blob), under a name a tool
# process imports (custom_imports); it sleeps MMHISTO_TEST_DELAY seconds per model call
# (a slow model makes the kill land mid-slide)
BLOB_MODULE = '''
import os
import time

from mmdet.registry import MODELS
from test_slide_inference import BlobDetector


@MODELS.register_module(force=True)
class CohortBlobDetector(BlobDetector):

    def predict(self, *args, **kwargs):
        time.sleep(float(os.environ.get('MMHISTO_TEST_DELAY', '0')))
        return super().predict(*args, **kwargs)
'''
META = dict(classes=('small', 'large'), palette=[(255, 0, 0), (0, 0, 255)])
PINK = (235, 200, 220)


@pytest.fixture
def model_files(tmp_path, monkeypatch):
    """(config, checkpoint, PYTHONPATH entry) of the blob detector; ``train_mpp`` 0.5."""
    mod = tmp_path / 'mod'
    mod.mkdir()
    (mod / 'cohort_blob.py').write_text(BLOB_MODULE)
    monkeypatch.syspath_prepend(str(mod))
    cfg = tmp_path / 'blob.py'
    cfg.write_text("default_scope = 'mmdet'\ncustom_imports = dict(imports=['cohort_blob'], "
                   "allow_failed_imports=False)\nmodel = dict(type='CohortBlobDetector')\n"
                   "train_mpp = 0.5\n")
    ckpt = tmp_path / 'blob.pth'
    torch.save(dict(state_dict={}, meta=dict(dataset_meta=META)), str(ckpt))
    return str(cfg), str(ckpt), str(mod)


def squares_pyramid(path: str, squares, size=(384, 512), mpp=None, background=None,
                    seed=0) -> str:
    """A 3-level pyramid (downsamples 1, 2, 4) with dark (RGB 20) squares (x0, y0, side)
    at level 0, on synthetic tissue or a uniform ``background``; ``mpp`` in the
    ImageDescription (Aperio's ``|MPP = `` field, read by the tifffile back-end)."""
    import tifffile
    h, w = size
    img = tissue_image(h, w, seed=seed) if background is None else \
        np.full((h, w, 3), background, np.uint8)
    for x0, y0, s in squares:
        img[y0:y0 + s, x0:x0 + s] = 20
    levels = pyramid_levels(img, 3)
    with tifffile.TiffWriter(path) as tw:
        for k, lv in enumerate(levels):
            tw.write(lv, tile=(64, 64), photometric='rgb', subfiletype=1 if k else 0,
                     metadata=None,
                     description=(f'generic pyramid|MPP = {mpp}' if mpp and not k else None))
    return path


def read_rows(out) -> list:
    with open(osp.join(out, 'cohort_summary.csv'), newline='') as f:
        return list(csv.DictReader(f))


def tool_env(mod: str, **extra) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore',
               PYTHONPATH=os.pathsep.join([REPO, mod, osp.join(REPO, 'tests'),
                                           os.environ.get('PYTHONPATH', '')]))
    env.update(extra)
    return env


# ================================================================ the slide list
def test_expand_slides_files_folders_globs_lists(tmp_path):
    for name in ('a.svs', 'b.tif', 'c.ndpi', 'notes.md'):
        (tmp_path / name).write_bytes(b'x')
    sub = tmp_path / 'sub'
    sub.mkdir()
    (sub / 'd.tiff').write_bytes(b'x')
    (tmp_path / 'list.txt').write_text('# the study\nsub/d.tiff\n\na.svs  # again\n')
    got = expand_slides([str(tmp_path), str(tmp_path / '*.tif'), str(tmp_path / 'list.txt'),
                         str(tmp_path / 'missing.svs')])
    # the folder gives its slide files (not notes.md, not the sub-folder); the glob adds
    # b.tif again and the list sub/d.tiff (relative to the list) and a.svs: each once,
    # sorted; a named file that does not exist stays (it becomes a failed row)
    assert got == [str(tmp_path / n) for n in ('a.svs', 'b.tif', 'c.ndpi', 'missing.svs',
                                               'sub/d.tiff')]
    with pytest.raises(ValueError, match='no slide given'):
        expand_slides([])
    with pytest.raises(ValueError, match=r'\*\.mrxs: the glob matches no file'):
        expand_slides([str(tmp_path / '*.mrxs')])
    (tmp_path / 'empty.txt').write_text('# nothing\n')
    with pytest.raises(ValueError, match='empty.txt: the slide list is empty'):
        expand_slides([str(tmp_path / 'empty.txt')])
    with pytest.raises(FileNotFoundError, match='nope.txt: slide list not found'):
        expand_slides([str(tmp_path / 'nope.txt')])
    (tmp_path / 'dup').mkdir()
    (tmp_path / 'dup' / 'a.svs').write_bytes(b'x')
    with pytest.raises(ValueError, match='two slides with the same name'):
        expand_slides([str(tmp_path / 'a.svs'), str(tmp_path / 'dup')])


def test_deal_slides_largest_first_by_hand():
    # sizes a 5, b 9, c 2, d 7, e 4 to 2 ranks, largest first to the least loaded rank:
    # b -> r0 (9); d -> r1 (7); a -> r1 (7 < 9: 12); e -> r0 (9 < 12: 13); c -> r1 (12 < 13:
    # 14). Loads 13 / 14.
    got = deal_slides(list('abcde'), 2, sizes=[5, 9, 2, 7, 4])
    assert got == [['b', 'e'], ['d', 'a', 'c']]
    assert deal_slides(list('ab'), 3, sizes=[1, 1]) == [['a'], ['b'], []]


def test_tissue_area_by_hand():
    # a 4x4 mask of 10-level-0-px cells, tissue in its left half (8 cells); the region
    # x 0-30, y 0-40 holds the cell centres 5, 15, 25 in x: the 2 tissue columns x 4 rows
    # = 8 cells x (10 px x 0.5 um)^2 = 200 um^2 = 2e-4 mm^2
    mask = np.zeros((4, 4), bool)
    mask[:, :2] = True
    assert tissue_area_mm2(mask, 10.0, (0, 0, 30, 40), 0.5) == pytest.approx(2e-4)
    assert tissue_area_mm2(mask, 10.0, (20, 0, 20, 40), 0.5) == 0.0
    assert tissue_area_mm2(mask, 10.0, (0, 0, 30, 40), None) is None


# ================================================================ several slides, one bad
def test_cohort_with_a_corrupt_slide_in_the_middle(tmp_path, model_files):
    cfg, ckpt, _ = model_files
    infer = load_tool('infer_slide')
    d = tmp_path / 'slides'
    d.mkdir()
    # a: two squares, 32 px ('large': >= 400 px) and 16 px ('small'); c: one 32 px square
    squares_pyramid(str(d / 'a.tif'), [(64, 64, 32), (300, 200, 16)], mpp=0.25,
                    background=PINK)
    good = squares_pyramid(str(d / 'c.tif'), [(400, 200, 32)], mpp=0.25, background=PINK)
    data = open(good, 'rb').read()
    (d / 'b.tif').write_bytes(data[:len(data) * 3 // 4])  # truncated in its tile data
    (tmp_path / 'list.txt').write_text(f'{d}/b.tif\n{d}/missing.tif\n')
    out = tmp_path / 'out'
    with pytest.warns(UserWarning, match=r'a\.tif: tiles at 0\.25 um/px but the model was '
                      r'trained at 0\.5 um/px'):
        res = infer.main([cfg, ckpt, str(d / 'a.tif'), str(d / 'c.*'), str(tmp_path / 'list.txt'),
                          '--out', str(out), '--tile', '256', '--overlap', '64',
                          '--backend', 'tifffile', '--no-progress'])
    assert (res['failed'], res['exit_code']) == (2, 3)
    rows = {osp.basename(r['slide']): r for r in read_rows(out)}
    assert [r['status'] for r in read_rows(out)] == ['done', 'failed', 'done', 'failed']
    assert 'b.tif: truncated or corrupt' in rows['b.tif']['error'] or \
        'b.tif: unreadable' in rows['b.tif']['error']
    assert 'missing.tif: slide file not found' in rows['missing.tif']['error']
    a = rows['a.tif']
    # 512x384 at level 0 (0.25 um/px), tiles 256 / overlap 64: x 0, 192, 256 and y 0, 128
    # -> 6 tiles. Counts: one 'large' (32^2 = 1024 px) and one 'small' (256 px).
    assert (a['level'], a['mpp'], a['tiles_run'], a['tiles_skipped']) == ('0', '0.2500', '6',
                                                                           '0')
    assert (a['objects'], a['n_large'], a['n_small']) == ('2', '1', '1')
    # tissue: the pink is tissue (saturation 0.149), the grey squares are not (0), but the
    # mask's closing fills part of them: 512 x 384 px x 0.25^2 um^2 = 0.012288 mm^2 less
    # at most the squares' (1024 + 256) x 0.0625 um^2 = 0.00008 mm^2
    tissue = float(a['tissue_mm2'])
    assert 0.012288 - 0.00008 <= tissue <= 0.012288
    assert a['objects_per_mm2'] == f'{2 / tissue:.2f}' and float(a['per_mm2_large']) == \
        pytest.approx(1 / tissue, abs=0.01)
    assert float(a['tiles_per_s']) > 0
    assert (rows['c.tif']['objects'], rows['c.tif']['n_large']) == ('1', '1')
    names = sorted(os.listdir(out))
    assert names == sorted(['cohort_summary.csv'] + [
        f'{s}{x}' for s in 'ac' for x in ('.geojson', '.csv', '_overview.png',
                                          '_summary.json')])
    # the exit status of the command line: 3 when a slide failed
    proc = subprocess.run([sys.executable, osp.join(REPO, 'tools', 'infer_slide.py'), cfg, ckpt,
                           str(d), '--out', str(out), '--tile', '256', '--overlap', '64',
                           '--backend', 'tifffile', '--no-progress'],
                          env=tool_env(model_files[2]), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert 'FAILED' in proc.stderr and 'skipped (complete)' in proc.stdout


# ================================================================ resume after a kill
def _without_timings(path):
    with open(path) as f:
        s = json.load(f)
    return {k: v for k, v in s.items() if k not in ('timings_s', 'outputs')}


def test_kill_and_resume_equals_uninterrupted_run(tmp_path, model_files):
    cfg, ckpt, mod = model_files
    slides = [squares_pyramid(str(tmp_path / f's{k}.tif'), [(64 + 40 * k, 64, 32)], seed=k)
              for k in range(3)]
    args = ['--tile', '256', '--overlap', '64', '--batch-size', '2', '--no-progress']
    killed = tmp_path / 'killed'
    # a slow model (0.3 s per call, 3 calls per slide): the kill lands inside slide 2
    proc = subprocess.Popen([sys.executable, osp.join(REPO, 'tools', 'infer_slide.py'), cfg,
                             ckpt, *slides, '--out', str(killed), *args],
                            env=tool_env(mod, MMHISTO_TEST_DELAY='0.3'),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    while not list(killed.glob('*_summary.json')):
        assert proc.poll() is None and time.time() - t0 < 120, 'no slide finished'
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = sorted(p.name for p in killed.glob('*_summary.json'))
    assert len(done) == 1
    # no partial output under a final name: a slide without summary has no file
    left = sorted(os.listdir(killed))
    finals = [n for n in left if not n.startswith('.tmp_')]
    stem = done[0][:-len('_summary.json')]
    assert finals == sorted(f'{stem}{x}' for x in ('.geojson', '.csv', '_overview.png',
                                                   '_summary.json'))
    infer = load_tool('infer_slide')
    res = infer.main([cfg, ckpt, *slides, '--out', str(killed), *args])
    assert [r['status'] for r in res['rows']].count('skipped') == 1
    whole = tmp_path / 'whole'  # with a reader process: the same files too
    infer.main([cfg, ckpt, *slides, '--out', str(whole), *args, '--workers', '1'])
    assert sorted(os.listdir(killed)) == sorted(os.listdir(whole))  # temporaries gone
    for name in os.listdir(whole):
        if name.endswith('_summary.json'):
            assert {**_without_timings(killed / name), 'workers': 1} == \
                _without_timings(whole / name)
        elif name != 'cohort_summary.csv':
            assert (killed / name).read_bytes() == (whole / name).read_bytes(), name
    # a third run skips everything; another model's results are refused
    res = infer.main([cfg, ckpt, *slides, '--out', str(whole), *args])
    assert [r['status'] for r in res['rows']] == ['skipped'] * 3
    with pytest.raises(ValueError, match=r'holds the results of another model or other '
                       r'options .*--overwrite'):
        infer.main([cfg, ckpt, *slides, '--out', str(whole), *args, '--score-thr', '0.3'])
    res = infer.main([cfg, ckpt, slides[0], '--out', str(whole), '--tile', '256',
                      '--overlap', '64', '--no-progress', '--overwrite'])
    assert res['tiles']['processed'] == 6  # one slide file: its summary, redone


# ================================================================ ranks
def test_two_gloo_ranks_share_the_cohort(tmp_path, model_files):
    cfg, ckpt, mod = model_files
    sizes = [(384, 512), (768, 1024), (256, 256), (512, 768)]
    slides = [squares_pyramid(str(tmp_path / f'r{k}.tif'), [(100, 100 + 20 * k, 32)],
                              size=s, seed=k) for k, s in enumerate(sizes)]
    out = tmp_path / 'ranks'
    proc = subprocess.run(
        ['bash', osp.join(REPO, 'tools', 'dist_infer_slide.sh'), cfg, ckpt, '2', *slides,
         '--out', str(out), '--tile', '256', '--overlap', '64', '--no-progress'],
        env=tool_env(mod, PORT=str(free_port()), PYTHON=sys.executable), capture_output=True,
        text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = read_rows(out)
    # file sizes follow the pixel counts: r1 > r3 > r0 > r2; largest first to the least
    # loaded rank: r1 -> 0, r3 -> 1, r0 -> 1 (r3 < r1), r2 -> the lighter of the two
    want = deal_slides(slides, 2)
    assert want[0][0] == slides[1] and want[1][:2] == [slides[3], slides[0]]
    assert [r['slide'] for r in rows] == [osp.abspath(s) for s in slides]  # merged, in order
    assert {r['slide']: int(r['rank']) for r in rows} == {
        osp.abspath(s): k for k in (0, 1) for s in want[k]}
    assert all(r['status'] == 'done' and r['n_large'] == '1' for r in rows)
    # the same objects as one process
    infer = load_tool('infer_slide')
    one = tmp_path / 'one'
    infer.main([cfg, ckpt, *slides, '--out', str(one), '--tile', '256', '--overlap', '64',
                '--no-progress'])
    for s in slides:
        stem = osp.splitext(osp.basename(s))[0]
        assert (out / f'{stem}.geojson').read_bytes() == (one / f'{stem}.geojson').read_bytes()


# ================================================================ resolution
def test_mpp_selects_level_and_resizes_by_hand(tmp_path, model_files):
    cfg, ckpt, _ = model_files
    infer = load_tool('infer_slide')
    # 1024x768 at 0.25 um/px: levels 0.25, 0.5, 1.0 um/px. Dark square A at level-0
    # [600, 632) x [300, 332) on uniform pink (channel mean 218.3)
    slide = squares_pyramid(str(tmp_path / 'm.tif'), [(600, 300, 32)], size=(768, 1024),
                            mpp=0.25, background=PINK)
    base = [cfg, ckpt, slide, '--tile', '256', '--overlap', '64', '--no-progress',
            '--backend', 'tifffile', '--geometry', 'polygon']
    # --mpp 0.5 is level 1 exactly: no resizing, no warning (train_mpp 0.5)
    s = infer.main(base + ['--out', str(tmp_path / 'a'), '--mpp', '0.5'])
    assert (s['level'], s['mpp'], s['resized'], s['downsample']) == (1, 0.5, False, 2.0)
    # --mpp 0.75: the level closest above is level 1 (0.5 um/px), resized by 0.5 / 0.75.
    # The grid is ceil(1024 / 3) x 768 / 3 = 342 x 256 pixels of 3 level-0 px; 256 px tiles
    # with 64 overlap: x 0, 86 (shifted) -> 2 tiles. An output pixel j covers level-0
    # [3j, 3j + 3); it is dark (< 50) only when more than 85% of it lies in A
    # (20 c + 218.3 (1 - c) < 50): j = 200..209 (3 x 209 + 3 = 630 <= 632), so the box is
    # [200, 210) x [100, 110) -> level-0 [600, 630) x [300, 330); 10 x 10 = 100 px < 400:
    # 'small'. The model was trained at 0.5: a warning names both values.
    with pytest.warns(UserWarning, match=r'tiles at 0\.75 um/px but the model was trained '
                      r'at 0\.5 um/px'):
        s = infer.main(base + ['--out', str(tmp_path / 'b'), '--mpp', '0.75'])
    assert (s['level'], s['resized'], s['downsample'], s['tiles']['total']) == (1, True, 3.0,
                                                                                 2)
    assert s['mpp'] == pytest.approx(0.75) and s['counts'] == {'small': 1}
    with open(tmp_path / 'b' / 'm.geojson') as f:
        ring = json.load(f)['features'][0]['geometry']['coordinates'][0]
    assert ring == [[600, 300], [630, 300], [630, 330], [600, 330], [600, 300]]
    # a slide without mpp cannot meet --mpp: one slide stops, in a cohort it is a failed row
    bare = squares_pyramid(str(tmp_path / 'bare.tif'), [], background=PINK)
    with pytest.raises(ValueError, match='bare.tif: the slide has no microns-per-pixel'):
        infer.main([cfg, ckpt, bare, '--out', str(tmp_path / 'c'), '--mpp', '0.5'])
    res = infer.main([cfg, ckpt, bare, slide, '--out', str(tmp_path / 'c'), '--mpp', '0.5',
                      '--backend', 'tifffile', '--tile', '256', '--overlap', '64',
                      '--no-progress'])
    assert [r['status'] for r in res['rows']] == ['failed', 'done']
    assert 'no microns-per-pixel' in res['rows'][0]['error'] and res['exit_code'] == 3


def test_bad_arguments(tmp_path, model_files):
    cfg, ckpt, _ = model_files
    infer = load_tool('infer_slide')
    slide = squares_pyramid(str(tmp_path / 'x.tif'), [], background=PINK)
    base = [cfg, ckpt, slide, '--out', str(tmp_path / 'o')]
    with pytest.raises(ValueError, match='--workers -1: must be >= 0'):
        infer.main(base + ['--workers', '-1'])
    with pytest.raises(ValueError, match='--mpp 0.0: must be a positive'):
        infer.main(base + ['--mpp', '0'])
    with pytest.raises(ValueError, match='give one of them'):
        infer.main(base + ['--mpp', '0.5', '--level', '1'])
    with pytest.raises(ValueError, match=r'nothing\*\.svs: the glob matches no file'):
        infer.main([cfg, ckpt, str(tmp_path / 'nothing*.svs'), '--out', str(tmp_path / 'o')])
    assert not (tmp_path / 'o').exists()


# ================================================================ pipelined reading
def test_workers_give_the_same_objects(tmp_path):
    # reading in a background process and stitching on a thread change nothing: the same
    # instances (centres and outlines, in the same order) as reading in the model's thread
    from projects.common.slide_inference import SlideInference
    img = tissue_image(256, 256, seed=2)
    model = tiny_unet(img)  # 15% nucleus: many instances, across core borders
    path = str(tmp_path / 'p.tif')
    write_pyramid(path, img, n_levels=1)
    slide = open_slide(path, 'tifffile')
    objs = {}
    for workers in (0, 1):
        got = []
        SlideInference(model, tile_size=128, overlap=64, progress=False,
                       workers=workers).run(slide, 0, sink=got.append)
        objs[workers] = got
    slide.close()
    a, b = (np.concatenate([o.centres for o in objs[k]]) for k in (0, 1))
    assert len(a) == len(b) > 20 and np.array_equal(a, b)
    assert all(np.array_equal(p, q) for p, q in zip(*[[p for o in objs[k] for p in o.polygons]
                                                       for k in (0, 1)]))


def test_workers_memory_bounded(tmp_path):
    # test_memory_bounded_by_tiles with one reader process and the stitching thread: the
    # numpy peak of this process (tracemalloc) does not grow from 512^2 to 1024^2
    # level-0 pixels (16 and 64 tiles of 128 px; the lowest level, read for the
    # thumbnail, is 256^2 for both) and stays below one RGB copy of the big level: at
    # most workers x prefetch batches are read ahead and 2 batches of predictions wait
    # for the stitching thread. How many are waiting at the peak depends on the race
    # of the two threads, so the peaks may differ by up to one batch of predictions
    # (4 tiles x 128^2 px x (8 B class + 4 B probability) = 786 KB), not with the size
    from projects.common.slide_inference import SlideInference
    engine = SlideInference(tiny_unet(), tile_size=128, overlap=0, progress=False, workers=1)
    peaks = {}
    for n, n_levels in ((128, 1), (512, 2), (1024, 3)):  # the first run warms up
        path = str(tmp_path / f'big{n}.tif')
        write_pyramid(path, tissue_image(n, n, seed=2), n_levels=n_levels)
        slide = open_slide(path, 'tifffile')
        tracemalloc.start()
        run = engine.run(slide, 0)
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        slide.close()
        assert run.keep.all() and len(run.tiles) == (n // 128) ** 2
    assert peaks[1024] - peaks[512] < 4 * 128 * 128 * 12, peaks
    assert peaks[1024] < 1024 * 1024 * 3 / 2, peaks


def test_workers_read_error_names_the_slide(tmp_path):
    # a slide whose tile data is cut after opening: the reader process's error reaches the
    # model's thread as ValueError naming the file
    from projects.common.slide_inference import RegionTiles, TileLoader
    from projects.common.slide import choose_resolution
    path = squares_pyramid(str(tmp_path / 'w.tif'), [], background=PINK)
    slide = open_slide(path, 'tifffile')
    res = choose_resolution(slide)
    tiles = np.array([[0, 0, 64, 64], [64, 0, 128, 64], [448, 320, 512, 384]])
    batches = list(TileLoader(RegionTiles(slide, res, (0, 0)), tiles, 2, workers=1))
    assert [len(b) for b in batches] == [2, 1]
    assert np.array_equal(batches[1][0], slide.read_level(0, 448, 320, 64, 64))
    bad = np.array([[0, 0, 64, 64], [500, 0, 600, 64]])  # the second tile leaves the level
    with pytest.raises(ValueError, match=r'w.tif: region x=500.*outside level 0'):
        list(TileLoader(RegionTiles(slide, res, (0, 0)), bad, 2, workers=1))
    slide.close()


# ================================================================ the benchmark
def test_benchmark_ratios_smoke(tmp_path, model_files, capsys):
    # smoke test of the ratio part of the benchmark tool (timings are not asserted): the
    # null-model and raw-read runs see the same 6 tiles, and the printed ratios are the
    # quotients of the returned times
    cfg, ckpt, _ = model_files
    bench = load_tool('analysis_tools/benchmark_slide_inference')
    slide = squares_pyramid(str(tmp_path / 'b.tif'), [(64, 64, 32)], background=PINK)
    res = bench.main([cfg, ckpt, slide, '--tile', '256', '--overlap', '64', '--workers', '1',
                      '--ratios'])
    r = res['ratios']
    assert r['tiles'] == res['processed'] == 6 and res['objects'] == 1
    assert r['ceiling'] == pytest.approx(r['raw_s'] / r['null_loop_s'])
    assert r['scaling_2_over_1'] == pytest.approx(r['null_tps_2'] / r['null_tps_1'])
    assert 'ceiling = pipeline / raw' in capsys.readouterr().out
