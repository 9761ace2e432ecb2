from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import torch
from scvi.dataloaders import AnnDataLoader, DataSplitter

from scvi_gen.base import loader_source, manager_source
from scvi_gen.model.flows import ActNorm, MAFFlow, MOEFlow, sample_cells
from tests.conftest import make_counts_adata

MAF_SMALL = {"n_transforms": 1, "hidden_features": (16,), "passes": 2, "embedding_dim": 4}
MOE_SMALL = {
    "n_blocks": 1,
    "hidden_features": (16,),
    "passes": 2,
    "n_groups": 2,
    "token_dim": 10,
    "n_heads": 2,
    "n_experts": 2,
    "embedding_dim": 4,
    "act_norm": True,
}
CASES = [(MAFFlow, MAF_SMALL), (MOEFlow, MOE_SMALL)]


def _counts_with_age(n_cells: int = 150) -> ad.AnnData:
    adata = make_counts_adata(n_cells=n_cells, n_genes=30)
    adata.obs["age"] = np.linspace(20.0, 80.0, adata.n_obs)
    return adata


def _setup(cls: type, adata: ad.AnnData):
    cls.setup_anndata(
        adata, labels_key="cell_type", batch_key="batch", continuous_covariate_keys=["age"]
    )
    return cls._get_most_recent_anndata_manager(adata, required=True)


@pytest.fixture
def backed(tmp_path) -> ad.AnnData:
    path = tmp_path / "counts.h5ad"
    _counts_with_age().write_h5ad(path)
    return ad.read_h5ad(path, backed="r")


@pytest.mark.parametrize(("cls", "small"), CASES)
def test_model_from_registry_trains_on_a_backed_datamodule(cls, small, backed, tmp_path):
    manager = _setup(cls, backed)
    model = cls(None, registry=manager.registry, n_top_genes=12, **small)
    # The architecture comes from the registry; nothing is fitted before training.
    assert model.module.n_genes == 12 and not model.data_state_fitted_
    datamodule = DataSplitter(manager, train_size=0.8, batch_size=32)
    model.train(max_epochs=1, datamodule=datamodule, enable_progress_bar=False)
    assert model.data_state_fitted_ and len(model.genes_) == 12
    assert set(model.genes_) <= set(backed.var_names)
    syn = model.generate(labels={"type0": 10, "type1": 5}, seed=0, progress_bar=False)
    assert list(syn.var_names) == model.genes_
    values = syn.X.toarray()
    assert np.isfinite(values).all() and values.min() >= 0 and values.sum() > 0
    model.save(tmp_path / "model")
    loaded = cls.load(tmp_path / "model")
    again = loaded.generate(labels={"type0": 10, "type1": 5}, seed=0, progress_bar=False)
    assert (again.X != syn.X).nnz == 0


def test_registry_model_without_datamodule_is_a_clear_error(backed):
    manager = _setup(MAFFlow, backed)
    model = MAFFlow(None, registry=manager.registry, n_top_genes=12, **MAF_SMALL)
    with pytest.raises(ValueError, match="datamodule"):
        model.train(max_epochs=1)


def _state(model) -> dict[str, np.ndarray]:
    # The module's data-state buffers (the flow's own are constants of its architecture).
    buffers = {k: v.numpy() for k, v in model.module.named_buffers() if "flow." not in k}
    actnorm = [m for m in model.module.layers if isinstance(m, ActNorm)]
    for i, layer in enumerate(actnorm):
        buffers[f"actnorm{i}.log_scale"] = layer.log_scale.detach().numpy()
    return buffers


@pytest.mark.parametrize(("cls", "small"), CASES)
@pytest.mark.parametrize("shuffled", [False, True])
def test_state_fitted_from_a_loader_matches_the_in_memory_one(cls, small, shuffled):
    adata = _counts_with_age()
    manager = _setup(cls, adata)
    torch.manual_seed(0)
    in_memory = cls(adata, n_top_genes=12, **small)
    torch.manual_seed(0)  # the same initial weights, so ActNorm sees the same network
    from_loader = cls(None, registry=manager.registry, n_top_genes=12, **small)
    # One unshuffled batch of all cells replays the in-memory pass exactly (same noise);
    # shuffled minibatches give other dequantisation noise, so the scalers move a little.
    batch_size = 32 if shuffled else adata.n_obs
    from_loader.fit_data_state(
        loader_source(lambda: AnnDataLoader(manager, shuffle=shuffled, batch_size=batch_size))
    )
    assert from_loader.genes_ == in_memory.genes_
    expected, got = _state(in_memory), _state(from_loader)
    assert expected.keys() == got.keys()
    noisy = ("representation.mean", "representation.std", "actnorm")
    for key in expected:
        atol = 0.15 if shuffled and key.startswith(noisy) else 1e-5
        assert np.allclose(got[key], expected[key], rtol=1e-5, atol=atol), key
    if not shuffled:
        assert np.array_equal(got["representation.mean"], expected["representation.mean"])
    library_a = in_memory.library_size_model.to_dict()
    library_b = from_loader.library_size_model.to_dict()
    assert np.allclose(library_a["overall"], library_b["overall"])
    assert library_a["joint"].keys() == library_b["joint"].keys()
    assert len(from_loader.training_conditions_) == adata.n_obs


def test_data_state_is_fitted_in_a_few_streaming_passes():
    adata = _counts_with_age()
    manager = _setup(MOEFlow, adata)
    model = MOEFlow(None, registry=manager.registry, n_top_genes=12, **MOE_SMALL)
    blocks = manager_source(manager, chunk_size=40)
    passes: list[list[int]] = []

    def source():
        passes.append([])
        for batch in blocks():
            passes[-1].append(batch["X"].shape[0])
            yield batch

    model.fit_data_state(source)
    # Conditions and library sizes, two HVG passes, the scalers, the ActNorm sample; each in
    # blocks of 40 cells.
    assert passes == [[40, 40, 40, 30]] * 5


def test_sample_cells_keeps_a_fixed_number_of_aligned_cells():
    adata = _counts_with_age()
    manager = _setup(MAFFlow, adata)
    sample = sample_cells(manager_source(manager, chunk_size=40), adata.n_obs, size=25, seed=1)
    assert sample["X"].shape == (25, adata.n_vars)
    # Ages are distinct: they name the cells, whose counts must come along.
    rows = np.searchsorted(adata.obs["age"].to_numpy(), sample["extra_continuous_covs"][:, 0])
    assert len(set(rows)) == 25
    assert (sample["X"] != adata.X[rows]).nnz == 0
    assert np.array_equal(sample["labels"][:, 0], adata.obs["_scvi_labels"].to_numpy()[rows])
