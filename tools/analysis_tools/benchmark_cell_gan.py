"""Two benchmarks of CellInfoWGAN.

Speed (default): time one GAN iteration (5 critic + 1 generator + 1 Q step) through
``model.train_step`` with its OptimWrapperDict, against the same networks trained by a
plain PyTorch loop written here (torch.optim.Adam, no wrappers), in the same run.

    python tools/analysis_tools/benchmark_cell_gan.py \
        configs/cell_gan/cell-infowgan_res-c128_z32-c5_10e_synthetic-cells.py \
        [--channels 64] [--batch 64] [--iters 5] [--repeats 3]

Both sides start from identical weights, see the same real batches and alternate
(ours, plain, ours, ...) so that machine load hits both alike; the ratio of the medians
is printed with the absolute times (target: <= 1.1).

Toy clusters (``--toy``): can argmax Q find classes at all? The config's model and
optimisers (with K = 3 categories and the overrides below) train through ``train_step`` on
balanced crops of three disk sizes (:func:`projects.cell_gan.toy.toy_disks`, k-means on
pixels separates them exactly) for ``--generator-steps`` generator steps, once per seed;
the purity of argmax Q on held-out toy crops is printed every ``--eval-every`` steps, with
a summary per seed (final, best, first step at >= 0.9).

    python tools/analysis_tools/benchmark_cell_gan.py \
        configs/cell_gan/cell-infowgan_res-c16_z32-c5_100e_synthetic-cells.py --toy \
        [--seeds 0 1 2] [--generator-steps 300] [--channels 8] [--n-critic 2] [--lr 5e-4] \
        [--batch 32] [--cfg-options model.lambda2=10 ...] [--out toy.json]
"""
import argparse
import copy
import statistics
import time
from typing import Callable, List, Optional

import numpy as np
import torch

from projects.common.runner_utils import load_config

#: toy defaults: a narrow, fast model; it first separates the toy kinds after 50-100
#: generator steps, and holds them to step 300 at this lr (README, Choices)
TOY_DEFAULTS = dict(channels=8, z_dim=8, n_critic=2, lr=5e-4, batch=32)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split('\n\n', 1)[1])
    parser.add_argument('config', help='a CellInfoWGAN config')
    parser.add_argument('--channels', type=int, default=None,
                        help='override the width of G / D / Q (default: the config\'s; '
                        f'{TOY_DEFAULTS["channels"]} with --toy)')
    parser.add_argument('--batch', type=int, default=None,
                        help=f'real batch size (64; {TOY_DEFAULTS["batch"]} with --toy)')
    parser.add_argument('--iters', type=int, default=5,
                        help='GAN iterations per timed block (each 5 D + 1 G + 1 Q)')
    parser.add_argument('--repeats', type=int, default=3, help='timed blocks per side')
    parser.add_argument('--threads', type=int, default=None, help='torch threads')
    toy = parser.add_argument_group('toy clusters (--toy)')
    toy.add_argument('--toy', action='store_true',
                     help='train on the toy disks and report argmax-Q purity (no timing)')
    toy.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2],
                     help='one run per seed (default 0 1 2)')
    toy.add_argument('--generator-steps', type=int, default=300,
                     help='generator steps per run (300)')
    toy.add_argument('--eval-every', type=int, default=25,
                     help='purity every this many generator steps (25)')
    toy.add_argument('--n-critic', type=int, default=None,
                     help=f'critic steps per generator step ({TOY_DEFAULTS["n_critic"]})')
    toy.add_argument('--lr', type=float, default=None,
                     help=f'Adam lr of all three optimisers ({TOY_DEFAULTS["lr"]})')
    toy.add_argument('--z-dim', type=int, default=None,
                     help=f'Gaussian noise size ({TOY_DEFAULTS["z_dim"]})')
    toy.add_argument('--num-train', type=int, default=600, help='toy training crops (600)')
    toy.add_argument('--num-test', type=int, default=300, help='held-out toy crops (300)')
    toy.add_argument('--cfg-options', nargs='+', default=[], metavar='KEY=VALUE',
                     help='more config overrides, applied last (e.g. model.lambda2=10)')
    toy.add_argument('--out', default=None, help='also write the runs as JSON here')
    args = parser.parse_args(argv)
    if args.batch is None:
        args.batch = TOY_DEFAULTS['batch'] if args.toy else 64
    for name in ('batch', 'iters', 'repeats', 'generator_steps', 'eval_every', 'num_train',
                 'num_test'):
        if getattr(args, name) < 1:
            parser.error(f'--{name.replace("_", "-")} must be >= 1')
    return args


def plain_loop(model, batches: List[torch.Tensor], lr: float, betas: tuple,
               q_modules: List[str]) -> Callable:
    """The same schedule written directly in PyTorch (the authors' style of loop); the G
    step adds lambda2 L_Q when the model does; the Q optimiser holds the parameters of
    ``q_modules`` (the config's auxiliary modules)."""
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
        frozen = list(d.parameters()) + list(q.parameters())
        for p in frozen:
            p.requires_grad_(False)
        z, c = noise(n)
        fake = g(z, c)
        d_fake, pooled = d(fake)
        loss = generator_loss(d_fake)
        if model.q_loss_in_generator_step and model.lambda2 > 0:  # G's share of eq. (9)
            logits = q(pooled) if model.q_shares_trunk else q(fake)
            loss = loss + q_loss(logits, c, model.lambda2)
        opt_g.zero_grad()
        loss.backward()
        opt_g.step()
        for p in frozen:
            p.requires_grad_(True)
        z, c = noise(n)
        fake = g(z, c)
        logits = q(d(fake)[1]) if model.q_shares_trunk else q(fake)
        loss = q_loss(logits, c, model.lambda2)
        opt_q.zero_grad()
        loss.backward()
        opt_q.step()

    return one_iteration


