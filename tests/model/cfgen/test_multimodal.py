from __future__ import annotations

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from scvi_gen.model.cfgen import CFGen, MultimodalCFGen
from scvi_gen.model.cfgen._library import JointLibrarySizeModel
from tests.conftest import make_counts_adata, shared_data_file

SMALL = {
    "n_latent": 8,
    "encoder_hidden": (32,),
    "decoder_hidden": (32,),
    "flow_hidden": 32,
    "flow_blocks": 1,
    "flow_context": 16,
}
ALL = {"rna_layer": "rna", "protein_layer": "prot", "atac_layer": "atac"}


def make_mudata(
    n_cells: int = 120, seed: int = 0, kinds: tuple[str, ...] = ("rna", "prot", "atac")
):
    """Tiny RNA (30 genes) + protein (8) + ATAC (40 peaks) counts driven by 3 labels."""
    rng = np.random.default_rng(seed)
    codes = np.arange(n_cells) % 3
    labels = np.array([f"type{c}" for c in codes])
    depth = rng.uniform(0.5, 1.5, size=(n_cells, 1))
    mods = {}
    if "rna" in kinds:
        mods["rna"] = make_counts_adata(n_cells, 30, 3, seed)
    if "prot" in kinds:
        means = rng.gamma(2.0, 4.0, size=(3, 8))[codes] * depth
        mods["prot"] = ad.AnnData(sp.csr_matrix(rng.poisson(means).astype(np.float32)))
        mods["prot"].var_names = [f"prot{j}" for j in range(8)]
    if "atac" in kinds:
        rates = rng.uniform(0.0, 0.8, size=(3, 40))[codes]
        mods["atac"] = ad.AnnData(sp.csr_matrix(rng.poisson(rates).astype(np.float32)))
        mods["atac"].var_names = [f"chr1:{100 * j}-{100 * j + 50}" for j in range(40)]
    for mod in mods.values():
        mod.obs_names = [f"cell{i}" for i in range(n_cells)]
        mod.obs = mod.obs.iloc[:, :0]
    with md.set_options(pull_on_update=False):
        mdata = md.MuData(mods)
    mdata.obs["cell_type"] = pd.Categorical(labels)
    return mdata


def _train(mdata, modalities=ALL, epochs_ae=8, epochs_flow=8, **init):
    CFGen.setup_mudata(mdata, labels_key="cell_type", modalities=modalities)
    model = CFGen(mdata, **{**SMALL, **init})
    model.train(
        max_epochs_autoencoder=epochs_ae,
        max_epochs_flow=epochs_flow,
        batch_size=64,
        enable_progress_bar=False,
    )
    return model


@pytest.fixture(scope="module")
def mdata():
    return make_mudata()


@pytest.fixture(scope="module")
def trained(mdata):
    torch.manual_seed(0)
    return _train(mdata)


# ----------------------------------------------------------------- setup
def test_setup_registers_each_modality_under_its_own_key(trained):
    specs = trained.module.modalities
    assert [(s.kind, s.name, s.registry_key, s.n_features) for s in specs] == [
        ("rna", "rna", "X", 30),
        ("protein", "prot", "proteins", 8),
        ("atac", "atac", "atac", 40),
    ]
    assert [s.likelihood for s in specs] == ["nb", "nb", "bernoulli"]
    assert isinstance(trained, MultimodalCFGen) and trained.modality_names == [
        "rna",
        "prot",
        "atac",
    ]


def test_missing_modality_names_the_available_ones():
    mdata = make_mudata(30, kinds=("rna", "atac"))
    with pytest.raises(KeyError, match=r"'protein_layer'.*'prot'.*available: \['rna', 'atac'\]"):
        CFGen.setup_mudata(mdata, modalities={"rna_layer": "rna", "protein_layer": "prot"})


def test_non_integer_counts_are_rejected_with_the_modality_named():
    mdata = make_mudata(30)
    mdata.mod["prot"].X = mdata.mod["prot"].X.toarray() * 0.5 + 0.25
    with pytest.raises(ValueError, match=r"mdata\['prot'\]\.X contains non-integer"):
        CFGen.setup_mudata(mdata, modalities=ALL)


def test_nan_values_are_rejected():
    mdata = make_mudata(30)
    dense = mdata.mod["atac"].X.toarray()
    dense[0, 0] = np.nan
    mdata.mod["atac"].X = dense
    with pytest.raises(ValueError, match=r"mdata\['atac'\]\.X contains NaN"):
        CFGen.setup_mudata(mdata, modalities=ALL)


