"""Memorisation check: are generated cells closer to the training cells than new real cells are?"""

from __future__ import annotations

import logging

import numpy as np
from sklearn.neighbors import NearestNeighbors

logger = logging.getLogger(__name__)


def closest_record_ratio(train: np.ndarray, reference: np.ndarray, sample: np.ndarray) -> float:
    """Median distance of ``sample`` cells to their closest training cell, relative to real cells.

    The distance to the closest record (DCR) of a cell is its Euclidean distance to the nearest
    training cell. Held-out real cells (``reference``) show how far new cells from the same
    population lie from the training set; the ratio compares the sample with them:

    - about 1: the sample is as far from the training cells as unseen real cells are;
    - well below 1: the sample sits on top of training cells (memorisation, copies);
    - above 1: the sample lies off the data, farther from every training cell.

    A two-sample test against held-out cells (C2ST, MMD) cannot tell a generator that copies its
    training cells from a good one, because training and test cells come from the same
    distribution; this ratio can.

    Parameters
    ----------
    train
        ``(n_train, d)`` training cells in a common space (e.g. :class:`CommonSpace` PCs).
    reference
        ``(n_ref, d)`` held-out real cells in the same space.
    sample
        ``(n, d)`` cells to check (generated cells, or other held-out cells for a floor).

    Returns
    -------
    ``median DCR(sample) / median DCR(reference)``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> train, test, fresh = (rng.normal(size=(500, 5)) for _ in range(3))
    >>> round(closest_record_ratio(train, test, train[:100]), 3)  # copies
    0.0
    >>> 0.8 < closest_record_ratio(train, test, fresh) < 1.2  # new cells
    True
    """
    train, reference, sample = (
        np.asarray(a, dtype=np.float64) for a in (train, reference, sample)
    )
    if any(a.ndim != 2 for a in (train, reference, sample)):
        raise ValueError(
            "`train`, `reference` and `sample` must be 2-D (cells x dimensions); reshape a "
            "single cell with `x.reshape(1, -1)`."
        )
    if min(len(train), len(reference), len(sample)) == 0:
        raise ValueError("`train`, `reference` and `sample` each need at least one cell.")
    if not train.shape[1] == reference.shape[1] == sample.shape[1]:
        raise ValueError(
            f"All inputs need the same number of dimensions, got {train.shape[1]}, "
            f"{reference.shape[1]} and {sample.shape[1]}."
        )
    index = NearestNeighbors(n_neighbors=1).fit(train)
    reference_dcr = np.median(index.kneighbors(reference)[0][:, 0])
    if reference_dcr == 0:
        raise ValueError(
            "The reference cells are copies of training cells; the ratio is undefined."
        )
    return float(np.median(index.kneighbors(sample)[0][:, 0]) / reference_dcr)