def _parse_cfg_options(options: List[str]) -> dict:
    """``KEY=VALUE`` strings -> dict, values parsed as Python literals when they are."""
    import ast
    out = {}
    for opt in options:
        if '=' not in opt:
            raise ValueError(f'--cfg-options: {opt!r} is not KEY=VALUE')
        key, value = opt.split('=', 1)
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def toy_benchmark(args: argparse.Namespace) -> dict:
    """Train the config's model on the toy disks once per seed; print and return the
    purity curves and a per-seed summary."""
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope

    import projects.cell_gan  # noqa: F401
    from mmseg.registry import MODELS
    from projects.cell_gan.evaluation import kmeans_clusters, pixel_features
    from projects.cell_gan.metrics import cluster_scores
    from projects.cell_gan.toy import TOY_RADII, toy_disks, toy_purity, train_toy
    from projects.common.io import write_json
    cfg = load_config(args.config)
    if cfg.model.get('type') != 'CellInfoWGAN':
        raise ValueError(f'{args.config}: model type is {cfg.model.get("type")!r}, not '
                         'CellInfoWGAN')
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    lr = args.lr or TOY_DEFAULTS['lr']
    cfg.merge_from_dict({
        'model.num_categories': len(TOY_RADII),
        'model.channels': args.channels or TOY_DEFAULTS['channels'],
        'model.z_dim': args.z_dim or TOY_DEFAULTS['z_dim'],
        'model.n_critic': args.n_critic or TOY_DEFAULTS['n_critic'],
        **{f'optim_wrapper.{k}.optimizer.lr': lr
           for k in ('generator', 'discriminator', 'auxiliary')}})
    cfg.merge_from_dict(_parse_cfg_options(args.cfg_options))
    size = cfg.model.get('img_size', 32)
    m = cfg.model
    print(f'Toy clusters: {len(TOY_RADII)} disk sizes, {args.num_train} training / '
          f'{args.num_test} test crops of {size} px; CellInfoWGAN K={m.num_categories}, '
          f'{m.channels} channels, z {m.z_dim}, n_critic {m.n_critic}, lambda2 '
          f'{m.get("lambda2", 1.0)}, q_loss_in_generator_step '
          f'{m.get("q_loss_in_generator_step", True)}, Q step updates '
          f'{cfg.optim_wrapper.auxiliary.get("modules", ["auxiliary"])}; Adam lr {lr}; '
          f'batch {args.batch}; {args.generator_steps} generator steps; '
          f'{torch.get_num_threads()} threads', flush=True)
    runs = []
    for seed in args.seeds:
        train, _ = toy_disks(args.num_train, 2 * seed + 1, size)
        test, kinds = toy_disks(args.num_test, 2 * seed + 2, size)
        _, (km, ) = kmeans_clusters(pixel_features(train), len(TOY_RADII), seed,
                                    predict=[pixel_features(test)])
        km_purity = cluster_scores(km, kinds)['purity']
        torch.manual_seed(seed)
        model = MODELS.build(copy.deepcopy(cfg.model))
        optim = build_optim_wrapper(model, copy.deepcopy(cfg.optim_wrapper))
        history = train_toy(model, optim, train, args.generator_steps, args.batch, seed,
                            args.eval_every, lambda: toy_purity(model, test, kinds))
        for row in history:
            print(f'  seed {seed} G step {row["generator_step"]:4d} ({row["seconds"]:6.1f} s): '
                  f'purity {row["purity"]:.3f}, L_Q {row["loss_q"]:.3f}, Q accuracy on '
                  f'G(z, c) {row["q_acc"]:.2f}', flush=True)
        purity = [row['purity'] for row in history]
        reached = [row['generator_step'] for row in history if row['purity'] >= 0.9]
        runs.append(dict(seed=seed, history=history, final_purity=purity[-1],
                         best_purity=max(purity), first_step_at_0_9=reached[0] if reached
                         else None, kmeans_pixels_purity=km_purity,
                         seconds=history[-1]['seconds']))
    print('\n| seed | final purity | best purity | first G step with purity >= 0.9 | '
          'k-means on pixels | s |\n|---|---|---|---|---|---|')
    for r in runs:
        first = r['first_step_at_0_9'] if r['first_step_at_0_9'] is not None else 'never'
        print(f'| {r["seed"]} | {r["final_purity"]:.3f} | {r["best_purity"]:.3f} | {first} | '
              f'{r["kmeans_pixels_purity"]:.3f} | {r["seconds"]:.0f} |')
    finals = np.array([r['final_purity'] for r in runs])
    print(f'final purity of argmax Q: mean {finals.mean():.3f} over {len(runs)} seed(s); '
          f'{int((finals >= 0.9).sum())} of {len(runs)} at >= 0.9')
    out = dict(config=args.config, settings=dict(
        channels=m.channels, z_dim=m.z_dim, n_critic=m.n_critic, lr=lr, batch=args.batch,
        generator_steps=args.generator_steps, num_train=args.num_train,
        num_test=args.num_test, cfg_options=args.cfg_options), runs=runs)
    if args.out:
        write_json(args.out, out)
        print(f'Wrote {args.out}')
    return out


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.toy:
        toy_benchmark(args)
        return
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
