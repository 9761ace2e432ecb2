"""Real-vs-synthetic plots in one shared embedding."""

from __future__ import annotations

import logging
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from scvi_gen._threads import torch_threads_kept
from scvi_gen.metrics import CommonSpace

logger = logging.getLogger(__name__)


def real_vs_synthetic_embedding(
    train: ad.AnnData,
    real: ad.AnnData,
    synthetic: ad.AnnData,
    labels_key: str | None = None,
    *,
    space: CommonSpace | None = None,
    basis: str = "umap",
    seed: int = 0,
) -> ad.AnnData:
    """Embed real and synthetic cells together (PCA fitted on real train, then UMAP).

    Parameters
    ----------
    train
        Real training counts; the common space (HVGs, PCA) is fitted on them unless ``space``
        is given.
    real
        Real cells to show (typically the held-out test set), raw counts.
    synthetic
        Generated cells (counts or log1p(CP10k) values).
    labels_key
        ``obs`` column with labels, shown in the second panel.
    space
        A fitted :class:`~scvi_gen.metrics.CommonSpace` to reuse.
    basis
        ``"umap"`` (neighbours on the shared PCs) or ``"pca"`` (first two PCs).
    seed
        Seed of UMAP.

    Returns
    -------
    A small AnnData (cells x PCs) with ``obs["source"]``, ``obs[labels_key]`` and the 2-D
    coordinates in ``obsm["X_umap"]`` or ``obsm["X_pca"]``.

    Examples
    --------
    >>> emb = real_vs_synthetic_embedding(train, test, syn, labels_key="cell_type")
    """
    import scanpy as sc

    space = space if space is not None else CommonSpace(seed=seed).fit(train)
    pcs_real = space.transform(real, kind="counts").pcs
    pcs_syn = space.transform(synthetic, kind="auto").pcs
    obs = pd.DataFrame(
        {"source": pd.Categorical(["real"] * len(pcs_real) + ["synthetic"] * len(pcs_syn))}
    )
    if labels_key is not None:
        labels = np.concatenate(
            [
                real.obs[labels_key].astype(str).to_numpy(),
                synthetic.obs[labels_key].astype(str).to_numpy(),
            ]
        )
        obs[labels_key] = pd.Categorical(labels)
    obs.index = obs.index.astype(str)
    emb = ad.AnnData(np.vstack([pcs_real, pcs_syn]).astype(np.float32), obs=obs)
    emb.obsm["X_pca"] = emb.X.copy()
    if basis == "umap":
        with torch_threads_kept():
            sc.pp.neighbors(emb, use_rep="X_pca", random_state=seed)
            sc.tl.umap(emb, random_state=seed)
    return emb


def plot_real_vs_synthetic(
    emb: ad.AnnData,
    labels_key: str | None = None,
    *,
    path: str | Path | None = None,
    title: str = "",
):
    """Scatter the shared embedding coloured by source and (optionally) by label.

    Parameters
    ----------
    emb
        Output of :func:`real_vs_synthetic_embedding`.
    labels_key
        Label column to colour the second panel by.
    path
        Where to save a PNG; ``None`` only returns the figure.
    title
        Figure title.

    Returns
    -------
    The matplotlib figure.

    Examples
    --------
    >>> fig = plot_real_vs_synthetic(emb, "cell_type", path="embedding.png")
    """
    import matplotlib as mpl

    if path is not None:
        mpl.use("Agg", force=False)
    import matplotlib.pyplot as plt

    coords = emb.obsm["X_umap"] if "X_umap" in emb.obsm else emb.obsm["X_pca"][:, :2]
    axis = "UMAP" if "X_umap" in emb.obsm else "PC"
    panels = ["source"] + ([labels_key] if labels_key else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 5.5), squeeze=False)
    for ax, key in zip(axes[0], panels):
        _scatter_by(ax, coords, emb.obs[key], key)
        ax.set_xlabel(f"{axis} 1")
        ax.set_ylabel(f"{axis} 2")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
        logger.info("Saved %s", path)
    return fig


def _scatter_by(ax, coords: np.ndarray, values: pd.Series, name: str) -> None:
    import matplotlib.pyplot as plt

    categories = list(pd.Categorical(values).categories)
    cmap = plt.get_cmap("tab20" if len(categories) > 10 else "tab10")
    for i, category in enumerate(categories):
        idx = np.flatnonzero(values.astype(str).to_numpy() == str(category))
        ax.scatter(
            coords[idx, 0], coords[idx, 1], s=4, alpha=0.6, color=cmap(i % cmap.N), label=category
        )
    ax.set_title(f"coloured by {name}")
    ax.legend(markerscale=3, fontsize=7, frameon=False, loc="best")
