"""Distribution distances between two samples of points (Wasserstein, MMD, energy)."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

import numpy as np
import ot
from scipy.spatial.distance import pdist

from ._utils import as_2d_float_array, check_same_n_features, pairwise_distances, subsample_pair

logger = logging.getLogger(__name__)

#: Multipliers of the median pairwise distance used as default MMD bandwidths.
DEFAULT_BANDWIDTH_FACTORS: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)

# The network simplex needs many more iterations than POT's default (1e5) for a few
# thousand points; hitting the limit silently returns a sub-optimal plan.
_EMD_MAX_ITER = 10_000_000

# Points used to estimate the median pairwise distance; the median is stable long before.
_MEDIAN_HEURISTIC_MAX_POINTS = 1000


def wasserstein(
    x: np.ndarray,
    y: np.ndarray,
    p: int = 1,
    *,
    max_cells: int | None = 2000,
    seed: int = 0,
) -> float:
    """Exact Wasserstein-p distance between two empirical distributions.

    Solved exactly with :func:`ot.emd2` (network simplex) on the Euclidean ground cost with
    uniform weights. For ``p=2`` the cost is the squared Euclidean distance and the square
    root of the optimal cost is returned. Each sample is first subsampled (without
    replacement, seeded) to at most ``max_cells`` points because exact OT is cubic.

    Parameters
    ----------
    x
        First sample, shape ``(n, d)`` (or ``(n,)`` for 1-D data).
    y
        Second sample, shape ``(m, d)`` (or ``(m,)``).
    p
        Order of the distance, 1 or 2.
    max_cells
        Maximum number of points kept per sample; ``None`` uses all of them.
    seed
        Seed of the subsampling generator.

    Returns
    -------
    float
        :math:`W_p(x, y)`, in the units of the input coordinates.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([0.0, 1.0, 2.0])
    >>> round(wasserstein(x, x + 3.0, p=1), 6)
    3.0
    """
    if p not in (1, 2):
        raise ValueError(f"`p` must be 1 or 2, got {p}.")
    x = as_2d_float_array(x, "x")
    y = as_2d_float_array(y, "y")
    check_same_n_features(x, y)
    x, y = subsample_pair(x, y, max_cells, seed)
    cost = pairwise_distances(x, y, squared=(p == 2))
    optimal_cost = float(
        ot.emd2(ot.unif(x.shape[0]), ot.unif(y.shape[0]), cost, numItermax=_EMD_MAX_ITER)
    )
    # Round-off can make an exact zero slightly negative.
    optimal_cost = max(optimal_cost, 0.0)
    return optimal_cost if p == 1 else float(np.sqrt(optimal_cost))


def mmd_bandwidths(
    x: np.ndarray,
    y: np.ndarray,
    factors: Sequence[float] = DEFAULT_BANDWIDTH_FACTORS,
    *,
    seed: int = 0,
) -> np.ndarray:
    """Default RBF bandwidths: median heuristic times ``factors``.

    The median Euclidean distance between distinct points of the pooled sample
    ``x ∪ y`` (at most 1,000 pooled points, seeded subsample) is multiplied by each
    factor, by default ``(0.5, 1, 2, 4)``.

    Parameters
    ----------
    x, y
        Samples of shape ``(n, d)`` and ``(m, d)``.
    factors
        Multipliers of the median distance.
    seed
        Seed of the subsampling generator.

    Returns
    -------
    np.ndarray
        Bandwidths (kernel standard deviations ``s``), one per factor.

    Examples
    --------
    >>> import numpy as np
    >>> mmd_bandwidths(np.zeros((3, 1)), np.ones((3, 1)), factors=(1.0,))
    array([1.])
    """
    x = as_2d_float_array(x, "x")
    y = as_2d_float_array(y, "y")
    check_same_n_features(x, y)
    pooled = np.vstack([x, y])
    rng = np.random.default_rng(seed)
    if pooled.shape[0] > _MEDIAN_HEURISTIC_MAX_POINTS:
        keep = rng.choice(pooled.shape[0], size=_MEDIAN_HEURISTIC_MAX_POINTS, replace=False)
        pooled = pooled[np.sort(keep)]
    median = float(np.median(pdist(pooled))) if pooled.shape[0] > 1 else 0.0
    if not np.isfinite(median) or median <= 0:
        # Happens when more than half of the pairs coincide; any scale is then arbitrary.
        warnings.warn(
            "Median pairwise distance is 0; falling back to a unit median for the MMD bandwidths.",
            RuntimeWarning,
            stacklevel=2,
        )
        median = 1.0
    return median * np.asarray(factors, dtype=np.float64)


def _mean_kernel(kernel: np.ndarray, exclude_diagonal: bool) -> float:
    """Mean of a square kernel matrix, optionally without its diagonal (U-statistic)."""
    n = kernel.shape[0]
    if not exclude_diagonal:
        return float(kernel.mean())
    if n < 2:
        return float("nan")
    return float((kernel.sum() - np.trace(kernel)) / (n * (n - 1)))


def mmd_rbf(
    x: np.ndarray,
    y: np.ndarray,
    bandwidths: Sequence[float] | np.ndarray | None = None,
    *,
    biased: bool = False,
    max_cells: int | None = 2000,
    seed: int = 0,
) -> float:
    r"""Multi-scale RBF maximum mean discrepancy :math:`\mathrm{MMD}^2`.

    Uses the kernel :math:`k(a, b) = \exp(-\lVert a-b \rVert^2 / (2 s^2))` and returns the
    **mean** over bandwidths ``s`` of :math:`\mathrm{MMD}^2_s`. With ``biased=False``
    (default) the unbiased U-statistic is used (self-similarities excluded from the
    within-sample terms; it can be slightly negative and is ~0 for equal
    distributions); with ``biased=True`` the V-statistic (exactly 0 for identical
    samples). When ``bandwidths`` is None, :func:`mmd_bandwidths` gives the median pairwise
    distance of the pooled sample times ``(0.5, 1, 2, 4)``.

    Parameters
    ----------
    x
        First sample, shape ``(n, d)``.
    y
        Second sample, shape ``(m, d)``.
    bandwidths
        Kernel bandwidths ``s``; None uses the median heuristic described above.
    biased
        Use the biased V-statistic instead of the unbiased U-statistic.
    max_cells
        Maximum number of points kept per sample (seeded subsample); None keeps all.
    seed
        Seed of the subsampling generator (and of the median heuristic).

    Returns
    -------
    float
        Mean over bandwidths of the squared MMD.

    Examples
    --------
    >>> import numpy as np
    >>> x, y = np.zeros((4, 1)), np.ones((4, 1))
    >>> round(mmd_rbf(x, y, bandwidths=[1.0], biased=True), 6)  # 2 - 2 exp(-1/2)
    0.786939
    """
    x = as_2d_float_array(x, "x")
    y = as_2d_float_array(y, "y")
    check_same_n_features(x, y)
    x, y = subsample_pair(x, y, max_cells, seed)
    if bandwidths is None:
        bandwidths = mmd_bandwidths(x, y, seed=seed)
    bandwidths = np.asarray(bandwidths, dtype=np.float64).ravel()
    if bandwidths.size == 0 or np.any(bandwidths <= 0):
        raise ValueError(f"Bandwidths must be positive, got {bandwidths}.")
    sq_xx = pairwise_distances(x, x, squared=True)
    sq_yy = pairwise_distances(y, y, squared=True)
    sq_xy = pairwise_distances(x, y, squared=True)
    mmd_per_bandwidth = []
    for s in bandwidths:
        gamma = 1.0 / (2.0 * s**2)
        k_xx = _mean_kernel(np.exp(-gamma * sq_xx), exclude_diagonal=not biased)
        k_yy = _mean_kernel(np.exp(-gamma * sq_yy), exclude_diagonal=not biased)
        k_xy = float(np.exp(-gamma * sq_xy).mean())
        mmd_per_bandwidth.append(k_xx + k_yy - 2.0 * k_xy)
    return float(np.mean(mmd_per_bandwidth))


def energy_distance(
    x: np.ndarray,
    y: np.ndarray,
    *,
    max_cells: int | None = 2000,
    seed: int = 0,
) -> float:
    r"""Multivariate energy distance :math:`2E\lVert X-Y\rVert - E\lVert X-X'\rVert - E\lVert Y-Y'\rVert`.

    Expectations are V-statistics (plain means over all pairs, including the zero
    self-distances), so identical samples score exactly 0. This is the squared form
    (not its square root); for two point masses at distance ``d`` it equals ``2 d``.

    Parameters
    ----------
    x
        First sample, shape ``(n, d)``.
    y
        Second sample, shape ``(m, d)``.
    max_cells
        Maximum number of points kept per sample (seeded subsample); None keeps all.
    seed
        Seed of the subsampling generator.

    Returns
    -------
    float
        Energy distance (non-negative up to round-off).

    Examples
    --------
    >>> import numpy as np
    >>> energy_distance(np.zeros((5, 1)), np.full((5, 1), 3.0))
    6.0
    """
    x = as_2d_float_array(x, "x")
    y = as_2d_float_array(y, "y")
    check_same_n_features(x, y)
    x, y = subsample_pair(x, y, max_cells, seed)
    between = pairwise_distances(x, y).mean()
    within_x = pairwise_distances(x, x).mean()
    within_y = pairwise_distances(y, y).mean()
    return float(2.0 * between - within_x - within_y)
