from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from scvi_gen.model.discrete_diffusion import DiscreteDiffusion

from .conftest import FAST, TINY, make_two_cluster_adata

N_TOP = 16


@pytest.fixture(scope="module")
def trained():
    import scvi

    scvi.settings.seed = 0
    adata = make_two_cluster_adata()
    DiscreteDiffusion.setup_anndata(adata, labels_key="cell_type")
    model = DiscreteDiffusion(adata, n_top_genes=N_TOP, num_bins=8, n_sampling_steps=12, **TINY)
    model.train(max_epochs=40, plan_kwargs={"lr": 1e-2}, **FAST)
    return adata, model


def _dense(matrix) -> np.ndarray:
    return matrix.toarray() if sp.issparse(matrix) else np.asarray(matrix)


def test_training_bound_beats_the_independent_genes_baseline(trained):
    _, model = trained
    assert "validation_loss" in model.history
    bound = model.get_nll_bound(n_samples=8)
    assert bound < model.marginal_entropy_ - 0.1


def test_generated_data_are_counts_of_the_modelled_genes(trained):
    _, model = trained
    syn = model.generate(labels={"A": 30, "B": 20}, seed=0)
    assert list(syn.var_names) == model.gene_names_
    assert len(model.gene_names_) == N_TOP
    X = _dense(syn.X)
    assert np.all(X >= 0) and np.all(X == np.round(X))
    assert syn.obs["cell_type"].value_counts().to_dict() == {"A": 30, "B": 20}
    library = syn.obs["library_size"].to_numpy()
    expected = np.log1p(X / library[:, None] * 1e4)
    assert np.allclose(_dense(syn.layers["log1p_norm"]), expected, atol=1e-4)


def test_generated_cells_follow_their_label(trained):
    _, model = trained
    syn = model.generate(labels={"A": 60, "B": 60}, seed=1)
    first_half = np.array([int(g[4:]) < 12 for g in syn.var_names])
    X = _dense(syn.layers["log1p_norm"])
    is_a = (syn.obs["cell_type"] == "A").to_numpy()
    assert X[is_a][:, first_half].mean() > X[~is_a][:, first_half].mean() + 1.0
    assert X[~is_a][:, ~first_half].mean() > X[is_a][:, ~first_half].mean() + 1.0


def test_same_seed_gives_the_same_cells_and_save_load_keeps_them(trained, tmp_path):
    _, model = trained
    first = model.generate(n_cells=20, seed=3, guidance=1.0)
    again = model.generate(n_cells=20, seed=3, guidance=1.0)
    assert np.array_equal(_dense(first.X), _dense(again.X))
    model.save(tmp_path / "dd")
    loaded = DiscreteDiffusion.load(tmp_path / "dd")
    reloaded = loaded.generate(n_cells=20, seed=3, guidance=1.0)
    assert np.array_equal(_dense(first.X), _dense(reloaded.X))
    assert loaded.gene_names_ == model.gene_names_
    assert torch.equal(loaded.module.tokenizer.edges, model.module.tokenizer.edges)


def test_guidance_must_be_one_non_negative_weight(trained):
    _, model = trained
    with pytest.raises(ValueError, match="guidance"):
        model.generate(n_cells=2, guidance=-1.0)
    with pytest.raises(ValueError, match="one classifier-free guidance weight"):
        model.generate(n_cells=2, guidance={"cell_type": 1.0})


def test_impute_never_changes_observed_entries_nor_the_input(trained):
    adata, model = trained
    query = make_two_cluster_adata(n_cells=40, seed=5)
    before = _dense(query.X).copy()
    obs_before = query.obs.copy()
    mask = np.random.default_rng(0).random(query.shape) < 0.2
    modelled = np.isin(query.var_names, model.gene_names_)
    with pytest.warns(UserWarning, match="does not cover"):
        out = model.impute(query, mask=mask)
    result = _dense(out.X)
    assert np.array_equal(_dense(query.X), before)  # input untouched
    assert query.obs.equals(obs_before) and "_scvi_labels" not in query.obs
    keep = ~mask | ~modelled[None, :]
    assert np.array_equal(result[keep], before[keep])
    filled = result[mask & modelled[None, :]]
    assert np.all(np.isfinite(filled)) and np.all(filled >= 0)
    assert not np.array_equal(filled, before[mask & modelled[None, :]])