def test_missing_layer_is_named():
    mdata = make_mudata(30)
    with pytest.raises(KeyError, match=r"mdata\['rna'\]\.layers\['counts'\].*available"):
        CFGen.setup_mudata(mdata, rna_layer="counts", modalities=ALL)


@pytest.mark.parametrize(
    ("modalities", "match"),
    [
        (None, "Pass `modalities`"),
        ({"protein": "prot"}, "Unknown keys"),
        ({"rna_layer": "rna", "labels_key": "rna"}, "mdata.obs"),
    ],
)
def test_bad_modalities_argument_is_explained(modalities, match):
    with pytest.raises(ValueError, match=match):
        CFGen.setup_mudata(make_mudata(30), modalities=modalities)


def test_anndata_is_refused_by_setup_mudata():
    with pytest.raises(TypeError, match="setup_anndata"):
        CFGen.setup_mudata(make_counts_adata(30), modalities={"rna_layer": "rna"})


def test_label_key_kept_in_a_modality_gets_a_hint():
    mdata = make_mudata(30)
    mdata.mod["rna"].obs["celltype"] = "a"
    with pytest.raises(KeyError, match=r"mdata\.obs\['celltype'\] = mdata\['rna'\]"):
        CFGen.setup_mudata(mdata, labels_key="celltype", modalities=ALL)


def test_modalities_with_other_cells_are_rejected():
    mdata = make_mudata(30)
    mdata.mod["prot"].obs_names = [f"other{i}" for i in range(30)]
    with md.set_options(pull_on_update=False):
        mdata = md.MuData(dict(mdata.mod))
    with pytest.raises(ValueError, match="same order"):
        CFGen.setup_mudata(mdata, modalities=ALL)


# ------------------------------------------------------------ generation
def test_generate_returns_one_aligned_anndata_per_modality(trained):
    syn = trained.generate(labels={"type0": 7, "type2": 5}, seed=0, progress_bar=False)
    assert isinstance(syn, md.MuData)
    assert {k: m.shape for k, m in syn.mod.items()} == {
        "rna": (12, 30),
        "prot": (12, 8),
        "atac": (12, 40),
    }
    for mod in syn.mod.values():
        assert list(mod.obs_names) == list(syn.obs_names)
        assert list(mod.obs["cell_type"]) == list(syn.obs["cell_type"])
    assert syn.obs["cell_type"].value_counts().to_dict() == {"type0": 7, "type2": 5, "type1": 0}
    assert list(syn.mod["prot"].var_names) == [f"prot{j}" for j in range(8)]


def test_generated_proteins_are_counts_and_peaks_binary(trained):
    syn = trained.generate(60, seed=1, progress_bar=False)
    prot = syn.mod["prot"].X.data
    assert np.all(prot == np.round(prot)) and prot.size > 0
    assert set(np.unique(syn.mod["atac"].X.data)) == {1.0}
    assert syn.uns["scvi_gen"]["model"] == "MultimodalCFGen"


def test_same_seed_gives_same_multimodal_cells(trained):
    a = trained.generate(20, seed=5, progress_bar=False)
    b = trained.generate(20, seed=5, progress_bar=False)
    assert all((a.mod[k].X != b.mod[k].X).nnz == 0 for k in a.mod)


def test_library_size_of_one_modality_can_be_fixed(trained):
    small = trained.generate(40, library_size={"rna": 20}, seed=0, progress_bar=False)
    large = trained.generate(40, library_size={"rna": 5000}, seed=0, progress_bar=False)
    assert small.mod["rna"].X.sum() * 20 < large.mod["rna"].X.sum()


def test_library_size_must_name_modalities(trained):
    with pytest.raises(ValueError, match=r"\{modality: size"):
        trained.generate(5, library_size=100.0, seed=0, progress_bar=False)
    with pytest.raises(KeyError, match="Unknown modality"):
        trained.generate(5, library_size={"hto": 100.0}, seed=0, progress_bar=False)


def test_transfer_returns_a_mudata_under_the_target_condition(trained, mdata):
    moved = trained.transfer(mdata, to={"cell_type": "type1"}, indices=np.arange(10), seed=0)
    assert isinstance(moved, md.MuData)
    assert moved.mod["atac"].shape == (10, 40)
    assert set(moved.obs["cell_type"]) == {"type1"}
    assert list(moved.mod["prot"].obs["cell_type_source"]) == list(
        mdata.obs["cell_type"].astype(str)[:10]
    )


