"""What-if API (predict_perturbation, transfer, interpolate) on a toy two-state problem.

Two cell types x CTRL/STIM; STIM multiplies the first genes sixfold in both types. The
(B, STIM) pair is held out of training, as in the perturbation benchmark.
"""

from __future__ import annotations

import hashlib

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from scvi_gen import CFGen, LatentDiffusion, SCVIGenerator

N_GENES, N_RESPONDING = 16, 4
MODELS = ("CFGen", "LatentDiffusion", "SCVIGenerator")


def _toy(seed: int = 0, n_per_group: int = 60) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    blocks, obs = [], []
    for cell_type, offset in (("A", 0), ("B", N_GENES // 2)):
        base = np.full(N_GENES, 2.0)
        base[offset : offset + N_GENES // 2] = 8.0  # each type has its own marker genes
        for condition in ("CTRL", "STIM"):
            mean = base.copy()
            if condition == "STIM":
                mean[:N_RESPONDING] *= 6.0
            blocks.append(rng.poisson(mean, size=(n_per_group, N_GENES)))
            obs += [(cell_type, condition)] * n_per_group
    adata = ad.AnnData(
        sp.csr_matrix(np.vstack(blocks).astype(np.float32)),
        obs=pd.DataFrame(obs, columns=["cell_type", "condition"]).astype("category"),
    )
    adata.obs_names = [f"c{i}" for i in range(adata.n_obs)]
    adata.var_names = [f"g{j}" for j in range(N_GENES)]
    return adata


def _train(name: str, train: ad.AnnData):
    import scvi

    scvi.settings.seed = 0
    data = train.copy()
    if name == "SCVIGenerator":  # scGen's setting: the condition is the label
        SCVIGenerator.setup_anndata(data, labels_key="condition")
        model = SCVIGenerator(data, n_latent=4, n_hidden=32)
        model.train(max_epochs=60, enable_progress_bar=False)
        return model
    cls = {"CFGen": CFGen, "LatentDiffusion": LatentDiffusion}[name]
    cls.setup_anndata(data, labels_key="cell_type", categorical_covariate_keys=["condition"])
    if name == "CFGen":
        model = CFGen(data, n_latent=4, encoder_hidden=(32,), decoder_hidden=(32,), flow_hidden=32)
        model.train(max_epochs_autoencoder=60, max_epochs_flow=20, enable_progress_bar=False)
    else:
        model = LatentDiffusion(data, n_tokens=2, latent_dim=4, token_dim=16, prior_dim=16)
        model.train(max_epochs_autoencoder=60, max_epochs_flow=60, enable_progress_bar=False)
    return model


@pytest.fixture(scope="module")
def toy() -> ad.AnnData:
    return _toy()


@pytest.fixture(scope="module")
def held_out(toy) -> tuple[ad.AnnData, ad.AnnData]:
    """(training cells without B-STIM, the B-CTRL cells)."""
    is_b = (toy.obs["cell_type"] == "B").to_numpy()
    is_stim = (toy.obs["condition"] == "STIM").to_numpy()
    return toy[~(is_b & is_stim)].copy(), toy[is_b & ~is_stim].copy()


@pytest.fixture(scope="module")
def models(held_out) -> dict[str, object]:
    train, _ = held_out
    return {name: _train(name, train) for name in MODELS}


def _predict(model, ctrl: ad.AnnData, **kwargs) -> ad.AnnData:
    transfers = kwargs.get("mode", "transfer") == "transfer"
    extra = {"group_key": "cell_type"} if transfers and isinstance(model, SCVIGenerator) else {}
    return model.predict_perturbation(ctrl, "condition", "STIM", **extra, **kwargs)


def _fingerprint(adata: ad.AnnData) -> str:
    h = hashlib.sha256()
    X = adata.X.toarray() if sp.issparse(adata.X) else np.asarray(adata.X)
    h.update(np.ascontiguousarray(X).tobytes())
    h.update(pd.util.hash_pandas_object(adata.obs.astype(str), index=True).to_numpy().tobytes())
    h.update(str(list(adata.var_names)).encode())
    h.update(str(sorted(adata.uns)).encode())
    h.update(str(sorted(adata.obsm)).encode())
    return h.hexdigest()


@pytest.mark.parametrize("name", MODELS)
def test_held_out_pair_is_predicted_as_counts_of_the_given_cells(models, held_out, name):
    _, ctrl = held_out
    pred = _predict(models[name], ctrl, seed=0)
    assert pred.n_obs == ctrl.n_obs and list(pred.var_names) == list(ctrl.var_names)
    values = pred.X.data
    assert np.all(values >= 0) and np.all(values == np.round(values))
    assert set(pred.obs["condition"].astype(str)) == {"STIM"}
    assert list(pred.obs["source_cell"]) == list(ctrl.obs_names)
    assert set(pred.obs["cell_type"].astype(str)) == {"B"}


@pytest.mark.parametrize("name", MODELS)
def test_prediction_moves_the_responding_genes_up(models, held_out, name):
    """The STIM response learned on type A reaches the held-out B cells."""
    _, ctrl = held_out
    pred = _predict(models[name], ctrl, seed=0, return_mean=True)

    def responding_fraction(a: ad.AnnData) -> float:
        X = a.X.toarray()
        return float((X[:, :N_RESPONDING].sum(1) / X.sum(1)).mean())

    assert responding_fraction(pred) > 1.5 * responding_fraction(ctrl)


@pytest.mark.parametrize("name", MODELS)
def test_unknown_target_condition_is_refused(models, held_out, name):
    _, ctrl = held_out
    with pytest.raises(ValueError, match=r"`to`='LPS' is not a known value of 'condition'"):
        models[name].predict_perturbation(ctrl, "condition", "LPS")


@pytest.mark.parametrize("name", MODELS)
def test_unregistered_condition_key_is_refused(models, held_out, name):
    _, ctrl = held_out
    with pytest.raises(ValueError, match=r"`condition_key`='dose' is not a categorical"):
        models[name].predict_perturbation(ctrl, "dose", "high")


@pytest.mark.parametrize("name", MODELS)
def test_same_seed_gives_the_same_cells(models, held_out, name):
    _, ctrl = held_out
    first, again = (_predict(models[name], ctrl, seed=3) for _ in range(2))
    other = _predict(models[name], ctrl, seed=4)
    assert (first.X != again.X).nnz == 0
    assert (first.X != other.X).nnz > 0


@pytest.mark.parametrize("name", MODELS)
def test_what_if_calls_leave_the_users_anndata_unchanged(models, held_out, name):
    train, ctrl = held_out
    stim = train[(train.obs["condition"] == "STIM").to_numpy()].copy()
    before = [_fingerprint(a) for a in (ctrl, stim, train)]
    model = models[name]
    _predict(model, ctrl, seed=0)
    _predict(model, ctrl, seed=0, mode="sample", n_cells=5)
    model.interpolate(ctrl[:3], stim[:3], n_steps=3)
    model.interpolate_groups(train, "condition", "CTRL", "STIM", n_steps=3)
    assert [_fingerprint(a) for a in (ctrl, stim, train)] == before


@pytest.mark.parametrize("name", MODELS)
def test_sample_mode_draws_the_requested_number_of_cells(models, held_out, name):
    _, ctrl = held_out
    pred = _predict(models[name], ctrl, seed=0, mode="sample", n_cells=7)
    assert pred.n_obs == 7
    assert set(pred.obs["condition"].astype(str)) == {"STIM"}
    assert set(pred.obs["source_cell"]) <= set(ctrl.obs_names)


@pytest.mark.parametrize("name", MODELS)
def test_interpolation_starts_and_ends_at_the_decoded_endpoints(models, held_out, name):
    train, ctrl = held_out
    a = ctrl[:2].copy()
    b = train[(train.obs["condition"] == "STIM").to_numpy()][:2].copy()
    model = models[name]
    path = model.interpolate(a, b, n_steps=5, return_mean=True)
    only_a = model.interpolate(a, a, n_steps=5, return_mean=True)  # a constant path at a
    only_b = model.interpolate(b, b, n_steps=5, return_mean=True)
    X, step = path.X.toarray(), path.obs["step"].to_numpy()
    np.testing.assert_allclose(X[step == 0], only_a.X.toarray()[step == 0], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(X[step == 4], only_b.X.toarray()[step == 4], rtol=1e-4, atol=1e-4)
    assert list(path.obs["t"][:5]) == [0.0, 0.25, 0.5, 0.75, 1.0]


@pytest.mark.parametrize("name", MODELS)
def test_responding_genes_rise_monotonically_from_ctrl_to_stim(models, held_out, name):
    train, _ = held_out
    type_a = train[(train.obs["cell_type"] == "A").to_numpy()].copy()
    path = models[name].interpolate_groups(
        type_a, "condition", "CTRL", "STIM", n_steps=6, return_mean=True
    )
    X = path.X.toarray()
    fraction = X[:, :N_RESPONDING].sum(1) / X.sum(1)  # path.obs is in step order
    assert np.all(np.diff(fraction) > 0), fraction


def test_interpolation_refuses_unpaired_cell_sets(models, held_out):
    train, ctrl = held_out
    with pytest.raises(ValueError, match=r"must have as many cells .* interpolate_groups"):
        models["CFGen"].interpolate(ctrl[:2], train[:3], n_steps=3)


def test_interpolate_groups_names_a_missing_group(models, held_out):
    train, _ = held_out
    with pytest.raises(ValueError, match=r"`b`='LPS' has no cells in adata.obs\['condition'\]"):
        models["CFGen"].interpolate_groups(train, "condition", "CTRL", "LPS")


def test_sample_mode_names_transfer_only_arguments(models, held_out):
    _, ctrl = held_out
    with pytest.raises(ValueError, match=r"`group_key` .* mode='transfer'"):
        models["SCVIGenerator"].predict_perturbation(
            ctrl, "condition", "STIM", mode="sample", group_key="cell_type"
        )
