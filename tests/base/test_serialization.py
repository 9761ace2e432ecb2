from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scvi_gen.base import dumps, loads


def test_round_trip_keeps_arrays_tuples_and_frames():
    obj = {
        "a": np.array(["x", "y"], dtype=object),
        "b": np.arange(6, dtype=np.int32).reshape(2, 3),
        "t": (1, "two"),
        "df": pd.DataFrame({"loss": [1.5, 0.5]}, index=[0, 1]),
        "n": None,
        "k": {("a", "b"): 1},
    }
    back = loads(dumps(obj))
    assert back["a"].tolist() == ["x", "y"]
    assert back["b"].dtype == np.int32 and back["b"].shape == (2, 3)
    assert back["t"] == (1, "two")
    pd.testing.assert_frame_equal(back["df"], obj["df"])
    assert back["n"] is None
    assert back["k"] == {("a", "b"): 1}


def test_unknown_types_are_refused():
    class Custom:
        pass

    with pytest.raises(TypeError, match="Cannot store"):
        dumps({"x": Custom()})
