"""NegativePseudoLabelHook rounds outside a runner (stub runner, probabilities set by hand):
the fixed-threshold baseline combined with multi-NPL keeps "negative wins", and the round
record counts the negatives the round added."""
import json
import os.path as osp
from types import SimpleNamespace

import numpy as np
from mmengine.logging import MessageHub
from mmengine.runner import EpochBasedTrainLoop

import projects.negative_pseudo_labels.hooks as npl_hooks
from projects.negative_pseudo_labels import (NegativePseudoLabelHook, ProportionBagDataset,
                                             PseudoLabelSampler, fixed_threshold_labels,
                                             select_pseudo_labels)


class _Model:
    """Records the targets the hook hands over."""

    def set_pseudo_labels(self, positive, negative):
        self.positive, self.negative = positive.copy(), negative.copy()


def _confident_wrong(ds: ProportionBagDataset, conf: np.ndarray) -> np.ndarray:
    """Each weak patch predicted as the rarest class of its bag with confidence ``conf``."""
    weak = ds.weak_indices
    rare = ds.bag_ratios.argmin(1)[ds.patch_bag[weak]]
    c = ds.bag_ratios.shape[1]
    probs = np.repeat(((1 - conf) / (c - 1))[:, None], c, axis=1)
    probs[np.arange(len(weak)), rare] = conf
    return probs


def test_fixed_positives_with_multi_npl_never_contradict_a_negative(tiny_bags, tmp_path,
                                                                    monkeypatch):
    ds = ProportionBagDataset(ann_file='train.json', data_root=tiny_bags, pipeline=[])
    weak = ds.weak_indices
    runner = SimpleNamespace(
        train_dataloader=SimpleNamespace(dataset=ds, sampler=PseudoLabelSampler(ds, seed=0)),
        train_loop=EpochBasedTrainLoop.__new__(EpochBasedTrainLoop), epoch=1, iter=10,
        work_dir=str(tmp_path), message_hub=MessageHub.get_current_instance())
    model = _Model()
    monkeypatch.setattr(npl_hooks, '_model', lambda r: model)
    hook = NegativePseudoLabelHook(positive='fixed', negative='multi', threshold=0.9,
                                   save_rounds=False)
    hook.before_train(runner)
    # round 1: every weak patch confidently (0.90-0.99) predicted as its bag's rarest class,
    # so NS gives negatives to confident patches that the 0.9 threshold would make positive
    rng = np.random.default_rng(0)
    probs1 = _confident_wrong(ds, rng.uniform(0.9, 0.99, len(weak)))
    # round 2: the same classes, new confidences: multi-NPL re-picks some patches
    probs2 = _confident_wrong(ds, rng.uniform(0.9, 0.99, len(weak)))
    records = []
    old = None
    for probs in (probs1, probs2):
        monkeypatch.setattr(hook, 'predict', lambda r, idx, p=probs: p)
        hook.run_round(runner)
        pos, neg = hook.state['positive'][weak], hook.state['negative'][weak]
        # per bag: exactly select_pseudo_labels with the fixed threshold and the old mask
        for b in np.unique(ds.patch_bag[weak]):
            sel = ds.patch_bag[weak] == b
            ref_pos, ref_neg = select_pseudo_labels(
                probs[sel], ds.bag_ratios[b], None if old is None else old[sel],
                positive='fixed', threshold=0.9)
            assert pos[sel].tolist() == ref_pos.tolist()
            assert neg[sel].tolist() == ref_neg.tolist()
        # negative wins: no patch is positive and negative for the same class, although
        # the plain baseline labels every weak patch (all are >= 0.9)
        labelled = np.flatnonzero(pos >= 0)
        assert not neg[labelled, pos[labelled]].any()
        assert (fixed_threshold_labels(probs, 0.9) >= 0).all()
        masked = int(neg[np.arange(len(weak)), probs.argmax(1)].sum())
        assert masked > 0 and (pos < 0).sum() == masked
        records.append((neg & ~(np.zeros_like(neg) if old is None else old)).sum(0))
        old = neg.copy()
        # the model got the same targets; labelled patches keep their ground truth
        assert model.positive[weak].tolist() == pos.tolist()
        assert (model.positive[ds.gt_labels >= 0] == ds.gt_labels[ds.gt_labels >= 0]).all()
    with open(osp.join(str(tmp_path), 'npl_rounds.json')) as f:
        history = json.load(f)
    classes = list(ds.metainfo['classes'])
    for h, new in zip(history, records):
        assert [h['negative_new'][c] for c in classes] == new.tolist()
    # round 1 adds every negative it holds; round 2 holds those plus the ones it added
    assert records[0].sum() == sum(history[0]['negative'].values()) > 0
    assert records[0].sum() + records[1].sum() == sum(history[1]['negative'].values())
    assert records[1].sum() > 0
