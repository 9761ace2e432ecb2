from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from lightning.pytorch.callbacks import Callback

from scvi_gen.model.cfgen import CFGen
from tests.conftest import make_counts_adata

SMALL = {
    "n_latent": 4,
    "encoder_hidden": (32,),
    "decoder_hidden": (32,),
    "flow_hidden": 32,
    "flow_blocks": 2,
    "flow_context": 16,
}
FAST = {"batch_size": 64, "enable_progress_bar": False}


def _train(adata, epochs_ae=15, epochs_flow=25, **init):
    model = CFGen(adata, **{**SMALL, **init})
    model.train(max_epochs_autoencoder=epochs_ae, max_epochs_flow=epochs_flow, **FAST)
    return model


@pytest.fixture(scope="module")
def trained():
    import scvi

    scvi.settings.seed = 0
    adata = make_counts_adata()
    CFGen.setup_anndata(adata, labels_key="cell_type", batch_key="batch")
    return adata, _train(adata)


def test_training_runs_both_stages_with_their_own_histories(trained):
    _, model = trained
    history = model.history
    assert {"autoencoder_train_loss", "autoencoder_validation_loss"} <= set(history)
    assert {"flow_train_loss", "flow_validation_loss"} <= set(history)
    assert model.is_trained_ and model.autoencoder_trained_ and model.flow_trained_


def test_flow_matching_loss_decreases(trained):
    _, model = trained
    loss = model.history["flow_train_loss"].to_numpy(dtype=float).ravel()
    assert loss[-5:].mean() < loss[:5].mean()


def test_flow_stage_keeps_a_moving_average_of_every_step(trained):
    _, model = trained
    assert int(model.module.ema_updates) > 0
    assert model.module.uses_ema()  # eval mode after training: generation uses the average


def test_generate_returns_integer_counts_for_requested_labels(trained):
    adata, model = trained
    syn = model.generate(labels={"type0": 7, "type2": 5}, seed=0, progress_bar=False)
    assert syn.shape == (12, adata.n_vars)
    assert list(syn.var_names) == list(adata.var_names)
    assert sp.issparse(syn.X)
    assert np.all(syn.X.data > 0) and np.all(syn.X.data == np.round(syn.X.data))
    counts = syn.obs["cell_type"].astype(str).value_counts().to_dict()
    assert counts == {"type0": 7, "type2": 5}
    assert syn.uns["scvi_gen"]["model"] == "CFGen"


def test_same_seed_gives_same_cells(trained):
    _, model = trained
    a = model.generate(labels={"type1": 15}, seed=3, guidance=2.0)
    b = model.generate(labels={"type1": 15}, seed=3, guidance=2.0)
    c = model.generate(labels={"type1": 15}, seed=4, guidance=2.0)
    assert (a.X != b.X).nnz == 0
    assert (a.X != c.X).nnz > 0


def test_user_library_sizes_set_the_total_counts(trained):
    _, model = trained
    syn = model.generate(labels={"type0": 40}, library_size=500.0, seed=0)
    totals = np.asarray(syn.X.sum(1)).ravel()
    assert abs(totals.mean() / 500.0 - 1) < 0.1


def test_batch_size_one_and_dopri5_generate(trained):
    _, model = trained
    syn = model.generate(labels={"type0": 3}, batch_size=1, seed=0, progress_bar=False)
    assert syn.n_obs == 3
    options = dict(model.ode_options_)
    try:
        model.set_ode_solver("dopri5", rtol=1e-3, atol=1e-3)
        assert model.generate(labels={"type0": 4}, seed=0).n_obs == 4
    finally:
        model.set_ode_solver(**options)


