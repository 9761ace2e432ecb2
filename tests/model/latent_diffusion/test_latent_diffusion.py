from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from scvi_gen.model.latent_diffusion import LatentDiffusion
from tests.conftest import make_counts_adata

SMALL = {
    "n_tokens": 4,
    "latent_dim": 4,
    "token_dim": 16,
    "pool_dim": 8,
    "n_heads": 2,
    "decoder_dim": 16,
    "prior_dim": 16,
    "prior_heads": 2,
}
FAST = {"batch_size": 64, "enable_progress_bar": False}


@pytest.fixture(scope="module")
def trained():
    import scvi

    scvi.settings.seed = 0
    adata = make_counts_adata()
    LatentDiffusion.setup_anndata(adata, labels_key="cell_type", batch_key="batch")
    model = LatentDiffusion(adata, **SMALL)
    model.train(max_epochs_autoencoder=10, max_epochs_flow=15, **FAST)
    return adata, model


def test_training_runs_both_stages_and_averages_the_prior(trained):
    _, model = trained
    assert {"autoencoder_validation_loss", "flow_validation_loss"} <= set(model.history)
    assert model.autoencoder_trained_ and model.flow_trained_
    assert int(model.module.ema_updates) > 0
    assert model.module._latent_cache is None  # the stage's cache is dropped afterwards


def test_autoencoder_loss_decreases(trained):
    _, model = trained
    loss = model.history["autoencoder_train_loss"].to_numpy(dtype=float).ravel()
    assert loss[-3:].mean() < loss[:3].mean()


def test_generated_counts_are_non_negative_integers(trained):
    adata, model = trained
    syn = model.generate(labels={"type0": 6, "type1": 4}, seed=0, progress_bar=False)
    assert syn.shape == (10, adata.n_vars)
    assert list(syn.var_names) == list(adata.var_names)
    assert sp.issparse(syn.X)
    values = syn.X.toarray()
    assert np.all(values >= 0) and np.all(values == np.round(values))
    assert syn.obs["cell_type"].astype(str).value_counts().to_dict() == {"type0": 6, "type1": 4}
    assert syn.uns["scvi_gen"]["model"] == "LatentDiffusion"


def test_guidance_weights_are_per_attribute(trained):
    _, model = trained
    # Counts are drawn by inversion from the same uniforms (same seed), so a small change in
    # the means moves few counts: compare enough cells to see it.
    a = model.generate(labels={"type2": 200}, seed=1, guidance={"cell_type": 3.0, "batch": 0.0})
    b = model.generate(labels={"type2": 200}, seed=1, guidance={"cell_type": 1.0, "batch": 1.0})
    assert (a.X != b.X).nnz > 0
    with pytest.raises(ValueError, match="unknown attributes"):
        model.generate(labels={"type2": 2}, seed=1, guidance={"tissue": 2.0})


def test_latent_is_flattened_tokens_invariant_to_gene_order(trained):
    adata, model = trained
    z = model.get_latent_representation()
    assert z.shape == (adata.n_obs, 4 * 4)
    perm = np.random.default_rng(0).permutation(adata.n_vars)
    shuffled = adata[:, perm].copy()
    np.testing.assert_allclose(model.get_latent_representation(shuffled), z, atol=1e-5)


def test_latent_shape_does_not_depend_on_the_number_of_genes(trained):
    adata, model = trained
    subset = adata[:, adata.var_names[::3]].copy()
    assert model.get_latent_representation(subset).shape == (adata.n_obs, 16)
    with pytest.raises(ValueError, match="not training genes"):
        other = adata[:, :5].copy()
        other.var_names = [f"new{i}" for i in range(5)]
        model.get_latent_representation(other)


def test_output_panel_is_a_permuted_subset_with_full_panel_means(trained):
    adata, model = trained
    module = model.module
    x = torch.as_tensor(adata.X[:5].toarray())
    z, library = module.encode(x), x.sum(1, keepdim=True)
    codes = module.attribute_codes(
        {"labels": torch.zeros(5, 1, dtype=torch.long), "batch": torch.zeros(5, 1)}
    )
    genes = ["gene7", "gene2", "gene19"]
    ids = model._gene_ids(genes)
    with torch.no_grad():
        full, _ = module.decode(z, library, codes)
        panel, _ = module.decode(z, library, codes, gene_ids=ids)
    torch.testing.assert_close(panel, full[:, ids])
    model.set_output_genes(genes)
    try:
        syn = model.generate(labels={"type0": 30}, seed=0, progress_bar=False)
    finally:
        model.set_output_genes(None)
    assert list(syn.var_names) == genes and syn.shape == (30, 3)
    with pytest.raises(ValueError, match="not training genes"):
        model.set_output_genes(["gene1", "unknown"])


def test_posterior_predictive_sample_has_cells_by_genes_by_samples(trained):
    adata, model = trained
    draws = model.posterior_predictive_sample(indices=np.arange(7), n_samples=2)
    assert draws.shape == (7, adata.n_vars, 2)


def test_save_load_gives_identical_samples(trained, tmp_path):
    adata, model = trained
    model.save(tmp_path / "ldm")
    loaded = LatentDiffusion.load(tmp_path / "ldm")
    a = model.generate(labels={"type1": 12}, seed=5, guidance=1.5, progress_bar=False)
    b = loaded.generate(labels={"type1": 12}, seed=5, guidance=1.5, progress_bar=False)
    assert (a.X != b.X).nnz == 0
    assert loaded.module.n_latent == 16 and int(loaded.module.ema_updates) > 0
    np.testing.assert_allclose(
        loaded.get_latent_representation(adata), model.get_latent_representation(), atol=1e-6
    )


def test_transfer_moves_cells_to_another_batch(trained):
    adata, model = trained
    moved = model.transfer(adata[:10].copy(), to={"batch": "b1"}, seed=0)
    assert moved.shape == (10, adata.n_vars)
    assert set(moved.obs["batch"].astype(str)) == {"b1"}
    assert np.all(moved.X.data >= 0)


def test_impute_keeps_observed_entries(trained):
    adata, model = trained
    mask = np.random.default_rng(0).random((adata.n_obs, adata.n_vars)) < 0.2
    filled = model.impute(adata, mask).X.toarray()
    observed = adata.X.toarray()
    np.testing.assert_allclose(filled[~mask], observed[~mask])
    assert np.isfinite(filled).all() and np.all(filled >= 0)


@pytest.mark.parametrize(("value", "match"), [(np.nan, "NaN"), (0.5, "non-integer")])
def test_latent_of_reordered_genes_checks_the_values(trained, value, match):
    adata, model = trained
    shuffled = adata[:, adata.var_names[::-1]].copy()
    shuffled.X = shuffled.X.toarray()
    shuffled.X[0, 0] = value
    with pytest.raises(ValueError, match=match):
        model.get_latent_representation(shuffled)


def test_data_over_the_cache_budget_trains_the_prior_without_a_table(monkeypatch):
    from scvi_gen.model.latent_diffusion import _model

    adata = make_counts_adata(n_cells=80)
    LatentDiffusion.setup_anndata(adata, labels_key="cell_type")
    model = LatentDiffusion(adata, **SMALL)
    monkeypatch.setattr(_model, "_MAX_CACHE_BYTES", 0)

    def refuse(*args, **kwargs):
        raise AssertionError("the latent cache was built over its budget")

    monkeypatch.setattr(model.module, "set_latent_cache", refuse)
    model.train(max_epochs_autoencoder=1, max_epochs_flow=1, **FAST)
    assert model.flow_trained_
