"""Marker genes and clusters: how a biologist checks synthetic cells.

:func:`marker_overlap` compares the top marker genes of every label (scanpy's
``rank_genes_groups``, one label against the rest) found in synthetic cells with those found in
real cells; :func:`cluster_label_ari` asks whether Leiden clusters of the cells follow their
labels. Both run on log1p(CP10k) values (computed from counts, or taken as given), and both
need a real-vs-real floor to be read: a real sample of the same size scored against the same
real cells.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from scvi_gen._threads import torch_threads_kept
from scvi_gen.metrics._utils import label_strings
from scvi_gen.preprocessing import log1p_cp10k, resolve_data_kind

logger = logging.getLogger(__name__)

#: Fewest cells a label needs in a data set to get markers (rank_genes_groups' t-test).
MIN_LABEL_CELLS = 3


def _lognorm(adata: AnnData, kind: str, layer: str | None) -> sp.csr_matrix:
    """log1p(CP10k) values of ``adata`` (from counts, or as stored)."""
    matrix = adata.X if layer is None else adata.layers[layer]
    matrix = sp.csr_matrix(matrix, dtype=np.float32)
    resolved = resolve_data_kind(adata, kind, layer)
    return log1p_cp10k(matrix) if resolved == "counts" else matrix


def _shell(adata: AnnData, labels_key: str, kind: str, layer: str | None) -> AnnData:
    """A throwaway AnnData of log1p values and string labels (the input stays untouched)."""
    shell = AnnData(
        X=_lognorm(adata, kind, layer),
        obs=pd.DataFrame(
            {labels_key: pd.Categorical(label_strings(adata.obs[labels_key]))},
            index=pd.RangeIndex(adata.n_obs).astype(str),
        ),
        var=pd.DataFrame(index=adata.var_names.astype(str)),
    )
    counts = shell.obs[labels_key].value_counts()
    keep = shell.obs[labels_key].isin(counts.index[counts >= MIN_LABEL_CELLS])
    return shell[keep.to_numpy()].copy()


def top_markers(
    adata: AnnData,
    labels_key: str,
    n_top: int = 50,
    *,
    method: str = "t-test",
    kind: str = "auto",
    layer: str | None = None,
) -> dict[str, list[str]]:
    """Top ``n_top`` marker genes of every label (one against the rest).

    Parameters
    ----------
    adata
        Cells with counts or log1p(CP10k) values.
    labels_key
        ``.obs`` column with the labels.
    n_top
        Markers per label.
    method
        ``method`` of :func:`scanpy.tl.rank_genes_groups`.
    kind
        ``"counts"``, ``"lognorm"`` or ``"auto"`` (see
        :func:`~scvi_gen.preprocessing.resolve_data_kind`).
    layer
        Layer with the values (``None``: ``.X``).

    Returns
    -------
    ``{label: [gene, ...]}`` for the labels with at least :data:`MIN_LABEL_CELLS` cells
    (ranked best first).

    Examples
    --------
    >>> markers = top_markers(adata, "cell_type", n_top=50)
    """
    import scanpy as sc

    shell = _shell(adata, labels_key, kind, layer)
    groups = list(shell.obs[labels_key].cat.remove_unused_categories().cat.categories)
    if len(groups) < 2:
        raise ValueError(
            f"Markers need at least 2 labels with {MIN_LABEL_CELLS}+ cells in "
            f"obs[{labels_key!r}]; found {groups}."
        )
    with torch_threads_kept():
        sc.tl.rank_genes_groups(
            shell, groupby=labels_key, method=method, n_genes=n_top, use_raw=False
        )
    names = shell.uns["rank_genes_groups"]["names"]
    return {g: [str(x) for x in names[g]] for g in groups}


def marker_overlap(
    real: AnnData,
    synthetic: AnnData,
    labels_key: str,
    n_top: int = 50,
    *,
    method: str = "t-test",
    real_kind: str = "auto",
    synthetic_kind: str = "auto",
    labels: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Jaccard overlap of every label's top markers in synthetic and in real cells.

    Markers are found within each data set separately (each label against the other labels
    of the same data set), as a biologist would on either; identical data sets give 1.

    Parameters
    ----------
    real, synthetic
        Real (e.g. test) and synthetic cells with the same genes and a ``labels_key`` column.
    labels_key
        ``.obs`` column with the labels.
    n_top
        Markers per label.
    method
        ``method`` of :func:`scanpy.tl.rank_genes_groups`.
    real_kind, synthetic_kind
        ``"counts"``, ``"lognorm"`` or ``"auto"``.
    labels
        Labels to report (default: those with markers in both data sets).

    Returns
    -------
    One row per label (``label``, ``overlap``, ``n_shared``), in label order.

    Examples
    --------
    >>> table = marker_overlap(test, synthetic, "cell_type", n_top=50)
    >>> table["overlap"].mean()
    """
    genes = pd.Index(real.var_names.astype(str))
    if not genes.equals(pd.Index(synthetic.var_names.astype(str))):
        raise ValueError(
            "real and synthetic must have the same genes in the same order; subset both to "
            "the shared genes first (e.g. synthetic[:, real.var_names])."
        )
    ours = top_markers(real, labels_key, n_top, method=method, kind=real_kind)
    theirs = top_markers(synthetic, labels_key, n_top, method=method, kind=synthetic_kind)
    wanted = [g for g in ours if g in theirs] if labels is None else [str(g) for g in labels]
    rows = []
    for label in wanted:
        if label not in ours or label not in theirs:
            raise ValueError(
                f"Label {label!r} has no markers in both data sets (fewer than "
                f"{MIN_LABEL_CELLS} cells in one of them)."
            )
        a, b = set(ours[label]), set(theirs[label])
        rows.append({"label": label, "overlap": len(a & b) / len(a | b), "n_shared": len(a & b)})
    return pd.DataFrame(rows, columns=["label", "overlap", "n_shared"])