def test_latent_representation_uses_all_modalities(trained, mdata):
    assert trained.get_latent_representation(mdata).shape == (mdata.n_obs, 8)


def test_unimodal_only_methods_say_what_to_use_instead(trained):
    with pytest.raises(NotImplementedError, match="transfer"):
        trained.posterior_predictive_sample()
    with pytest.raises(NotImplementedError, match="predict_modality"):
        trained.impute(mask=np.zeros((120, 30), bool))


# ------------------------------------------------------ cross-modal prediction
def test_predict_protein_from_rna_only(trained, mdata):
    rna_only = mdata.mod["rna"][:25].copy()
    pred = trained.predict_modality(rna_only, from_="rna", to="prot", seed=0)
    assert pred.shape == (25, 8)
    assert list(pred.obs_names) == list(rna_only.obs_names)
    assert list(pred.var_names) == list(mdata.mod["prot"].var_names)
    assert np.all(pred.X.toarray() >= 0)


def test_predicted_atac_draws_are_binary(trained, mdata):
    pred = trained.predict_modality(mdata, from_=["rna", "prot"], to="atac", return_mean=False)
    assert pred.shape == (120, 40)
    assert set(np.unique(pred.X.data)) <= {1.0}


def test_prediction_given_library_sets_the_scale(trained, mdata):
    low = trained.predict_modality(mdata, from_="rna", to="protein", library_size=10.0)
    high = trained.predict_modality(mdata, from_="rna", to="protein", library_size=1000.0)
    np.testing.assert_allclose(high.X.sum(axis=1), 100 * low.X.sum(axis=1), rtol=1e-4)


def test_prediction_errors_are_clear(trained, mdata):
    with pytest.raises(KeyError, match="Unknown modality 'hto'"):
        trained.predict_modality(mdata, from_="rna", to="hto")
    with pytest.raises(ValueError, match="from itself"):
        trained.predict_modality(mdata, from_="prot", to="prot")
    wrong = mdata.mod["rna"][:, :10].copy()
    with pytest.raises(ValueError, match="lacks 20 of the 30 training features"):
        trained.predict_modality(wrong, from_="rna", to="prot")


def test_prediction_matches_features_by_name(trained, mdata):
    rna = mdata.mod["rna"]
    shuffled = rna[:, rna.var_names[::-1]].copy()
    a = trained.predict_modality(rna, from_="rna", to="prot")
    b = trained.predict_modality(shuffled, from_="rna", to="prot")
    np.testing.assert_allclose(a.X.toarray(), b.X.toarray(), rtol=1e-5)


def test_unimodal_model_has_no_predict_modality():
    adata = make_counts_adata(40)
    CFGen.setup_anndata(adata, labels_key="cell_type")
    model = CFGen(adata, **SMALL)
    assert not isinstance(model, MultimodalCFGen)
    with pytest.raises(ValueError, match="setup_mudata"):
        model.predict_modality(adata, from_="rna", to="prot")


# ------------------------------------------------------------ save / load
def test_save_load_with_mudata_gives_identical_cells(trained, mdata, tmp_path):
    trained.save(tmp_path / "m", save_anndata=True)
    assert (tmp_path / "m" / "mdata.h5mu").exists()
    loaded = CFGen.load(tmp_path / "m", adata=mdata)
    bare = CFGen.load(tmp_path / "m")
    a = trained.generate(30, seed=2, progress_bar=False)
    for other in (loaded, bare):
        b = other.generate(30, seed=2, progress_bar=False)
        assert all((a.mod[k].X != b.mod[k].X).nnz == 0 for k in a.mod)
    assert loaded.adata is mdata


def test_load_with_a_mudata_missing_a_modality_fails(trained, tmp_path):
    trained.save(tmp_path / "m")
    with pytest.raises(KeyError, match="needs modality 'atac'"):
        CFGen.load(tmp_path / "m", adata=make_mudata(20, kinds=("rna", "prot")))


# ------------------------------------------------------- other modality sets
def test_rna_atac_with_poisson_peaks_generates_counts():
    torch.manual_seed(0)
    mdata = make_mudata(90, kinds=("rna", "atac"))
    model = _train(
        mdata,
        {"rna_layer": "rna", "atac_layer": "atac"},
        epochs_ae=3,
        epochs_flow=3,
        atac_likelihood="poisson",
    )
    syn = model.generate(200, seed=0, progress_bar=False)
    assert list(syn.mod) == ["rna", "atac"]
    assert syn.mod["atac"].X.max() > 1
    assert [s.likelihood for s in model.module.modalities] == ["nb", "poisson"]


