"""Plot an interpolation path on the real cells' embedding, with gene trends along the path."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)


def interpolation(
    path_emb: ad.AnnData,
    reference_emb: ad.AnnData,
    genes: Sequence[str],
    *,
    color: str | None = None,
    ax: Sequence[Axes] | None = None,
    show: bool | None = None,
    return_fig: bool = False,
) -> Figure | list[Axes] | None:
    """Draw a latent path over the real cells (left) and its genes against ``t`` (right).

    Computing happens in :func:`scvi_gen.base.embed_interpolation`; this only draws.

    Parameters
    ----------
    path_emb, reference_emb
        Output of :func:`~scvi_gen.base.embed_interpolation`.
    genes
        Genes whose mean log1p(CP10k) value (and spread over the cells of each step) is drawn
        against ``t``.
    color
        ``reference_emb.obs`` column to colour the real cells by; grey if ``None``.
    ax
        Two axes (embedding, gene trends) to draw into; a new figure otherwise.
    show
        Show the figure; by default only when neither ``ax`` nor ``return_fig`` is given.
    return_fig
        Return the figure.

    Returns
    -------
    The figure with ``return_fig``; the two axes with ``show=False``; otherwise ``None``.

    Examples
    --------
    >>> path_emb, ref_emb = scvi_gen.base.embed_interpolation(path, adata)
    >>> scvi_gen.pl.interpolation(path_emb, ref_emb, genes=["ISG15", "MX1"], color="condition")
    """
    import matplotlib.pyplot as plt

    missing = [g for g in genes if g not in path_emb.var_names]
    if missing:
        raise ValueError(f"`genes` {missing} are not genes of the path; it has {path_emb.n_vars}.")
    if color is not None and color not in reference_emb.obs:
        raise ValueError(f"`color`={color!r} is not an obs column of `reference_emb`.")
    key = "X_umap" if "X_umap" in path_emb.obsm else "X_pca"
    if key not in reference_emb.obsm:
        raise ValueError(f"`reference_emb` has no obsm[{key!r}]; embed both with one call.")
    if ax is None:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    else:
        axes = list(ax)
        if len(axes) != 2:
            raise ValueError(f"`ax` must be two axes (embedding, gene trends), got {len(axes)}.")
        fig = axes[0].figure
    axis_name = "UMAP" if key == "X_umap" else "PC"
    _draw_reference(axes[0], reference_emb.obsm[key], reference_emb.obs, color)
    _draw_path(axes[0], path_emb.obsm[key], path_emb.obs)
    axes[0].set_xlabel(f"{axis_name} 1")
    axes[0].set_ylabel(f"{axis_name} 2")
    _draw_gene_trends(axes[1], path_emb, genes)
    if show is None:
        show = ax is None and not return_fig
    if show:
        plt.show()
    if return_fig:
        return fig
    return None if show else list(axes)


def _draw_reference(ax: Axes, coords: np.ndarray, obs: pd.DataFrame, color: str | None) -> None:
    import matplotlib.pyplot as plt

    coords = np.asarray(coords)[:, :2]
    if color is None:
        ax.scatter(coords[:, 0], coords[:, 1], s=3, color="lightgrey", label="real cells")
        return
    values = obs[color].astype(str).to_numpy()
    categories = sorted(set(values))
    cmap = plt.get_cmap("tab20" if len(categories) > 10 else "Pastel1")
    for i, category in enumerate(categories):
        where = values == category
        ax.scatter(coords[where, 0], coords[where, 1], s=3, color=cmap(i % cmap.N), label=category)
    ax.legend(markerscale=3, fontsize=7, frameon=False, loc="best", title=color)


def _draw_path(ax: Axes, coords: np.ndarray, obs: pd.DataFrame) -> None:
    """Path cells coloured by ``t``; a line through each step's mean position."""
    coords = np.asarray(coords)[:, :2]
    t = obs["t"].to_numpy(dtype=float)
    points = ax.scatter(coords[:, 0], coords[:, 1], c=t, cmap="viridis", s=14, edgecolor="k")
    paths = obs["path"].to_numpy() if "path" in obs else np.zeros(len(t), dtype=int)
    for path in np.unique(paths):
        in_path = paths == path
        steps = np.unique(t[in_path])
        centre = np.array([coords[in_path & (t == s)].mean(0) for s in steps])
        ax.plot(centre[:, 0], centre[:, 1], color="k", lw=1.2)
    ax.figure.colorbar(points, ax=ax, label="t")
    ax.set_title("latent path on the real cells")


def _draw_gene_trends(ax: Axes, path_emb: ad.AnnData, genes: Sequence[str]) -> None:
    """Mean and standard deviation over each step's cells, per gene."""
    t = path_emb.obs["t"].to_numpy(dtype=float)
    steps = np.unique(t)
    for gene in genes:
        column = path_emb[:, gene].X
        values = np.asarray(column.toarray() if sp.issparse(column) else column).ravel()
        mean = np.array([values[t == s].mean() for s in steps])
        spread = np.array([values[t == s].std() for s in steps])
        (line,) = ax.plot(steps, mean, marker="o", ms=3, label=gene)
        ax.fill_between(steps, mean - spread, mean + spread, color=line.get_color(), alpha=0.2)
    ax.set_xlabel("t")
    ax.set_ylabel("log1p(CP10k)")
    ax.set_title("genes along the path")
    ax.legend(fontsize=7, frameon=False)
