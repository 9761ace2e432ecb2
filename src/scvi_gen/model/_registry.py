"""Names of the generators for the command line and the benchmark runner."""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GeneratorSpec:
    """How to build and train one generator by name.

    Attributes
    ----------
    name
        Short name used on the command line (``scvi``, ``cfgen``...).
    target
        Dotted path of the model class.
    init_kwargs
        Keyword arguments for the model constructor.
    train_kwargs
        Keyword arguments for ``train()``.
    setup_kwargs
        Extra keyword arguments for ``setup_anndata`` beyond labels/batch.
    """

    name: str
    target: str
    init_kwargs: dict[str, Any] = field(default_factory=dict)
    train_kwargs: dict[str, Any] = field(default_factory=dict)
    setup_kwargs: dict[str, Any] = field(default_factory=dict)

    def model_class(self) -> type:
        """Import and return the model class."""
        module_name, _, class_name = self.target.rpartition(".")
        return getattr(importlib.import_module(module_name), class_name)


_EARLY_STOP = {"early_stopping": True, "early_stopping_patience": 20}

GENERATORS: dict[str, GeneratorSpec] = {
    spec.name: spec
    for spec in (
        GeneratorSpec(
            "scvi",
            "scvi_gen.baselines.SCVIGenerator",
            init_kwargs={"conditional_prior": True},
            train_kwargs={"max_epochs": 150, **_EARLY_STOP},
        ),
        # Guidance 1.5 on the label: benchmarks/cfgen_guidance.py shows it lifts k-NN label
        # accuracy above 0.9 and lowers the C2ST AUC against the plain conditional field (1.0).
        GeneratorSpec(
            "cfgen", "scvi_gen.model.cfgen.CFGen", init_kwargs={"default_guidance": 1.5}
        ),
        # Flows on log1p(CP10k) of the HVGs: "default" converges (early stopping on validation
        # NLL); "paper" is the flow study's recipe (lr 1e-6, 100 epochs) kept for comparison.
        GeneratorSpec("maf", "scvi_gen.model.flows.MAFFlow"),
        GeneratorSpec(
            "maf_paper", "scvi_gen.model.flows.MAFFlow", init_kwargs={"preset": "paper"}
        ),
        GeneratorSpec("moe", "scvi_gen.model.flows.MOEFlow"),
        GeneratorSpec(
            "moe_paper", "scvi_gen.model.flows.MOEFlow", init_kwargs={"preset": "paper"}
        ),
        # Guidance 1.5: label k-NN accuracy of the generated cells then sits at the real
        # floor (~0.9); 2.5 over-sharpens labels (k-NN ~0.95) and pushes the prior's samples
        # off the latent distribution (PBMC3K sweep over 1.0 / 1.5 / 2.5 on three seeds).
        GeneratorSpec(
            "latent_diffusion",
            "scvi_gen.model.latent_diffusion.LatentDiffusion",
            init_kwargs={"default_guidance": 1.5},
            train_kwargs={"max_epochs_autoencoder": 20, "max_epochs_flow": 150},
        ),
        GeneratorSpec(
            "discrete_diffusion",
            "scvi_gen.model.discrete_diffusion.DiscreteDiffusion",
            # ~75 s per epoch on one CPU core at 2,000 genes; 10 epochs fit a benchmark seed.
            train_kwargs={"max_epochs": 10},
        ),
        GeneratorSpec(
            "scvi_unconditional",
            "scvi_gen.baselines.SCVIGenerator",
            init_kwargs={"conditional_prior": False},
            train_kwargs={"max_epochs": 150, **_EARLY_STOP},
        ),
        # SDV baselines (optional extra scvi-gen[sdv], Business Source License 1.1): one
        # synthesizer per label on PCA(50) of log1p(CP10k). Epochs chosen for 2 CPU cores.
        GeneratorSpec(
            "gaussian_copula",
            "scvi_gen.baselines.sdv.GaussianCopulaGenerator",
            init_kwargs={"n_components": 50},
            train_kwargs={"progress_bar": False},
        ),
        GeneratorSpec(
            "ctgan",
            "scvi_gen.baselines.sdv.CTGANGenerator",
            init_kwargs={"n_components": 50},
            train_kwargs={"max_epochs": 100, "progress_bar": False},
        ),
        GeneratorSpec(
            "tvae",
            "scvi_gen.baselines.sdv.TVAEGenerator",
            init_kwargs={"n_components": 50},
            train_kwargs={"max_epochs": 100, "progress_bar": False},
        ),
    )
}


def get_generator(name: str) -> GeneratorSpec:
    """Look up a generator by name, with a clear error listing the known ones.

    Parameters
    ----------
    name
        Registered name.

    Returns
    -------
    The generator's spec.
    """
    if name not in GENERATORS:
        raise KeyError(f"Unknown generator {name!r}; choose one of {sorted(GENERATORS)}.")
    return GENERATORS[name]
