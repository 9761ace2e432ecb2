from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scvi_gen.base import LibrarySizeModel
from scvi_gen.base._library_size import MAX_LIBRARY_SIZE, per_cell_sizes


def _fit_two_groups(n: int = 400) -> LibrarySizeModel:
    rng = np.random.default_rng(0)
    labels = np.repeat(["small", "large"], n)
    log_lib = np.concatenate([rng.normal(np.log(1000), 0.1, n), rng.normal(np.log(8000), 0.1, n)])
    conditions = pd.DataFrame({"cell_type": labels})
    return LibrarySizeModel.fit(np.exp(log_lib), conditions, ["cell_type"])


def test_library_sizes_follow_their_condition():
    model = _fit_two_groups()
    plan = pd.DataFrame({"cell_type": ["small"] * 500 + ["large"] * 500})
    sizes = model.sample(plan, np.random.default_rng(1))
    assert abs(np.median(sizes[:500]) - 1000) < 50
    assert abs(np.median(sizes[500:]) - 8000) < 400


def test_unseen_condition_falls_back_to_all_cells():
    model = _fit_two_groups()
    mu, _ = model.parameters(pd.DataFrame({"cell_type": ["never_seen"]}))
    assert np.isclose(mu[0], model.overall[0])


def test_round_trip_through_dict():
    model = _fit_two_groups()
    back = LibrarySizeModel.from_dict(model.to_dict())
    plan = pd.DataFrame({"cell_type": ["small", "large"]})
    np.testing.assert_allclose(back.parameters(plan), model.parameters(plan))


@pytest.mark.parametrize("value", [1e39, MAX_LIBRARY_SIZE * 1.5, [1e3, 1e12]])
def test_library_sizes_above_the_maximum_are_refused(value: object) -> None:
    # 1e39 is finite in float64 but inf in float32 (NaN / all-zero cells downstream).
    with pytest.raises(ValueError, match=r"`library_size` must be at most 1e\+07.*realistic"):
        per_cell_sizes(value, 2, "library_size")


def test_library_size_at_the_maximum_is_accepted() -> None:
    np.testing.assert_array_equal(
        per_cell_sizes(MAX_LIBRARY_SIZE, 3, "library_size"), [MAX_LIBRARY_SIZE] * 3
    )


@pytest.mark.parametrize("value", [np.nan, np.inf, 0.0, -5.0])
def test_library_sizes_must_be_positive_and_finite(value: float) -> None:
    with pytest.raises(ValueError, match="`library_size` must be positive and finite"):
        per_cell_sizes(value, 2, "library_size")


def test_a_non_numeric_library_size_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="`library_size` must be one number"):
        per_cell_sizes("big", 2, "library_size")
