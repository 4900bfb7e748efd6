"""Estimate the PU class prior pi of each Faster R-CNN stage from completely annotated images.

pi in eq. (12) of Zhao et al. 2021 is Pr(z = 1) over the *samples* a head is trained on
(sampled anchors in the RPN, sampled RoIs in the RoI head), not over pixels or cells. When
some images are completely annotated, it can be counted: run the head's own assigner and
sampler with the incomplete annotations of the config's training pipeline, and count the
sampled "background" samples that the complete annotation says are positive (hidden
positives, IoU with a complete-annotation box >= the assigner's ``pos_iou_thr``):

    pi = (labelled positives + hidden positives) / sampled

pooled over images and ``--repeats`` draws of the random sampler. The RPN needs no weights
(its targets depend on the anchors only); the RoI head needs proposals, so it is measured
only with ``--checkpoint`` (a detector trained on the incomplete labels, e.g. the CE
baseline). The paper instead picks pi by the best validation recall over a grid
(tools/analysis_tools/select_prior.py); this tool tells where that grid should lie.

    python tools/analysis_tools/estimate_prior.py \\
        configs/pu_detection/faster-rcnn_r18-c32_fpn_pu_500i_synthetic-sparse30.py \\
        --checkpoint work_dirs/pu_bench/ce/iter_500.pth

The complete annotation is the train split's ``ann_file`` with the pipeline's
``SparsifyAnnotations`` removed (synthetic / mnfinder configs delete annotations in the
pipeline), or ``--full-ann`` (a COCO file listing the same images, e.g. MITOS-ATYPIA-14's
``annotations/group_fold1.json`` for a training fold). Random augmentations (flip, crop)
are removed so that both annotations stay in the same coordinates.
"""
import argparse
import copy
import os.path as osp
import sys
from typing import Dict, List, Optional

import numpy as np
import torch
from mmengine.config import DictAction
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint

import projects  # noqa: F401
from projects.common.io import write_json
from projects.common.layout import track
from projects.common.runner_utils import load_config

RANDOM_TRANSFORMS = ('RandomFlip', 'RandomCrop', 'RandomResize', 'RandomAffine',
                     'PhotoMetricDistortion', 'RandomShift')


def _pipelines(pipeline: List[dict], source: str) -> tuple:
    """(sparse, full) pipelines: random transforms dropped; full also without sparsify."""
    sparse = [copy.deepcopy(t) for t in pipeline if t['type'] not in RANDOM_TRANSFORMS]
    full = [t for t in sparse if t['type'] != 'SparsifyAnnotations']
    if not any(t['type'] == 'PackDetInputs' for t in sparse):
        raise ValueError(f'{source}: the train pipeline has no PackDetInputs')
    return sparse, full


def _box_tensor(boxes) -> torch.Tensor:
    return boxes.tensor if hasattr(boxes, 'tensor') else torch.as_tensor(boxes)


def _hidden(neg_boxes: torch.Tensor, full_gt: torch.Tensor, thr: float) -> int:
    """Number of negative samples whose best IoU with a complete-annotation box is >= thr."""
    from mmdet.structures.bbox import bbox_overlaps
    if len(neg_boxes) == 0 or len(full_gt) == 0:
        return 0
    return int((bbox_overlaps(neg_boxes, full_gt).max(1).values >= thr).sum())


def count_image(model, sparse: dict, full_gt: torch.Tensor, with_roi: bool) -> Dict[str, list]:
    """[labelled positives, hidden positives, sampled] of the RPN (and RoI head) on one image."""
    data = model.data_preprocessor(dict(inputs=[sparse['inputs']],
                                        data_samples=[sparse['data_samples']]), False)
    sample = data['data_samples'][0]
    metas = [sample.metainfo]
    gts = [sample.gt_instances]
    out = {}
    with torch.no_grad():
        x = model.extract_feat(data['inputs'])
        head = model.rpn_head
        cls_scores, bbox_preds = head(x)
        sizes = [c.shape[-2:] for c in cls_scores]
        anchors, valid = head.get_anchors(sizes, metas, device=cls_scores[0].device)
        rpn_gts = [copy.deepcopy(g) for g in gts]
        for g in rpn_gts:
            g.labels = torch.zeros_like(g.labels)  # the RPN is class-agnostic
        labels, weights = head.get_targets(anchors, valid, rpn_gts, metas)[:2]
        labels, weights = torch.cat(labels, 1)[0], torch.cat(weights, 1)[0]
        all_anchors = torch.cat([_box_tensor(a) for a in anchors[0]])
        sampled = weights > 0
        pos = sampled & (labels < head.num_classes)
        neg = sampled & (labels == head.num_classes)
        thr = model.train_cfg.rpn.assigner.pos_iou_thr
        out['rpn'] = [int(pos.sum()), _hidden(all_anchors[neg], full_gt, thr),
                      int(sampled.sum())]
        if with_roi:
            proposals = head.predict_by_feat(cls_scores, bbox_preds, batch_img_metas=metas,
                                             cfg=model.train_cfg.rpn_proposal, rescale=False)
            roi = model.roi_head
            props = proposals[0]
            props.priors = props.pop('bboxes')
            assign = roi.bbox_assigner.assign(props, gts[0])
            res = roi.bbox_sampler.sample(assign, props, gts[0], feats=[lvl[0][None] for lvl in x])
            thr = model.train_cfg.rcnn.assigner.pos_iou_thr
            neg_boxes = _box_tensor(res.neg_priors)
            out['roi'] = [len(res.pos_inds), _hidden(neg_boxes, full_gt, thr),
                          len(res.pos_inds) + len(res.neg_inds)]
    return out


