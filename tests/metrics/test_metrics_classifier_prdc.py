from __future__ import annotations

import numpy as np
import pytest

from scvi_gen.metrics import classifier_two_sample_auc, precision_recall_density_coverage


def test_c2st_same_gaussian_is_near_chance() -> None:
    rng = np.random.default_rng(0)
    auc = classifier_two_sample_auc(rng.normal(size=(400, 5)), rng.normal(size=(400, 5)), seed=0)
    assert 0.4 <= auc <= 0.6


def test_c2st_well_separated_sets_is_near_one() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 5))
    y = rng.normal(loc=6.0, size=(300, 5))
    assert classifier_two_sample_auc(x, y, seed=0) > 0.98


def test_c2st_is_reproducible_with_seed() -> None:
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(150, 3)), rng.normal(loc=0.3, size=(250, 3))
    assert classifier_two_sample_auc(x, y, seed=5) == classifier_two_sample_auc(x, y, seed=5)


def test_c2st_tiny_sets_still_run() -> None:
    rng = np.random.default_rng(3)
    auc = classifier_two_sample_auc(rng.normal(size=(6, 2)), rng.normal(loc=9, size=(8, 2)))
    assert auc == pytest.approx(1.0)


def test_c2st_single_point_is_nan() -> None:
    assert np.isnan(classifier_two_sample_auc(np.zeros((1, 2)), np.ones((5, 2))))


def test_prdc_identical_sets_are_perfect() -> None:
    x = np.random.default_rng(4).normal(size=(300, 2))
    scores = precision_recall_density_coverage(x, x, k=5)
    assert scores["precision"] == 1.0
    assert scores["recall"] == 1.0
    assert scores["coverage"] == 1.0


def test_prdc_same_distribution_is_high() -> None:
    rng = np.random.default_rng(5)
    scores = precision_recall_density_coverage(
        rng.normal(size=(1000, 2)), rng.normal(size=(1000, 2)), k=5
    )
    assert scores["precision"] > 0.85
    assert scores["recall"] > 0.85
    assert 0.8 < scores["density"] < 1.2
    assert scores["coverage"] > 0.9


def test_prdc_disjoint_sets_score_zero() -> None:
    rng = np.random.default_rng(6)
    scores = precision_recall_density_coverage(
        rng.normal(size=(200, 2)), rng.normal(loc=50.0, size=(200, 2))
    )
    assert scores == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


def test_prdc_collapsed_fake_has_precision_but_no_recall() -> None:
    # Mode collapse: every fake point sits at the centre of the real cloud.
    real = np.random.default_rng(7).normal(size=(500, 2))
    fake = np.zeros((500, 2)) + np.random.default_rng(8).normal(scale=1e-3, size=(500, 2))
    scores = precision_recall_density_coverage(real, fake, k=5)
    assert scores["precision"] == 1.0
    assert scores["recall"] < 0.05
    assert scores["coverage"] < 0.05


def test_prdc_needs_more_points_than_k() -> None:
    with pytest.raises(ValueError, match="more than k=5"):
        precision_recall_density_coverage(np.zeros((5, 2)), np.zeros((10, 2)), k=5)