def test_protein_only_setup_registers_proteins_as_x():
    mdata = make_mudata(60, kinds=("prot",))
    CFGen.setup_mudata(mdata, modalities={"protein_layer": "prot"})
    model = CFGen(mdata, **SMALL)
    assert [(s.kind, s.registry_key) for s in model.module.modalities] == [("protein", "X")]


def test_unknown_atac_likelihood_is_an_error(mdata):
    CFGen.setup_mudata(mdata, labels_key="cell_type", modalities=ALL)
    with pytest.raises(ValueError, match="atac_likelihood"):
        CFGen(mdata, atac_likelihood="gaussian", **SMALL)


# --------------------------------------------------------- library model
def test_joint_library_model_keeps_the_correlation_between_modalities():
    rng = np.random.default_rng(0)
    shared = rng.normal(size=2000)
    logs = np.stack([7 + 0.5 * shared, 5 + 0.4 * shared + 0.1 * rng.normal(size=2000)], 1)
    conditions = pd.DataFrame({"cell_type": np.where(np.arange(2000) % 2, "a", "b")})
    model = JointLibrarySizeModel.fit(np.exp(logs), conditions, "cell_type")
    state = JointLibrarySizeModel.from_dict(model.to_dict())
    drawn = np.log(state.sample(conditions, np.random.default_rng(1)))
    assert np.corrcoef(drawn.T)[0, 1] > 0.9
    fixed = state.sample(conditions, np.random.default_rng(1), fixed={0: 1000.0})
    np.testing.assert_allclose(fixed[:, 0], 1000.0)
    # Given a large first library, the second is drawn above its mean.
    assert (
        np.log(fixed[:, 1]).mean()
        < 5.0
        < np.log(
            state.sample(conditions, np.random.default_rng(1), fixed={0: np.exp(8.0)})[:, 1]
        ).mean()
    )


def test_modality_dropout_keeps_at_least_one_modality(trained):
    trained.module.train()
    mask = trained.module._training_mask(500, torch.device("cpu"))
    trained.module.eval()
    assert mask.shape == (500, 3)
    assert bool(mask.any(dim=1).all())
    single = (mask.sum(dim=1) == 1).float().mean().item()
    assert 0.15 < single < 0.45  # modality_dropout = 0.3


# ------------------------------------------------------------- real data
def test_real_multiome_trains_and_generates_binary_peaks():
    from scvi_gen.datasets import multiome_pbmc

    full = multiome_pbmc(path=shared_data_file("multiome_pbmc_1k_small.h5mu"))
    with md.set_options(pull_on_update=False):
        mdata = md.MuData({k: full.mod[k][:200].copy() for k in ("rna", "atac")})
    CFGen.setup_mudata(mdata, modalities={"rna_layer": "rna", "atac_layer": "atac"})
    model = CFGen(mdata, **SMALL)
    model.train(max_epochs_autoencoder=3, max_epochs_flow=3, enable_progress_bar=False)
    syn = model.generate(50, seed=0, progress_bar=False)
    assert syn.mod["rna"].shape == (50, 45) and syn.mod["atac"].shape == (50, 174)
    assert set(np.unique(syn.mod["atac"].X.data)) <= {1.0}


def test_real_citeseq_predicts_proteins_from_rna():
    from scvi_gen.datasets import citeseq_pbmc

    full = citeseq_pbmc(path=shared_data_file("citeseq_pbmc_500.h5mu"))
    rna = full.mod["rna"]
    genes = rna.var_names[np.argsort(-np.asarray(rna.X.sum(axis=0)).ravel())[:200]]
    with md.set_options(pull_on_update=False):
        mdata = md.MuData({"rna": rna[:, genes].copy(), "prot": full.mod["prot"].copy()})
    CFGen.setup_mudata(mdata, modalities={"rna_layer": "rna", "protein_layer": "prot"})
    model = CFGen(mdata, **SMALL)
    model.train(max_epochs_autoencoder=3, max_epochs_flow=2, enable_progress_bar=False)
    pred = model.predict_modality(mdata.mod["rna"][:40], from_="rna", to="prot")
    assert pred.shape == (40, 49)
    assert np.isfinite(pred.X.toarray()).all()


