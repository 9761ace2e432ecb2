"""DiscreteDiffusion's data state: fitted in streaming passes, from an AnnData or a loader."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from scvi.dataloaders import DataSplitter

from scvi_gen.base import loader_source, manager_source
from scvi_gen.model.discrete_diffusion import DiscreteDiffusion
from scvi_gen.model.discrete_diffusion import _state as state
from scvi_gen.model.discrete_diffusion._tokenizer import ExpressionTokenizer

from .conftest import TINY, make_two_cluster_adata

N_TOP = 16
SETTINGS = {"n_top_genes": N_TOP, "num_bins": 8, "n_sampling_steps": 4, **TINY}


def _backed(tmp_path: Path, n_cells: int = 120) -> tuple[ad.AnnData, ad.AnnData, object]:
    """In-memory cells, the same cells read back backed from h5ad, and their manager."""
    adata = make_two_cluster_adata(n_cells=n_cells)
    path = tmp_path / "cells.h5ad"
    adata.write_h5ad(path)
    backed = ad.read_h5ad(path, backed="r")
    DiscreteDiffusion.setup_anndata(backed, labels_key="cell_type")
    manager = DiscreteDiffusion._get_most_recent_anndata_manager(backed, required=True)
    return adata, backed, manager


def _state_of(model: DiscreteDiffusion) -> dict[str, torch.Tensor]:
    module = model.module
    return {
        "gene_index": module.gene_index,
        "edges": module.tokenizer.edges,
        "profile": module.tokenizer.profile,
        "log_library_loc": module.log_library_loc,
        "log_library_scale": module.log_library_scale,
        "gene_bias": module.network.gene_bias.detach(),
        "ema_gene_bias": module.ema_network.gene_bias.detach(),
    }


def test_model_from_a_registry_trains_on_a_data_module_over_backed_data(tmp_path):
    import scvi

    scvi.settings.seed = 0
    _, backed, manager = _backed(tmp_path)
    model = DiscreteDiffusion(None, registry=manager.registry, **SETTINGS)
    # the architecture is known before any data is seen
    assert model.module.n_genes == N_TOP and not model.data_state_fitted_
    datamodule = DataSplitter(manager, train_size=0.8, batch_size=32)
    model.train(max_epochs=1, datamodule=datamodule, enable_progress_bar=False)
    assert model.is_trained_ and model.data_state_fitted_
    assert int(model.module.ema_updates) > 0  # the plan stepped the moving average
    assert len(model.gene_names_) == N_TOP
    positions = model.module.gene_index.numpy()
    assert list(backed.var_names[positions]) == model.gene_names_
    syn = model.generate(labels={"A": 6, "B": 4}, seed=0)
    assert list(syn.var_names) == model.gene_names_
    X = syn.X.toarray()
    assert X.shape == (10, N_TOP) and np.all(X >= 0) and np.all(X == np.round(X))
    assert syn.obs["cell_type"].value_counts().to_dict() == {"A": 6, "B": 4}
    assert np.all(syn.obs["library_size"].to_numpy() > 0)
    assert not hasattr(model, "_generation_library")  # no state between generation steps
    model.save(tmp_path / "dd")
    loaded = DiscreteDiffusion.load(tmp_path / "dd")
    assert loaded.gene_names_ == model.gene_names_
    again = loaded.generate(labels={"A": 6, "B": 4}, seed=0)
    assert np.array_equal(again.X.toarray(), X)


def test_a_model_without_data_needs_a_data_module_and_no_early_stopping(tmp_path):
    _, _, manager = _backed(tmp_path)
    model = DiscreteDiffusion(None, registry=manager.registry, **SETTINGS)
    with pytest.raises(ValueError, match="datamodule"):
        model.train(max_epochs=1)
    datamodule = DataSplitter(manager, train_size=0.8, batch_size=32)
    with pytest.raises(ValueError, match="early_stopping=False"):
        model.train(max_epochs=1, datamodule=datamodule, early_stopping=True)


def test_state_fitted_from_the_loader_equals_the_in_memory_one(tmp_path):
    import scvi

    scvi.settings.seed = 0
    adata, _, manager = _backed(tmp_path)
    datamodule = DataSplitter(manager, train_size=0.8, batch_size=32)
    datamodule.setup()
    from_loader = DiscreteDiffusion(None, registry=manager.registry, **SETTINGS)
    from_loader.fit_data_state(loader_source(datamodule.train_dataloader))

    # the loader yields the training split, shuffled, in batches of 32
    train = adata[np.sort(datamodule.train_idx)].copy()
    DiscreteDiffusion.setup_anndata(train, labels_key="cell_type")
    in_memory = DiscreteDiffusion(train, **SETTINGS)

    assert from_loader.gene_names_ == in_memory.gene_names_
    loader_state, memory_state = _state_of(from_loader), _state_of(in_memory)
    assert torch.equal(loader_state.pop("gene_index"), memory_state.pop("gene_index"))
    for name, value in memory_state.items():
        assert torch.allclose(loader_state[name], value, rtol=1e-6, atol=1e-6), name
    assert from_loader.marginal_entropy_ == pytest.approx(in_memory.marginal_entropy_)


def test_backed_and_in_memory_data_give_the_same_state(tmp_path):
    adata, backed, _ = _backed(tmp_path)
    DiscreteDiffusion.setup_anndata(adata, labels_key="cell_type")
    in_memory = _state_of(DiscreteDiffusion(adata, **SETTINGS))
    from_backed = _state_of(DiscreteDiffusion(backed, **SETTINGS))
    for name, value in in_memory.items():
        assert torch.equal(from_backed[name], value), name


def test_bin_edges_come_from_a_bounded_sample_of_cells(two_cluster_adata, monkeypatch):
    fitted = []
    fit = ExpressionTokenizer.fit

    def spy(self: ExpressionTokenizer, values: np.ndarray) -> ExpressionTokenizer:
        fitted.append(np.asarray(values))
        return fit(self, values)

    monkeypatch.setattr(ExpressionTokenizer, "fit", spy)
    monkeypatch.setattr(state, "MAX_FIT_CELLS", 10)
    DiscreteDiffusion.setup_anndata(two_cluster_adata, labels_key="cell_type")
    model = DiscreteDiffusion(two_cluster_adata, gene_set="all", num_bins=6, **TINY)
    # at most the non-zero values of the 10 densest cells
    nnz = np.sort(np.diff(sp.csr_matrix(two_cluster_adata.X).indptr))[::-1]
    assert 0 < fitted[-1].size <= nnz[:10].sum()
    # every cell still counts in the token frequencies (second pass)
    assert model.marginal_entropy_ > 0


def test_small_data_keep_every_value_for_the_edges(two_cluster_adata):
    DiscreteDiffusion.setup_anndata(two_cluster_adata, labels_key="cell_type")
    model = DiscreteDiffusion(two_cluster_adata, gene_set="all", num_bins=6, **TINY)
    X = two_cluster_adata.X.toarray().astype(np.float64)
    library = X.sum(axis=1, keepdims=True)
    values = np.log1p(X * (1e4 / library))
    expected = ExpressionTokenizer(6, "quantile").fit(values[values > 0])
    assert torch.equal(model.module.tokenizer.edges, expected.edges)


def test_hvgs_are_chosen_by_position_when_gene_names_repeat(two_cluster_adata):
    DiscreteDiffusion.setup_anndata(two_cluster_adata)
    source = manager_source(
        DiscreteDiffusion._get_most_recent_anndata_manager(two_cluster_adata, required=True)
    )
    names = pd.Index([f"gene{j}" for j in range(two_cluster_adata.n_vars - 1)] + ["gene0"])
    index = state.select_genes(source, names, "hvg", 8)
    assert len(index) == 8 and np.all(np.diff(index) > 0)


def test_sampled_rows_do_not_keep_their_minibatch_alive():
    values = sp.csr_matrix(np.array([[1.0, 0.0, 2.0], [0.0, 3.0, 0.0]]))
    rows = state._row_data(values)
    assert [list(r) for r in rows] == [[1.0, 2.0], [3.0]]
    assert all(r.base is None for r in rows)  # copies, not views of values.data