def cluster_label_ari(
    adata: AnnData,
    labels_key: str,
    *,
    resolution: float = 1.0,
    n_pcs: int = 30,
    n_neighbors: int = 15,
    kind: str = "auto",
    seed: int = 0,
) -> float:
    """Adjusted Rand index between Leiden clusters of the cells and their labels.

    The standard scanpy recipe on log1p(CP10k) values: scale (max 10), PCA, a k-NN graph,
    Leiden (igraph). Cells whose types mix give a low value; score real cells the same way
    for the floor.

    Parameters
    ----------
    adata
        Cells with counts or log1p(CP10k) values and a ``labels_key`` column.
    labels_key
        ``.obs`` column with the labels.
    resolution
        Leiden resolution.
    n_pcs
        Principal components of the graph.
    n_neighbors
        Neighbours of the graph.
    kind
        ``"counts"``, ``"lognorm"`` or ``"auto"``.
    seed
        Seed of PCA and Leiden.

    Returns
    -------
    The adjusted Rand index (1: clusters are the labels).

    Examples
    --------
    >>> cluster_label_ari(synthetic, "cell_type")
    """
    import scanpy as sc
    from sklearn.metrics import adjusted_rand_score

    shell = AnnData(
        X=_lognorm(adata, kind, None),
        obs=pd.DataFrame(index=pd.RangeIndex(adata.n_obs).astype(str)),
    )
    n_comps = int(min(n_pcs, shell.n_obs - 1, shell.n_vars - 1))
    if n_comps < 2:
        raise ValueError(f"Too few cells or genes for clustering: {shell.shape}.")
    with torch_threads_kept():
        sc.pp.scale(shell, max_value=10)
        sc.tl.pca(shell, n_comps=n_comps, random_state=seed)
        sc.pp.neighbors(shell, n_neighbors=min(n_neighbors, shell.n_obs - 1), random_state=seed)
        sc.tl.leiden(
            shell,
            resolution=resolution,
            random_state=seed,
            flavor="igraph",
            n_iterations=2,
            directed=False,
        )
    return float(adjusted_rand_score(label_strings(adata.obs[labels_key]), shell.obs["leiden"]))
