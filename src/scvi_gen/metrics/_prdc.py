"""Precision, recall, density and coverage (Naeem et al., 2020)."""

from __future__ import annotations

import logging

import numpy as np

from ._utils import as_2d_float_array, check_same_n_features, pairwise_distances, subsample_pair

logger = logging.getLogger(__name__)


def _kth_neighbour_radii(within_distances: np.ndarray, k: int) -> np.ndarray:
    """Distance of each point to its k-th nearest neighbour in the same set (self excluded)."""
    # Column 0 of the sorted row is the zero self-distance, so column k is the k-th neighbour.
    return np.partition(within_distances, k, axis=1)[:, k]


def precision_recall_density_coverage(
    real: np.ndarray,
    fake: np.ndarray,
    k: int = 5,
    *,
    max_cells: int | None = 2000,
    seed: int = 0,
) -> dict[str, float]:
    """Precision, recall, density and coverage of ``fake`` against ``real`` (PRDC).

    Follows Naeem et al., "Reliable Fidelity and Diversity Metrics for Generative Models"
    (ICML 2020). Each real point gets a ball whose radius is the distance to its k-th
    nearest real neighbour (self excluded).

    * precision: fraction of fake points inside at least one real ball;
    * recall: fraction of real points inside at least one fake ball (fake k-NN radii);
    * density: mean number of real balls containing a fake point, divided by ``k``
      (about 1 for matching distributions, can exceed 1);
    * coverage: fraction of real balls that contain at least one fake point.

    Parameters
    ----------
    real
        Real sample, shape ``(n, d)``.
    fake
        Generated sample, shape ``(m, d)``.
    k
        Number of neighbours defining the ball radii.
    max_cells
        Maximum number of points kept per sample (seeded subsample); None keeps all.
    seed
        Seed of the subsampling generator.

    Returns
    -------
    dict
        Keys ``"precision"``, ``"recall"``, ``"density"``, ``"coverage"``.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(50, 2))
    >>> precision_recall_density_coverage(x, x, k=3)["precision"]
    1.0
    """
    real = as_2d_float_array(real, "real")
    fake = as_2d_float_array(fake, "fake")
    check_same_n_features(real, fake)
    real, fake = subsample_pair(real, fake, max_cells, seed)
    if min(real.shape[0], fake.shape[0]) <= k:
        raise ValueError(
            f"PRDC needs more than k={k} points per sample, got {real.shape[0]} real and "
            f"{fake.shape[0]} fake."
        )
    real_radii = _kth_neighbour_radii(pairwise_distances(real, real), k)
    fake_radii = _kth_neighbour_radii(pairwise_distances(fake, fake), k)
    real_fake = pairwise_distances(real, fake)  # (n_real, n_fake)
    inside_real_balls = real_fake <= real_radii[:, None]
    inside_fake_balls = real_fake <= fake_radii[None, :]
    return {
        "precision": float(inside_real_balls.any(axis=0).mean()),
        "recall": float(inside_fake_balls.any(axis=1).mean()),
        "density": float(inside_real_balls.sum(axis=0).mean() / k),
        "coverage": float((real_fake.min(axis=1) <= real_radii).mean()),
    }
