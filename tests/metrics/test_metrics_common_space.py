from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from scvi_gen.metrics import CommonSpace, is_count_matrix, resolve_data_kind


@pytest.fixture(scope="module")
def space(train_adata: ad.AnnData) -> CommonSpace:
    return CommonSpace(n_hvg=50, n_pcs=10, seed=0).fit(train_adata)


def test_fit_selects_requested_number_of_hvgs_in_train_order(
    space: CommonSpace, train_adata: ad.AnnData
) -> None:
    assert space.hvg_names_.size == 50
    positions = train_adata.var_names.get_indexer(space.hvg_names_)
    assert np.all(np.diff(positions) > 0)


def test_fit_uses_all_genes_when_fewer_than_n_hvg(train_adata: ad.AnnData) -> None:
    space = CommonSpace(n_hvg=5000, n_pcs=5).fit(train_adata)
    assert list(space.hvg_names_) == list(train_adata.var_names)


def test_fit_selects_seurat_v3_hvgs(train_adata: ad.AnnData) -> None:
    import scanpy as sc

    expected = sc.pp.highly_variable_genes(
        train_adata.copy(), flavor="seurat_v3", n_top_genes=50, inplace=False
    )
    space = CommonSpace(n_hvg=50, n_pcs=5).fit(train_adata)
    assert set(space.hvg_names_) == set(train_adata.var_names[expected["highly_variable"]])


def test_transform_counts_is_log1p_cp10k_of_hvgs(
    space: CommonSpace, test_adata: ad.AnnData, reference_log_cp10k
) -> None:
    expression, pcs, library = space.transform(test_adata, kind="counts")
    hvg_cols = test_adata.var_names.get_indexer(space.hvg_names_)
    expected = reference_log_cp10k(test_adata)[:, hvg_cols]
    assert expression.dtype == np.float32
    np.testing.assert_allclose(expression, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(library, np.asarray(test_adata.X.sum(axis=1)).ravel())
    assert pcs.shape == (test_adata.n_obs, 10)


def test_transform_projects_with_train_mean(space: CommonSpace, train_adata: ad.AnnData) -> None:
    expression, pcs, _ = space.transform(train_adata)
    expected = (expression - expression.mean(axis=0)) @ space.pca_.components_.T
    np.testing.assert_allclose(pcs, expected, rtol=1e-3, atol=1e-3)


def test_transform_matches_genes_by_name(space: CommonSpace, test_adata: ad.AnnData) -> None:
    order = np.random.default_rng(0).permutation(test_adata.n_vars)
    shuffled = test_adata[:, order].copy()
    original = space.transform(test_adata)
    reordered = space.transform(shuffled)
    np.testing.assert_allclose(reordered.expression, original.expression, rtol=1e-6)
    np.testing.assert_allclose(reordered.library_size, original.library_size)


def test_transform_dense_sparse_and_chunked_agree(
    train_adata: ad.AnnData, test_adata: ad.AnnData
) -> None:
    chunked = CommonSpace(n_hvg=50, n_pcs=10, chunk_size=7).fit(train_adata)
    whole = CommonSpace(n_hvg=50, n_pcs=10).fit(train_adata)
    dense = test_adata.copy()
    dense.X = test_adata.X.toarray()
    np.testing.assert_allclose(
        chunked.transform(test_adata).expression, whole.transform(dense).expression, rtol=1e-6
    )


def test_transform_lognorm_only_subsets_hvgs(
    space: CommonSpace, test_adata: ad.AnnData, reference_log_cp10k
) -> None:
    lognorm = ad.AnnData(reference_log_cp10k(test_adata), var=test_adata.var.copy())
    from_lognorm = space.transform(lognorm, kind="lognorm")
    from_counts = space.transform(test_adata, kind="counts")
    assert from_lognorm.library_size is None
    np.testing.assert_allclose(from_lognorm.expression, from_counts.expression, rtol=1e-5)


def test_transform_lognorm_needs_only_hvgs(
    space: CommonSpace, test_adata: ad.AnnData, reference_log_cp10k
) -> None:
    lognorm = ad.AnnData(reference_log_cp10k(test_adata), var=test_adata.var.copy())
    hvgs_only = lognorm[:, space.hvg_names_].copy()
    assert space.transform(hvgs_only, kind="lognorm").expression.shape == (300, 50)


def test_transform_lognorm_missing_hvg_names_it(
    space: CommonSpace, test_adata: ad.AnnData
) -> None:
    missing = space.hvg_names_[0]
    keep = test_adata.var_names != missing
    lognorm = ad.AnnData(np.ones((3, int(keep.sum()))), var=test_adata.var[keep].copy())
    with pytest.raises(ValueError, match=f"1 HVGs .*missing.*{missing}"):
        space.transform(lognorm, kind="lognorm")


def test_transform_counts_missing_train_gene_names_it(
    space: CommonSpace, test_adata: ad.AnnData
) -> None:
    subset = test_adata[:, 1:].copy()
    with pytest.raises(ValueError, match="training genes missing from var_names: gene0"):
        space.transform(subset, kind="counts")


def test_transform_before_fit_raises(test_adata: ad.AnnData) -> None:
    with pytest.raises(RuntimeError, match="not fitted"):
        CommonSpace().transform(test_adata)


def test_is_count_matrix_detects_counts_and_lognorm() -> None:
    counts = np.array([[0.0, 2.0], [5.0, 1.0]])
    assert is_count_matrix(counts)
    assert is_count_matrix(sp.csr_matrix(counts))
    assert not is_count_matrix(np.log1p(counts))
    assert not is_count_matrix(sp.csr_matrix(-counts))


def test_is_count_matrix_checks_every_chunk() -> None:
    counts = np.ones((25, 3))
    counts[-1, -1] = 0.5
    assert not is_count_matrix(sp.csr_matrix(counts), chunk_size=4)


def test_resolve_data_kind_auto(test_adata: ad.AnnData, reference_log_cp10k) -> None:
    assert resolve_data_kind(test_adata, "auto") == "counts"
    lognorm = ad.AnnData(reference_log_cp10k(test_adata))
    assert resolve_data_kind(lognorm, "auto") == "lognorm"
    assert resolve_data_kind(lognorm, "counts") == "counts"


@pytest.mark.filterwarnings("ignore:seurat_v3 HVG selection failed:RuntimeWarning")
def test_fit_survives_degenerate_mean_variance_trend() -> None:
    # Identical Poisson genes make the seurat_v3 loess fit singular.
    counts = np.random.default_rng(0).poisson(2.0, size=(40, 8)).astype(np.float32)
    space = CommonSpace(n_hvg=4, n_pcs=2).fit(ad.AnnData(counts))
    assert space.hvg_names_.size == 4


def test_hvg_selection_leaves_torch_thread_count_unchanged(train_adata: ad.AnnData) -> None:
    import torch

    from scvi_gen.metrics import select_hvgs

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        select_hvgs(train_adata.X, train_adata.var_names, 50)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
