"""A JSON codec for model metadata, so that loading a model never unpickles anything."""

from __future__ import annotations

import json
import logging
from io import StringIO
from typing import Any

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

_TAG = "__scvi_gen__"


def to_jsonable(obj: Any) -> Any:
    """Convert ``obj`` into plain JSON types, tagging numpy arrays, tuples and data frames.

    Parameters
    ----------
    obj
        Nested structure of dicts, lists, tuples, scalars, numpy arrays and pandas frames.

    Returns
    -------
    A structure made only of dicts with string keys, lists, strings, numbers, booleans and None.

    Raises
    ------
    TypeError
        For any other type: metadata must never need pickling.
    """
    if obj is None or isinstance(obj, bool | str):
        return obj
    if isinstance(obj, int | float):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return {
            _TAG: "ndarray",
            "dtype": "object" if obj.dtype.kind in "OUS" else obj.dtype.str,
            "shape": list(obj.shape),
            "data": [to_jsonable(v) for v in obj.ravel().tolist()],
        }
    if isinstance(obj, pd.DataFrame):
        return {_TAG: "dataframe", "data": obj.to_json(orient="split", double_precision=15)}
    if isinstance(obj, pd.Index):
        return to_jsonable(np.asarray(obj))
    if isinstance(obj, tuple):
        return {_TAG: "tuple", "data": [to_jsonable(v) for v in obj]}
    if isinstance(obj, list):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: to_jsonable(v) for k, v in obj.items()}
        return {_TAG: "dict", "items": [[to_jsonable(k), to_jsonable(v)] for k, v in obj.items()]}
    raise TypeError(
        f"Cannot store an object of type {type(obj).__name__} in model metadata. "
        "Only numbers, strings, lists, dicts, numpy arrays and data frames are saved; "
        "keep other state in module buffers."
    )


def from_jsonable(obj: Any) -> Any:
    """Invert :func:`to_jsonable`.

    Parameters
    ----------
    obj
        Output of :func:`to_jsonable` after a JSON round trip.

    Returns
    -------
    The original structure.
    """
    if isinstance(obj, list):
        return [from_jsonable(v) for v in obj]
    if not isinstance(obj, dict):
        return obj
    tag = obj.get(_TAG)
    if tag is None:
        return {k: from_jsonable(v) for k, v in obj.items()}
    if tag == "ndarray":
        data = [from_jsonable(v) for v in obj["data"]]
        if obj["dtype"] == "object":
            arr = np.empty(len(data), dtype=object)
            arr[:] = data
            return arr.reshape(obj["shape"])
        return np.asarray(data, dtype=np.dtype(obj["dtype"])).reshape(obj["shape"])
    if tag == "dataframe":
        # No inference: labels such as "0" or "01" and dates must come back as the strings they were.
        return pd.read_json(
            StringIO(obj["data"]),
            orient="split",
            dtype=False,
            convert_dates=False,
            convert_axes=False,
        )
    if tag == "tuple":
        return tuple(from_jsonable(v) for v in obj["data"])
    if tag == "dict":
        return {_freeze(from_jsonable(k)): from_jsonable(v) for k, v in obj["items"]}
    raise ValueError(f"Unknown tag {tag!r} in model metadata; the file may be corrupt.")


def _freeze(key: Any) -> Any:
    return tuple(key) if isinstance(key, list) else key


def dumps(obj: Any) -> str:
    """Serialise ``obj`` to a JSON string via :func:`to_jsonable`."""
    return json.dumps(to_jsonable(obj), indent=1)


def loads(text: str) -> Any:
    """Parse a JSON string written by :func:`dumps`."""
    return from_jsonable(json.loads(text))
