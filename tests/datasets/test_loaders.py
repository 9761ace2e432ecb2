from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from anndata import AnnData
from mudata import MuData

from scvi_gen import datasets as ds
from scvi_gen.datasets._loaders import _counts_from_log1p

RequireData = Callable[[str], Path]

# name -> (shape, {obs column: number of categories})
ANNDATA_CASES = {
    "pbmc3k": ((2700, 13714), {"cell_type": 9}),
    "pancreas": ((350, 12474), {"cell_type": 5, "species": 2, "donor": 6}),
    "kang_ifnb": ((832, 14053), {"condition": 2, "cell_type": 6}),
}
# name -> (n_obs, {modality: n_vars})
MUDATA_CASES = {
    "citeseq_pbmc": (500, {"rna": 19521, "prot": 49, "hto": 4}),
    "citeseq_pbmc5k": (200, {"rna": 16581, "prot": 29}),
    "multiome_pbmc": (1000, {"rna": 45, "atac": 174}),
}


def _assert_counts(adata: AnnData) -> None:
    assert sp.issparse(adata.X) and adata.X.format == "csr"
    data = adata.X.data
    assert data.size > 0
    assert np.all(data >= 0)
    np.testing.assert_array_equal(data, np.round(data))


@pytest.mark.parametrize("name", sorted(ANNDATA_CASES))
def test_anndata_loaders(name: str, require_data: RequireData) -> None:
    require_data(name)
    shape, categories = ANNDATA_CASES[name]
    adata = getattr(ds, name)()
    assert isinstance(adata, AnnData)
    assert adata.shape == shape
    _assert_counts(adata)
    for col, n_categories in categories.items():
        assert isinstance(adata.obs[col].dtype, pd.CategoricalDtype)
        assert len(adata.obs[col].cat.categories) == n_categories
    assert "source" in adata.uns


def test_pbmc3k_unlabelled_cells(require_data: RequireData) -> None:
    require_data("pbmc3k")
    adata = ds.pbmc3k()
    assert adata.obs["cell_type"].isna().sum() == 62
    assert adata.var["gene_ids"].str.startswith("ENSG").all()


@pytest.mark.parametrize("name", sorted(MUDATA_CASES))
def test_mudata_loaders(name: str, require_data: RequireData) -> None:
    require_data(name)
    n_obs, modalities = MUDATA_CASES[name]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mdata = getattr(ds, name)()
    assert not [w for w in caught if issubclass(w.category, FutureWarning)]
    assert isinstance(mdata, MuData)
    assert mdata.n_obs == n_obs
    assert {k: m.n_vars for k, m in mdata.mod.items()} == modalities
    for modality in mdata.mod.values():
        assert modality.n_obs == n_obs
        _assert_counts(modality)


def test_loads_are_independent_objects(require_data: RequireData) -> None:
    require_data("kang_ifnb")
    first = ds.kang_ifnb()
    first.X.data[:] = -1
    assert ds.kang_ifnb().X.data.min() >= 0


@pytest.fixture(scope="module")
def pbmc68k() -> AnnData:
    return ds.pbmc68k_reduced()


def test_pbmc68k_reduced_counts(pbmc68k: AnnData) -> None:
    assert pbmc68k.shape == (700, 765)
    _assert_counts(pbmc68k)
    assert pbmc68k.X.dtype == np.float32
    labels = pbmc68k.obs["cell_type"]
    assert isinstance(labels.dtype, pd.CategoricalDtype)
    assert len(labels.cat.categories) == 10
    assert (labels.astype(str) == pbmc68k.obs["bulk_labels"].astype(str)).all()


def test_pbmc68k_counts_reproduce_scanpy_lognorm(pbmc68k: AnnData) -> None:
    import scanpy as sc

    bundled = sc.datasets.pbmc68k_reduced()
    n_counts = bundled.obs["n_counts"].to_numpy()[:, None]
    relog = np.log1p(pbmc68k.X.toarray() / n_counts * 1e4)
    raw = bundled.raw.X.toarray()
    # scanpy stores raw.X rounded to 3 decimals: the rebuilt counts must give back exactly
    # those values up to that rounding (plus float32 noise).
    assert np.abs(relog - raw).max() <= 5e-4 + 1e-6
    assert np.mean(np.abs(np.round(relog, 3) - raw) < 1e-6) > 0.999
    assert list(pbmc68k.var_names) == list(bundled.raw.var_names)


def test_pbmc68k_n_counts_vs_row_sums(pbmc68k: AnnData) -> None:
    # n_counts is the library size over all genes of the 68k data; these 765 genes hold
    # 11-28 % of it, so the row sums are strictly smaller.
    ratio = np.asarray(pbmc68k.X.sum(axis=1)).ravel() / pbmc68k.obs["n_counts"].to_numpy()
    assert np.all(ratio > 0.1)
    assert np.all(ratio < 0.3)


def test_counts_from_log1p_measured_tolerance(pbmc68k: AnnData) -> None:
    import scanpy as sc

    bundled = sc.datasets.pbmc68k_reduced()
    raw = bundled.raw.X.toarray().astype(np.float64)
    values = np.expm1(raw) * bundled.obs["n_counts"].to_numpy()[:, None] / 1e4
    rel_dev = np.abs(values - np.rint(values)) / np.maximum(np.rint(values), 1)
    assert rel_dev.max() < ds.PBMC68K_RTOL
    assert np.abs(values - np.rint(values)).max() < 0.1


def test_counts_from_log1p_rejects_non_integers() -> None:
    counts = sp.random(20, 30, density=0.3, format="csr", random_state=0)
    counts.data = np.ceil(counts.data * 50)
    library = np.asarray(counts.sum(axis=1)).ravel()
    log_norm = counts.multiply(1e4 / library[:, None]).tocsr()
    log_norm.data = np.log1p(log_norm.data)
    rebuilt = _counts_from_log1p(log_norm, library, 1e4, 1e-3)
    np.testing.assert_array_equal(rebuilt.toarray(), counts.toarray())
    with pytest.raises(ValueError, match="not integers"):
        _counts_from_log1p(log_norm, library * 1.37, 1e4, 1e-3)
