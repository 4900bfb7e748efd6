"""The PU-detection data configs delete annotations on train / val and keep test complete."""
import json
import os.path as osp

import pytest
from mmengine.config import Config
from mmengine.registry import DefaultScope

import projects  # noqa: F401
from projects.common.sparsify import keep_count

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CFG = osp.join(REPO, 'configs', 'pu_detection', 'faster-rcnn_r50_fpn_ce_2k_synthetic-{}.py')


def _counts(cfg: Config, split: str, root: str) -> dict:
    """file name -> number of GT boxes after the split's pipeline."""
    from mmdet.registry import DATASETS
    ds_cfg = cfg[f'{split}_dataloader'].dataset
    ds_cfg.data_root = root + '/'
    # no random flip needed to count boxes, but it is harmless: keep the pipeline as is
    with DefaultScope.overwrite_default_scope('mmdet'):
        dataset = DATASETS.build(ds_cfg)
        return {osp.basename(dataset[i]['data_samples'].img_path):
                len(dataset[i]['data_samples'].gt_instances) for i in range(len(dataset))}


def _annotated(root: str, split: str) -> dict:
    """file name -> number of annotations in the COCO file (read independently)."""
    with open(osp.join(root, 'annotations', f'{split}.json')) as f:
        coco = json.load(f)
    n = {im['id']: 0 for im in coco['images']}
    for ann in coco['annotations']:
        n[ann['image_id']] += 1
    return {im['file_name']: n[im['id']] for im in coco['images']}


@pytest.mark.parametrize('variant', ['sparse30', 'one-per-patch'])
def test_train_and_val_are_sparsified_and_test_is_complete(variant, tiny_synthetic):
    cfg = Config.fromfile(CFG.format(variant))
    for split, ann in (('train', 'train'), ('val', 'val'), ('test', 'test')):
        full = _annotated(tiny_synthetic, ann)
        got = _counts(cfg, split, tiny_synthetic)
        assert set(got) == set(full)
        assert sum(full.values()) > 0
        for name, n in full.items():
            if split == 'test':
                expected = n
            elif variant == 'sparse30':
                expected = keep_count(n, 0.3)
            else:  # the fixture's 64 px tiles fit in one 128 px patch: one annotation left
                expected = min(n, 1)
            assert got[name] == expected, (variant, split, name)
