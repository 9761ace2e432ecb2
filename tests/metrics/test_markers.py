from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from scvi_gen.metrics import cluster_label_ari, marker_overlap, top_markers


def _two_types(n=60, n_genes=40, seed=0, swap=False):
    """Type A expresses genes 0-9 highly, type B genes 10-19; the rest is background."""
    rng = np.random.default_rng(seed)
    labels = np.array(["A", "B"] * (n // 2))
    mean = np.full((n, n_genes), 1.0)
    high = slice(10, 20) if swap else slice(0, 10)
    other = slice(0, 10) if swap else slice(10, 20)
    mean[labels == "A", high] = 30.0
    mean[labels == "B", other] = 30.0
    counts = rng.poisson(mean).astype(np.float32)
    adata = ad.AnnData(sp.csr_matrix(counts))
    adata.var_names = [f"g{i}" for i in range(n_genes)]
    adata.obs["cell_type"] = pd.Categorical(labels)
    return adata


def test_identical_sets_overlap_completely():
    adata = _two_types()
    table = marker_overlap(adata, adata.copy(), "cell_type", n_top=10)
    assert table["label"].tolist() == ["A", "B"]
    assert table["overlap"].tolist() == [1.0, 1.0]
    assert table["n_shared"].tolist() == [10, 10]


def test_markers_are_the_genes_a_type_expresses():
    markers = top_markers(_two_types(), "cell_type", n_top=10)
    assert set(markers["A"]) == {f"g{i}" for i in range(10)}
    assert set(markers["B"]) == {f"g{i}" for i in range(10, 20)}


def test_swapped_markers_do_not_overlap():
    real, wrong = _two_types(), _two_types(seed=1, swap=True)
    table = marker_overlap(real, wrong, "cell_type", n_top=10)
    assert table["overlap"].tolist() == [0.0, 0.0]


def test_different_genes_are_refused():
    real = _two_types()
    with pytest.raises(ValueError, match="same genes"):
        marker_overlap(real, real[:, ::-1].copy(), "cell_type")


def test_clusters_that_are_the_labels_give_ari_one():
    adata = _two_types(n=120)
    assert cluster_label_ari(adata, "cell_type", n_pcs=5, resolution=0.1) == pytest.approx(1.0)


def test_clusters_of_mixed_types_give_ari_near_zero():
    adata = _two_types(n=120)
    adata.obs["cell_type"] = pd.Categorical(
        np.random.default_rng(0).permutation(adata.obs["cell_type"].to_numpy())
    )
    assert abs(cluster_label_ari(adata, "cell_type", n_pcs=5, resolution=0.1)) < 0.1
