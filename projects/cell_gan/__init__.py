"""Unsupervised cell-level representation (Hu et al. 2018, "Unsupervised Learning for
Cell-level Visual Representation in Histopathology Images with Generative Adversarial
Networks"): work in progress (issue 7). So far: the losses of eqs. (10)-(12)
(`losses.py`) and the clustering scores of eqs. (13)-(14) (`metrics.py`).

Importing registers (mmdet and mmseg): METRICS ``ClusteringMetric``.
"""
import projects.common  # noqa: F401
from .losses import critic_loss, generator_loss, gradient_penalty, q_loss, sample_latent
from .metrics import ClusteringMetric, cluster_scores

__all__ = ['ClusteringMetric', 'cluster_scores', 'critic_loss', 'generator_loss',
           'gradient_penalty', 'q_loss', 'sample_latent']
