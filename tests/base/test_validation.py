from __future__ import annotations

import anndata as ad
import numpy as np
import pytest

from scvi_gen import SCVIGenerator


def test_non_integer_counts_are_refused(counts_adata):
    counts_adata.X = counts_adata.X * 0.5
    with pytest.raises(ValueError, match="non-integer values.*raw counts"):
        SCVIGenerator.setup_anndata(counts_adata)


def test_nan_values_are_refused(counts_adata):
    X = counts_adata.X.toarray()
    X[0, 0] = np.nan
    counts_adata.X = X
    with pytest.raises(ValueError, match="NaN or infinite"):
        SCVIGenerator.setup_anndata(counts_adata)


def test_negative_values_are_refused(counts_adata):
    X = counts_adata.X.toarray()
    X[1, 1] = -1
    counts_adata.X = X
    with pytest.raises(ValueError, match="negative values"):
        SCVIGenerator.setup_anndata(counts_adata)


def test_empty_anndata_is_refused():
    with pytest.raises(ValueError, match="empty"):
        SCVIGenerator.setup_anndata(ad.AnnData(np.zeros((0, 5), dtype=np.float32)))


def test_missing_labels_key_is_refused(counts_adata):
    with pytest.raises(KeyError, match="labels_key='celltype' is not a column"):
        SCVIGenerator.setup_anndata(counts_adata, labels_key="celltype")


def test_missing_layer_is_refused(counts_adata):
    with pytest.raises(KeyError, match="Layer 'counts' not found"):
        SCVIGenerator.setup_anndata(counts_adata, layer="counts")


def test_missing_label_values_are_refused(counts_adata):
    counts_adata.obs["cell_type"] = counts_adata.obs["cell_type"].astype(object)
    counts_adata.obs.iloc[0, 0] = None
    with pytest.raises(ValueError, match="missing values"):
        SCVIGenerator.setup_anndata(counts_adata, labels_key="cell_type")


def test_setup_leaves_expression_untouched(counts_adata):
    before = counts_adata.X.copy()
    SCVIGenerator.setup_anndata(counts_adata, labels_key="cell_type")
    assert (counts_adata.X != before).nnz == 0
