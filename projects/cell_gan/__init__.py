"""Unsupervised cell-level representation (Hu et al. 2018, "Unsupervised Learning for
Cell-level Visual Representation in Histopathology Images with Generative Adversarial
Networks"): a residual WGAN-GP with an InfoGAN categorical code, trained by MMEngine's
standard runner; Q's argmax clusters cells.

Importing registers (mmdet and mmseg): MODELS ``CellInfoWGAN``; DATASETS ``CellCropDataset``;
TRANSFORMS ``RandomRot90``, ``RandomDihedral``; OPTIM_WRAPPER_CONSTRUCTORS
``GANOptimWrapperConstructor``; METRICS ``ClusteringMetric``; HOOKS (mmengine)
``CellGANSampleHook``.
"""
import projects.common  # noqa: F401
from .dataset import (CellCropDataset, RandomDihedral, RandomRot90, dihedral, read_cell_json,
                      symmetry_group, write_cell_json)
from .extraction import cell_crops, extract_cells, segment_nuclei
from .hooks import CellGANSampleHook, sample_grid
from .losses import critic_loss, generator_loss, gradient_penalty, q_loss, sample_latent
from .metrics import ClusteringMetric, cluster_scores
from .model import CellInfoWGAN, GANOptimWrapperConstructor
from .networks import QNetwork, ResBlock, ResDiscriminator, ResGenerator, ResTrunk

__all__ = ['CellCropDataset', 'CellGANSampleHook', 'CellInfoWGAN', 'ClusteringMetric',
           'GANOptimWrapperConstructor', 'QNetwork', 'RandomDihedral', 'RandomRot90',
           'ResBlock', 'ResDiscriminator', 'ResGenerator', 'ResTrunk', 'cell_crops',
           'cluster_scores', 'critic_loss', 'dihedral', 'extract_cells', 'generator_loss',
           'gradient_penalty', 'q_loss', 'read_cell_json', 'sample_grid', 'sample_latent',
           'segment_nuclei', 'symmetry_group', 'write_cell_json']
