"""Compiled CPU kernels of the NB sampler: counter-based uniforms and CDF inversion.

Why compiled code: drawing counts for 10,000 cells x 14,000 genes touches 140 million
entries. torch fills a uniform matrix from one generator on one thread (about 0.5 s there),
and inverting the CDF with tensor operations costs one round of small tensor calls per count
value, so the largest count of a block sets the number of Python-level iterations. numba
(already a dependency of scanpy) gives both as plain loops over threads:

- :func:`candidates`: the entries whose uniform lies below their mean, the uniforms from
  SplitMix64 of ``(key, entry index)``, a counter-based generator, so every entry's uniform
  depends only on the key and its position (never on how rows are split over threads), and
  the uniform matrix is never stored;
- :func:`finish_candidates`: for each candidate, zero or the smallest ``k`` with
  ``P(X > k) <= w``, entry by entry.

The transcendental functions (``log1p``, ``expm1``, ``exp`` of every candidate) stay in
vectorised numpy/torch calls between the two kernels: scalar libm calls inside a numba loop
cost about 20x more per entry.
"""

from __future__ import annotations

import logging

import numba
import numpy as np

logger = logging.getLogger(__name__)

_MAX_INVERSION_STEPS = 100_000
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_TO_UNIT = np.float32(1.0 / 16777216.0)  # 2^-24: float32 uniforms


@numba.njit(cache=True, inline="always")
def _uniform(key: np.uint64, index: np.int64) -> np.float32:
    """SplitMix64 of ``key + (index + 1) * golden``, as a float32 on [0, 1) (24 bits)."""
    z = key + np.uint64(index + 1) * _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    z = z ^ (z >> np.uint64(31))
    return np.float32(np.int32(z >> np.uint64(40))) * _TO_UNIT


@numba.njit(cache=True, parallel=True)
def _fill_uniforms(out: np.ndarray, key: np.uint64) -> None:
    n, g = out.shape
    for i in numba.prange(n):
        base = np.int64(i) * g
        for j in range(g):
            out[i, j] = _uniform(key, base + j)


def uniform_matrix(key: int, n_rows: int, n_cols: int) -> np.ndarray:
    """Float32 uniforms on [0, 1) (24-bit resolution), a pure function of key and position.

    Entry ``(i, j)`` is the uniform :func:`candidates` compares with ``mu[i, j]``.

    Parameters
    ----------
    key
        64-bit key of the draws.
    n_rows, n_cols
        Shape of the matrix.

    Returns
    -------
    ``(n_rows, n_cols)`` float32 array.

    Examples
    --------
    >>> w = uniform_matrix(1, 2, 3)
    >>> bool(((w >= 0) & (w < 1)).all())
    True
    """
    out = np.empty((n_rows, n_cols), dtype=np.float32)
    _fill_uniforms(out, np.uint64(key))
    return out


@numba.njit(cache=True, parallel=True)
def _candidates_per_row(mu: np.ndarray, key: np.uint64) -> np.ndarray:
    n, g = mu.shape
    out = np.zeros(n, dtype=np.int64)
    for i in numba.prange(n):
        c = 0
        base = np.int64(i) * g
        for j in range(g):
            c += _uniform(key, base + j) < mu[i, j]
        out[i] = c
    return out


@numba.njit(cache=True, parallel=True)
def _fill_candidates(
    mu: np.ndarray,
    theta: np.ndarray,
    key: np.uint64,
    offsets: np.ndarray,
    cols: np.ndarray,
    uniforms: np.ndarray,
    means: np.ndarray,
    dispersions: np.ndarray,
) -> None:
    n, g = mu.shape
    theta_stride = np.int64(1) if theta.shape[0] > 1 else np.int64(0)
    for i in numba.prange(n):
        pos = offsets[i]
        base = np.int64(i) * g
        t_row = np.int64(i) * theta_stride
        for j in range(g):
            w = _uniform(key, base + j)
            if w < mu[i, j]:
                cols[pos] = j
                uniforms[pos] = w
                means[pos] = mu[i, j]
                dispersions[pos] = theta[t_row, j]
                pos += 1


