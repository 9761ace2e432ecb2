"""Baseline generators: scVI prior sampling and the SDV synthesizers (optional extra).

The SDV classes import ``sdv`` only when trained or loaded (``pip install 'scvi-gen[sdv]'``;
SDV is under the Business Source License 1.1 and is never vendored).
"""

from .scvi_generator import LabelPriorVAE, SCVIGenerator
from .sdv import CTGANGenerator, GaussianCopulaGenerator, TVAEGenerator

__all__ = [
    "CTGANGenerator",
    "GaussianCopulaGenerator",
    "LabelPriorVAE",
    "SCVIGenerator",
    "TVAEGenerator",
]
