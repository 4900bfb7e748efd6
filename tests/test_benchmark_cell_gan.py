"""Smoke test of tools/analysis_tools/benchmark_cell_gan.py: both loops run the config's
networks (the Q path and the Q optimiser follow the config) and the ratio is printed."""
import re

from conftest import run_tool

CFG = 'configs/cell_gan/cell-infowgan_res-c128_z32-c5_10e_synthetic-cells.py'


def test_benchmark_smoke():
    proc = run_tool(['tools/analysis_tools/benchmark_cell_gan.py', CFG, '--channels', '4',
                     '--batch', '2', '--iters', '1', '--repeats', '1', '--threads', '1'])
    m = re.search(r'ours \(train_step \+ OptimWrapperDict\) ([\d.]+), plain PyTorch loop '
                  r'([\d.]+); ratio ours / plain = ([\d.]+)', proc.stdout)
    assert m, proc.stdout
    ours, plain, ratio = (float(v) for v in m.groups())
    assert ours > 0 and plain > 0
    # every printed value is rounded to 3 places (+- 0.0005): the ratio lies in the
    # interval the rounded times allow
    h = 0.0005
    assert (ours - h) / (plain + h) - h <= ratio <= (ours + h) / max(plain - h, 1e-9) + h
