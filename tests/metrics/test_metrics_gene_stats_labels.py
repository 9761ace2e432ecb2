from __future__ import annotations

import numpy as np
import pytest

from scvi_gen.metrics import (
    de_logfc_recovery,
    gene_correlation_error,
    gene_mean_correlation,
    gene_variance_correlation,
    gene_zero_fraction_correlation,
    knn_label_accuracy,
    library_size_distance,
)


@pytest.fixture
def expression() -> np.ndarray:
    rng = np.random.default_rng(0)
    values = np.log1p(rng.poisson(rng.gamma(1.0, 2.0, size=40), size=(120, 40)))
    return values.astype(np.float32)


@pytest.mark.parametrize(
    "statistic",
    [gene_mean_correlation, gene_variance_correlation, gene_zero_fraction_correlation],
)
def test_per_gene_statistics_identical_sets_correlate_perfectly(
    expression: np.ndarray, statistic
) -> None:
    assert statistic(expression, expression) == pytest.approx(1.0)


def test_gene_mean_correlation_is_invariant_to_affine_scaling(expression: np.ndarray) -> None:
    assert gene_mean_correlation(expression, 2 * expression + 1) == pytest.approx(1.0)


def test_gene_zero_fraction_correlation_without_zeros_is_nan(expression: np.ndarray) -> None:
    assert np.isnan(gene_zero_fraction_correlation(expression, expression + 1.0))


def test_gene_correlation_error_identical_sets_is_zero(expression: np.ndarray) -> None:
    assert gene_correlation_error(expression, expression) == 0.0


def test_gene_correlation_error_handles_constant_genes(expression: np.ndarray) -> None:
    fake = expression.copy()
    fake[:, 0] = 1.0
    error = gene_correlation_error(expression, fake, n_genes=None)
    assert np.isfinite(error)
    assert error > 0


def test_gene_correlation_error_known_value() -> None:
    # Real genes perfectly correlated (+1), fake perfectly anti-correlated (-1): error 2.
    t = np.linspace(0.0, 1.0, 10)
    real = np.column_stack([t, t])
    fake = np.column_stack([t, -t])
    assert gene_correlation_error(real, fake) == pytest.approx(2.0)


def test_library_size_distance_identical_is_zero() -> None:
    lib = np.array([500.0, 1000.0, 3000.0])
    assert library_size_distance(lib, lib) == 0.0


def test_library_size_distance_shifted_log_libraries_equals_shift() -> None:
    lib = np.random.default_rng(1).lognormal(7.0, 0.5, size=200)
    shifted = (lib + 1.0) * np.exp(0.4) - 1.0  # log1p(shifted) = log1p(lib) + 0.4
    assert library_size_distance(lib, shifted) == pytest.approx(0.4)


@pytest.fixture
def clusters() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(2)
    pcs = np.vstack([rng.normal(size=(60, 2)), rng.normal(loc=20.0, size=(60, 2))])
    labels = np.repeat(["a", "b"], 60)
    return pcs, labels


def test_knn_label_accuracy_correct_labels_is_one(
    clusters: tuple[np.ndarray, np.ndarray],
) -> None:
    pcs, labels = clusters
    assert knn_label_accuracy(pcs, labels, pcs + 0.1, labels) == 1.0


def test_knn_label_accuracy_swapped_labels_is_zero(
    clusters: tuple[np.ndarray, np.ndarray],
) -> None:
    pcs, labels = clusters
    swapped = np.where(labels == "a", "b", "a")
    assert knn_label_accuracy(pcs, labels, pcs, swapped) == 0.0


def test_knn_label_accuracy_drops_missing_labels(
    clusters: tuple[np.ndarray, np.ndarray],
) -> None:
    pcs, labels = clusters
    real_labels = labels.astype(object)
    real_labels[:5] = np.nan
    fake_labels = labels.astype(object)
    fake_labels[-3:] = None
    assert knn_label_accuracy(pcs, real_labels, pcs, fake_labels) == 1.0


def test_de_logfc_recovery_identical_is_one(expression: np.ndarray) -> None:
    labels = np.repeat(["a", "b", "c"], 40)
    shifted = expression.copy()
    shifted[labels == "a", :10] += 2.0  # a real DE program for label a
    assert de_logfc_recovery(shifted, labels, shifted, labels) == pytest.approx(1.0)


def test_de_logfc_recovery_reversed_program_is_negative(expression: np.ndarray) -> None:
    labels = np.repeat(["a", "b"], 60)
    real = expression.copy()
    real[labels == "a", :20] += 2.0
    fake = expression.copy()
    fake[labels == "b", :20] += 2.0
    assert de_logfc_recovery(real, labels, fake, labels) < -0.5


def test_de_logfc_recovery_without_shared_labels_is_nan(expression: np.ndarray) -> None:
    real_labels = np.repeat(["a", "b"], 60)
    fake_labels = np.repeat(["c", "d"], 60)
    assert np.isnan(de_logfc_recovery(expression, real_labels, expression, fake_labels))


def test_knn_label_accuracy_matches_integer_and_float_labels(
    clusters: tuple[np.ndarray, np.ndarray],
) -> None:
    # A NaN turns an integer label column into floats: 1.0 is still the label 1.
    pcs, labels = clusters
    codes = (labels == "b").astype(int)
    assert knn_label_accuracy(pcs, codes, pcs + 0.1, codes.astype(float)) == 1.0
