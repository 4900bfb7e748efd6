"""Time one GAN iteration (5 critic + 1 generator + 1 Q step) of CellInfoWGAN through
``model.train_step`` with its OptimWrapperDict, against the same networks trained by a
plain PyTorch loop written here (torch.optim.Adam, no wrappers), in the same run.

    python tools/analysis_tools/benchmark_cell_gan.py \
        configs/cell_gan/cell-infowgan_res-c128_z32-c5_10e_synthetic-cells.py \
        [--channels 64] [--batch 64] [--iters 5] [--repeats 3]

Both sides start from identical weights, see the same real batches and alternate
(ours, plain, ours, ...) so that machine load hits both alike; the ratio of the medians
is printed with the absolute times (target: <= 1.1).
"""
import argparse
import copy
import statistics
import time
from typing import Callable, List

import torch

from projects.common.runner_utils import load_config


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='a CellInfoWGAN config')
    parser.add_argument('--channels', type=int, default=None,
                        help='override the width of G / D / Q (default: the config\'s)')
    parser.add_argument('--batch', type=int, default=64, help='real batch size (64)')
    parser.add_argument('--iters', type=int, default=5,
                        help='GAN iterations per timed block (each 5 D + 1 G + 1 Q)')
    parser.add_argument('--repeats', type=int, default=3, help='timed blocks per side')
    parser.add_argument('--threads', type=int, default=None, help='torch threads')
    args = parser.parse_args()
    for name in ('batch', 'iters', 'repeats'):
        if getattr(args, name) < 1:
            parser.error(f'--{name} must be >= 1')
    return args


def plain_loop(model, batches: List[torch.Tensor], lr: float, betas: tuple,
               q_modules: List[str]) -> Callable:
    """The same schedule written directly in PyTorch (the authors' style of loop); the Q
    optimiser holds the parameters of ``q_modules`` (the config's auxiliary modules)."""
    from projects.cell_gan.losses import (critic_loss, generator_loss, gradient_penalty,
                                          q_loss, sample_latent)
    g, d, q = model.generator, model.discriminator, model.auxiliary
    opt_d = torch.optim.Adam(d.parameters(), lr=lr, betas=betas)
    opt_g = torch.optim.Adam(g.parameters(), lr=lr, betas=betas)
    shared = {id(p): p for name in q_modules for p in getattr(model, name).parameters()}
    opt_q = torch.optim.Adam(list(shared.values()), lr=lr, betas=betas)

    def noise(n):
        return sample_latent(n, model.z_dim, model.num_categories)

    def one_iteration() -> None:
        for real in batches:
            real = (real.float() - 127.5) / 127.5
            z, c = noise(real.shape[0])
            with torch.no_grad():
                fake = g(z, c)
            gp = gradient_penalty(lambda x: d(x)[0], real, fake)
            loss = critic_loss(d(real)[0], d(fake)[0], gp, model.lambda1)
            opt_d.zero_grad()
            loss.backward()
            opt_d.step()
        n = batches[0].shape[0]
        for p in d.parameters():
            p.requires_grad_(False)
        loss = generator_loss(d(g(*noise(n)))[0])
        opt_g.zero_grad()
        loss.backward()
        opt_g.step()
        for p in d.parameters():
            p.requires_grad_(True)
        z, c = noise(n)
        fake = g(z, c)
        logits = q(d(fake)[1]) if model.q_shares_trunk else q(fake)
        loss = q_loss(logits, c, model.lambda2)
        opt_q.zero_grad()
        loss.backward()
        opt_q.step()

    return one_iteration


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope

    import projects.cell_gan  # noqa: F401
    from mmseg.registry import MODELS
    cfg = load_config(args.config)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    if args.channels:
        cfg.model.channels = args.channels
    torch.manual_seed(0)
    ours = MODELS.build(cfg.model)
    plain = copy.deepcopy(ours)
    optim = build_optim_wrapper(ours, copy.deepcopy(cfg.optim_wrapper))
    adam = cfg.optim_wrapper.discriminator.optimizer
    n_critic, size = ours.n_critic, ours.img_size
    batches = [torch.randint(0, 256, (args.batch, 3, size, size), dtype=torch.uint8)
               for _ in range(n_critic)]
    datas = [dict(inputs=list(b)) for b in batches]
    q_modules = list(cfg.optim_wrapper.auxiliary.get('modules', ['auxiliary']))
    plain_iteration = plain_loop(plain, batches, adam.lr, tuple(adam.betas), q_modules)

    def ours_iteration() -> None:
        for data in datas:
            ours.train_step(data, optim)

    print(f'CellInfoWGAN, {cfg.model.channels} channels, batch {args.batch}, '
          f'{n_critic} critic + 1 G + 1 Q steps per iteration, '
          f'{torch.get_num_threads()} threads')
    ours_iteration()  # warm-up (allocations, Adam state) on both sides
    plain_iteration()
    times = dict(ours=[], plain=[])
    for r in range(args.repeats):
        for name, fn in (('ours', ours_iteration), ('plain', plain_iteration)):
            t0 = time.perf_counter()
            for _ in range(args.iters):
                fn()
            times[name].append((time.perf_counter() - t0) / args.iters)
        print(f'  block {r + 1}/{args.repeats}: ours {times["ours"][-1]:.3f} s, '
              f'plain {times["plain"][-1]:.3f} s per GAN iteration')
    ours_t, plain_t = (statistics.median(times[k]) for k in ('ours', 'plain'))
    print(f'median s per GAN iteration: ours (train_step + OptimWrapperDict) {ours_t:.3f}, '
          f'plain PyTorch loop {plain_t:.3f}; ratio ours / plain = {ours_t / plain_t:.3f} '
          '(target <= 1.1)')


if __name__ == '__main__':
    main()
