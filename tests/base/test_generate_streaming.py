"""generate(out=...): cells streamed to an .h5ad / .zarr store, resumable, seed-stable."""

from __future__ import annotations

import anndata as ad
import h5py
import numpy as np
import pytest

from scvi_gen.baselines import SCVIGenerator
from tests.conftest import make_counts_adata


@pytest.fixture(scope="module")
def model():
    import scvi

    scvi.settings.seed = 0
    adata = make_counts_adata(n_cells=90, n_genes=20)
    SCVIGenerator.setup_anndata(adata, labels_key="cell_type")
    model = SCVIGenerator(adata, n_hidden=16, n_latent=4)
    model.train(max_epochs=2, enable_progress_bar=False)
    return model


def _arrays(path):
    with h5py.File(path, "r") as f:
        return {k: f["X"][k][...] for k in ("data", "indices", "indptr")}


@pytest.mark.parametrize("suffix", [".h5ad", ".zarr"])
def test_streamed_cells_equal_the_in_memory_ones(model, tmp_path, suffix):
    in_memory = model.generate(700, seed=2)
    streamed = model.generate(700, seed=2, batch_size=256, out=tmp_path / f"cells{suffix}")
    np.testing.assert_array_equal(streamed.X[:].toarray(), in_memory.X.toarray())
    assert streamed.obs.equals(in_memory.obs)
    assert list(streamed.var_names) == list(in_memory.var_names)
    assert streamed.uns["scvi_gen"]["complete"]


def test_h5ad_store_opens_backed_with_anndata(model, tmp_path):
    path = tmp_path / "cells.h5ad"
    model.generate(300, seed=0, out=path)
    backed = ad.read_h5ad(path, backed="r")
    assert backed.shape == (300, 20)


def test_killed_run_resumes_to_the_same_file(model, tmp_path, monkeypatch):
    reference = tmp_path / "reference.h5ad"
    model.generate(1000, seed=4, batch_size=256, out=reference)
    path = tmp_path / "cells.h5ad"
    original = type(model)._generate_cells
    calls = {"n": 0}

    def dies_after_two_chunks(self, *args, **kwargs):
        if calls["n"] == 2:
            raise KeyboardInterrupt("killed")
        calls["n"] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(model), "_generate_cells", dies_after_two_chunks)
    with pytest.raises(KeyboardInterrupt):
        model.generate(1000, seed=4, batch_size=256, out=path)
    monkeypatch.setattr(type(model), "_generate_cells", original)
    with pytest.raises(ValueError, match="resume=True"):
        ad_read = __import__("scvi_gen").base.read_generated
        ad_read(path)
    # A different chunk size on resume: the cells are keyed by their index, not the chunks.
    resumed = model.generate(1000, seed=4, batch_size=512, out=path, resume=True)
    assert resumed.n_obs == 1000
    got, want = _arrays(path), _arrays(reference)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key])
    assert resumed.obs.equals(ad.read_h5ad(reference, backed="r").obs)


def test_an_existing_store_is_not_overwritten(model, tmp_path):
    path = tmp_path / "cells.h5ad"
    model.generate(10, seed=0, out=path)
    with pytest.raises(FileExistsError):
        model.generate(10, seed=0, out=path)


def test_resume_of_another_call_is_refused(model, tmp_path):
    path = tmp_path / "cells.h5ad"
    model.generate(10, seed=0, out=path)
    with pytest.raises(ValueError, match="another generation"):
        model.generate(10, seed=1, out=path, resume=True)
