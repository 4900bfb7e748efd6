"""Co-training of two SC-Nets with EMA pseudo labels (Qu et al., eqs. (3)-(9)).

Each SC-Net is a segmentation network S (``ResUNet`` + a 1x1 classifier, two classes)
on the H-component, optionally followed by a colourisation network C (``ColorizationHead``)
from the nucleus probability map back to the H&E image. The two nets see the two
disjoint halves of the training set; each is supervised by the other's EMA pseudo labels
(stored and refreshed by :class:`~.hooks.EMAPseudoLabelHook`). Inference averages the
two nets' probabilities.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.logging import MessageHub
from mmengine.structures import PixelData
from mmseg.models.segmentors.base import BaseSegmentor
from mmseg.registry import MODELS as SEG_MODELS
from mmseg.structures import SegDataSample
from torch import Tensor

from projects.common.metrics import instances_from_semantic
from projects.common.registry import MODELS, build_in_scope, register
from projects.common.tiling import tile_grid

IGNORE = 255
_EPS = 1e-7


def loss_weights(progress: float, eta: float = 1.0, eps: float = 0.1) -> Tuple[float, float]:
    """Cumulative-learning weights of Qu et al. sect. II.D (below eq. (9)).

    ``alpha = eta * (N / Nmax) ** 2`` (co-training) and ``beta = eps * (1 - N / Nmax) ** 2``
    (colourisation), with ``progress = N / Nmax`` in [0, 1].
    """
    if not 0.0 <= progress <= 1.0:
        raise ValueError(f'progress N / Nmax must lie in [0, 1], got {progress}')
    return eta * progress**2, eps * (1.0 - progress)**2


def ema_update(previous: Optional[np.ndarray], prediction: np.ndarray,
               momentum: float) -> np.ndarray:
    """Eq. (5): ``p_n = a * y + (1 - a) * p_{n-1}``; the first refresh stores ``y`` itself.

    Starting from ``y`` rather than ``p_0 = 0`` keeps the first pseudo labels unbiased
    (the paper does not give ``p_0``).
    """
    if not 0.0 < momentum <= 1.0:
        raise ValueError(f'EMA weight a must lie in (0, 1], got {momentum}')
    prediction = np.asarray(prediction, np.float32)
    if previous is None:
        return prediction.copy()
    if previous.shape != prediction.shape:
        raise ValueError(f'EMA update: stored map {previous.shape} and new prediction '
                         f'{prediction.shape} differ in shape')
    return (momentum * prediction + (1.0 - momentum) * previous.astype(np.float32))


def ema_weights(num_refreshes: int, momentum: float) -> np.ndarray:
    """Weights of the predictions y_1..y_n in the store after n refreshes of :func:`ema_update`.

    ``w_n = a``, ``w_{n-k} = a (1 - a)^k`` for k < n - 1, ``w_1 = (1 - a)^(n-1)`` (the first
    refresh stores y_1 itself); they sum to 1. E.g. n = 3, a = 0.1: [0.81, 0.09, 0.1].
    """
    if isinstance(num_refreshes, bool) or not isinstance(num_refreshes, (int, np.integer)) \
            or num_refreshes < 1:
        raise ValueError(f'ema_weights: num_refreshes must be an int >= 1, got '
                         f'{num_refreshes!r}')
    if not 0.0 < momentum <= 1.0:
        raise ValueError(f'EMA weight a must lie in (0, 1], got {momentum}')
    age = np.arange(num_refreshes - 1, -1, -1, dtype=np.float64)  # y_1 is the oldest
    w = momentum * (1.0 - momentum)**age
    w[0] = (1.0 - momentum)**(num_refreshes - 1)
    return w


def grad_norms(terms: Dict[str, Tensor], params: Sequence[Tensor]) -> Dict[str, float]:
    """``||d term / d params||_2`` of each loss term, all parameters as one vector.

    A term that does not reach a parameter contributes 0 there; a term without a graph has
    norm 0. The graph is kept (``retain_graph=True``), so the caller can still
    back-propagate the sum.
    """
    params = [p for p in params if p.requires_grad]
    norms: Dict[str, float] = {}
    for name, term in terms.items():
        if not term.requires_grad:
            norms[name] = 0.0
            continue
        grads = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
        sq = sum(float(g.detach().double().pow(2).sum()) for g in grads if g is not None)
        norms[name] = sq**0.5
    return norms


def norm_shares(norms: Dict[str, float]) -> Dict[str, float]:
    """``share_k = norm_k / sum_j norm_j`` (all 0 when every norm is 0)."""
    total = sum(norms.values())
    return {k: (v / total if total > 0 else 0.0) for k, v in norms.items()}


def grad_norm_shares(terms: Dict[str, Tensor],
                     params: Sequence[Tensor]) -> Tuple[Dict[str, float], Dict[str, float]]:
    """Gradient norm of each loss term on ``params`` (:func:`grad_norms`) and its share of
    the sum of the norms (:func:`norm_shares`)."""
    norms = grad_norms(terms, params)
    return norms, norm_shares(norms)


def pseudo_label(cluster: Tensor, ema: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
    """Eq. (6): the cluster label where it is 0 / 1, the EMA probability where it is ignored.

    Args:
        cluster: (...,) int cluster label (0, 1, 255 = ignore).
        ema: same shape, nucleus probability of the other net's EMA, NaN where unknown
            (padding), or None before the first refresh.
    Returns:
        target nucleus probability (float, 0 where invalid) and the valid mask: every
        pixel with a cluster label or a finite EMA value.
    """
    labelled = (cluster == 0) | (cluster == 1)
    target = torch.where(labelled, cluster.float(), torch.zeros((), device=cluster.device))
    if ema is None:
        return target, labelled
    ema = ema.float()
    known = torch.isfinite(ema)
    target = torch.where(labelled, target, torch.nan_to_num(ema, nan=0.0))
    return target.clamp(0.0, 1.0), labelled | known


def binary_kl(target: Tensor, logits: Tensor, valid: Tensor) -> Tensor:
    """Eq. (7): mean over valid pixels of ``sum_c p_c log(p_c / y_c)``, two classes.

    ``target`` is the pseudo nucleus probability p (B, H, W), ``logits`` the net's
    (B, 2, H, W) scores (class 1 = nucleus), ``valid`` (B, H, W) bool. The printed eq. (7)
    shows the nucleus term; we sum both classes (the KL divergence of two Bernoulli
    distributions), with 0 log 0 = 0. Zero valid pixels give 0.
    """
    logp = F.log_softmax(logits.float(), dim=1)
    p = torch.stack([1.0 - target, target], dim=1)
    plogp = torch.where(p > 0, p * torch.log(p.clamp_min(_EPS)), torch.zeros_like(p))
    kl = (plogp - p * logp).sum(dim=1)
    n = valid.sum()
    if n == 0:
        return logits.sum() * 0.0
    return (kl * valid).sum() / n


def masked_ce(logits: Tensor, label: Tensor, ignore_index: int = IGNORE) -> Tensor:
    """Eqs. (3) / (4): binary cross-entropy averaged over the non-ignored pixels.

    With two-class softmax scores this is ``-(v log y + (1 - v) log(1 - y))``; zero
    labelled pixels give 0 (not NaN).
    """
    valid = label != ignore_index
    if not valid.any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), label.long(), ignore_index=ignore_index,
                           reduction='sum') / valid.sum()


class SCNet(nn.Module):
    """One SC-Net: ``ResUNet`` -> 1x1 conv (2 classes) [-> ``ColorizationHead``]."""

    def __init__(self, backbone: dict, colorization_head: Optional[dict]) -> None:
        super().__init__()
        self.backbone = build_in_scope('mmseg', SEG_MODELS, backbone)
        channels = backbone.get('decoder_channels', (256, 128, 64, 32, 16))[-1]
        self.classifier = nn.Conv2d(channels, 2, kernel_size=1)
        self.colorizer = None if colorization_head is None else \
            build_in_scope('mmseg', SEG_MODELS, colorization_head)

    def forward(self, x: Tensor) -> Tensor:
        feats = self.backbone(x)
        return self.classifier(feats[-1])

    def segmenter_parameters(self) -> List[nn.Parameter]:
        """The parameters of S (ResUNet + classifier), not those of the colouriser."""
        return list(self.backbone.parameters()) + list(self.classifier.parameters())


def _stack_map(samples: Sequence[SegDataSample], key: str, size: Tuple[int, int],
               pad: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """(B, C, H, W) of ``sample.<key>.data`` padded bottom / right with ``pad``."""
    out = []
    for s in samples:
        if key not in s:
            raise ValueError(f'{s.metainfo.get("img_path", "<image>")}: data sample has no '
                             f'{key}; the training pipeline must produce it (see '
                             f'projects/point_supervision/README.md)')
        d = s.get(key).data.to(device=device, dtype=dtype)
        h, w = d.shape[-2:]
        out.append(F.pad(d, (0, size[1] - w, 0, size[0] - h), value=pad))
    return torch.stack(out)


@register(MODELS)
class CoTrainingSegmentor(BaseSegmentor):
    """Qu et al.'s framework: two SC-Nets co-trained with EMA pseudo labels (eq. (9)).

    Loss of net k on its half of the batch (eq. (9)):
    ``L_vor + L_clu + alpha * L_cot + beta * L_color``, eqs. (3), (4), (7), (8), with
    ``alpha, beta`` from :func:`loss_weights` at ``N / Nmax = iter / max_iters`` (read from
    the runner's message hub). Each term can be switched off for the ablation (Table II):
    ``use_voronoi``, ``use_cluster``, ``use_cotraining``, and ``colorization_head=None``.
    ``supervision='full'`` trains the same nets with cross-entropy on the full masks
    (``gt_sem_seg``, the upper bound of Table I).

    Measuring the terms: with ``grad_share_interval`` K > 0, every K-th iteration
    (N % K == 0) each net measures the gradient norm of each weighted term on its
    segmenter's parameters (ResUNet + classifier; :func:`grad_norms`, one extra backward
    pass per term), and from then on the loss dict logs the latest shares of the norms,
    norm_k / sum_j norm_j, as ``gshare_{vor,clu,cot,color}_{a,b}`` (``self.grad_shares``).

    Colourisation weight: ``color_share=None`` is the paper's ``beta = eps (1 - N/Nmax)^2``.
    ``color_share`` s in (0, 1) normalises the target instead: at each measurement net k
    sets ``scale_k = s / (1 - s) * (sum of the other terms' norms) / ||grad L_color||`` and
    uses ``beta_k = scale_k (1 - N/Nmax)^2`` until the next one, so the colour term holds
    the share s of the gradient at the start and fades with the paper's schedule (``eps``
    is then unused; ``scale_k`` is the buffer ``color_scale``, saved in checkpoints). It
    needs ``grad_share_interval``; a net measures out of turn while it has no scale yet.
    The colour share logged at a measurement is the one under the weight in force *before*
    the update (what the last K iterations had), except at the first one. Without a
    colouriser (the ablation rows) ``color_share`` and ``color_warmup_iters`` do nothing.
    ``color_warmup_iters`` W: for N < W the colour loss sees a detached probability map,
    so it trains the colouriser only and the segmenter gets no colour gradient until the
    colouriser has learned something (the paper weight, or the last scale, applies).

    The half of every training image (``self.halves``: img_path -> 0 / 1) and the EMA
    store (``self.pseudo_store``: img_path -> nucleus probability map of the *other* net)
    are set by :class:`~.hooks.EMAPseudoLabelHook`. Training samples need
    ``gt_voronoi`` / ``gt_cluster`` / ``gt_src_index`` / ``gt_color`` as produced by
    ``PackCoTrainingInputs`` (only what the enabled terms use).

    ``test_cfg``: ``mode`` ``'slide'`` (windows ``crop_size`` with ``overlap``, the paper's
    224 / 80) or ``'whole'``; ``postprocess`` (remove objects < ``min_size`` px and fill
    holes, the paper's 20 px). ``seg_logits`` of a prediction hold the averaged
    probabilities.
    """

    def __init__(self,
                 backbone: dict,
                 colorization_head: Optional[dict] = None,
                 use_voronoi: bool = True,
                 use_cluster: bool = True,
                 use_cotraining: bool = True,
                 supervision: str = 'points',
                 eta: float = 1.0,
                 eps: float = 0.1,
                 color_share: Optional[float] = None,
                 color_warmup_iters: int = 0,
                 grad_share_interval: int = 0,
                 num_nets: int = 2,
                 size_divisor: int = 32,
                 test_cfg: Optional[dict] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        if supervision not in ('points', 'full'):
            raise ValueError(f"supervision must be 'points' or 'full', got {supervision!r}")
        if supervision == 'points' and not (use_voronoi or use_cluster):
            raise ValueError('point supervision needs use_voronoi and / or use_cluster')
        if num_nets not in (1, 2):
            raise ValueError(f'num_nets must be 1 or 2, got {num_nets}')
        if use_cotraining and num_nets != 2:
            raise ValueError('co-training needs num_nets=2')
        for name, value in (('color_warmup_iters', color_warmup_iters),
                            ('grad_share_interval', grad_share_interval)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f'CoTrainingSegmentor: {name} must be an int >= 0, got '
                                 f'{value!r}')
        if not eps >= 0 or not eta >= 0:
            raise ValueError(f'CoTrainingSegmentor: eta and eps must be >= 0, got eta={eta}, '
                             f'eps={eps}')
        if color_share is not None:
            if not 0.0 < color_share < 1.0:
                raise ValueError(f'CoTrainingSegmentor: color_share must lie in (0, 1), got '
                                 f'{color_share}')
            if grad_share_interval < 1:
                raise ValueError('CoTrainingSegmentor: color_share needs grad_share_interval '
                                 '>= 1 (the weight is set from the measured gradient norms)')
        self.nets = nn.ModuleList(SCNet(backbone, colorization_head) for _ in range(num_nets))
        self.use_voronoi = use_voronoi
        self.use_cluster = use_cluster
        self.use_cotraining = use_cotraining and supervision == 'points'
        self.use_colorization = colorization_head is not None
        self.supervision = supervision
        self.eta = eta
        self.eps = eps
        self.color_share = color_share
        self.color_warmup_iters = color_warmup_iters
        self.grad_share_interval = grad_share_interval
        if color_share is not None and self.use_colorization and supervision == 'points':
            self.register_buffer('color_scale', torch.full((num_nets, ), float('nan')))
        else:  # nothing to normalise (no colouriser, or full supervision)
            self.color_share = None
        self.size_divisor = size_divisor
        cfg = dict(mode='slide', crop_size=224, overlap=80, postprocess=True, min_size=20,
                   batch_size=8)
        cfg.update(test_cfg or {})
        if cfg['mode'] not in ('slide', 'whole'):
            raise ValueError(f"test_cfg.mode must be 'slide' or 'whole', got {cfg['mode']!r}")
        self.test_cfg = cfg
        self.align_corners = False
        self.halves: Dict[str, int] = {}
        self.pseudo_store: Dict[str, np.ndarray] = {}
        self.grad_shares: Dict[str, float] = {}  # latest gshare_* (grad_share_interval)
        self.color_weights: Dict[str, float] = {}  # beta of each net in this iteration

    # ------------------------------------------------------------------ training
    @staticmethod
    def iteration() -> int:
        """``N``: the runner's current iteration (0 outside a runner)."""
        it = MessageHub.get_current_instance().get_info('iter')
        return 0 if it is None else int(it)

    @staticmethod
    def progress() -> float:
        """``N / Nmax``: the runner's iteration over its maximum (0 outside a runner)."""
        hub = MessageHub.get_current_instance()
        it, max_iters = hub.get_info('iter'), hub.get_info('max_iters')
        if it is None or not max_iters:
            return 0.0
        return min(max(float(it) / float(max_iters), 0.0), 1.0)

    def half_of(self, sample: SegDataSample) -> int:
        """The training half (0 / 1) of a sample's image."""
        if len(self.nets) == 1:
            return 0
        path = sample.metainfo.get('img_path')
        if path not in self.halves:
            raise KeyError(f'{path}: no co-training half assigned; add '
                           f'dict(type="EMAPseudoLabelHook") to custom_hooks (it splits the '
                           f'training set into two halves before training)')
        return self.halves[path]

    def _ema_target(self, samples: Sequence[SegDataSample], size: Tuple[int, int],
                    device: torch.device) -> Optional[Tensor]:
        """The stored EMA maps gathered through each sample's source index (NaN = none)."""
        out = []
        found = False
        for s in samples:
            ema = torch.full(size, float('nan'), device=device)
            store = self.pseudo_store.get(s.metainfo.get('img_path'))
            if store is not None:
                idx = s.gt_src_index.data[0].long()
                src = s.metainfo.get('src_shape')
                if src is not None and tuple(src) != tuple(store.shape):
                    raise ValueError(f'{s.metainfo.get("img_path")}: stored pseudo label '
                                     f'{store.shape} does not match the image {tuple(src)}')
                flat = torch.from_numpy(np.ascontiguousarray(store).ravel()).to(device)
                h, w = idx.shape
                ema[:h, :w] = flat[idx.clamp(0, flat.numel() - 1)].float()
                found = True
            out.append(ema)
        return torch.stack(out) if found else None

    def _color_weight(self, k: int, beta: float) -> float:
        """beta of net k: the paper's, or ``color_scale[k] * (1 - N/Nmax)^2`` once measured."""
        if self.color_share is None or not torch.isfinite(self.color_scale[k]):
            return beta
        return float(self.color_scale[k]) * (1.0 - self.progress())**2

    def _update_color_weight(self, k: int, beta: float,
                             norms: Dict[str, float]) -> Tuple[float, float]:
        """beta of net k for this step, after a new scale from ``norms`` (normalised mode,
        when measured), and the weight whose share is logged: the one in force before the
        update, or the new one at the first measurement."""
        before = self._color_weight(k, beta)
        others = sum(v for name, v in norms.items() if name != 'color')
        if self.color_share is None or not norms.get('color', 0.0) > 0 or not others > 0:
            return before, before
        first = not bool(torch.isfinite(self.color_scale[k]))
        self.color_scale[k] = self.color_share / (1.0 - self.color_share) * others / \
            norms['color']
        weight = self._color_weight(k, beta)
        return weight, (weight if first else before)

    def _net_losses(self, k: int, inputs: Tensor, samples: List[SegDataSample],
                    alpha: float, beta: float, measure: bool = False) -> Dict[str, Tensor]:
        net = self.nets[k]
        logits = net(inputs)
        size = tuple(logits.shape[-2:])
        dev = logits.device
        tag = 'ab'[k]
        losses: Dict[str, Tensor] = {}
        if self.supervision == 'full':
            gt = _stack_map(samples, 'gt_sem_seg', size, IGNORE, torch.long, dev)[:, 0]
            losses[f'loss_full_{tag}'] = masked_ce(logits, gt)
            return losses
        if self.use_voronoi:
            vor = _stack_map(samples, 'gt_voronoi', size, IGNORE, torch.long, dev)[:, 0]
            losses[f'loss_vor_{tag}'] = masked_ce(logits, vor)
        if self.use_cluster or self.use_cotraining:
            clu = _stack_map(samples, 'gt_cluster', size, IGNORE, torch.long, dev)[:, 0]
        if self.use_cluster:
            losses[f'loss_clu_{tag}'] = masked_ce(logits, clu)
        if self.use_cotraining:
            ema = self._ema_target(samples, size, dev)
            if ema is None:  # before the first refresh there is no pseudo label
                losses[f'loss_cot_{tag}'] = logits.sum() * 0.0
            else:
                target, valid = pseudo_label(clu, ema)
                losses[f'loss_cot_{tag}'] = alpha * binary_kl(target, logits, valid)
        if self.use_colorization:
            color = _stack_map(samples, 'gt_color', size, 0.0, torch.float32, dev)
            mask = torch.zeros((len(samples), ) + size, dtype=torch.bool, device=dev)
            for i, s in enumerate(samples):
                h, w = s.gt_color.data.shape[-2:]
                mask[i, :h, :w] = True
            prob = F.softmax(logits, dim=1)[:, 1:2]
            warmup = self.iteration() < self.color_warmup_iters
            if warmup:
                prob = prob.detach()  # warm-up: the colour loss trains the colouriser only
            color_loss = net.colorizer.loss(net.colorizer(prob), color, mask)  # L_color
            measure = measure or (self.color_share is not None and not warmup
                                  and not torch.isfinite(self.color_scale[k]))
        terms = {name: losses[f'loss_{name}_{tag}'] for name in ('vor', 'clu', 'cot')
                 if f'loss_{name}_{tag}' in losses}
        norms = grad_norms(dict(terms, color=color_loss) if self.use_colorization else terms,
                           net.segmenter_parameters()) if measure else {}
        if self.use_colorization:
            weight, shown = self._update_color_weight(k, beta, norms)
            losses[f'loss_color_{tag}'] = weight * color_loss
            self.color_weights[tag] = weight
            if measure:  # the norm of the weighted term (norms scale with the weight)
                norms['color'] *= shown
        if measure:
            self.grad_shares.update(
                {f'gshare_{name}_{tag}': v for name, v in norm_shares(norms).items()})
        return losses

    def loss(self, inputs: Tensor, data_samples: List[SegDataSample]) -> dict:
        """Eq. (9) summed over the nets; each net only sees the samples of its half."""
        halves = [self.half_of(s) for s in data_samples]
        alpha, beta = loss_weights(self.progress(), self.eta, self.eps)
        measure = (self.grad_share_interval > 0 and self.supervision == 'points'
                   and self.iteration() % self.grad_share_interval == 0)
        losses: Dict[str, Tensor] = {}
        self.color_weights = {}
        for k in range(len(self.nets)):
            idx = [i for i, h in enumerate(halves) if h == k]
            if idx:
                losses.update(self._net_losses(k, inputs[idx], [data_samples[i] for i in idx],
                                               alpha, beta, measure))
            else:  # keep every parameter in the graph (DDP) with a zero loss
                idle = sum(p.sum() for p in self.nets[k].parameters()) * 0.0
                losses[f'loss_idle_{"ab"[k]}'] = idle
        if self.supervision == 'points':
            dev = inputs.device
            losses['alpha'] = torch.tensor(alpha if self.use_cotraining else 0.0, device=dev)
            losses['beta'] = torch.tensor(beta if self.use_colorization else 0.0, device=dev)
            if self.color_share is not None and self.color_weights:  # each net's own weight
                for tag, weight in self.color_weights.items():
                    losses[f'beta_{tag}'] = torch.tensor(weight, device=dev)
                losses['beta'] = torch.tensor(float(np.mean(list(self.color_weights.values()))),
                                              device=dev)
            # the latest measurement, every iteration (the logger averages over its window)
            losses.update({k: torch.tensor(v, device=dev) for k, v in self.grad_shares.items()})
        return losses

    # ----------------------------------------------------------------- inference
    def _padded_forward(self, net: SCNet, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        d = self.size_divisor
        ph, pw = (-h) % d, (-w) % d
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode='replicate' if min(h, w) > 1 else 'constant')
        return F.softmax(net(x), dim=1)[..., :h, :w]

    def predict_probs(self, inputs: Tensor, nets: Optional[Sequence[int]] = None) -> Tensor:
        """(B, 2, H, W) class probabilities averaged over ``nets`` (default: all)."""
        nets = list(range(len(self.nets))) if nets is None else list(nets)
        b, _, h, w = inputs.shape
        total = inputs.new_zeros((b, 2, h, w))
        for k in nets:
            net = self.nets[k]
            if self.test_cfg['mode'] == 'whole':
                total += self._padded_forward(net, inputs)
                continue
            tiles = tile_grid(h, w, self.test_cfg['crop_size'], self.test_cfg['overlap'])
            acc = inputs.new_zeros((b, 2, h, w))
            count = inputs.new_zeros((1, 1, h, w))
            step = max(1, int(self.test_cfg['batch_size']) // max(b, 1))
            for j in range(0, len(tiles), step):
                chunk = tiles[j:j + step]
                crops = torch.cat([inputs[:, :, y0:y1, x0:x1] for x0, y0, x1, y1 in chunk])
                probs = self._padded_forward(net, crops)
                for t, (x0, y0, x1, y1) in enumerate(chunk):
                    acc[:, :, y0:y1, x0:x1] += probs[t * b:(t + 1) * b]
                    count[:, :, y0:y1, x0:x1] += 1
            total += acc / count
        return total / len(nets)

    def _unpadded(self, probs: Tensor, sample: Optional[SegDataSample], i: int) -> Tensor:
        p = probs[i]
        if sample is not None and 'img_shape' in sample.metainfo:
            h, w = sample.metainfo['img_shape'][:2]
            p = p[:, :h, :w]
        return p

    def predict(self, inputs: Tensor,
                data_samples: Optional[List[SegDataSample]] = None) -> List[SegDataSample]:
        """Average the nets, argmax, post-process (remove small objects, fill holes)."""
        probs = self.predict_probs(inputs)
        if data_samples is None:
            data_samples = [None] * len(inputs)
        out = []
        for i, sample in enumerate(data_samples):
            p = self._unpadded(probs, sample, i)
            pred = p.argmax(dim=0)
            if self.test_cfg['postprocess']:
                inst = instances_from_semantic(pred.cpu().numpy(), fg=1,
                                               min_size=int(self.test_cfg['min_size']))
                pred = torch.from_numpy((inst > 0).astype(np.int64)).to(p.device)
            sample = SegDataSample() if sample is None else sample
            sample.set_data(dict(seg_logits=PixelData(data=p),
                                 pred_sem_seg=PixelData(data=pred[None].long())))
            out.append(sample)
        return out

    def _forward(self, inputs: Tensor, data_samples=None) -> Tensor:
        return self.predict_probs(inputs)

    def extract_feat(self, inputs: Tensor) -> List[Tensor]:
        return [net.backbone(inputs)[-1] for net in self.nets]

    def encode_decode(self, inputs: Tensor, batch_data_samples=None) -> Tensor:
        return self.predict_probs(inputs)
