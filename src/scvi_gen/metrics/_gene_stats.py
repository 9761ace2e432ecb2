"""Per-gene and gene-gene statistics on log1p(CP10k) expression, and library sizes."""

from __future__ import annotations

import logging

import numpy as np
from scipy.stats import wasserstein_distance

from ._utils import as_2d_float_array, check_same_n_features, pearson

logger = logging.getLogger(__name__)

#: Default number of most variable genes used by :func:`gene_correlation_error`.
DEFAULT_N_CORRELATION_GENES = 300


def _expression_pair(real: np.ndarray, fake: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate two cells x genes matrices with the same genes."""
    real = as_2d_float_array(real, "real")
    fake = as_2d_float_array(fake, "fake")
    check_same_n_features(real, fake)
    return real, fake


def gene_mean_correlation(real: np.ndarray, fake: np.ndarray) -> float:
    """Pearson correlation between the per-gene means of ``real`` and ``fake``.

    Parameters
    ----------
    real
        Real expression (cells x genes, e.g. log1p(CP10k) over the HVGs).
    fake
        Synthetic expression over the same genes, in the same order.

    Returns
    -------
    float
        Correlation across genes; NaN when a mean vector is constant.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.arange(12.0).reshape(4, 3) ** 2
    >>> gene_mean_correlation(x, x)
    1.0
    """
    real, fake = _expression_pair(real, fake)
    return pearson(real.mean(axis=0), fake.mean(axis=0))


def gene_variance_correlation(real: np.ndarray, fake: np.ndarray) -> float:
    """Pearson correlation between the per-gene variances of ``real`` and ``fake``.

    Parameters
    ----------
    real
        Real expression (cells x genes).
    fake
        Synthetic expression over the same genes.

    Returns
    -------
    float
        Correlation across genes; NaN when a variance vector is constant.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.arange(12.0).reshape(4, 3) ** 2
    >>> gene_variance_correlation(x, x)
    1.0
    """
    real, fake = _expression_pair(real, fake)
    return pearson(real.var(axis=0), fake.var(axis=0))


def gene_zero_fraction_correlation(real: np.ndarray, fake: np.ndarray) -> float:
    """Pearson correlation between the per-gene fractions of zero values.

    Parameters
    ----------
    real
        Real expression (cells x genes).
    fake
        Synthetic expression over the same genes.

    Returns
    -------
    float
        Correlation across genes; NaN when a zero-fraction vector is constant (e.g.
        continuous synthetic data without exact zeros).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([[0.0, 1.0, 0.0], [0.0, 2.0, 3.0]])
    >>> gene_zero_fraction_correlation(x, x)
    1.0
    """
    real, fake = _expression_pair(real, fake)
    return pearson((real == 0).mean(axis=0), (fake == 0).mean(axis=0))


def _correlation_matrix(x: np.ndarray) -> np.ndarray:
    """Gene-gene Pearson correlation; pairs involving a constant gene are set to 0."""
    centered = x - x.mean(axis=0)
    norms = np.sqrt(np.sum(centered**2, axis=0))
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = (centered.T @ centered) / np.outer(norms, norms)
    # A constant gene has no defined correlation; 0 ('no linear relation') keeps it neutral.
    corr[~np.isfinite(corr)] = 0.0
    return np.clip(corr, -1.0, 1.0)


def gene_correlation_error(
    real: np.ndarray,
    fake: np.ndarray,
    n_genes: int | None = DEFAULT_N_CORRELATION_GENES,
) -> float:
    """Mean absolute difference between real and synthetic gene-gene correlation matrices.

    Only the ``n_genes`` (default 300) genes with the highest variance **in real** are used,
    so both comparisons made against the same real reference use the same genes and the
    cost stays small. Correlations involving a gene that is constant in one set are set to
    0. The error is averaged over the unique gene pairs (upper triangle, diagonal excluded),
    so it lies in [0, 2] and does not grow with ``n_genes``.

    Parameters
    ----------
    real
        Real expression (cells x genes).
    fake
        Synthetic expression over the same genes.
    n_genes
        Number of most variable real genes to use; None uses all genes.

    Returns
    -------
    float
        Mean absolute correlation difference; NaN with fewer than 2 genes.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(20, 5))
    >>> gene_correlation_error(x, x)
    0.0
    """
    real, fake = _expression_pair(real, fake)
    if n_genes is not None and real.shape[1] > n_genes:
        # Stable sort: ties between constant genes resolve the same way on every run.
        top = np.sort(np.argsort(-real.var(axis=0), kind="stable")[:n_genes])
        real, fake = real[:, top], fake[:, top]
    n = real.shape[1]
    if n < 2:
        return float("nan")
    upper = np.triu_indices(n, k=1)
    difference = _correlation_matrix(real)[upper] - _correlation_matrix(fake)[upper]
    return float(np.mean(np.abs(difference)))


def library_size_distance(real_counts_lib: np.ndarray, fake_counts_lib: np.ndarray) -> float:
    """1-D Wasserstein-1 distance between log1p(total counts) distributions.

    Parameters
    ----------
    real_counts_lib
        Total counts per real cell.
    fake_counts_lib
        Total counts per synthetic cell (only meaningful for count data).

    Returns
    -------
    float
        :func:`scipy.stats.wasserstein_distance` of ``log1p`` library sizes.

    Examples
    --------
    >>> import numpy as np
    >>> lib = np.array([100.0, 1000.0])
    >>> round(library_size_distance(lib, (lib + 1) * np.e - 1), 6)
    1.0
    """
    real_log = np.log1p(np.asarray(real_counts_lib, dtype=np.float64).ravel())
    fake_log = np.log1p(np.asarray(fake_counts_lib, dtype=np.float64).ravel())
    if real_log.size == 0 or fake_log.size == 0:
        raise ValueError("Library size vectors must not be empty.")
    return float(wasserstein_distance(real_log, fake_log))
