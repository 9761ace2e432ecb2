"""embed_interpolation: the path is placed on an embedding fitted on the real cells only."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from scvi_gen.base import embed_interpolation
from scvi_gen.preprocessing import log1p_cp10k


def _reference(seed: int = 0) -> ad.AnnData:
    """Three well-separated clusters of Poisson counts."""
    rng = np.random.default_rng(seed)
    blocks = []
    for k in range(3):
        mean = np.full(30, 1.0)
        mean[10 * k : 10 * k + 10] = 12.0
        blocks.append(rng.poisson(mean, size=(80, 30)))
    adata = ad.AnnData(sp.csr_matrix(np.vstack(blocks).astype(np.float32)))
    adata.obs["cluster"] = pd.Categorical(np.repeat(["a", "b", "c"], 80))
    adata.obs_names = [f"r{i}" for i in range(adata.n_obs)]
    adata.var_names = [f"g{j}" for j in range(30)]
    return adata


def _path_from(reference: ad.AnnData, rows: list[int]) -> ad.AnnData:
    path = reference[rows].copy()
    path.obs = pd.DataFrame(
        {"t": np.linspace(0, 1, len(rows)), "path": 0}, index=[f"p{i}" for i in range(len(rows))]
    )
    return path


@pytest.fixture(scope="module")
def reference() -> ad.AnnData:
    return _reference()


def test_pca_basis_puts_a_copied_real_cell_on_that_cell(reference):
    path_emb, ref_emb = embed_interpolation(
        _path_from(reference, [3, 100, 200]), reference, basis="pca"
    )
    np.testing.assert_allclose(
        path_emb.obsm["X_pca"], ref_emb.obsm["X_pca"][[3, 100, 200]], rtol=1e-5, atol=1e-5
    )


def test_umap_basis_places_a_copied_real_cell_among_its_cluster(reference):
    rows = [3, 100, 200]
    path_emb, ref_emb = embed_interpolation(_path_from(reference, rows), reference, seed=0)
    ref_xy, clusters = ref_emb.obsm["X_umap"], ref_emb.obs["cluster"].to_numpy()
    for xy, row in zip(path_emb.obsm["X_umap"], rows):
        centres = {c: ref_xy[clusters == c].mean(0) for c in ("a", "b", "c")}
        nearest = min(centres, key=lambda c: np.linalg.norm(xy - centres[c]))
        assert nearest == clusters[row]


def test_reference_layout_does_not_depend_on_the_path(reference):
    _, first = embed_interpolation(_path_from(reference, [0, 1]), reference, seed=0)
    _, second = embed_interpolation(_path_from(reference, [150, 239, 7]), reference, seed=0)
    np.testing.assert_array_equal(first.obsm["X_umap"], second.obsm["X_umap"])


def test_path_values_are_log1p_cp10k_of_the_path_cells(reference):
    path = _path_from(reference, [5, 6])
    path_emb, _ = embed_interpolation(path, reference, basis="pca")
    np.testing.assert_allclose(path_emb.X.toarray(), log1p_cp10k(path.X).toarray())
    assert list(path_emb.obs["t"]) == [0.0, 1.0]


def test_reference_is_subsampled_to_the_requested_size(reference):
    _, ref_emb = embed_interpolation(
        _path_from(reference, [0, 1]), reference, basis="pca", max_reference_cells=50
    )
    assert ref_emb.n_obs == 50 and set(ref_emb.obs_names) <= set(reference.obs_names)


def test_path_without_t_is_refused(reference):
    with pytest.raises(ValueError, match=r"no obs\['t'\].*model.interpolate"):
        embed_interpolation(reference[:2].copy(), reference)


def test_unknown_basis_is_refused(reference):
    with pytest.raises(ValueError, match="`basis` must be 'umap' or 'pca'"):
        embed_interpolation(_path_from(reference, [0, 1]), reference, basis="tsne")
