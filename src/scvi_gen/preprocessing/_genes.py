"""seurat_v3 highly variable genes, computed in two streaming passes over row blocks.

scanpy's ``sc.pp.highly_variable_genes(flavor="seurat_v3")`` does not fit here: it needs the
whole cells x genes matrix in memory (an AnnData whose ``.X`` it indexes, copies per batch and
densifies for dense input), which a backed matrix or a data module over data larger than
memory cannot give. :func:`select_hvgs_from_source` reproduces its single-batch computation
from a :data:`~scvi_gen.base.BatchSource` instead, holding one block at a time:

1. per-gene mean and variance (``ddof=1``, float64, as scanpy's ``_get_mean_var``);
2. the loess fit (skmisc, ``span=0.3``, ``degree=2``) of log10 variance on log10 mean over the
   non-constant genes;
3. a second pass summing the counts and squared counts clipped at
   ``reg_std * sqrt(n_cells) + mean``, which gives each gene's normalised variance;
4. the top genes by normalised variance, ranked with scanpy's own double ``argsort``.

The sums are accumulated in the order scanpy accumulates them (cell by cell), so the selected
genes are exactly scanpy's, ties included.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import scipy.sparse as sp

from scvi_gen._matrix import DEFAULT_CHUNK_SIZE, iter_row_chunks

logger = logging.getLogger(__name__)

#: Key of a batch's count matrix (``scvi.REGISTRY_KEYS.X_KEY``).
_X_KEY = "X"
#: Loess spans tried in turn: scanpy's default, then a global fit for tiny or homogeneous data.
_SPANS = (0.3, 1.0)
#: skmisc's loess kills the process (segfault) below 4 points, and fits nothing sensible on
#: fewer than 4 cells: such inputs go straight to the variance-to-mean fallback.
_MIN_LOESS_POINTS = 4
_MIN_LOESS_CELLS = 4


class _Moments(NamedTuple):
    """Pass-1 statistics of every gene."""

    n_cells: int
    total: np.ndarray
    total_sq: np.ndarray


def select_hvgs(
    counts: Any, gene_names: pd.Index, n_hvg: int, *, return_mask: bool = False
) -> pd.Index | np.ndarray:
    """Top ``n_hvg`` seurat_v3 highly variable genes of raw ``counts``, in their original order.

    The same genes as ``sc.pp.highly_variable_genes(flavor="seurat_v3")``, computed by
    :func:`select_hvgs_from_source` over row chunks, so a backed matrix is never loaded whole.
    All genes are returned when there are not more than ``n_hvg``. When the loess fit fails on
    tiny or homogeneous data, a wider span is tried, then the genes with the highest
    variance-to-mean ratio are taken (with a :class:`RuntimeWarning`); fewer than 4 cells or
    fewer than 4 non-constant genes go straight to that fallback.

    Parameters
    ----------
    counts
        Cells x genes raw counts (dense, sparse or backed; not modified).
    gene_names
        Names of the columns of ``counts``.
    n_hvg
        Number of genes to select.
    return_mask
        Return a boolean mask over the genes instead of their names (positions stay exact
        when gene names repeat).

    Returns
    -------
    The selected gene names, or their mask.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(0)
    >>> counts = rng.poisson(rng.gamma(0.5, 4.0, 50), size=(200, 50))
    >>> genes = pd.Index([f"g{i}" for i in range(50)])
    >>> select_hvgs(counts, genes, 10).size
    10
    """
    if len(gene_names) != counts.shape[1]:
        raise ValueError(
            f"{len(gene_names)} gene names for a matrix with {counts.shape[1]} columns."
        )
    _check_n_hvg(n_hvg)
    if n_hvg >= len(gene_names):
        logger.info("Only %d genes (<= n_hvg=%d): using all of them.", len(gene_names), n_hvg)
        return np.ones(len(gene_names), dtype=bool) if return_mask else gene_names

    def source() -> Iterator[dict[str, sp.csr_matrix]]:
        for block in iter_row_chunks(counts, DEFAULT_CHUNK_SIZE):
            yield {_X_KEY: sp.csr_matrix(block)}

    is_hvg = _seurat_v3_mask(source, counts.shape[1], n_hvg)
    # Keep the training gene order so that HVG columns are reproducible and readable.
    return is_hvg if return_mask else gene_names[is_hvg]


def select_hvgs_from_source(
    source: Callable[[], Iterator[dict[str, Any]]],
    n_genes: int,
    n_hvg: int,
    *,
    gene_names: pd.Index | None = None,
    return_mask: bool = True,
) -> np.ndarray | pd.Index:
    """seurat_v3 highly variable genes of counts streamed in row blocks (two passes).

    Selects exactly the genes of ``sc.pp.highly_variable_genes(flavor="seurat_v3")`` on the
    same cells, holding one block at a time. The fallbacks of :func:`select_hvgs` apply.

    Parameters
    ----------
    source
        A :data:`~scvi_gen.base.BatchSource`: each call starts a new pass and
        yields batches whose ``"X"`` is a cells x genes count matrix (CSR; other sparse or
        dense blocks are converted). Both passes must yield the same cells.
    n_genes
        Number of genes (columns of every block).
    n_hvg
        Number of genes to select; all genes when there are not more.
    gene_names
        Names of the genes, needed only for ``return_mask=False``.
    return_mask
        Return a boolean mask over the genes (default) instead of their names.

    Returns
    -------
    Boolean mask over the genes, or the selected names in their original order.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> rng = np.random.default_rng(0)
    >>> counts = sp.csr_matrix(rng.poisson(rng.gamma(0.5, 4.0, 50), size=(200, 50)))
    >>> source = lambda: ({"X": counts[i : i + 64]} for i in range(0, 200, 64))
    >>> int(select_hvgs_from_source(source, 50, 10).sum())
    10
    """
    if gene_names is not None and len(gene_names) != n_genes:
        raise ValueError(f"{len(gene_names)} gene names for n_genes={n_genes}.")
    if not return_mask and gene_names is None:
        raise ValueError("Pass `gene_names` to get names (`return_mask=False`).")
    _check_n_hvg(n_hvg)
    if n_hvg >= n_genes:
        logger.info("Only %d genes (<= n_hvg=%d): using all of them.", n_genes, n_hvg)
        is_hvg = np.ones(n_genes, dtype=bool)
    else:
        is_hvg = _seurat_v3_mask(source, n_genes, n_hvg)
    return is_hvg if return_mask else gene_names[is_hvg]


def _check_n_hvg(n_hvg: int) -> None:
    if int(n_hvg) != n_hvg or n_hvg < 1:
        raise ValueError(f"`n_hvg` must be a positive integer, got {n_hvg!r}.")


def _seurat_v3_mask(
    source: Callable[[], Iterator[dict[str, Any]]], n_genes: int, n_hvg: int
) -> np.ndarray:
    """seurat_v3 HVG mask, or the variance-to-mean fallback when no loess fit is possible."""
    moments = _moments(source, n_genes)
    mean, var = _mean_var(moments)
    fitted = _fit_log_variance(mean, var, moments.n_cells)
    if fitted is None:
        warnings.warn(
            f"seurat_v3 HVG selection failed (degenerate mean-variance trend); falling back "
            f"to the {n_hvg} genes with the highest count variance-to-mean ratio.",
            RuntimeWarning,
            stacklevel=3,
        )
        is_hvg = np.zeros(n_genes, dtype=bool)
        is_hvg[_top_dispersion_genes(moments, n_hvg)] = True
        return is_hvg
    # As scanpy: constant genes keep a fitted log10 variance of 0 (reg_std 1).
    estimated = np.zeros(n_genes, dtype=np.float64)
    estimated[var > 0] = fitted
    reg_std = np.sqrt(10**estimated)
    n_obs = moments.n_cells
    clip_val = reg_std * np.sqrt(n_obs) + mean
    squared_sum, counts_sum = _clipped_sums(source, n_genes, clip_val, n_obs)
    norm_gene_var = (1 / ((n_obs - 1) * np.square(reg_std))) * (
        (n_obs * np.square(mean)) + squared_sum - 2 * counts_sum * mean
    )
    # scanpy's ranking, kept verbatim (same sort on the same array) so ties break alike; for a
    # single batch its highly_variable_rank sort then keeps exactly the ranks below n_hvg.
    ranks = np.argsort(np.argsort(-norm_gene_var.reshape(1, -1), axis=1), axis=1).ravel()
    return ranks < n_hvg


def _blocks(
    source: Callable[[], Iterator[dict[str, Any]]], n_genes: int
) -> Iterator[sp.csr_matrix]:
    """The count blocks of one pass, as CSR, checked against ``n_genes``."""
    for batch in source():
        block = batch[_X_KEY]
        if not sp.issparse(block):
            block = sp.csr_matrix(np.asarray(block))
        elif not isinstance(block, sp.csr_matrix | sp.csr_array):
            block = sp.csr_matrix(block)
        if block.shape[1] != n_genes:
            raise ValueError(f"A batch has {block.shape[1]} genes, expected n_genes={n_genes}.")
        yield block


def _moments(source: Callable[[], Iterator[dict[str, Any]]], n_genes: int) -> _Moments:
    """Pass 1: number of cells, per-gene sum and sum of squares (float64)."""
    n_cells = 0
    total = np.zeros(n_genes, dtype=np.float64)
    total_sq = np.zeros(n_genes, dtype=np.float64)
    warned = False
    for block in _blocks(source, n_genes):
        n_cells += block.shape[0]
        data = block.data
        if not warned and (np.any(data < 0) or np.any(data != np.round(data))):
            warnings.warn(
                "`flavor='seurat_v3'` expects raw count data, but non-integers were found.",
                UserWarning,
                stacklevel=4,
            )
            warned = True
        total += np.bincount(block.indices, weights=data, minlength=n_genes)
        # Squares in the data's dtype, as scanpy computes them.
        total_sq += np.bincount(block.indices, weights=data * data, minlength=n_genes)
    if n_cells == 0:
        raise ValueError("Cannot select highly variable genes of 0 cells.")
    return _Moments(n_cells, total, total_sq)


def _mean_var(moments: _Moments) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased variance, with scanpy's formula (``_get_mean_var``)."""
    n = moments.n_cells
    mean = moments.total / n
    var = moments.total_sq / n - mean**2
    if n != 1:
        var *= n / (n - 1)
    return mean, var