def estimate(cfg, checkpoint: Optional[str] = None, full_ann: Optional[str] = None,
             repeats: int = 3, max_images: Optional[int] = None, seed: int = 0,
             progress: bool = True) -> Dict[str, dict]:
    """Pooled counts and pi per head (``rpn``, and ``roi`` with a checkpoint)."""
    if repeats < 1:
        raise ValueError(f'--repeats must be >= 1, got {repeats}')
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    from mmdet.registry import DATASETS, MODELS
    ds_cfg = copy.deepcopy(cfg.train_dataloader.dataset)
    while ds_cfg.get('dataset') is not None and ds_cfg.get('pipeline') is None:
        ds_cfg = ds_cfg.dataset  # wrappers (RepeatDataset, ...)
    sparse_pipe, full_pipe = _pipelines(ds_cfg.pipeline, cfg.filename or 'config')
    sparse_ds = DATASETS.build(dict(ds_cfg, pipeline=sparse_pipe, test_mode=False))
    full_cfg = dict(ds_cfg, pipeline=full_pipe, test_mode=False)
    if full_ann is not None:
        if not osp.isfile(full_ann):
            raise FileNotFoundError(f'{full_ann}: --full-ann file not found')
        full_cfg['ann_file'] = osp.abspath(full_ann)
    full_ds = DATASETS.build(full_cfg)
    full_index = {osp.basename(full_ds.get_data_info(i)['img_path']): i
                  for i in range(len(full_ds))}
    model = MODELS.build(cfg.model)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint, map_location='cpu', logger='silent')
    elif 'Pretrained' not in str(cfg.model.get('backbone', {}).get('init_cfg')):
        model.init_weights()
    model.eval()
    n = len(sparse_ds) if max_images is None else min(max_images, len(sparse_ds))
    heads = ['rpn', 'roi'] if checkpoint is not None else ['rpn']
    totals = {h: np.zeros(3, np.int64) for h in heads}
    torch.manual_seed(seed)
    np.random.seed(seed)
    for i in track(range(n), progress):
        name = osp.basename(sparse_ds.get_data_info(i)['img_path'])
        if name not in full_index:
            raise ValueError(f'{full_cfg["ann_file"]}: image {name} of the training set is '
                             'not listed in the complete annotation')
        full = full_ds[full_index[name]]['data_samples']
        full_gt = _box_tensor(full.gt_instances.bboxes).float()
        sparse = sparse_ds[i]
        for _ in range(repeats):
            for head, counts in count_image(model, sparse, full_gt, checkpoint is not None).items():
                totals[head] += counts
    result = {}
    for head, (pos, hidden, sampled) in totals.items():
        result[head] = dict(labelled_pos=int(pos), hidden_pos=int(hidden), sampled=int(sampled),
                            labelled_fraction=float(pos / max(sampled, 1)),
                            prior=float((pos + hidden) / max(sampled, 1)))
    return result


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Estimate the PU prior pi (share of true positives among sampled anchors '
        '/ RoIs) from completely annotated training images')
    parser.add_argument('config')
    parser.add_argument('--checkpoint', help='weights for the RoI-head estimate (proposals)')
    parser.add_argument('--full-ann', help='complete COCO annotation of the training images '
                        '(default: the train ann_file without the pipeline\'s sparsification)')
    parser.add_argument('--repeats', type=int, default=3, help='sampler draws per image')
    parser.add_argument('--max-images', type=int, default=None)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--out', help='write the estimates as JSON')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, e.g. train_dataloader.batch_size=1')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    res = estimate(cfg, args.checkpoint, args.full_ann, args.repeats, args.max_images,
                   args.seed)
    print(f'{"head":<5} {"sampled":>8} {"labelled":>9} {"hidden":>7} '
          f'{"labelled/sampled":>17} {"pi":>7}')
    for head, r in res.items():
        print(f'{head:<5} {r["sampled"]:>8} {r["labelled_pos"]:>9} {r["hidden_pos"]:>7} '
              f'{r["labelled_fraction"]:>17.4f} {r["prior"]:>7.4f}')
    if 'roi' not in res:
        print('(RoI head: pass --checkpoint to measure it on the trained RPN\'s proposals)')
    if args.out:
        write_json(args.out, dict(config=args.config, checkpoint=args.checkpoint, **res))
        print(f'wrote {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
