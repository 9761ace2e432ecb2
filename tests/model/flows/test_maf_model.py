from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from scvi_gen.model.flows import MAFFlow
from tests.conftest import make_counts_adata

SMALL = {"n_transforms": 2, "hidden_features": (32,), "passes": 4, "embedding_dim": 4}


@pytest.fixture(scope="module")
def trained():
    adata = make_counts_adata(n_cells=120, n_genes=30)
    adata.obs["age"] = np.linspace(20, 80, adata.n_obs)
    MAFFlow.setup_anndata(
        adata, labels_key="cell_type", batch_key="batch", continuous_covariate_keys=["age"]
    )
    model = MAFFlow(adata, n_top_genes=20, **SMALL)
    model.train(max_epochs=3, batch_size=40, enable_progress_bar=False)
    return adata, model


def test_generates_modelled_genes_never_negative(trained):
    _, model = trained
    syn = model.generate(
        labels={"type0": 30, "type2": 10}, covariates={"age": 50.0}, seed=0, progress_bar=False
    )
    assert list(syn.var_names) == model.genes_
    assert len(model.genes_) == 20
    assert sp.issparse(syn.X) and syn.X.min() >= 0
    assert syn.X.nnz > 0
    assert (syn.obs["cell_type"] == "type0").sum() == 30
    assert np.allclose(syn.layers["log1p_norm"].toarray(), syn.X.toarray())


def test_training_history_has_validation_nll(trained):
    _, model = trained
    assert "validation_loss" in model.history
    assert np.isfinite(model.history["validation_loss"].to_numpy(dtype=float)).all()


def test_save_load_gives_identical_samples(trained, tmp_path):
    _, model = trained
    model.save(tmp_path / "maf")
    loaded = MAFFlow.load(tmp_path / "maf")
    assert loaded.genes_ == model.genes_
    kwargs = {"labels": {"type1": 25}, "covariates": {"batch": "b1", "age": 30.0}, "seed": 4}
    a = model.generate(**kwargs, progress_bar=False)
    b = loaded.generate(**kwargs, progress_bar=False)
    assert (a.X != b.X).nnz == 0


def test_log_prob_is_per_cell_and_flags_outliers(trained):
    adata, model = trained
    scores = model.log_prob(adata)
    assert scores.shape == (adata.n_obs,) and np.isfinite(scores).all()
    odd = adata[:10].copy()
    # Move all of each cell's counts to one modelled gene: a profile never seen in training.
    gene = adata.var_names.get_loc(model.genes_[0])
    dense = np.zeros(odd.shape, dtype=np.float32)
    dense[:, gene] = np.asarray(odd.X.sum(1)).ravel()
    odd.X = sp.csr_matrix(dense)
    assert np.median(model.log_prob(odd)) < np.quantile(scores, 0.01)


def test_counts_output_gives_integer_counts():
    adata = make_counts_adata(n_cells=60, n_genes=20)
    MAFFlow.setup_anndata(adata, labels_key="cell_type")
    model = MAFFlow(adata, output="counts", **SMALL)
    model.train(max_epochs=1, enable_progress_bar=False)
    syn = model.generate(labels={"type0": 20}, seed=0, progress_bar=False)
    values = syn.X.data
    assert np.all(values >= 0) and np.all(values == np.round(values))
    assert "log1p_norm" not in syn.layers


def test_paper_preset_uses_the_study_training_settings():
    adata = make_counts_adata(n_cells=60, n_genes=20)
    MAFFlow.setup_anndata(adata, labels_key="cell_type")
    model = MAFFlow(adata, preset="paper", hidden_features=(16,))
    assert model.preset.train["max_epochs"] == 100 and model.preset.train["batch_size"] == 128
    assert len(model.module.layers) == 1
    model.train(max_epochs=1, enable_progress_bar=False)
    assert model.trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-6)


def _nll_drop(preset: str) -> float:
    adata = make_counts_adata(n_cells=200, n_genes=20)
    MAFFlow.setup_anndata(adata, labels_key="cell_type")
    model = MAFFlow(adata, preset=preset, hidden_features=(32,), passes=4)
    model.train(max_epochs=6, batch_size=32, enable_progress_bar=False, early_stopping=False)
    loss = model.history["validation_loss"]["validation_loss"].to_numpy(dtype=float)
    return loss[0] - loss.min()


def test_default_preset_learns_where_paper_preset_barely_moves():
    default, paper = _nll_drop("default"), _nll_drop("paper")
    assert default > 0.5  # nats per cell (about 2 on this data)
    assert paper < 0.05 < default / 10


def test_unknown_preset_is_a_clear_error():
    adata = make_counts_adata(n_cells=30, n_genes=10)
    MAFFlow.setup_anndata(adata, labels_key="cell_type")
    with pytest.raises(ValueError, match="Unknown preset"):
        MAFFlow(adata, preset="fast")


def test_default_generation_chunk_is_the_flows_smaller_one(trained):
    _, model = trained
    assert MAFFlow._generation_chunk == 256
    n = MAFFlow._generation_chunk + 20  # two chunks
    default = model.generate(n, seed=5, progress_bar=False)
    explicit = model.generate(n, seed=5, batch_size=MAFFlow._generation_chunk, progress_bar=False)
    assert (default.X != explicit.X).nnz == 0


def test_log_prob_of_new_cells_with_genes_in_another_order_is_rejected(trained):
    # Read positionally, shuffled genes would be scored as the training genes.
    adata, model = trained
    shuffled = adata[:, adata.var_names[::-1]].copy()
    with pytest.raises(ValueError, match="same genes in another order"):
        model.log_prob(shuffled)


def test_save_load_keeps_labels_that_look_like_numbers(tmp_path):
    # Leiden clusters ("0", "1") and donors ("01") must not come back as integers.
    adata = make_counts_adata(n_cells=60, n_genes=20)
    adata.obs["leiden"] = adata.obs["cell_type"].cat.codes.astype(str)
    adata.obs["donor"] = np.where(np.arange(60) % 2, "01", "02")
    MAFFlow.setup_anndata(adata, labels_key="leiden", batch_key="donor")
    model = MAFFlow(adata, n_top_genes=10, **SMALL)
    model.train(max_epochs=1, batch_size=30, enable_progress_bar=False)
    model.save(tmp_path / "maf")
    loaded = MAFFlow.load(tmp_path / "maf")
    a = model.generate(12, seed=3, progress_bar=False)
    b = loaded.generate(12, seed=3, progress_bar=False)
    assert b.obs["donor"].astype(str).tolist() == a.obs["donor"].astype(str).tolist()
    assert (a.X != b.X).nnz == 0


def test_log_prob_of_no_cells_is_empty(trained):
    adata, model = trained
    assert model.log_prob(adata, indices=[]).shape == (0,)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0}, "`batch_size` must be a positive integer"),
        ({"seed": -1}, "`seed` must be a non-negative integer"),
        ({"library_size": [1000.0, 2000.0]}, r"one number or one per cell \(4\), got 2"),
    ],
)
def test_generate_arguments_are_checked(trained, kwargs, match):
    _, model = trained
    with pytest.raises(ValueError, match=match):
        model.generate(4, **kwargs)
