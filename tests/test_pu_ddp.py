"""PULoss under DDP (two gloo ranks on the CPU): the sums of the risk are all-reduced before
the clamp, so every rank computes the risk of the global batch, and the gradients that DDP
averages are those of that risk."""
import math
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from conftest import free_port
from projects.pu_detection.pu_loss import PULoss

# softmax RoI form, C = 1: logits (a, 0), so H(c,0) = softplus(a), H(c,1) = softplus(-a).
# Rank 0: positives a = 3, 3 (H0 = 3.0486 each), unlabeled a = -3 (H0 = 0.0486).
# pi = 0.9: rank 0 alone: (2 * 3.0486 + 0.0486) / 3 - 0.9 * 3.0486 = 2.0486 - 2.7437 < 0.
# DESCEND: rank 1 has three unlabeled a = 4 (H0 = 4.0181): global
#   (6.0972 + 0.0486 + 12.0542) / 6 - 2.7437 = 3.0333 - 2.7437 = 0.2896 > 0 (no clamp).
# ASCEND: rank 1 has three unlabeled a = 2 (H0 = 2.1269): global
#   (6.0972 + 0.0486 + 6.3807) / 6 - 2.7437 = 2.0878 - 2.7437 = -0.6559 < 0 (nnPU step),
#   while rank 1 alone (no positive) has the negative part 2.1269 > 0.
RANK0 = ([3., 3., -3.], [0, 0, 1])
RANK1 = dict(descend=([4., 4., 4.], [1, 1, 1]), ascend=([2., 2., 2.], [1, 1, 1]))
CASES = dict(descend=True, ascend='nnpu')


def _logits(a: list) -> torch.Tensor:
    return torch.stack([torch.tensor(a, dtype=torch.float64),
                        torch.zeros(len(a), dtype=torch.float64)], dim=1)


def _worker(rank: int, world: int, port: int, out: dict) -> None:
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=world)
    try:
        for case, nonnegative in CASES.items():
            a, labels = RANK0 if rank == 0 else RANK1[case]
            logits = _logits(a).requires_grad_(True)
            loss = PULoss(prior=0.9, nonnegative=nonnegative)
            value = loss(logits, torch.tensor(labels))
            value.backward()
            out[(rank, case)] = (value.item(), logits.grad.clone(),
                                 float(loss.last_stats['neg_part']))
    finally:
        dist.destroy_process_group()


def test_one_clamp_per_global_batch():
    manager = mp.Manager()
    out = manager.dict()
    # fork: the ranks inherit the imported modules (spawn would re-import mmdet in each)
    mp.start_processes(_worker, args=(2, free_port(), out), nprocs=2, join=True,
                       start_method='fork')
    for case, nonnegative in CASES.items():
        # reference: one process with the concatenated batch
        a = RANK0[0] + RANK1[case][0]
        labels = torch.tensor(RANK0[1] + RANK1[case][1])
        logits = _logits(a).requires_grad_(True)
        ref = PULoss(prior=0.9, nonnegative=nonnegative)
        value = ref(logits, labels)
        value.backward()
        neg = {'descend': 0.2896, 'ascend': -0.6559}[case]  # the arithmetic above
        assert float(ref.last_stats['neg_part']) == pytest.approx(neg, abs=1e-4)
        for rank in (0, 1):
            got, grad, got_neg = out[(rank, case)]
            # both ranks: the global risk and the global negative part (the clamp's input)
            assert got == pytest.approx(value.item(), rel=1e-12)
            assert got_neg == pytest.approx(neg, abs=1e-4)
            # gradient of the global risk w.r.t. this rank's rows, times the world size:
            # DDP averages the two ranks' parameter gradients back to the global gradient
            rows = slice(0, 3) if rank == 0 else slice(3, 6)
            assert torch.allclose(grad, 2 * logits.grad[rows], rtol=1e-10, atol=1e-12)
    # rank 0 alone would clamp in 'descend' (its negative part is below zero)
    h0 = [math.log1p(math.exp(x)) for x in RANK0[0]]
    assert sum(h0) / 3 - 0.9 * (h0[0] + h0[1]) / 2 < 0
