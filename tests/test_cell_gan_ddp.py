"""CellInfoWGAN under DDP (the configs' MMSeparateDistributedDataParallel, two gloo ranks on
the CPU): ranks that see different crops and draw different noise end every step with the
same weights, i.e. the critic's gradient penalty, the G step and the Q step all reduce
their gradients across ranks."""
import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from conftest import free_port

ADAM = dict(type='OptimWrapper', optimizer=dict(type='Adam', lr=1e-3, betas=(0.5, 0.9)))


def _worker(rank: int, world: int, port: int, out: dict) -> None:
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=world)
    try:
        from mmengine.model import MMSeparateDistributedDataParallel
        from mmengine.optim import build_optim_wrapper

        from projects.cell_gan import CellInfoWGAN
        torch.manual_seed(0)  # same initial weights on both ranks
        model = CellInfoWGAN(z_dim=4, num_categories=3, channels=4, n_critic=2)
        start = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
        ddp = MMSeparateDistributedDataParallel(model, broadcast_buffers=False,
                                                find_unused_parameters=True)
        optim = build_optim_wrapper(ddp, dict(
            constructor='GANOptimWrapperConstructor', generator=ADAM, discriminator=ADAM,
            auxiliary=dict(ADAM, modules=['auxiliary', 'generator', 'discriminator'])))
        torch.manual_seed(100 + rank)  # different crops and noise per rank
        logs = []
        for _ in range(4):  # critic, critic + G + Q, critic, critic + G + Q
            data = dict(inputs=[torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
                                for _ in range(4)])
            logs.append(ddp.train_step(data, optim))
        params = torch.cat([p.detach().flatten() for p in model.parameters()])
        gathered = [torch.zeros_like(params) for _ in range(world)]
        dist.all_gather(gathered, params)
        out[rank] = dict(start=start, gathered=gathered,
                         losses=[float(log['loss_d']) for log in logs],
                         g_steps=sum('loss_g' in log for log in logs))
    finally:
        dist.destroy_process_group()


def test_ranks_stay_in_sync():
    manager = mp.Manager()
    out = manager.dict()
    mp.spawn(_worker, args=(2, free_port(), out), nprocs=2, join=True)
    r0, r1 = out[0], out[1]
    assert r0['g_steps'] == r1['g_steps'] == 2
    # the ranks saw different data: their critic losses differ ...
    assert r0['losses'] != r1['losses']
    # ... yet the weights moved and are identical on both ranks after 4 steps
    assert not torch.equal(r0['gathered'][0], r0['start'])
    assert torch.allclose(r0['gathered'][0], r0['gathered'][1], atol=1e-6, rtol=0)