def test_bernoulli_probabilities_sum_to_the_open_peaks():
    from scvi_gen.model.cfgen._multimodal_module import bernoulli_rates

    torch.manual_seed(0)
    proportions = torch.softmax(2 * torch.randn(4, 50), dim=-1)
    target = torch.tensor([[0.0], [3.0], [20.0], [45.0]])
    probs = -torch.expm1(-bernoulli_rates(proportions, target))
    torch.testing.assert_close(probs.sum(dim=-1, keepdim=True), target, atol=1e-3, rtol=1e-4)


# ------------------------------------------------------------- new data
def _copy(mdata):
    with md.set_options(pull_on_update=False):
        new = md.MuData({k: m.copy() for k, m in mdata.mod.items()})
    new.obs["cell_type"] = mdata.obs["cell_type"].to_numpy()
    return new


def _with_modality(mdata, name, part):
    mods = {k: m.copy() for k, m in mdata.mod.items()}
    mods[name] = part
    with md.set_options(pull_on_update=False):
        new = md.MuData(mods)
    new.obs["cell_type"] = mdata.obs["cell_type"].reindex(new.obs_names).to_numpy()
    return new


def test_prediction_rejects_a_modality_with_cells_in_another_order(trained, mdata):
    prot = mdata.mod["prot"]
    shuffled = _with_modality(mdata, "prot", prot[prot.obs_names[::-1]].copy())
    with pytest.raises(ValueError, match="'prot' does not hold the MuData's cells in the same"):
        trained.predict_modality(shuffled, from_="prot", to="rna")


def test_transfer_rejects_a_modality_with_cells_in_another_order(trained, mdata):
    prot = mdata.mod["prot"]
    shuffled = _with_modality(mdata, "prot", prot[prot.obs_names[::-1]].copy())
    with pytest.raises(ValueError, match="same order"):
        trained.transfer(shuffled, to={"cell_type": "type1"}, seed=0)


def test_transfer_rejects_genes_in_another_order(trained, mdata):
    rna = mdata.mod["rna"]
    reordered = _with_modality(mdata, "rna", rna[:, rna.var_names[::-1]].copy())
    with pytest.raises(ValueError, match="genes of modality 'rna' don't match"):
        trained.transfer(reordered, to={"cell_type": "type1"}, seed=0)


def test_latent_of_new_mudata_rejects_nan_proteins(trained, mdata):
    new = _copy(mdata)
    values = new.mod["prot"].X.toarray()
    values[3, 2] = np.nan
    new.mod["prot"].X = values
    with pytest.raises(ValueError, match=r"mdata\['prot'\].X contains NaN"):
        trained.get_latent_representation(new)


def test_latent_of_a_copied_mudata_matches_the_training_one(trained, mdata):
    np.testing.assert_allclose(
        trained.get_latent_representation(_copy(mdata)),
        trained.get_latent_representation(),
        rtol=1e-5,
        atol=1e-6,
    )


def test_a_modality_named_twice_is_rejected(mdata):
    with pytest.raises(ValueError, match=r"names \['rna'\] for more than one layer"):
        CFGen.setup_mudata(mdata, modalities={"rna_layer": "rna", "protein_layer": "rna"})


def test_prediction_needs_the_layer_the_model_was_trained_on(mdata):
    layered = _copy(mdata)
    for mod in layered.mod.values():
        mod.layers["counts"] = mod.X.copy()
    CFGen.setup_mudata(layered, rna_layer="counts", protein_layer="counts", modalities=ALL)
    model = CFGen(layered, **SMALL)
    model.train(max_epochs_autoencoder=1, max_epochs_flow=1, enable_progress_bar=False)
    with pytest.raises(KeyError, match="no layer 'counts'"):
        model.predict_modality(mdata.mod["rna"].copy(), from_="rna", to="prot")


def test_library_sizes_of_the_wrong_length_are_explained(trained, mdata):
    with pytest.raises(ValueError, match=r"one number or one per cell \(5\), got 2"):
        trained.generate(5, library_size={"rna": [100, 200]}, seed=0, progress_bar=False)
    with pytest.raises(ValueError, match=r"one per cell \(120\), got 2"):
        trained.predict_modality(mdata, from_="rna", to="prot", library_size=[1.0, 2.0])


def test_an_empty_modality_is_named(mdata):
    empty = _with_modality(mdata, "prot", mdata.mod["prot"][:, []].copy())
    with pytest.raises(ValueError, match="Modality 'prot' is empty"):
        CFGen.setup_mudata(empty, modalities=ALL)
