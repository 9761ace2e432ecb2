"""The generator contract, checked for every registered generator.

A new generator gets these checks by being registered in ``scvi_gen.model._registry``:
setup, one epoch, generate, save, load, identical samples, new-data checks, and (for the
scvi-tools-trained generators) a model built with ``registry=`` from a data module over a
backed h5ad.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from scvi_gen.model._registry import GENERATORS
from tests.conftest import make_counts_adata
from tests.generators import _DATAMODULE, NAMES, _kwargs, _one_epoch, _spec

#: One intra-op thread: two contend on the 2-core machines and run much slower.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained_models(trained_generators):
    """Every registered generator trained one epoch on the same tiny data (built once)."""
    return trained_generators


@pytest.mark.parametrize("name", NAMES)
def test_generates_cells_with_the_training_genes_and_conditions(name, trained_models):
    _spec(name)
    adata, model = trained_models[name]
    syn = model.generate(labels={"type0": 5, "type1": 3}, seed=0)
    assert syn.n_obs == 8
    assert set(syn.var_names) <= set(adata.var_names)
    assert syn.obs["cell_type"].astype(str).tolist() == ["type0"] * 5 + ["type1"] * 3
    values = syn.X.toarray() if sp.issparse(syn.X) else np.asarray(syn.X)
    assert np.all(np.isfinite(values)) and np.all(values >= 0)
    assert syn.uns["scvi_gen"]["model"] == type(model).__name__


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_gives_the_same_cells(name, trained_models):
    _spec(name)
    _, model = trained_models[name]
    a = model.generate(6, seed=3)
    b = model.generate(6, seed=3)
    np.testing.assert_array_equal(a.X.toarray(), b.X.toarray())


@pytest.mark.parametrize("name", NAMES)
def test_save_load_round_trip_gives_identical_samples(name, trained_models, tmp_path):
    _, cls = _spec(name)
    _, model = trained_models[name]
    model.save(tmp_path / "model")
    loaded = cls.load(tmp_path / "model")
    np.testing.assert_array_equal(
        model.generate(6, seed=1).X.toarray(), loaded.generate(6, seed=1).X.toarray()
    )


@pytest.mark.parametrize("name", NAMES)
def test_new_data_with_genes_in_another_order_is_refused(name, trained_models, tmp_path):
    _, cls = _spec(name)
    adata, model = trained_models[name]
    model.save(tmp_path / "model")
    shuffled = adata[:, adata.var_names[::-1]].copy()
    with pytest.raises(ValueError, match="genes"):
        cls.load(tmp_path / "model", adata=shuffled)


@pytest.mark.parametrize(
    "name", [n for n in NAMES if GENERATORS[n].target.rpartition(".")[2] in _DATAMODULE]
)
def test_registry_built_model_trains_from_a_datamodule_over_a_backed_file(name, tmp_path):
    import scvi
    from scvi.dataloaders import DataSplitter

    spec, cls = _spec(name)
    scvi.settings.seed = 0
    path = tmp_path / "cells.h5ad"
    make_counts_adata(n_cells=90, n_genes=20).write_h5ad(path)
    backed = ad.read_h5ad(path, backed="r")
    cls.setup_anndata(backed, labels_key="cell_type", **spec.setup_kwargs)
    manager = cls._get_most_recent_anndata_manager(backed, required=True)
    datamodule = DataSplitter(manager, train_size=0.8, batch_size=32)
    model = cls(None, registry=manager.registry, **_kwargs(cls, spec))
    assert not model.data_state_fitted_
    # scvi-tools 1.4.2's runner reads model.adata.n_obs for early stopping on a DataSplitter,
    # which a registry-built model does not have.
    train_kwargs = {**spec.train_kwargs, **_one_epoch(cls), "early_stopping": False}
    if cls.__name__ in ("CFGen", "LatentDiffusion"):
        train_kwargs["restore_best"] = False
    model.train(**train_kwargs, datamodule=datamodule)
    assert model.data_state_fitted_
    assert model.library_size_model is not None
    syn = model.generate(labels={"type2": 4}, seed=0)
    assert syn.n_obs == 4 and set(syn.var_names) <= set(backed.var_names)
    model.save(tmp_path / "model")
    loaded = cls.load(tmp_path / "model")
    np.testing.assert_array_equal(
        syn.X.toarray(), loaded.generate(labels={"type2": 4}, seed=0).X.toarray()
    )


@pytest.mark.parametrize("name", NAMES)
def test_cells_do_not_depend_on_the_chunk_size(name, trained_models):
    _spec(name)
    _, model = trained_models[name]
    runs = [model.generate(300, seed=5, batch_size=b).X.toarray() for b in (1, 7, 1024)]
    np.testing.assert_array_equal(runs[0], runs[1])
    np.testing.assert_array_equal(runs[0], runs[2])


@pytest.mark.parametrize("name", NAMES)
def test_cells_streamed_to_disk_equal_those_in_memory(name, trained_models, tmp_path):
    _spec(name)
    _, model = trained_models[name]
    in_memory = model.generate(300, seed=6)
    streamed = model.generate(300, seed=6, out=tmp_path / "cells.h5ad")
    np.testing.assert_array_equal(streamed.X[:].toarray(), in_memory.X.toarray())
    assert list(streamed.layers) == list(in_memory.layers)
    assert streamed.obs.astype(str).equals(in_memory.obs.astype(str))


@pytest.mark.parametrize("name", NAMES)
def test_cli_generates_from_a_saved_model_without_being_told_its_kind(
    name, trained_models, tmp_path
):
    from scvi_gen.cli import main

    _spec(name)
    _, model = trained_models[name]
    model.save(tmp_path / "model")
    out = tmp_path / "x.h5ad"
    main(["generate", "--model", str(tmp_path / "model"), "--n-cells", "10", "--out", str(out)])
    syn = ad.read_h5ad(out)
    assert syn.n_obs == 10
    assert syn.uns["scvi_gen"]["model"] == type(model).__name__
