"""Unsupervised cell-level representation (Hu et al. 2018, "Unsupervised Learning for
Cell-level Visual Representation in Histopathology Images with Generative Adversarial
Networks"): work in progress.

Importing registers (mmdet and mmseg): METRICS ``ClusteringMetric``.
"""
import projects.common  # noqa: F401
from .metrics import ClusteringMetric, cluster_scores

__all__ = ['ClusteringMetric', 'cluster_scores']
