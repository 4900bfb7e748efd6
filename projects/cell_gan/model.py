"""CellInfoWGAN: WGAN-GP + InfoGAN of Hu et al. 2018, trained by MMEngine's standard runner.

One runner iteration is one critic iteration on one real batch (eq. 10). After every
``n_critic``-th critic iteration the model runs one generator iteration and then one
auxiliary-network iteration, each on freshly sampled (z, c) (sect. IV-B: "five
discriminator iterations, one generator iteration, and one auxiliary network iteration").

The generator iteration minimises L_G + lambda2 * CE(Q(G(z, c)), c) over G (eq. 9: G plays
both terms), with D and Q frozen; the auxiliary iteration minimises eq. (12) over whatever
the ``auxiliary`` optimiser holds (Q and G in the configs; Q, G and D's trunk in the
authors' code). lambda2 has to enter the generator step: each step has its own Adam, and
Adam ignores a constant factor on a loss, so a lambda2 that scales only the Q step's loss
changes nothing (``q_loss_in_generator_step=False`` keeps that behaviour for comparison).

The optimisers live in an :class:`~mmengine.optim.OptimWrapperDict` with the keys
``generator``, ``discriminator`` and ``auxiliary`` (built by
:class:`GANOptimWrapperConstructor`); the count of critic steps is a buffer of the model,
so a checkpoint resumes the schedule where it stopped.
"""
from collections import OrderedDict
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModel, is_model_wrapper
from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapperDict
from mmengine.structures import BaseDataElement
from torch import Tensor

from projects.common.registry import MODELS, OPTIM_WRAPPER_CONSTRUCTORS, register
from .losses import critic_loss, generator_loss, gradient_penalty, q_loss, sample_latent
from .networks import QNetwork, ResDiscriminator, ResGenerator

__all__ = ['CellInfoWGAN', 'GANOptimWrapperConstructor']

OPTIMISER_KEYS = ('generator', 'discriminator', 'auxiliary')


def _unwrap(module: nn.Module) -> nn.Module:
    return module.module if is_model_wrapper(module) else module


@contextmanager
def _frozen(*modules: nn.Module) -> Iterator[None]:
    """Parameters of ``modules`` take no gradient inside the block (the path through them
    to their input still does); their ``requires_grad`` flags are restored after it."""
    params = [p for m in modules for p in m.parameters()]
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


