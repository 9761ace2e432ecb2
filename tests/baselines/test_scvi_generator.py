from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from scvi_gen import SCVIGenerator


@pytest.fixture(scope="module")
def trained():
    from tests.conftest import make_counts_adata

    adata = make_counts_adata()
    SCVIGenerator.setup_anndata(adata, labels_key="cell_type", batch_key="batch")
    model = SCVIGenerator(adata, n_latent=4, n_hidden=32)
    model.train(max_epochs=3, batch_size=64, enable_progress_bar=False)
    return adata, model


def test_generate_returns_requested_labels_as_integer_counts(trained):
    _, model = trained
    syn = model.generate(labels={"type1": 50}, seed=0)
    assert syn.n_obs == 50
    assert (syn.obs["cell_type"] == "type1").all()
    assert sp.issparse(syn.X)
    values = syn.X.data
    assert np.all(values >= 0) and np.all(values == np.round(values))


def test_generate_keeps_training_genes_and_provenance(trained):
    adata, model = trained
    syn = model.generate(10, seed=3)
    assert list(syn.var_names) == list(adata.var_names)
    assert syn.uns["scvi_gen"]["model"] == "SCVIGenerator"
    assert syn.uns["scvi_gen"]["seed"] == 3
    assert set(syn.obs.columns) == {"cell_type", "batch"}


def test_same_seed_gives_same_cells(trained):
    _, model = trained
    a = model.generate(labels={"type0": 20, "type2": 5}, seed=7)
    b = model.generate(labels={"type0": 20, "type2": 5}, seed=7)
    c = model.generate(labels={"type0": 20, "type2": 5}, seed=8)
    assert (a.X != b.X).nnz == 0
    assert (a.X != c.X).nnz > 0


def test_chunked_generation_covers_all_cells(trained):
    _, model = trained
    syn = model.generate(labels={"type0": 25}, batch_size=7, seed=0, progress_bar=False)
    assert syn.n_obs == 25


def test_unknown_label_in_generate_is_a_clear_error(trained):
    _, model = trained
    with pytest.raises(ValueError, match="Unknown 'cell_type' categories"):
        model.generate(labels={"T cell": 5})


def test_generate_does_not_touch_training_data(trained):
    adata, model = trained
    before = adata.X.copy()
    obs_before = adata.obs.copy()
    model.generate(20, seed=0)
    assert (adata.X != before).nnz == 0
    assert adata.obs.equals(obs_before)


def test_user_library_size_sets_total_counts(trained):
    _, model = trained
    syn = model.generate(200, library_size=50.0, seed=0)
    totals = np.asarray(syn.X.sum(axis=1)).ravel()
    assert abs(totals.mean() - 50) < 5


def test_save_load_round_trip_gives_identical_cells(trained, tmp_path):
    _, model = trained
    model.save(tmp_path / "model")
    loaded = SCVIGenerator.load(tmp_path / "model")
    a = model.generate(labels={"type1": 30}, seed=11)
    b = loaded.generate(labels={"type1": 30}, seed=11)
    assert (a.X != b.X).nnz == 0


def test_load_with_adata_checks_genes(trained, tmp_path):
    adata, model = trained
    model.save(tmp_path / "model")
    wrong = adata[:, adata.var_names[::-1]].copy()
    with pytest.raises(ValueError, match="genes of this AnnData don't match"):
        SCVIGenerator.load(tmp_path / "model", adata=wrong)


def test_load_with_adata_names_an_unknown_label(trained, tmp_path):
    adata, model = trained
    model.save(tmp_path / "model")
    other = adata.copy()
    other.obs = other.obs[["cell_type", "batch"]].copy()
    other.obs["cell_type"] = other.obs["cell_type"].astype(str).replace({"type0": "typeX"})
    with pytest.raises(ValueError, match=r"Unknown 'cell_type' categories \['typeX'\]"):
        SCVIGenerator.load(tmp_path / "model", adata=other)


def test_saved_files_load_without_unpickling(trained, tmp_path):
    import torch

    _, model = trained
    model.save(tmp_path / "model")
    from safetensors.torch import load_file

    state = load_file(tmp_path / "model" / "model.safetensors")
    assert all(torch.is_tensor(v) for v in state.values())


def test_posterior_predictive_sample_has_data_shape(trained):
    adata, model = trained
    samples = model.posterior_predictive_sample(indices=np.arange(10), n_samples=2)
    assert samples.shape == (10, adata.n_vars, 2)


def test_conditional_prior_has_one_gaussian_per_label(trained):
    _, model = trained
    assert model.module.prior_mean.shape == (3, 4)


def test_label_priors_are_fitted_full_covariance_gaussians(trained):
    _, model = trained
    module = model.module
    assert bool(module.prior_full_fitted)
    tril = module.prior_scale_tril
    assert (tril.triu(1) == 0).all() and (tril.diagonal(dim1=1, dim2=2) > 0).all()


def test_prior_fit_matches_posterior_moments():
    import torch

    from scvi_gen.baselines import LabelPriorVAE

    module = LabelPriorVAE(5, n_labels=2, n_latent=2)
    means = torch.tensor([[0.0, 0.0], [2.0, 0.0], [10.0, 10.0], [10.0, 12.0]])
    variances = torch.full((4, 2), 0.5)
    module.fit_prior_to_posterior(means, variances, torch.tensor([0, 0, 1, 1]))
    assert torch.allclose(module.prior_mean, torch.tensor([[1.0, 0.0], [10.0, 11.0]]))
    cov0 = module.prior_scale_tril[0] @ module.prior_scale_tril[0].T
    assert torch.allclose(cov0, torch.tensor([[1.5, 0.0], [0.0, 0.5]]))


def test_zinb_counts_are_nb_counts_kept_with_probability_one_minus_pi():
    import torch
    from scvi.distributions import ZeroInflatedNegativeBinomial

    from scvi_gen.baselines.scvi_generator._module import sample_counts

    torch.manual_seed(0)
    n, mu, theta, pi = 200_000, 4.0, 2.0, 0.3
    px = ZeroInflatedNegativeBinomial(
        mu=torch.full((n, 1), mu),
        theta=torch.full((1,), theta),
        zi_logits=torch.full((n, 1), float(np.log(pi / (1 - pi)))),
    )
    x = sample_counts(px).toarray().ravel()
    p_zero = pi + (1 - pi) * (theta / (theta + mu)) ** theta
    assert abs(x.mean() - (1 - pi) * mu) < 5 * np.sqrt((mu + mu**2 / theta + mu**2) / n)
    assert abs((x == 0).mean() - p_zero) < 5 * np.sqrt(p_zero * (1 - p_zero) / n)
