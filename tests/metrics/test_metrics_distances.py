from __future__ import annotations

import numpy as np
import pytest

from scvi_gen.metrics import energy_distance, mmd_bandwidths, mmd_rbf, wasserstein


@pytest.fixture
def cloud() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(200, 3))


@pytest.mark.parametrize("p", [1, 2])
def test_wasserstein_identical_sets_is_zero(cloud: np.ndarray, p: int) -> None:
    assert wasserstein(cloud, cloud, p=p) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("p", [1, 2])
def test_wasserstein_1d_translation_equals_shift(p: int) -> None:
    x = np.random.default_rng(1).normal(size=300)
    assert wasserstein(x, x + 2.5, p=p) == pytest.approx(2.5, abs=1e-9)


def test_wasserstein_2_exceeds_1_for_unequal_moves() -> None:
    # Moving one of two points by 2: W1 = 1, W2 = sqrt(2).
    x = np.array([[0.0], [10.0]])
    y = np.array([[0.0], [12.0]])
    assert wasserstein(x, y, p=1) == pytest.approx(1.0)
    assert wasserstein(x, y, p=2) == pytest.approx(np.sqrt(2.0))


def test_wasserstein_rejects_invalid_order(cloud: np.ndarray) -> None:
    with pytest.raises(ValueError, match="`p` must be 1 or 2"):
        wasserstein(cloud, cloud, p=3)


def test_wasserstein_subsampling_is_seeded() -> None:
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(500, 2)), rng.normal(size=(500, 2))
    first = wasserstein(x, y, max_cells=100, seed=7)
    assert first == wasserstein(x, y, max_cells=100, seed=7)
    assert first != wasserstein(x, y, max_cells=100, seed=8)


def test_mmd_biased_identical_sets_is_exactly_zero(cloud: np.ndarray) -> None:
    assert mmd_rbf(cloud, cloud, biased=True) == pytest.approx(0.0, abs=1e-12)


def test_mmd_unbiased_same_distribution_is_near_zero() -> None:
    rng = np.random.default_rng(3)
    value = mmd_rbf(rng.normal(size=(400, 2)), rng.normal(size=(400, 2)))
    assert abs(value) < 0.01


@pytest.mark.parametrize("d, s", [(1.0, 1.0), (2.0, 0.5), (0.3, 2.0)])
def test_mmd_point_masses_match_analytic_value(d: float, s: float) -> None:
    x, y = np.zeros((10, 1)), np.full((10, 1), d)
    expected = 2.0 - 2.0 * np.exp(-(d**2) / (2.0 * s**2))
    assert mmd_rbf(x, y, bandwidths=[s], biased=True) == pytest.approx(expected)


def test_mmd_averages_over_bandwidths() -> None:
    x, y = np.zeros((5, 1)), np.ones((5, 1))
    single = [mmd_rbf(x, y, bandwidths=[s], biased=True) for s in (0.5, 2.0)]
    assert mmd_rbf(x, y, bandwidths=[0.5, 2.0], biased=True) == pytest.approx(np.mean(single))


def test_mmd_default_bandwidths_are_median_times_factors() -> None:
    x, y = np.zeros((3, 1)), np.full((3, 1), 2.0)
    # Pooled pairwise distances: 6 zeros and 9 twos, median 2.
    np.testing.assert_allclose(mmd_bandwidths(x, y), [1.0, 2.0, 4.0, 8.0])


def test_mmd_rejects_non_positive_bandwidth(cloud: np.ndarray) -> None:
    with pytest.raises(ValueError, match="positive"):
        mmd_rbf(cloud, cloud, bandwidths=[1.0, 0.0])


def test_energy_distance_identical_sets_is_zero(cloud: np.ndarray) -> None:
    assert energy_distance(cloud, cloud) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("d", [0.5, 3.0])
def test_energy_distance_point_masses_is_twice_the_gap(d: float) -> None:
    assert energy_distance(np.zeros((7, 1)), np.full((4, 1), d)) == pytest.approx(2 * d)


def test_distances_reject_mismatched_dimensions(cloud: np.ndarray) -> None:
    with pytest.raises(ValueError, match="same number of features"):
        energy_distance(cloud, cloud[:, :2])


@pytest.mark.parametrize("metric", [wasserstein, energy_distance, mmd_rbf])
def test_nan_input_is_an_error_not_a_score(cloud: np.ndarray, metric) -> None:
    bad = cloud.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        metric(cloud, bad)


def test_sparse_input_is_refused_with_the_fix(cloud: np.ndarray) -> None:
    import scipy.sparse as sp

    with pytest.raises(TypeError, match="metrics.evaluate"):
        wasserstein(sp.csr_matrix(cloud), cloud)