def candidates(
    mu: np.ndarray, theta: np.ndarray, key: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Entries whose uniform is below their mean (row by row), with uniform, mean, dispersion.

    Parameters
    ----------
    mu
        ``(n, g)`` float32 C-contiguous means.
    theta
        ``(1, g)`` or ``(n, g)`` float64 C-contiguous inverse dispersions.
    key
        64-bit key of the uniforms (:func:`uniform_matrix` of the same key gives them all).

    Returns
    -------
    ``(offsets, cols, uniforms, means, dispersions)``: int64 row offsets ``(n + 1,)``, int32
    columns (ascending within rows), and float64 uniforms, means and inverse dispersions of
    the candidates.

    Examples
    --------
    >>> mu = np.full((2, 3), 2.0, dtype=np.float32)
    >>> offsets, cols, w, m, t = candidates(mu, np.ones((1, 3)), key=1)
    >>> offsets.tolist(), cols.tolist()
    ([0, 3, 6], [0, 1, 2, 0, 1, 2])
    """
    key = np.uint64(key)
    per_row = _candidates_per_row(mu, key)
    offsets = np.zeros(mu.shape[0] + 1, dtype=np.int64)
    np.cumsum(per_row, out=offsets[1:])
    n = int(offsets[-1])
    cols = np.empty(n, dtype=np.int32)
    uniforms, means, dispersions = (np.empty(n, dtype=np.float64) for _ in range(3))
    _fill_candidates(mu, theta, key, offsets, cols, uniforms, means, dispersions)
    return offsets, cols, uniforms, means, dispersions


@numba.njit(cache=True, inline="always")
def _invert_one(w: float, mu: float, theta: float, survival: float, p_zero: float) -> int:
    """Smallest ``k >= 1`` with ``P(X > k) <= w`` (the caller knows ``w < P(X > 0)``)."""
    p = p_zero
    ratio = mu / (mu + theta)
    k = 0
    while True:
        k += 1
        p *= (k - 1 + theta) / k * ratio
        survival -= p
        # p == 0: the remaining tail underflowed (probability < 1e-300).
        if survival <= w or p == 0.0 or k >= _MAX_INVERSION_STEPS:
            return k


@numba.njit(cache=True, parallel=True)
def _finish_rows(
    offsets: np.ndarray,
    w: np.ndarray,
    mu: np.ndarray,
    theta: np.ndarray,
    survival: np.ndarray,
    log_p_zero: np.ndarray,
    p_zero: np.ndarray,
    log_p_zero_min: float,
    counts: np.ndarray,
    nonzero_per_row: np.ndarray,
) -> None:
    for i in numba.prange(offsets.shape[0] - 1):
        nonzero = 0
        for e in range(offsets[i], offsets[i + 1]):
            k = 0
            if w[e] < survival[e]:
                nonzero += 1
                if log_p_zero[e] < log_p_zero_min:
                    k = -1
                else:
                    k = _invert_one(w[e], mu[e], theta[e], survival[e], p_zero[e])
            counts[e] = k
        nonzero_per_row[i] = nonzero


def finish_candidates(
    offsets: np.ndarray,
    w: np.ndarray,
    mu: np.ndarray,
    theta: np.ndarray,
    log_p_zero: np.ndarray,
    log_p_zero_min: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Counts of the candidate entries by inversion of the upper tail of the NB.

    An entry is zero when ``w >= P(X > 0)``; otherwise its count is the smallest ``k >= 1``
    with ``P(X > k) <= w``. Working on the upper tail (not the CDF against ``1 - w``) keeps
    full precision for the small ``w`` of rare entries. Entries with
    ``log P(X = 0) < log_p_zero_min`` (where inversion from zero would take too many steps)
    get ``-1``, for the caller to draw by rejection.

    Parameters
    ----------
    offsets
        Row offsets of the candidates (:func:`candidates`).
    w, mu, theta
        Uniform, mean and inverse dispersion of each candidate (float64).
    log_p_zero
        ``log P(X = 0) = -theta * log1p(mu / theta)`` of each candidate (float64).
    log_p_zero_min
        Threshold below which an entry is left as ``-1``.

    Returns
    -------
    ``(counts, nonzero_per_row)``: int64 count per candidate (0, >= 1 or -1) and the number
    of non-zero candidates per row.

    Examples
    --------
    >>> mu, theta = np.array([2.0]), np.array([1.0])
    >>> log_p0 = -theta * np.log1p(mu / theta)
    >>> finish_candidates(np.array([0, 1]), np.array([0.1]), mu, theta, log_p0, -50.0)
    (array([5]), array([1]))
    """
    counts = np.empty(w.shape[0], dtype=np.int64)
    nonzero_per_row = np.empty(offsets.shape[0] - 1, dtype=np.int64)
    survival = -np.expm1(log_p_zero)
    p_zero = np.exp(log_p_zero)
    _finish_rows(
        offsets,
        w,
        mu,
        theta,
        survival,
        log_p_zero,
        p_zero,
        log_p_zero_min,
        counts,
        nonzero_per_row,
    )
    return counts, nonzero_per_row
