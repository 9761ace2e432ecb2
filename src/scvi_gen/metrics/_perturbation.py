"""Perturbation-response metrics: predicted vs real perturbed cells, against the control.

The scores scGen (Lotfollahi et al., 2019) and CPA (Lotfollahi et al., 2023) report:

- :func:`mean_expression_r2`: squared Pearson correlation of per-gene mean log1p(CP10k)
  expression, over all genes or over the top DEGs of real perturbed vs control cells;
- :func:`relative_energy_distance`: E-distance of predicted to real perturbed cells (in a
  PCA space) divided by that of the control cells to the real perturbed ones, so "no
  change" scores 1 and a perfect prediction 0;
- :func:`deg_jaccard`: overlap of the top DEGs (``scanpy.tl.rank_genes_groups``) of
  predicted vs control and of real vs control.

pertpy's ``Distance("edistance")`` is the same statistic, but pertpy is not a dependency
of scvi-gen (nor installed here); the E-distance reuses
:func:`~scvi_gen.metrics.energy_distance`. :func:`perturbation_scores` computes all of them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from scvi_gen._matrix import get_matrix, iter_row_chunks
from scvi_gen.preprocessing import CommonSpace, log1p_cp10k

from ._distances import energy_distance
from ._utils import pearson

logger = logging.getLogger(__name__)

#: DEGs scored by default (scGen and CPA use 100).
N_TOP_DEGS = 100


def mean_log_expression(
    adata: ad.AnnData, layer: str | None = None, kind: str = "counts"
) -> pd.Series:
    """Per-gene mean of log1p(CP10k) counts, computed in row blocks (never densified).

    Parameters
    ----------
    adata
        Cells x genes raw counts (library sizes are the row totals over all its genes).
    layer
        Layer holding the counts; ``None`` means ``.X``.
    kind
        ``"counts"`` (normalised here) or ``"lognorm"`` (already log1p(CP10k) values).

    Returns
    -------
    Mean expression per gene, indexed by ``var_names``.

    Examples
    --------
    >>> import anndata as ad, numpy as np
    >>> mean_log_expression(ad.AnnData(np.array([[1.0, 3.0], [2.0, 2.0]]))).round(3).tolist()
    [8.194, 8.749]
    """
    if adata.n_obs == 0:
        raise ValueError("`adata` has no cells; per-gene means need at least one.")
    total = np.zeros(adata.n_vars, dtype=np.float64)
    for block in iter_row_chunks(get_matrix(adata, layer)):
        values = _lognorm(block, kind)
        total += np.asarray(values.sum(axis=0), dtype=np.float64).ravel()
    return pd.Series(total / adata.n_obs, index=adata.var_names.astype(str))


def mean_expression_r2(
    predicted: ad.AnnData | pd.Series,
    real: ad.AnnData | pd.Series,
    genes: Sequence[str] | None = None,
) -> float:
    """Squared Pearson correlation of per-gene mean log1p(CP10k) expression.

    scGen's ``r_value ** 2`` of a regression of predicted on real means: 1 when the means
    lie on any increasing or decreasing line, whatever its slope.

    Parameters
    ----------
    predicted, real
        Raw counts (AnnData) or per-gene means (from :func:`mean_log_expression`).
    genes
        Genes to score (e.g. the top DEGs); ``None`` uses the genes both share.

    Returns
    -------
    float
        :math:`r^2` in ``[0, 1]``.

    Examples
    --------
    >>> import pandas as pd
    >>> real = pd.Series([1.0, 2.0, 3.0], index=["a", "b", "c"])
    >>> mean_expression_r2(2 * real + 1, real)
    1.0
    """
    pred = _means(predicted, "predicted")
    ref = _means(real, "real")
    if genes is None:
        genes = ref.index.intersection(pred.index)
    genes = pd.Index([str(g) for g in genes])
    missing = genes.difference(pred.index).union(genes.difference(ref.index))
    if len(missing):
        raise ValueError(
            f"`genes` has {len(missing)} genes absent from the data, e.g. {list(missing[:5])}."
        )
    if len(genes) < 2:
        raise ValueError("R^2 of gene means needs at least 2 genes.")
    r = pearson(pred.loc[genes].to_numpy(), ref.loc[genes].to_numpy())
    return float(round(r * r, 12))


def top_degs(
    group: ad.AnnData,
    reference: ad.AnnData,
    n_top: int = N_TOP_DEGS,
    *,
    method: str = "wilcoxon",
    kinds: tuple[str, str] = ("counts", "counts"),
) -> list[str]:
    """Top differentially expressed genes of ``group`` vs ``reference`` (scanpy).

    ``scanpy.tl.rank_genes_groups`` on log1p(CP10k) counts of both sets, genes ranked by
    their score (most up-regulated in ``group`` first), as scGen does.

    Parameters
    ----------
    group, reference
        Raw counts with the same genes.
    n_top
        Genes returned.
    method
        ``rank_genes_groups`` method (``"wilcoxon"``, ``"t-test"`` ...).
    kinds
        ``"counts"`` or ``"lognorm"`` for ``group`` and ``reference``.

    Returns
    -------
    The ``n_top`` gene names, best first.

    Examples
    --------
    >>> degs = top_degs(stim_b_cells, ctrl_b_cells, n_top=100)
    """
    import scanpy as sc

    if int(n_top) < 1:
        raise ValueError(f"`n_top` must be at least 1, got {n_top}.")
    if not group.var_names.equals(reference.var_names):
        raise ValueError("`group` and `reference` must have the same genes in the same order.")
    if group.n_obs < 2 or reference.n_obs < 2:
        raise ValueError("DEGs need at least 2 cells in `group` and in `reference`.")
    X = [_lognorm(get_matrix(a), k) for a, k in zip((group, reference), kinds, strict=True)]
    matrix = sp.vstack([sp.csr_matrix(x) for x in X], format="csr")
    obs = pd.DataFrame(
        {"side": pd.Categorical(["group"] * group.n_obs + ["reference"] * reference.n_obs)},
        index=[str(i) for i in range(matrix.shape[0])],
    )
    both = ad.AnnData(matrix, obs=obs, var=pd.DataFrame(index=group.var_names.astype(str)))
    sc.tl.rank_genes_groups(
        both, "side", groups=["group"], reference="reference", method=method, n_genes=int(n_top)
    )
    return [str(g) for g in both.uns["rank_genes_groups"]["names"]["group"][: int(n_top)]]


def jaccard(a: Sequence[str], b: Sequence[str]) -> float:
    """Jaccard index ``|A & B| / |A | B|`` of two gene sets (1 for two empty sets).

    Examples
    --------
    >>> jaccard(["a", "b", "c"], ["b", "c", "d"])
    0.5
    """
    sa, sb = set(a), set(b)
    union = sa | sb
    return 1.0 if not union else len(sa & sb) / len(union)


def deg_jaccard(
    predicted: ad.AnnData,
    real: ad.AnnData,
    control: ad.AnnData,
    n_top: int = N_TOP_DEGS,
    *,
    method: str = "wilcoxon",
) -> float:
    """Jaccard overlap of the top DEGs of predicted vs control and of real vs control.

    Parameters
    ----------
    predicted, real, control
        Raw counts with the same genes.
    n_top
        DEGs per side.
    method
        ``rank_genes_groups`` method.

    Returns
    -------
    float
        Jaccard index in ``[0, 1]``.

    Examples
    --------
    >>> deg_jaccard(predicted_stim, real_stim, ctrl, n_top=100)
    """
    return jaccard(
        top_degs(predicted, control, n_top, method=method),
        top_degs(real, control, n_top, method=method),
    )


def relative_energy_distance(
    predicted: np.ndarray,
    real: np.ndarray,
    control: np.ndarray,
    *,
    max_cells: int | None = 2000,
    seed: int = 0,
) -> float:
    """``E(predicted, real) / E(control, real)``: 0 perfect, 1 as good as "no change".

    Parameters
    ----------
    predicted, real, control
        Cells x features coordinates in one space (e.g. the protocol's PCA).
    max_cells
        Points kept per sample (seeded subsample), as in :func:`energy_distance`.
    seed
        Seed of the subsample.

    Returns
    -------
    float
        The ratio (``inf`` when control and real coincide and the prediction does not).

    Examples
    --------
    >>> import numpy as np
    >>> real = np.full((4, 2), 3.0)
    >>> relative_energy_distance(np.full((4, 2), 2.0), real, np.zeros((4, 2)))
    0.3333333333333333
    """
    top = energy_distance(predicted, real, max_cells=max_cells, seed=seed)
    bottom = energy_distance(control, real, max_cells=max_cells, seed=seed)
    if bottom <= 0:
        return 0.0 if top <= 0 else float("inf")
    return float(max(top, 0.0) / bottom)


def perturbation_scores(
    predicted: ad.AnnData,
    real: ad.AnnData,
    control: ad.AnnData,
    *,
    space: CommonSpace | None = None,
    n_top_degs: int = N_TOP_DEGS,
    method: str = "wilcoxon",
    predicted_kind: str = "counts",
    seed: int = 0,
) -> dict[str, float]:
    """All perturbation scores of predicted against real perturbed cells.

    Parameters
    ----------
    predicted
        Predicted perturbed cells (raw counts).
    real
        Real perturbed cells (raw counts, same genes).
    control
        The control cells the prediction started from (raw counts, same genes).
    space
        Fitted :class:`~scvi_gen.metrics.CommonSpace` for the E-distance (the protocol's
        HVG + PCA space fitted on real training cells); ``None`` fits one on
        ``control`` and ``real`` together.
    n_top_degs
        DEGs of real vs control for ``r2_top_degs`` and the Jaccard.
    method
        ``rank_genes_groups`` method.
    predicted_kind
        ``"counts"`` or ``"lognorm"`` (log1p(CP10k) values, e.g. a linear baseline).
    seed
        Seed of the E-distance subsample (and of a fitted space).

    Returns
    -------
    ``{"r2_all", "r2_top_degs", "e_distance", "e_distance_relative", "deg_jaccard"}``.

    Examples
    --------
    >>> scores = perturbation_scores(pred, real_stim, ctrl, space=space)
    """
    for name, a in (("predicted", predicted), ("real", real), ("control", control)):
        if not isinstance(a, ad.AnnData):
            raise TypeError(f"`{name}` must be an AnnData of counts, got {type(a).__name__}.")
    if not (
        predicted.var_names.equals(real.var_names) and real.var_names.equals(control.var_names)
    ):
        raise ValueError("`predicted`, `real` and `control` must share the same genes in order.")
    if space is None:
        space = CommonSpace(seed=seed).fit(ad.concat([control, real]))
    real_degs = top_degs(real, control, n_top_degs, method=method)
    pred_degs = top_degs(
        predicted, control, n_top_degs, method=method, kinds=(predicted_kind, "counts")
    )
    pred_means = mean_log_expression(predicted, kind=predicted_kind)
    real_means = mean_log_expression(real)
    pcs = [space.transform(predicted, kind=predicted_kind).pcs]
    pcs += [space.transform(a, kind="counts").pcs for a in (real, control)]
    return {
        "r2_all": mean_expression_r2(pred_means, real_means),
        "r2_top_degs": mean_expression_r2(pred_means, real_means, genes=real_degs),
        "e_distance": energy_distance(pcs[0], pcs[1], seed=seed),
        "e_distance_relative": relative_energy_distance(*pcs, seed=seed),
        "deg_jaccard": jaccard(pred_degs, real_degs),
    }


def _lognorm(matrix: object, kind: str) -> object:
    if kind == "counts":
        return log1p_cp10k(matrix)
    if kind == "lognorm":
        return sp.csr_matrix(matrix) if sp.issparse(matrix) else np.asarray(matrix)
    raise ValueError(f"`kind` must be 'counts' or 'lognorm', got {kind!r}.")


def _means(values: ad.AnnData | pd.Series, name: str) -> pd.Series:
    if isinstance(values, pd.Series):
        return values.set_axis(values.index.astype(str))
    if isinstance(values, ad.AnnData):
        return mean_log_expression(values)
    raise TypeError(
        f"`{name}` must be an AnnData of counts or a Series of gene means, got "
        f"{type(values).__name__}."
    )