def test_all_guidance_weights_zero_give_the_unconditional_field(trained):
    _, model = trained
    module = model.module
    codes = torch.tensor([[0, 1], [2, 0], [1, 1]])
    continuous = torch.zeros(3, 1)
    x, t = torch.randn(3, module.n_latent), torch.tensor(0.3)
    with torch.no_grad():
        guided = module.guided_velocity(codes, continuous, [0.0, 0.0])(t, x)
        null = module.condition_embedding.null_codes(3)
        plain = module.velocity(x, t, module.condition_bias(null, continuous))
        conditional = module.velocity(x, t, module.condition_bias(codes, continuous))
    assert torch.allclose(guided, plain, atol=1e-6)
    assert not torch.allclose(guided, conditional, atol=1e-6)


def test_guidance_weights_are_checked(trained):
    _, model = trained
    assert model._guidance_weights({"labels": 2.0}) == [2.0, 1.0]
    with pytest.raises(ValueError, match="unknown attributes"):
        model.generate(labels={"type0": 2}, guidance={"species": 1.0})


def test_default_guidance_is_used_when_generate_gets_none():
    adata = make_counts_adata(n_cells=40)
    CFGen.setup_anndata(adata, labels_key="cell_type", batch_key="batch")
    model = CFGen(adata, default_guidance={"cell_type": 2.0}, **SMALL)
    assert model._guidance_weights(None) == [2.0, 1.0]
    assert model._guidance_weights({"batch": 0.0}) == [2.0, 0.0]
    with pytest.raises(ValueError, match="unknown attributes"):
        CFGen(adata, default_guidance={"species": 1.0})


def test_save_load_gives_identical_generated_counts(trained, tmp_path):
    _, model = trained
    model.set_ode_solver("heun", n_steps=8)
    model.save(tmp_path / "cfgen")
    loaded = CFGen.load(tmp_path / "cfgen")
    model.set_ode_solver()
    a = model.generate(labels={"type0": 10, "type1": 10}, seed=5, guidance={"cell_type": 1.5})
    b = loaded.generate(labels={"type0": 10, "type1": 10}, seed=5, guidance={"cell_type": 1.5})
    assert loaded.ode_options_["method"] == "heun"
    loaded.set_ode_solver()
    b = loaded.generate(labels={"type0": 10, "type1": 10}, seed=5, guidance={"cell_type": 1.5})
    assert (a.X != b.X).nnz == 0


def test_transfer_to_own_condition_is_close_to_reconstruction(trained):
    adata, model = trained
    options = dict(model.ode_options_)
    model.set_ode_solver("rk4", n_steps=40)
    try:
        moved = model.transfer(adata, to={}, indices=np.arange(20), return_mean=True)
    finally:
        model.set_ode_solver(**options)
    module = model.module
    x = torch.as_tensor(adata.X[:20].toarray())
    with torch.no_grad():
        mu, _ = module.decode(module.encode(x), x.sum(1, keepdim=True), None)
    assert np.allclose(moved.X.toarray(), mu.numpy(), rtol=1e-2, atol=1e-2)


def test_transfer_changes_the_condition_and_keeps_the_source(trained):
    adata, model = trained
    moved = model.transfer(adata, to={"batch": "b1"}, indices=np.arange(10), seed=0)
    assert moved.shape == (10, adata.n_vars)
    assert (moved.obs["batch"] == "b1").all()
    assert moved.obs["batch_source"].tolist() == adata.obs["batch"][:10].astype(str).tolist()
    assert not any(c.startswith("_scvi") for c in moved.obs.columns)
    values = moved.X.data
    assert np.all(values == np.round(values))
    with pytest.raises(ValueError, match="Cannot transfer"):
        model.transfer(adata, to={"species": "mouse"})


def test_latent_representation_and_posterior_predictive_sample(trained):
    import sparse

    adata, model = trained
    assert model.get_latent_representation().shape == (adata.n_obs, 4)
    one = model.posterior_predictive_sample(indices=np.arange(8))
    two = model.posterior_predictive_sample(n_samples=2, gene_list=["gene0", "gene3"])
    assert isinstance(one, sparse.GCXS) and one.shape == (8, adata.n_vars)
    assert two.shape == (adata.n_obs, 2, 2)
    moved = model.posterior_predictive_sample(indices=np.arange(4), transform_batch="b0")
    assert moved.shape == (4, adata.n_vars)


