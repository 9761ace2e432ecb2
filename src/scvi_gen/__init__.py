"""scvi-gen: generative models for single-cell omics on scvi-tools."""

from __future__ import annotations

import logging
from importlib.metadata import PackageNotFoundError, version

from . import base, baselines, benchmark, datasets, metrics, nn, pl, preprocessing
from ._demo import run_demo
from ._settings import settings
from .baselines import CTGANGenerator, GaussianCopulaGenerator, SCVIGenerator, TVAEGenerator
from .model.cfgen import CFGen
from .model.discrete_diffusion import DiscreteDiffusion
from .model.flows import MAFFlow, MOEFlow
from .model.latent_diffusion import LatentDiffusion

try:
    __version__ = version("scvi-gen")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "CFGen",
    "CTGANGenerator",
    "DiscreteDiffusion",
    "GaussianCopulaGenerator",
    "LatentDiffusion",
    "MAFFlow",
    "MOEFlow",
    "SCVIGenerator",
    "TVAEGenerator",
    "__version__",
    "base",
    "baselines",
    "benchmark",
    "datasets",
    "metrics",
    "nn",
    "pl",
    "preprocessing",
    "run_demo",
    "settings",
]
