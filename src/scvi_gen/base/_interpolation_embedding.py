"""Place an interpolation path on an embedding of real cells (computing for ``pl.interpolation``).

The embedding is fitted on the real cells only (common PCA space, then UMAP) and the path
cells are placed on it from their nearest reference cells in PCA space, so the path never
moves the real cells' layout.
"""

from __future__ import annotations

import logging
from typing import Literal

import anndata as ad
import numpy as np
import pandas as pd

from scvi_gen._threads import torch_threads_kept
from scvi_gen.preprocessing import CommonSpace, log1p_cp10k

logger = logging.getLogger(__name__)

Basis = Literal["umap", "pca"]


def embed_interpolation(
    path: ad.AnnData,
    reference: ad.AnnData,
    *,
    space: CommonSpace | None = None,
    basis: Basis = "umap",
    max_reference_cells: int | None = 5000,
    seed: int = 0,
) -> tuple[ad.AnnData, ad.AnnData]:
    """Embed real reference cells and project the cells of an interpolation path onto them.

    Parameters
    ----------
    path
        Output of ``model.interpolate`` or ``model.interpolate_groups`` (counts or NB means,
        with ``obs["t"]``); not modified.
    reference
        Real cells with raw counts (e.g. the training data) that define the embedding; not
        modified.
    space
        A fitted :class:`~scvi_gen.preprocessing.CommonSpace` to reuse; fitted on the
        (subsampled) reference otherwise.
    basis
        ``"umap"`` (UMAP of the reference PCs, each path cell at the distance-weighted mean
        position of its 15 nearest reference cells in PCA space) or
        ``"pca"`` (the first two PCs).
    max_reference_cells
        Reference cells kept (seeded subsample) so that the UMAP stays fast; ``None`` keeps all.
    seed
        Seed of the subsample, the PCA and UMAP.

    Returns
    -------
    ``(path_emb, reference_emb)``. ``path_emb`` has the path's ``obs`` and genes with
    log1p(CP10k) values in ``.X`` and the coordinates in ``obsm["X_<basis>"]``;
    ``reference_emb`` has the kept reference cells' ``obs`` and coordinates.

    Examples
    --------
    >>> path = model.interpolate_groups(adata, "condition", "CTRL", "STIM", n_steps=12)
    >>> path_emb, ref_emb = embed_interpolation(path, adata, basis="umap")
    >>> scvi_gen.pl.interpolation(path_emb, ref_emb, genes=["ISG15"], color="condition")
    """
    if basis not in ("umap", "pca"):
        raise ValueError(f"`basis` must be 'umap' or 'pca', got {basis!r}.")
    if "t" not in path.obs:
        raise ValueError(
            "`path` has no obs['t']; pass the output of model.interpolate or "
            "model.interpolate_groups."
        )
    reference = _subsample(reference, max_reference_cells, seed)
    if space is None:
        space = CommonSpace(n_hvg=min(2000, reference.n_vars), seed=seed).fit(reference)
    # Path cells are on the count scale (sampled counts or NB means), never log-normalised.
    path_pcs = space.transform(path, kind="counts").pcs
    reference_emb = _pcs_anndata(space.transform(reference, kind="counts").pcs, reference.obs)
    path_emb = ad.AnnData(
        log1p_cp10k(path.X),
        obs=path.obs.copy(),
        var=pd.DataFrame(index=path.var_names.copy()),
    )
    path_emb.obsm["X_pca"] = path_pcs.astype(np.float32)
    if basis == "umap":
        path_emb.obsm["X_umap"] = _umap_with_projection(reference_emb, path_pcs, seed)
    return path_emb, reference_emb


def _subsample(adata: ad.AnnData, n_max: int | None, seed: int) -> ad.AnnData:
    if n_max is None or adata.n_obs <= n_max:
        return adata
    keep = np.sort(np.random.default_rng(seed).choice(adata.n_obs, size=n_max, replace=False))
    return adata[keep]


def _pcs_anndata(pcs: np.ndarray, obs: pd.DataFrame) -> ad.AnnData:
    emb = ad.AnnData(
        pcs.astype(np.float32),
        obs=obs.copy(),
        var=pd.DataFrame(index=[f"PC{i + 1}" for i in range(pcs.shape[1])]),
    )
    emb.obsm["X_pca"] = emb.X.copy()
    return emb


def _umap_with_projection(
    reference_emb: ad.AnnData, path_pcs: np.ndarray, seed: int, n_neighbors: int = 15
) -> np.ndarray:
    """UMAP of the reference (in place); each path cell at its PCA neighbours' mean position.

    Not :func:`scanpy.tl.ingest`: with the pynndescent of our stack its index build fails on
    small references (``leaf_size`` left ``None``) and costs tens of seconds of numba
    compilation. A distance-weighted mean of the ``n_neighbors`` nearest reference cells in
    PCA space is what ingest does for labels, is deterministic and puts a copy of a real cell
    on top of that cell's neighbourhood.
    """
    import scanpy as sc
    from sklearn.neighbors import NearestNeighbors

    with torch_threads_kept():
        sc.pp.neighbors(reference_emb, use_rep="X", random_state=seed)
        sc.tl.umap(reference_emb, random_state=seed)
    k = min(n_neighbors, reference_emb.n_obs)
    index = NearestNeighbors(n_neighbors=k).fit(np.asarray(reference_emb.X))
    distances, neighbours = index.kneighbors(path_pcs.astype(np.float32))
    weights = 1.0 / (distances + 1e-6)
    weights /= weights.sum(axis=1, keepdims=True)
    coords = np.asarray(reference_emb.obsm["X_umap"])[neighbours]
    return np.einsum("nk,nkd->nd", weights, coords).astype(np.float32)