def _fit_log_variance(mean: np.ndarray, var: np.ndarray, n_cells: int) -> np.ndarray | None:
    """Loess fit of log10 variance on log10 mean over the non-constant genes, or None."""
    not_const = var > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        y = np.log10(var[not_const])
        x = np.log10(mean[not_const])
    # Checked before calling loess, which segfaults (killing the process) on < 4 points.
    if n_cells < _MIN_LOESS_CELLS or x.size < _MIN_LOESS_POINTS:
        logger.info(
            "seurat_v3 skipped: %d cells and %d non-constant genes (loess needs %d and %d).",
            n_cells,
            x.size,
            _MIN_LOESS_CELLS,
            _MIN_LOESS_POINTS,
        )
        return None
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        logger.info("seurat_v3 skipped: non-finite log mean or variance (negative values?).")
        return None
    try:
        from skmisc.loess import loess
    except ImportError as err:  # pragma: no cover - a declared dependency
        raise ImportError("seurat_v3 HVGs need scikit-misc: `pip install scikit-misc`.") from err
    for span in _SPANS:
        try:
            model = loess(x, y, span=span, degree=2)
            model.fit()
        except ValueError as err:
            logger.info("seurat_v3 loess failed with span=%s: %s", span, err)
            continue
        fitted = np.asarray(model.outputs.fitted_values, dtype=np.float64)
        if not np.all(np.isfinite(fitted)):
            logger.info("seurat_v3 loess gave non-finite values with span=%s.", span)
            continue
        if span != _SPANS[0]:
            logger.warning("seurat_v3 HVGs selected with loess span=%s.", span)
        return fitted
    return None