def test_default_imputation_fills_the_zeros_of_the_modelled_genes(trained):
    adata, model = trained
    out = model.impute(adata, seed=0)
    modelled = np.isin(adata.var_names, model.gene_names_)
    X, result = _dense(adata.X), _dense(out.X)
    zeros = (X == 0) & modelled[None, :]
    assert np.all(result[zeros] > 0)  # posterior means of dropped-out values
    assert np.array_equal(result[~zeros], X[~zeros])
    assert "log1p_norm" in out.layers


def test_imputing_known_non_zero_values_never_returns_zero(trained):
    adata, model = trained
    X = _dense(adata.X)
    mask = (X > 0) & (np.random.default_rng(1).random(X.shape) < 0.3)
    mask &= np.isin(adata.var_names, model.gene_names_)[None, :]
    out = model.impute(adata, mask=mask, decode="sample", exclude_zero=True)
    assert np.all(_dense(out.X)[mask] > 0)


def test_denoise_resamples_the_requested_fraction_of_modelled_genes(trained):
    adata, model = trained
    out = model.denoise(adata[:30], fraction=0.25)
    resampled = _dense(out.layers["resampled"]).astype(bool)
    assert np.all(resampled.sum(axis=1) == round(0.25 * N_TOP))
    modelled = np.isin(adata.var_names, model.gene_names_)
    assert not resampled[:, ~modelled].any()
    X = _dense(adata[:30].X)
    assert np.array_equal(_dense(out.X)[~resampled], X[~resampled])


def test_ema_weights_are_updated_during_training(trained):
    _, model = trained
    module = model.module
    assert int(module.ema_updates) > 0
    assert not torch.equal(module.ema_network.gene_bias, module.network.gene_bias)


def test_gene_set_can_be_a_list_or_all(two_cluster_adata):
    DiscreteDiffusion.setup_anndata(two_cluster_adata, labels_key="cell_type")
    genes = ["gene7", "gene2", "gene20"]
    model = DiscreteDiffusion(two_cluster_adata, gene_set=genes, num_bins=4, **TINY)
    assert model.gene_names_ == ["gene2", "gene7", "gene20"]  # var order
    assert model.module.n_genes == 3
    everything = DiscreteDiffusion(two_cluster_adata, gene_set="all", num_bins=4, **TINY)
    assert everything.gene_names_ == list(two_cluster_adata.var_names)
    with pytest.raises(ValueError, match="not in the data"):
        DiscreteDiffusion(two_cluster_adata, gene_set=["nope"], **TINY)


def test_marginal_entropy_is_the_baseline_of_independent_genes(two_cluster_adata):
    DiscreteDiffusion.setup_anndata(two_cluster_adata)
    model = DiscreteDiffusion(two_cluster_adata, gene_set="all", num_bins=6, **TINY)
    tokens, _ = model.module.tokens_from_counts(torch.as_tensor(_dense(two_cluster_adata.X)))
    entropies = []
    for column in tokens.T:
        p = torch.bincount(column, minlength=6).double() / len(column)
        entropies.append(float(-(p[p > 0] * p[p > 0].log()).sum()))
    assert model.marginal_entropy_ == pytest.approx(np.mean(entropies), rel=1e-6)


def test_nll_bound_of_no_cells_is_an_error(trained):
    _, model = trained
    with pytest.raises(ValueError, match="selects none"):
        model.get_nll_bound(indices=[])


def test_impute_takes_a_nested_list_mask(trained):
    adata, model = trained
    mask = np.zeros(adata.shape, dtype=bool)
    mask[0, 0] = True
    out = model.impute(adata, mask=mask.tolist(), seed=0)
    assert out.shape == adata.shape