@register(MODELS)
class CellInfoWGAN(BaseModel):
    """Residual WGAN-GP with an InfoGAN categorical code (Hu et al. 2018, eqs. 8-12).

    Args:
        z_dim: Gaussian noise size (32 for one data set in the paper, 64 for the union).
        num_categories: K of the categorical code c (5 in the paper) = number of clusters.
        channels: width of G, D and Q (128 in WGAN-GP; gives the 8192-d feature).
        img_size: crop size (32 in the paper).
        n_critic: critic iterations per generator (and auxiliary) iteration (5).
        lambda1: gradient-penalty weight of eq. (10) (10).
        lambda2: weight of the Q loss, eq. (12) (1); it weighs L_Q against L_G in the
            generator step.
        q_shares_trunk: Q is a head on D's trunk (the authors' code) instead of its own
            residual network (the paper's Fig. 3, the default; see the README).
        q_loss_in_generator_step: the generator step minimises L_G + lambda2 L_Q (default).
            False: L_G alone, L_Q only in the Q step, where lambda2 is a no-op under Adam
            (the behaviour before issue 17, kept to measure the fix against).
        data_preprocessor: maps uint8 crops to [-1, 1] (mean = std = 127.5 by default) and
            the loader's BGR order to RGB, so G generates RGB.
    """

    def __init__(self, z_dim: int = 32, num_categories: int = 5, channels: int = 128,
                 img_size: int = 32, n_critic: int = 5, lambda1: float = 10.0,
                 lambda2: float = 1.0, q_shares_trunk: bool = False,
                 q_loss_in_generator_step: bool = True,
                 data_preprocessor: Optional[dict] = None, init_cfg: Optional[dict] = None):
        if data_preprocessor is None:
            data_preprocessor = dict(type='ImgDataPreprocessor', mean=[127.5] * 3,
                                     std=[127.5] * 3, bgr_to_rgb=True)
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        for name, value in (('z_dim', z_dim), ('num_categories', num_categories),
                            ('channels', channels), ('n_critic', n_critic)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f'CellInfoWGAN: {name} must be an int >= 1, got {value!r}')
        if num_categories < 2:
            raise ValueError(f'CellInfoWGAN: num_categories must be >= 2, got {num_categories}')
        if lambda1 < 0 or lambda2 < 0:
            raise ValueError(f'CellInfoWGAN: lambda1={lambda1} and lambda2={lambda2} must be >= 0')
        self.z_dim, self.num_categories, self.img_size = z_dim, num_categories, img_size
        self.n_critic, self.lambda1, self.lambda2 = n_critic, float(lambda1), float(lambda2)
        self.generator = ResGenerator(z_dim, num_categories, channels, img_size)
        self.discriminator = ResDiscriminator(channels, img_size)
        self.q_shares_trunk = bool(q_shares_trunk)
        self.q_loss_in_generator_step = bool(q_loss_in_generator_step)
        self.auxiliary = QNetwork(channels, num_categories, img_size, self.q_shares_trunk)
        # critic iterations done so far: decides when G and Q step, saved in checkpoints
        self.register_buffer('critic_steps', torch.zeros((), dtype=torch.long))

    # ------------------------------------------------------------------ sampling
    @property
    def _device(self) -> torch.device:
        return self.critic_steps.device  # a buffer: follows .to(); sub-modules may be wrapped

    def sample(self, batch: int) -> Tuple[Tensor, Tensor]:
        """z ~ N(0, I) and c ~ Cat(K) uniform, on the model's device (global torch RNG)."""
        z, c = sample_latent(batch, self.z_dim, self.num_categories)
        return z.to(self._device), c.to(self._device)

    @torch.no_grad()
    def generate(self, z: Tensor, c: Tensor) -> Tensor:
        """G(z, c) in eval mode (batch-norm running statistics) as uint8 (B, 3, H, W) RGB."""
        was_training = self.generator.training
        self.generator.eval()
        try:
            img = self.generator(z.to(self._device), c.to(self._device))
        finally:
            self.generator.train(was_training)
        return ((img + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)

    # ---------------------------------------------------------------- inference
    def q_logits(self, inputs: Tensor) -> Tensor:
        """Logits of Q(c | x) for preprocessed images (B, 3, H, W) in [-1, 1]."""
        if self.q_shares_trunk:
            return self.auxiliary(self.discriminator(inputs)[1])
        return self.auxiliary(inputs)

    def q_features(self, inputs: Tensor) -> Tensor:
        """Q's representation of preprocessed images: the (B, C) input of its linear head
        (its own pooled trunk, or D's when ``q_shares_trunk``)."""
        if self.q_shares_trunk:
            return self.discriminator(inputs)[1]
        return _unwrap(self.auxiliary).features(inputs)

    def extract_features(self, inputs: Tensor, grid: int = 4) -> Tensor:
        """Sect. IV-C feature: each D block's output max-pooled to ``grid`` x ``grid``,
        flattened and concatenated (B, blocks * channels * grid^2)."""
        maps = self.discriminator(inputs, return_features=True)[2]
        return torch.cat([F.adaptive_max_pool2d(m, grid).flatten(1) for m in maps], dim=1)

    def forward(self, inputs: Tensor, data_samples: Optional[List[BaseDataElement]] = None,
                mode: str = 'tensor') -> Union[Tensor, List[BaseDataElement]]:
        """'tensor': Q logits; 'predict': data samples with ``pred_label`` = argmax Q (the
        cluster, sect. III-A.2) and ``pred_score`` = Q(c | x). 'loss' does not exist: a GAN
        trains through :meth:`train_step`."""
        if mode == 'tensor':
            return self.q_logits(inputs)
        if mode == 'predict':
            probs = self.q_logits(inputs).softmax(dim=1)
            if data_samples is None:
                data_samples = [BaseDataElement() for _ in range(len(probs))]
            for sample, p in zip(data_samples, probs):
                sample.pred_score = p
                sample.pred_label = p.argmax()
            return data_samples
        raise ValueError(f'CellInfoWGAN.forward: mode must be "tensor" or "predict", got '
                         f'{mode!r} (training runs through train_step)')

    # ----------------------------------------------------------------- training
    def _check_optim(self, optim_wrapper: OptimWrapperDict) -> None:
        missing = [k for k in OPTIMISER_KEYS
                   if not isinstance(optim_wrapper, OptimWrapperDict) or k not in optim_wrapper]
        if missing:
            raise TypeError('CellInfoWGAN.train_step needs an OptimWrapperDict with keys '
                            f'{OPTIMISER_KEYS} (optim_wrapper.constructor='
                            f'"GANOptimWrapperConstructor"); missing {missing}')

    def _critic_step(self, real: Tensor, optim) -> Dict[str, Tensor]:
        """Eq. (10) on one real batch; the fake batch is generated without a G graph."""
        with optim.optim_context(self.discriminator):
            z, c = self.sample(real.shape[0])
            with torch.no_grad():
                fake = self.generator(z, c)
            d_real = self.discriminator(real)[0]
            d_fake = self.discriminator(fake)[0]
            penalty = gradient_penalty(lambda x: self.discriminator(x)[0], real, fake)
            loss = critic_loss(d_real, d_fake, penalty, self.lambda1)
        optim.zero_grad()
        optim.update_params(loss)
        # V(D, G) of eq. (8): the critic's estimate of the Wasserstein distance
        return dict(loss_d=loss.detach(), loss_gp=penalty.detach(),
                    wdist=(d_real.mean() - d_fake.mean()).detach())

    def _generator_step(self, batch: int, optim) -> Dict[str, Tensor]:
        """G's share of eq. (9): L_G (eq. 11) + lambda2 L_Q (eq. 12) on one (z, c) batch.

        D's and Q's weights take no gradient (only the path to G's output does). Logs
        ``loss_g`` = L_G and ``loss_g_q`` = lambda2 L_Q of this step."""
        with_q = self.q_loss_in_generator_step and self.lambda2 > 0
        with _frozen(self.discriminator, self.auxiliary):
            with optim.optim_context(self.generator):
                z, c = self.sample(batch)
                fake = self.generator(z, c)
                d_fake, pooled = self.discriminator(fake)[:2]
                loss = loss_g = generator_loss(d_fake)
                logs = dict(loss_g=loss_g.detach())
                if with_q:
                    logits = self.auxiliary(pooled if self.q_shares_trunk else fake)
                    loss_gq = q_loss(logits, c, self.lambda2)
                    loss = loss + loss_gq
                    logs['loss_g_q'] = loss_gq.detach()
            optim.zero_grad()
            optim.update_params(loss)
        return logs

    def _auxiliary_step(self, batch: int, optim) -> Dict[str, Tensor]:
        """Eq. (12): -lambda2 log Q(c | G(z, c)); updates whatever the auxiliary optimiser
        holds (Q and G in the configs; Q's head, G and D's trunk in the authors' set-up).
        Under Adam lambda2 > 0 does not change this step: its weight acts in the generator
        step."""
        with optim.optim_context(self.auxiliary):
            z, c = self.sample(batch)
            logits = self.q_logits(self.generator(z, c))
            loss = q_loss(logits, c, self.lambda2)
        optim.zero_grad()
        optim.update_params(loss)
        acc = (logits.detach().argmax(dim=1) == c).float().mean()
        return dict(loss_q=loss.detach(), q_acc=acc)

    def train_step(self, data: Union[dict, tuple, list],
                   optim_wrapper: OptimWrapperDict) -> Dict[str, Tensor]:
        """One critic iteration; after every ``n_critic``-th, one G and one Q iteration."""
        self._check_optim(optim_wrapper)
        real = self.data_preprocessor(data, True)['inputs']
        if real.shape[-2:] != (self.img_size, self.img_size) or real.shape[1] != 3:
            raise ValueError(f'CellInfoWGAN: expected (B, 3, {self.img_size}, {self.img_size}) '
                             f'crops, got {tuple(real.shape)}')
        log_vars = self._critic_step(real, optim_wrapper['discriminator'])
        self.critic_steps += 1
        if int(self.critic_steps) % self.n_critic == 0:
            batch = real.shape[0]
            log_vars.update(self._generator_step(batch, optim_wrapper['generator']))
            log_vars.update(self._auxiliary_step(batch, optim_wrapper['auxiliary']))
        for key, value in log_vars.items():
            if not torch.isfinite(value):
                raise FloatingPointError(f'CellInfoWGAN: {key} is {value.item()} at critic '
                                         f'step {int(self.critic_steps)}')
        return log_vars


@register(OPTIM_WRAPPER_CONSTRUCTORS)
class GANOptimWrapperConstructor:
    """Build an :class:`OptimWrapperDict` with one optimiser wrapper per key.

    ``optim_wrapper = dict(constructor='GANOptimWrapperConstructor', generator=dict(...),
    discriminator=dict(...), auxiliary=dict(..., modules=['auxiliary', 'generator',
    'discriminator']))``: each entry is an ordinary optim-wrapper config (built by
    MMEngine's :class:`DefaultOptimWrapperConstructor`), plus an optional ``modules``
    list naming the model attributes whose parameters that optimiser updates (default:
    the attribute named like the key). A parameter may belong to several optimisers
    (the authors' Q step also updates G and D's trunk).
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: Optional[dict] = None):
        if not isinstance(optim_wrapper_cfg, dict) or not optim_wrapper_cfg:
            raise TypeError('GANOptimWrapperConstructor: optim_wrapper must be a non-empty '
                            f'dict of per-module configs, got {optim_wrapper_cfg!r}')
        self.cfgs = OrderedDict()
        for key, cfg in optim_wrapper_cfg.items():
            if not isinstance(cfg, dict):
                raise TypeError(f'GANOptimWrapperConstructor: optim_wrapper.{key} must be a '
                                f'dict, got {cfg!r}')
            self.cfgs[key] = dict(cfg)
        self.paramwise_cfg = paramwise_cfg

    def __call__(self, model: nn.Module) -> OptimWrapperDict:
        model = _unwrap(model)
        wrappers = OrderedDict()
        for key, cfg in self.cfgs.items():
            cfg = dict(cfg)
            names: Sequence[str] = cfg.pop('modules', [key])
            missing = [n for n in names if not isinstance(getattr(model, n, None), nn.Module)]
            if missing:
                raise ValueError(f'GANOptimWrapperConstructor: optim_wrapper.{key}.modules '
                                 f'{missing} are not sub-modules of {type(model).__name__}')
            modules = nn.ModuleList([_unwrap(getattr(model, n)) for n in names])
            paramwise = cfg.pop('paramwise_cfg', self.paramwise_cfg)
            wrappers[key] = DefaultOptimWrapperConstructor(cfg, paramwise)(modules)
        return OptimWrapperDict(**wrappers)
