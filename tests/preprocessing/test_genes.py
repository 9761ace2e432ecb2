from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from scvi_gen.preprocessing import select_hvgs, select_hvgs_from_source
from tests.conftest import shared_data_file

Source = Callable[[], Iterator[dict[str, sp.csr_matrix]]]


def scanpy_hvgs(counts: np.ndarray | sp.spmatrix, n_hvg: int) -> np.ndarray:
    import scanpy as sc

    table = sc.pp.highly_variable_genes(
        ad.AnnData(counts), flavor="seurat_v3", n_top_genes=n_hvg, inplace=False
    )
    return table["highly_variable"].to_numpy(dtype=bool)


def row_batches(counts: sp.spmatrix, batch_size: int) -> Source:
    counts = sp.csr_matrix(counts)

    def source() -> Iterator[dict[str, sp.csr_matrix]]:
        for start in range(0, counts.shape[0], batch_size):
            yield {"X": counts[start : start + batch_size]}

    return source


def synthetic_counts(seed: int = 0) -> np.ndarray:
    """Overdispersed counts of 40 genes, each repeated 5 times (exact ties in every statistic)."""
    rng = np.random.default_rng(seed)
    means = rng.gamma(0.6, 3.0, size=40)
    base = rng.negative_binomial(2, 2 / (2 + means), size=(500, 40))
    base[:, :5] = rng.poisson(0.02, size=(500, 5))  # rare genes
    return np.repeat(base, 5, axis=1).astype(np.float32)


@pytest.fixture(scope="module")
def pbmc3k() -> ad.AnnData:
    shared_data_file("pbmc3k.h5ad")
    from scvi_gen.datasets import pbmc3k

    return pbmc3k()


@pytest.mark.parametrize("batch_size", [2700, 257])
def test_streaming_selects_scanpys_genes_on_pbmc3k(pbmc3k: ad.AnnData, batch_size: int) -> None:
    expected = scanpy_hvgs(pbmc3k.X, 2000)
    mask = select_hvgs_from_source(row_batches(pbmc3k.X, batch_size), pbmc3k.n_vars, 2000)
    assert mask.shape == (13714,) and mask.sum() == 2000
    np.testing.assert_array_equal(mask, expected)


def test_select_hvgs_matches_scanpy_on_pbmc3k(pbmc3k: ad.AnnData) -> None:
    expected = pbmc3k.var_names[scanpy_hvgs(pbmc3k.X, 2000)]
    genes = select_hvgs(pbmc3k.X, pbmc3k.var_names, 2000)
    assert genes.equals(expected)


@pytest.mark.parametrize("batch_size", [500, 257, 7])
@pytest.mark.parametrize("n_hvg", [52, 120])
def test_streaming_matches_scanpy_with_ties(batch_size: int, n_hvg: int) -> None:
    # Boundaries inside groups of identical genes: ties must break as scanpy breaks them.
    counts = synthetic_counts()
    expected = scanpy_hvgs(sp.csr_matrix(counts), n_hvg)
    np.testing.assert_array_equal(expected, scanpy_hvgs(counts, n_hvg))  # dense == sparse
    mask = select_hvgs_from_source(row_batches(counts, batch_size), counts.shape[1], n_hvg)
    np.testing.assert_array_equal(mask, expected)


def test_select_hvgs_accepts_dense_sparse_and_backed(tmp_path) -> None:
    counts = synthetic_counts(seed=1)
    names = pd.Index([f"g{i}" for i in range(counts.shape[1])])
    expected = scanpy_hvgs(counts, 60)
    np.testing.assert_array_equal(select_hvgs(counts, names, 60, return_mask=True), expected)
    adata = ad.AnnData(sp.csr_matrix(counts), var=pd.DataFrame(index=names))
    adata.write_h5ad(tmp_path / "counts.h5ad")
    backed = ad.read_h5ad(tmp_path / "counts.h5ad", backed="r")
    try:
        genes = select_hvgs(backed.X, backed.var_names, 60)
    finally:
        backed.file.close()
    assert genes.equals(names[expected])


def test_names_instead_of_mask() -> None:
    counts = synthetic_counts()
    names = pd.Index([f"g{i}" for i in range(counts.shape[1])])
    source = row_batches(counts, 100)
    genes = select_hvgs_from_source(source, 200, 30, gene_names=names, return_mask=False)
    assert genes.equals(names[select_hvgs_from_source(source, 200, 30)])
    with pytest.raises(ValueError, match="gene_names"):
        select_hvgs_from_source(source, 200, 30, return_mask=False)


