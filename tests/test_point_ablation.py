"""tools/analysis_tools/point_ablation.py: a point-supervision config trained in a child
process, scored once on the test split, tabulated, and reused on --resume."""
import json
import os.path as osp
import sys

import pytest

sys.path.insert(0, osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'tools',
                            'analysis_tools'))
import point_ablation as pa  # noqa: E402

from conftest import REPO, run_folders  # noqa: E402

CFG = osp.join(REPO, 'configs/point_supervision/scnet_r18-c32_vor-clu_400i_synthetic.py')


def _options(data: str) -> list:
    opts = ['train_cfg.max_iters=2', 'param_scheduler.0.milestones=[1]',
            'train_dataloader.batch_size=2',
            'train_dataloader.dataset.pipeline.4.label_dir=None',
            'train_dataloader.dataset.pipeline.5.label_dir=None',
            'train_dataloader.dataset.pipeline.9.crop_size=(64,64)',
            'train_dataloader.dataset.pipeline.8.ratio_range=(1.0,1.25)',
            'model.backbone.encoder.base_channels=8', 'model.backbone.encoder.stem_channels=8',
            'model.backbone.decoder_channels=[32,16,16,8,8]',
            'model.backbone.stem_channels=[8,8]', 'model.test_cfg.crop_size=64',
            'model.test_cfg.overlap=16',
            # a child that validated on the validation split would crash on this folder
            'val_dataloader.dataset.data_prefix.img_path=img_dir/absent']
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        opts += [f'{loader}.dataset.data_root={data}/', f'{loader}.num_workers=0',
                 f'{loader}.persistent_workers=False']
    return opts


def test_ablation_scores_the_test_split_and_resumes(tmp_path, tiny_synthetic, monkeypatch,
                                                    capsys):
    monkeypatch.setenv('PYTHONWARNINGS', 'ignore')
    work = str(tmp_path / 'abl')
    out = pa.main([CFG, '--work-dir', work, '--cfg-options', *_options(tiny_synthetic)])
    row, = out['rows']
    assert not row['reused']
    child = osp.join(work, osp.splitext(osp.basename(CFG))[0])
    path = osp.join(child, run_folders(child)[-1], 'vis_data', 'scalars.json')
    with open(path) as f:
        vals = [json.loads(line) for line in f if line.strip()]
    vals = [r for r in vals if 'iter' not in r]
    assert len(vals) == 1  # one validation, at the end
    for key, _ in pa.COLUMNS:
        assert row['metrics'][key] == pytest.approx(vals[0][key])
    table = open(osp.join(work, 'point_ablation.md')).read()
    cells = [c.strip() for c in table.splitlines()[2].split('|')[1:-1]]
    assert cells[0] == osp.splitext(osp.basename(CFG))[0]
    assert [float(c) for c in cells[1:5]] == pytest.approx(
        [round(100 * vals[0][k], 2) for k, _ in pa.COLUMNS], abs=1e-9)
    # --resume: the finished run is reused, nothing is trained
    again = pa.main([CFG, '--work-dir', work, '--resume', '--cfg-options',
                     *_options(tiny_synthetic)])
    assert again['rows'][0]['reused']
    assert again['rows'][0]['metrics'] == row['metrics']


def test_bad_arguments_fail_before_training(tmp_path):
    with pytest.raises(ValueError, match='--jobs'):
        pa.main([CFG, '--work-dir', str(tmp_path), '--jobs', '0'])
    with pytest.raises(ValueError, match='distinct'):
        pa.main([CFG, CFG, '--work-dir', str(tmp_path)])
    with pytest.raises(FileNotFoundError, match='absent.py'):
        pa.main(['absent.py', '--work-dir', str(tmp_path)])