def _clipped_sums(
    source: Callable[[], Iterator[dict[str, Any]]],
    n_genes: int,
    clip_val: np.ndarray,
    n_cells: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Pass 2: per-gene sums of squared and plain counts clipped at ``clip_val``."""
    squared_sum = np.zeros(n_genes, dtype=np.float64)
    counts_sum = np.zeros(n_genes, dtype=np.float64)
    seen = 0
    for block in _blocks(source, n_genes):
        seen += block.shape[0]
        element = np.minimum(block.data.astype(np.float64), clip_val[block.indices])
        # np.add.at adds entry by entry onto the running totals, in the cell order of
        # scanpy's loop, so the totals do not depend on how the cells are batched.
        np.add.at(squared_sum, block.indices, element**2)
        np.add.at(counts_sum, block.indices, element)
    if seen != n_cells:
        raise ValueError(
            f"The source yielded {n_cells} cells on the first pass and {seen} on the second; "
            "every pass must yield the same cells."
        )
    return squared_sum, counts_sum


def _top_dispersion_genes(moments: _Moments, n_top: int) -> np.ndarray:
    """Positions of the ``n_top`` genes with the highest variance / mean of counts."""
    mean = moments.total / moments.n_cells
    variance = moments.total_sq / moments.n_cells - mean**2
    dispersion = np.divide(variance, mean, out=np.zeros_like(mean), where=mean > 0)
    return np.argsort(-dispersion, kind="stable")[:n_top]
