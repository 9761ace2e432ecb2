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


def test_frames_keep_labels_that_look_like_numbers_or_dates():
    frame = pd.DataFrame(
        {
            "leiden": ["0", "1", "01"],
            "day": ["2020-01-01", "2020-02-01", "x"],
            "age": [1.5, np.nan, 3.0],
        }
    )
    back = loads(dumps({"df": frame}))["df"]
    assert back["leiden"].tolist() == ["0", "1", "01"]
    assert back["day"].tolist() == ["2020-01-01", "2020-02-01", "x"]
    np.testing.assert_array_equal(back["age"].to_numpy(), frame["age"].to_numpy())