def test_all_genes_when_there_are_not_more_than_n_hvg() -> None:
    counts = np.ones((3, 4))
    names = pd.Index(list("abcd"))
    assert select_hvgs(counts, names, 4).equals(names)
    mask = select_hvgs_from_source(row_batches(sp.csr_matrix(counts), 2), 4, 10)
    assert mask.all() and mask.shape == (4,)


@pytest.mark.parametrize(
    "counts",
    [
        np.array([[0.0, 1.0, 5.0, 2.0, 0.0, 3.0, 1.0, 8.0]]),  # 1 cell
        np.tile([[0.0, 1.0, 5.0, 2.0, 0.0, 3.0, 1.0, 8.0]], (3, 1)),  # 3 identical cells
        np.random.default_rng(0).poisson(3.0, size=(2, 10)).astype(float),  # 2 cells
        np.tile([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]], (50, 1)),  # all genes constant
    ],
    ids=["one-cell", "three-identical-cells", "two-cells", "constant-genes"],
)
def test_degenerate_input_falls_back_without_crashing(counts: np.ndarray) -> None:
    # skmisc's loess segfaults on < 4 points: these must never reach it.
    names = pd.Index([f"g{i}" for i in range(counts.shape[1])])
    with pytest.warns(RuntimeWarning, match="seurat_v3 HVG selection failed"):
        mask = select_hvgs(counts, names, 3, return_mask=True)
    assert mask.dtype == bool and mask.shape == (counts.shape[1],) and mask.sum() == 3
    with pytest.warns(RuntimeWarning, match="seurat_v3 HVG selection failed"):
        streamed = select_hvgs_from_source(row_batches(sp.csr_matrix(counts), 1), len(names), 3)
    np.testing.assert_array_equal(streamed, mask)


def test_fallback_takes_the_highest_variance_to_mean_ratio() -> None:
    # Two cells: straight to the fallback; gene 2 (0 / 10) is the most dispersed, gene 0 the
    # least (constant).
    counts = np.array([[5.0, 1.0, 0.0, 2.0, 4.0], [5.0, 3.0, 10.0, 2.0, 0.0]])
    with pytest.warns(RuntimeWarning):
        mask = select_hvgs(counts, pd.Index(list("abcde")), 2, return_mask=True)
    np.testing.assert_array_equal(mask, [False, False, True, False, True])


def test_wider_span_is_tried_when_the_default_fails(caplog: pytest.LogCaptureFixture) -> None:
    # 8 genes: loess with span 0.3 is singular, a global span fits.
    rng = np.random.default_rng(0)
    counts = rng.poisson(rng.gamma(1.0, 3.0, 8), size=(60, 8)).astype(np.float32)
    with caplog.at_level(logging.WARNING, logger="scvi_gen.preprocessing._genes"):
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            mask = select_hvgs(counts, pd.Index([f"g{i}" for i in range(8)]), 3, return_mask=True)
    assert "span=1.0" in caplog.text
    assert mask.sum() == 3


def test_non_integer_values_warn_like_scanpy() -> None:
    counts = synthetic_counts() + 0.5
    with pytest.warns(UserWarning, match="non-integers"):
        select_hvgs_from_source(row_batches(counts, 100), counts.shape[1], 20)


def test_inconsistent_sources_are_errors() -> None:
    counts = sp.csr_matrix(synthetic_counts())
    with pytest.raises(ValueError, match="expected n_genes=10"):
        select_hvgs_from_source(row_batches(counts, 100), 10, 5)
    passes = iter([counts, counts[:10]])

    def shrinking() -> Iterator[dict[str, sp.csr_matrix]]:
        yield {"X": next(passes)}

    with pytest.raises(ValueError, match="same cells"):
        select_hvgs_from_source(shrinking, counts.shape[1], 20)
    with pytest.raises(ValueError, match="0 cells"):
        select_hvgs_from_source(lambda: iter([]), 5, 2)
    with pytest.raises(ValueError, match="positive integer"):
        select_hvgs_from_source(row_batches(counts, 100), counts.shape[1], 0)