@pytest.mark.slow  # scvi-tools' check spends ~1 min compiling numba kernels of `sparse`
def test_posterior_predictive_check_runs(trained):
    from scvi.criticism import PosteriorPredictiveCheck

    adata, model = trained
    dense = adata.copy()
    dense.X = dense.X.toarray()  # scvi-tools' check compares raw counts densely
    ppc = PosteriorPredictiveCheck(dense, {"cfgen": model}, n_samples=2)
    ppc.coefficient_of_variation("cells")
    cv = ppc.metrics["cv_gene"]
    assert "cfgen" in cv and np.isfinite(cv["cfgen"].to_numpy()).any()


def test_impute_fills_masked_entries_and_keeps_observed_ones(trained):
    adata, model = trained
    mask = np.random.default_rng(0).random(adata.shape) < 0.2
    filled = model.impute(adata, mask)
    X, Y = adata.X.toarray(), filled.X.toarray()
    assert np.array_equal(X[~mask], Y[~mask])
    assert np.all(np.isfinite(Y)) and np.all(Y[mask] >= 0)
    assert (Y[mask] > 0).mean() > 0.9
    with pytest.raises(ValueError, match="shape"):
        model.impute(adata, mask[:, :5])


def test_library_size_model_respects_the_condition():
    import scvi

    scvi.settings.seed = 0
    adata = make_counts_adata(n_cells=90)
    deep = (adata.obs["cell_type"] == "type0").to_numpy()
    X = adata.X.toarray()
    X[deep] *= 8
    adata.X = sp.csr_matrix(X)
    CFGen.setup_anndata(adata, labels_key="cell_type")
    model = _train(adata, epochs_ae=3, epochs_flow=3)
    syn = model.generate(labels={"type0": 100, "type1": 100}, seed=0)
    total = np.log(np.asarray(syn.X.sum(1)).ravel())
    labels = syn.obs["cell_type"].to_numpy()
    real = np.log(X.sum(1))
    for label, is_deep in (
        ("type0", deep),
        ("type1", ~deep & (adata.obs["cell_type"] == "type1")),
    ):
        assert abs(total[labels == label].mean() - real[is_deep].mean()) < 0.2


def test_zero_count_cells_train_without_nan():
    import scvi

    scvi.settings.seed = 0
    adata = make_counts_adata(n_cells=80)
    X = adata.X.toarray()
    X[:8] = 0
    adata.X = sp.csr_matrix(X)
    CFGen.setup_anndata(adata, labels_key="cell_type")
    model = _train(adata, epochs_ae=3, epochs_flow=3)
    for key in ("autoencoder_train_loss", "flow_train_loss", "flow_validation_loss"):
        assert np.all(np.isfinite(model.history[key].to_numpy(dtype=float)))
    assert np.all(np.isfinite(model.get_latent_representation()))
    moved = model.transfer(adata, to={"cell_type": "type1"}, indices=np.arange(10), seed=0)
    assert moved.X[:8].nnz == 0
    assert np.all(np.isfinite(model.generate(20, seed=0).X.data))


class ModeRecorder(Callback):
    """Record which parts of the module are in train mode at every training batch."""

    def __init__(self) -> None:
        self.modes: set[tuple[bool, bool]] = set()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        module = pl_module.module
        self.modes.add((module.encoder.training, module.velocity_net.training))


def test_frozen_autoencoder_stays_in_eval_mode_during_flow_training():
    import scvi

    scvi.settings.seed = 0
    adata = make_counts_adata(n_cells=80)
    CFGen.setup_anndata(adata, labels_key="cell_type")
    model = CFGen(adata, norm="batch", **SMALL)
    stage1, stage2 = ModeRecorder(), ModeRecorder()
    model.train(max_epochs_autoencoder=3, max_epochs_flow=0, callbacks=[stage1], **FAST)
    before = {k: v.clone() for k, v in model.module.state_dict().items() if "coder" in k}
    model.train(max_epochs_autoencoder=0, max_epochs_flow=3, callbacks=[stage2], **FAST)
    after = model.module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert any("running_mean" in k for k in before)
    assert stage1.modes == {(True, True)}
    assert stage2.modes == {(False, True)}


