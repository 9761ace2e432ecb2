"""Every registered generator, tiny: the settings shared by the registry-wide tests."""

from __future__ import annotations

from typing import Any

import pytest

from scvi_gen.model._registry import GENERATORS
from tests.conftest import make_counts_adata

#: Tiny networks so that every generator trains one epoch in seconds.
TINY: dict[str, dict] = {
    "SCVIGenerator": {"n_hidden": 16, "n_latent": 4},
    "CFGen": {"n_latent": 4, "encoder_hidden": (16,), "decoder_hidden": (16,), "flow_hidden": 16},
    "LatentDiffusion": {
        "n_tokens": 2,
        "latent_dim": 2,
        "token_dim": 8,
        "pool_dim": 8,
        "n_heads": 2,
        "decoder_dim": 8,
        "prior_dim": 16,
        "prior_heads": 2,
    },
    "MAFFlow": {"n_top_genes": 10, "n_transforms": 1, "hidden_features": (16,)},
    "MOEFlow": {"n_top_genes": 10},
    "DiscreteDiffusion": {
        "n_top_genes": 10,
        "num_bins": 4,
        "gene_dim": 8,
        "dim": 16,
        "n_heads": 2,
        "n_latents": 4,
        "n_layers": 1,
        "n_sampling_steps": 4,
    },
}
#: The SDV baselines are fitted by SDV, not by scvi-tools' training loop: no data module.
_DATAMODULE = (
    "SCVIGenerator",
    "CFGen",
    "LatentDiffusion",
    "MAFFlow",
    "MOEFlow",
    "DiscreteDiffusion",
)
NAMES = [n for n, spec in GENERATORS.items() if not n.endswith("_paper")]


def _spec(name: str) -> tuple[Any, type]:
    spec = GENERATORS[name]
    try:
        cls = spec.model_class()
    except ImportError as err:  # the SDV extra is optional
        pytest.skip(f"{name}: {err}")
    return spec, cls


def _kwargs(cls: type, spec: Any) -> dict[str, Any]:
    return {**spec.init_kwargs, **TINY.get(cls.__name__, {})}


def _one_epoch(cls: type) -> dict[str, Any]:
    if cls.__name__ in ("CFGen", "LatentDiffusion"):
        return {"max_epochs_autoencoder": 1, "max_epochs_flow": 1, "enable_progress_bar": False}
    if cls.__name__.endswith("Generator") and cls.__name__ != "SCVIGenerator":
        return {"max_epochs": 1}
    return {"max_epochs": 1, "enable_progress_bar": False}


def train_all(n_cells: int = 90, n_genes: int = 20) -> dict[str, tuple[Any, Any]]:
    """Every registered generator trained one epoch on the same tiny data."""
    import scvi

    out = {}
    for name in NAMES:
        spec = GENERATORS[name]
        try:
            cls = spec.model_class()
        except ImportError:  # the SDV extra is optional
            continue
        scvi.settings.seed = 0
        adata = make_counts_adata(n_cells=n_cells, n_genes=n_genes)
        cls.setup_anndata(adata, labels_key="cell_type", **spec.setup_kwargs)
        model = cls(adata, **_kwargs(cls, spec))
        model.train(**{**spec.train_kwargs, **_one_epoch(cls)})
        out[name] = (adata, model)
    return out
