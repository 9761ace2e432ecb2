from __future__ import annotations

import numpy as np
import pytest

from scvi_gen.metrics import closest_record_ratio


def _gaussian(n: int, seed: int, d: int = 5) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d))


def test_copies_of_training_cells_give_zero() -> None:
    train = _gaussian(400, 0)
    assert closest_record_ratio(train, _gaussian(300, 1), train[:150]) == 0.0


def test_fresh_cells_from_the_same_distribution_give_about_one() -> None:
    ratio = closest_record_ratio(_gaussian(2000, 0), _gaussian(1000, 1), _gaussian(1000, 2))
    assert ratio == pytest.approx(1.0, abs=0.1)


def test_jittered_copies_lie_between_copies_and_new_cells() -> None:
    train = _gaussian(2000, 0)
    jittered = train[:1000] + 0.05 * _gaussian(1000, 3)
    assert 0.0 < closest_record_ratio(train, _gaussian(1000, 1), jittered) < 0.5


def test_shifted_cells_lie_farther_than_new_cells() -> None:
    train = _gaussian(1000, 0)
    assert closest_record_ratio(train, _gaussian(500, 1), _gaussian(500, 2) + 3.0) > 2.0


def test_mismatched_dimensions_are_rejected() -> None:
    with pytest.raises(ValueError, match="dimensions"):
        closest_record_ratio(_gaussian(10, 0), _gaussian(10, 1), _gaussian(10, 2, d=3))


def test_empty_sample_is_rejected() -> None:
    with pytest.raises(ValueError, match="at least one cell"):
        closest_record_ratio(_gaussian(10, 0), _gaussian(10, 1), np.empty((0, 5)))


def test_one_dimensional_input_is_rejected() -> None:
    with pytest.raises(ValueError, match="2-D"):
        closest_record_ratio(_gaussian(10, 0), _gaussian(10, 1), np.zeros(5))