def test_multi_attribute_setup_generates_unseen_combinations():
    import scvi

    scvi.settings.seed = 0
    adata = make_counts_adata(n_cells=120)
    species = np.where(adata.obs["cell_type"] == "type0", "human", "mouse")
    species[:6] = "mouse"  # type0 is almost only human
    adata.obs["species"] = pd.Categorical(species)
    CFGen.setup_anndata(adata, labels_key="cell_type", categorical_covariate_keys=["species"])
    model = _train(adata, epochs_ae=3, epochs_flow=3)
    assert model.module.condition_dropout == 0.5
    syn = model.generate(
        labels={"type1": 6},
        covariates={"species": "human"},
        guidance={"cell_type": 2.0, "species": 1.0},
        seed=0,
    )
    assert (syn.obs["species"] == "human").all()
    moved = model.transfer(adata, to={"species": "human"}, indices=np.arange(5), seed=0)
    assert (moved.obs["species"] == "human").all()


def test_dispersion_per_gene_and_label():
    import scvi

    scvi.settings.seed = 0
    adata = make_counts_adata(n_cells=60)
    CFGen.setup_anndata(adata, labels_key="cell_type")
    model = _train(adata, epochs_ae=2, epochs_flow=2, dispersion="gene-label")
    assert model.module.log_theta.shape == (3, adata.n_vars)
    assert model.generate(labels={"type2": 4}, seed=0).n_obs == 4
    with pytest.raises(ValueError, match="batch_key"):
        CFGen(adata, dispersion="gene-batch")


def test_generate_before_training_is_an_error():
    adata = make_counts_adata(n_cells=40)
    CFGen.setup_anndata(adata, labels_key="cell_type")
    model = CFGen(adata, **SMALL)
    with pytest.raises(RuntimeError, match="Train the model"):
        model.transfer(adata, to={"cell_type": "type1"})
    with pytest.raises(ValueError, match="untrained"):
        model.train(max_epochs_autoencoder=0)


# ------------------------------------------------------------- new data
def _new_cells(adata):
    """A copy of the training cells, as a user would pass new data (not the registered one)."""
    new = adata.copy()
    new.obs = new.obs[["cell_type", "batch"]].copy()
    return new


def test_new_data_with_genes_in_another_order_is_rejected(trained):
    adata, model = trained
    new = _new_cells(adata)[:, adata.var_names[::-1]].copy()
    with pytest.raises(ValueError, match="same genes in another order"):
        model.get_latent_representation(new)


def test_new_data_with_nan_is_rejected(trained):
    adata, model = trained
    new = _new_cells(adata)
    new.X = new.X.toarray() if sp.issparse(new.X) else new.X.copy()
    new.X[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        model.transfer(new, to={"batch": "b0"})


def test_new_data_with_an_unknown_label_is_rejected(trained):
    adata, model = trained
    new = _new_cells(adata)
    new.obs["cell_type"] = new.obs["cell_type"].astype(str).replace({"type0": "typeZ"})
    with pytest.raises(ValueError, match=r"Unknown 'cell_type' categories \['typeZ'\]"):
        model.get_latent_representation(new)


def test_new_data_with_the_training_genes_gives_the_training_latents(trained):
    adata, model = trained
    np.testing.assert_allclose(
        model.get_latent_representation(_new_cells(adata)),
        model.get_latent_representation(),
        rtol=1e-5,
        atol=1e-6,
    )


def test_new_normalised_data_is_told_where_the_counts_go(trained):
    adata, model = trained
    new = _new_cells(adata)
    new.X = np.log1p(new.X.toarray() if sp.issparse(new.X) else new.X)
    with pytest.raises(ValueError, match=r"Put the raw integer counts .* in adata\.X"):
        model.get_latent_representation(new)
