"""NegativePseudoLabelHook: the rounds of positive / negative pseudo labelling."""
import copy
import os.path as osp
from typing import List, Optional

import numpy as np
import torch
from mmengine.dataset import Compose, pseudo_collate
from mmengine.dist import all_gather_object, get_dist_info, is_main_process
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.registry import DefaultScope
from mmengine.runner import EpochBasedTrainLoop, Runner
from torch.utils.data import DataLoader, Subset

from projects.common.io import atomic_write, read_json, write_json
from projects.common.layout import track
from projects.common.registry import HOOKS, register
from projects.common.runner_utils import buffers_from_rank0, hook_model
from .classifier import PatchClassifier
from .dataset import ProportionBagDataset
from .sampler import PseudoLabelSampler
from .selection import bag_sae, select_pseudo_labels_bags, training_pool

CKPT_KEY = 'negative_pseudo_labels'
_POSITIVE = (None, 'fixed', 'adaptive')
_NEGATIVE = (None, 'single', 'multi')


def _model(runner: Runner) -> PatchClassifier:
    return hook_model(runner, PatchClassifier, 'NegativePseudoLabelHook')


@register(HOOKS)
class NegativePseudoLabelHook(Hook):
    """Positive / negative pseudo labels from bag class proportions (Tokunaga et al. 2020).

    At the start of epoch ``begin`` and every ``interval`` epochs after it (one *round*),
    the model predicts every patch of the proportion-only bags, and per bag:

    * ``positive='adaptive'``: adaptive pseudo labelling, PS_c of eq. (5) (sect. 4);
      ``'fixed'``: the baseline, max probability >= ``threshold`` (Lee 2013; paper 0.95);
      ``None``: no positive pseudo labels;
    * ``negative='single'``: NS_c of eq. (1), fresh each round (sect. 3.2); ``'multi'``:
      accumulated over rounds (multi-NPL, sect. 3.3, weighted by eq. (4) in the loss);
      ``None``: none.

    Negative wins in every combination: a patch that carries negative label c never gets
    positive label c (with ``'fixed'`` the positive is masked, see
    :func:`~projects.negative_pseudo_labels.selection.select_pseudo_labels_bags`).

    The training pool becomes labelled + positive pseudo-labelled patches (rare classes
    oversampled when ``oversample``) + negative-only patches once
    (:func:`~projects.negative_pseudo_labels.selection.training_pool`); the model gets the
    targets (:meth:`PatchClassifier.set_pseudo_labels`). Counts per class and kind are
    logged each round and appended to ``<work_dir>/npl_rounds.json`` (``negative``: the
    negative labels held after the round; ``negative_new``: those the patches did not hold
    before it; the totals and the mean SAE of the bags also go to the training log as
    ``npl_pos``, ``npl_neg``, ``npl_sae``); with ``save_rounds`` each round's labels go to
    ``<work_dir>/npl_round_<k>.npz``. The state (labels, negatives, round) is stored
    in the checkpoint, so ``--resume`` continues with the same labels and pool. Before the
    first round nothing changes: the run is the supervised one (sampler pool and targets
    from the labelled patches).

    Predictions use ``pipeline`` (default: the ``val_dataloader`` pipeline of the config)
    in eval mode, on ``batch_size`` patches at a time; in distributed runs each rank
    predicts a share with rank 0's batch-norm statistics (the checkpoint's) and the
    probabilities are gathered, so every rank selects the same.
    """

    priority = 'NORMAL'

    def __init__(self, positive: Optional[str] = 'adaptive', negative: Optional[str] = 'multi',
                 threshold: float = 0.95, begin: int = 0, interval: int = 1,
                 oversample: bool = True, pipeline: Optional[List[dict]] = None,
                 batch_size: int = 64, num_workers: int = 0, save_rounds: bool = True,
                 seed: int = 0) -> None:
        if positive not in _POSITIVE:
            raise ValueError(f'NegativePseudoLabelHook: positive={positive!r}; expected one of '
                             f'{_POSITIVE}')
        if negative not in _NEGATIVE:
            raise ValueError(f'NegativePseudoLabelHook: negative={negative!r}; expected one of '
                             f'{_NEGATIVE}')
        if positive is None and negative is None:
            raise ValueError('NegativePseudoLabelHook: positive and negative are both None: '
                             'nothing to do (remove the hook for supervised training)')
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f'NegativePseudoLabelHook: threshold={threshold} must lie in (0, 1]')
        if begin < 0 or interval < 1:
            raise ValueError(f'NegativePseudoLabelHook: begin={begin} must be >= 0 and '
                             f'interval={interval} >= 1')
        self.positive_mode, self.negative_mode = positive, negative
        self.threshold = threshold
        self.begin, self.interval = begin, interval
        self.oversample = oversample
        self.pipeline_cfg = pipeline
        self.batch_size, self.num_workers = batch_size, num_workers
        self.save_rounds = save_rounds
        self.seed = seed
        self.state: Optional[dict] = None  # positive (N,), negative (N, C), round, last_epoch

    # ------------------------------------------------------------------ set-up
    @staticmethod
    def _dataset(runner: Runner) -> ProportionBagDataset:
        dataset = runner.train_dataloader.dataset
        if not isinstance(dataset, ProportionBagDataset):
            raise TypeError(f'NegativePseudoLabelHook needs a ProportionBagDataset as the '
                            f'training set, got {type(dataset).__name__}')
        return dataset

    @staticmethod
    def _sampler(runner: Runner) -> PseudoLabelSampler:
        sampler = runner.train_dataloader.sampler
        if not isinstance(sampler, PseudoLabelSampler):
            raise TypeError('NegativePseudoLabelHook: set train_dataloader.sampler = '
                            f"dict(type='PseudoLabelSampler'); got {type(sampler).__name__}")
        return sampler

    def before_train(self, runner: Runner) -> None:
        if not isinstance(runner.train_loop, EpochBasedTrainLoop):
            raise TypeError('NegativePseudoLabelHook: rounds are counted in epochs; use '
                            "train_cfg = dict(type='EpochBasedTrainLoop', ...)")
        dataset = self._dataset(runner)
        self._sampler(runner)
        num_classes = len(dataset.metainfo['classes'])
        if self.state is None:
            self.state = dict(positive=dataset.gt_labels.copy(),
                              negative=np.zeros((len(dataset), num_classes), bool),
                              round=0, last_epoch=-1)
        elif self.state['positive'].shape != (len(dataset), ):
            raise ValueError(f'NegativePseudoLabelHook: the checkpoint holds pseudo labels for '
                             f'{self.state["positive"].shape[0]} patches, the training set has '
                             f'{len(dataset)}')
        if self.state['round'] > 0:  # resumed after a round: same targets and pool again
            self._apply(runner)

    def before_train_epoch(self, runner: Runner) -> None:
        epoch = runner.epoch
        if epoch < self.begin or (epoch - self.begin) % self.interval != 0 or \
                self.state['last_epoch'] == epoch:
            return
        self.run_round(runner)
        self.state['last_epoch'] = epoch

    # ------------------------------------------------------------------ rounds
    def _compose(self, runner: Runner) -> Compose:
        cfg = self.pipeline_cfg
        if cfg is None:
            cfg = runner.cfg.get('val_dataloader', {}).get('dataset', {}).get('pipeline')
            if cfg is None:
                raise ValueError('NegativePseudoLabelHook: give pipeline= or a '
                                 'val_dataloader.dataset.pipeline in the config')
        with DefaultScope.overwrite_default_scope(runner.cfg.get('default_scope', 'mmseg')):
            return Compose(copy.deepcopy(cfg))

    @torch.no_grad()
    def predict(self, runner: Runner, indices: np.ndarray) -> np.ndarray:
        """Softmax probabilities (len(indices), C) of the given training patches."""
        dataset = copy.copy(self._dataset(runner))
        dataset.pipeline = self._compose(runner)
        rank, world = get_dist_info()
        share = indices[rank::world]
        loader = DataLoader(Subset(dataset, share.tolist()), batch_size=self.batch_size,
                            shuffle=False, num_workers=self.num_workers,
                            collate_fn=pseudo_collate)
        model = _model(runner)
        buffers_from_rank0(model)  # the shares of all ranks come from one model
        was_training = model.training
        model.eval()
        parts = []
        try:
            for batch in track(loader, enabled=is_main_process()):
                data = model.data_preprocessor(batch, False)
                parts.append(model(data['inputs'], mode='tensor').softmax(1).float().cpu())
        finally:
            model.train(was_training)
        probs = torch.cat(parts).numpy() if parts else np.zeros((0, model.num_classes))
        out = np.zeros((len(indices), model.num_classes), np.float64)
        for r, part in enumerate(all_gather_object(probs)):  # rank r had indices[r::world]
            out[r::world] = part
        return out

    def run_round(self, runner: Runner) -> None:
        """Predict the proportion-only patches, select pseudo labels, update the pool."""
        dataset = self._dataset(runner)
        classes = list(dataset.metainfo['classes'])
        weak = dataset.weak_indices
        if weak.size == 0:
            raise ValueError('NegativePseudoLabelHook: the training set has no proportion-only '
                             "bag (bags='all' and train.json with labelled: false bags)")
        probs = self.predict(runner, weak)
        bag = dataset.patch_bag[weak]
        before = self.state['negative'][weak].copy()
        old_neg = before if self.negative_mode == 'multi' else None
        # 'fixed' positives are masked where the patch carries a negative of that class
        pos, neg = select_pseudo_labels_bags(
            probs, bag, dataset.bag_ratios, old_neg, positive=self.positive_mode or 'none',
            negative=self.negative_mode is not None, threshold=self.threshold)
        self.state['positive'][weak] = pos
        self.state['negative'][weak] = neg
        self.state['round'] += 1
        self._apply(runner)
        self._log(runner, classes, probs, bag, dataset.bag_ratios, pos, neg, weak,
                  neg & ~before)

    def _apply(self, runner: Runner) -> None:
        _model(runner).set_pseudo_labels(self.state['positive'], self.state['negative'])
        num_classes = self.state['negative'].shape[1]
        self._sampler(runner).set_pool(training_pool(
            self.state['positive'], self.state['negative'], num_classes, self.oversample,
            self.seed + self.state['round']))

    def _log(self, runner: Runner, classes, probs, bag, ratios, pos, neg, weak,
             new_neg) -> None:
        num_classes = len(classes)
        sae = float(np.nanmean(bag_sae(probs.argmax(1), bag, ratios)))
        n_pos = np.bincount(pos[pos >= 0], minlength=num_classes)
        n_neg = neg.sum(0)
        record = dict(round=self.state['round'], epoch=runner.epoch, iter=runner.iter,
                      weak_patches=int(weak.size), mean_sae=round(sae, 6),
                      positive={c: int(n) for c, n in zip(classes, n_pos)},
                      negative={c: int(n) for c, n in zip(classes, n_neg)},
                      negative_new={c: int(n) for c, n in zip(classes, new_neg.sum(0))},
                      pool=int(len(self._sampler(runner).pool)))
        hub = runner.message_hub
        hub.update_scalar('train/npl_sae', sae)
        hub.update_scalar('train/npl_pos', float(n_pos.sum()))
        hub.update_scalar('train/npl_neg', float(n_neg.sum()))
        table = ', '.join(f'{c}: +{a} / -{b} ({d} new)' for c, a, b, d in
                          zip(classes, n_pos, n_neg, new_neg.sum(0)))
        print_log(f'NegativePseudoLabelHook round {self.state["round"]} (epoch {runner.epoch}): '
                  f'{weak.size} proportion-only patches, mean SAE {sae:.3f}; pseudo labels '
                  f'(positive / negative) {table}; training pool {record["pool"]}',
                  logger='current')
        if not is_main_process():
            return
        path = osp.join(runner.work_dir, 'npl_rounds.json')
        history = [r for r in (read_json(path, 'round history') if osp.isfile(path) else [])
                   if r['round'] < record['round']]  # a resumed run redoes later rounds
        history.append(record)
        write_json(path, history)
        if self.save_rounds:
            out = osp.join(runner.work_dir, f'npl_round_{self.state["round"]}.npz')

            def write(tmp: str) -> None:
                with open(tmp, 'wb') as f:
                    np.savez_compressed(f, indices=weak, probs=probs.astype(np.float32),
                                        positive=pos, negative=neg)

            atomic_write(out, write)

    # -------------------------------------------------------------- checkpoint
    def before_save_checkpoint(self, runner: Runner, checkpoint: dict) -> None:
        if self.state is not None:
            checkpoint[CKPT_KEY] = {k: (v.copy() if isinstance(v, np.ndarray) else v)
                                    for k, v in self.state.items()}

    def after_load_checkpoint(self, runner: Runner, checkpoint: dict) -> None:
        state = checkpoint.get(CKPT_KEY)
        if state is None:
            return
        self.state = dict(positive=np.asarray(state['positive'], np.int64),
                          negative=np.asarray(state['negative'], bool),
                          round=int(state['round']), last_epoch=int(state['last_epoch']))
