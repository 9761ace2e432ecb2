"""Small numeric helpers shared by the metric modules."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.spatial.distance import cdist

logger = logging.getLogger(__name__)


def as_2d_float_array(x: np.ndarray | Sequence[float], name: str = "x") -> np.ndarray:
    """Convert ``x`` to a float64 2-D array (a 1-D input becomes one column).

    Parameters
    ----------
    x
        Array-like of shape ``(n,)`` or ``(n, d)``.
    name
        Name used in error messages.

    Returns
    -------
    np.ndarray
        Array of shape ``(n, d)`` and dtype float64.
    """
    if sp.issparse(x):
        raise TypeError(
            f"`{name}` is a sparse matrix; the distance metrics take dense embeddings (e.g. "
            "PCs). Score expression matrices with scvi_gen.metrics.evaluate, which embeds "
            "them without densifying."
        )
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"`{name}` must be 1-D or 2-D, got an array with {arr.ndim} dimensions.")
    if arr.shape[0] == 0:
        raise ValueError(f"`{name}` is empty.")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"`{name}` contains NaN or infinite values; remove or impute them first.")
    return arr


def check_same_n_features(x: np.ndarray, y: np.ndarray) -> None:
    """Raise a ValueError if ``x`` and ``y`` have a different number of columns.

    Parameters
    ----------
    x, y
        2-D arrays.

    Returns
    -------
    None
    """
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"Both samples must have the same number of features, got {x.shape[1]} and "
            f"{y.shape[1]}."
        )


def subsample_indices(n: int, max_n: int | None, rng: np.random.Generator) -> np.ndarray:
    """Indices of a random subsample of at most ``max_n`` out of ``n`` rows (sorted).

    Parameters
    ----------
    n
        Number of rows.
    max_n
        Maximum number of rows to keep; ``None`` keeps all.
    rng
        Random generator used to draw the subsample.

    Returns
    -------
    np.ndarray
        Sorted integer indices.
    """
    if max_n is None or n <= max_n:
        return np.arange(n)
    return np.sort(rng.choice(n, size=max_n, replace=False))


def subsample_pair(
    x: np.ndarray, y: np.ndarray, max_cells: int | None, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Subsample each of two samples to at most ``max_cells`` rows with a seeded generator.

    Parameters
    ----------
    x, y
        2-D arrays.
    max_cells
        Maximum number of rows kept per sample; ``None`` keeps everything.
    seed
        Seed of the random generator.

    Returns
    -------
    tuple of np.ndarray
        The subsampled ``x`` and ``y``.
    """
    rng = np.random.default_rng(seed)
    x_idx = subsample_indices(x.shape[0], max_cells, rng)
    y_idx = subsample_indices(y.shape[0], max_cells, rng)
    return x[x_idx], y[y_idx]


def pairwise_distances(x: np.ndarray, y: np.ndarray, squared: bool = False) -> np.ndarray:
    """Euclidean (or squared Euclidean) distance matrix between rows of ``x`` and ``y``.

    Parameters
    ----------
    x, y
        2-D float arrays with the same number of columns.
    squared
        Return squared distances.

    Returns
    -------
    np.ndarray
        Matrix of shape ``(len(x), len(y))``.
    """
    # cdist is exact (no ||a||^2 + ||b||^2 - 2ab cancellation), so identical points give 0.
    return cdist(x, y, metric="sqeuclidean" if squared else "euclidean")


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two vectors, NaN when either is constant or non-finite.

    Parameters
    ----------
    a, b
        1-D arrays of equal length.

    Returns
    -------
    float
        Correlation coefficient in [-1, 1], or NaN.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"Vectors must have the same shape, got {a.shape} and {b.shape}.")
    finite = np.isfinite(a) & np.isfinite(b)
    a, b = a[finite], b[finite]
    if a.size < 2:
        return float("nan")
    return float(rowwise_pearson(a[None, :], b[None, :])[0])


def rowwise_pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row of ``x`` with the same row of ``y``.

    Parameters
    ----------
    x, y
        ``(n, m)`` finite arrays of the same shape.

    Returns
    -------
    ``(n,)`` correlations clipped to [-1, 1]; NaN for a row where either input is constant.
    """
    x_centered = x - x.mean(axis=1, keepdims=True)
    y_centered = y - y.mean(axis=1, keepdims=True)
    denominator = np.sqrt((x_centered**2).sum(axis=1) * (y_centered**2).sum(axis=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = (x_centered * y_centered).sum(axis=1) / denominator
    return np.where(denominator > 0, np.clip(ratio, -1.0, 1.0), np.nan)


def label_array(labels: np.ndarray | Sequence[object] | pd.Series) -> np.ndarray:
    """Labels as an object array with missing values set to ``None``.

    Parameters
    ----------
    labels
        Any 1-D array-like of labels (categorical, strings, integers...).

    Returns
    -------
    np.ndarray
        Object array; missing labels are ``None``.
    """
    series = pd.Series(np.asarray(labels, dtype=object))
    return series.where(series.notna(), None).to_numpy(dtype=object)


def label_strings(labels: np.ndarray | Sequence[object] | pd.Series) -> np.ndarray:
    """Labels as strings (``None`` where missing), comparable across AnnData objects.

    Categories, integers and strings become their text; a whole float becomes the text of
    its integer, since a NaN turns an integer label column into floats (1.0 is the label 1).

    Parameters
    ----------
    labels
        Any 1-D array-like of labels.

    Returns
    -------
    np.ndarray
        Object array of strings and ``None``.
    """
    raw = np.asarray(labels, dtype=object)
    missing = is_missing_label(raw)
    return np.array(
        [None if m else str(_whole_number_as_int(v)) for v, m in zip(raw, missing)], dtype=object
    )


def _whole_number_as_int(value: object) -> object:
    if isinstance(value, float | np.floating) and np.isfinite(value) and float(value).is_integer():
        return int(value)
    return value


def is_missing_label(labels: np.ndarray) -> np.ndarray:
    """Boolean mask of missing (NaN/None) labels.

    Parameters
    ----------
    labels
        1-D array of labels.

    Returns
    -------
    np.ndarray
        Boolean mask, True where the label is missing.
    """
    return pd.isna(pd.Series(np.asarray(labels, dtype=object))).to_numpy()
