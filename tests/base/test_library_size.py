from __future__ import annotations

import numpy as np
import pandas as pd

from scvi_gen.base import LibrarySizeModel


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
