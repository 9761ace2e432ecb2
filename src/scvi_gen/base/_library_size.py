"""Per-condition log-normal model of library sizes (total counts per cell)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

_SEP = "\x1f"


@dataclass
class LibrarySizeModel:
    """Log-normal library sizes per condition, with fallbacks for rare or unseen conditions.

    ``log(library)`` is modelled as normal with a mean and standard deviation per combination of
    the condition columns (e.g. cell type x batch). A combination with fewer than ``min_cells``
    training cells falls back to the first condition column alone (the label), then to all cells.

    Parameters
    ----------
    keys
        Condition columns the model conditions on (labels first).
    min_cells
        Minimum number of training cells for a group to get its own parameters.

    Examples
    --------
    >>> model = LibrarySizeModel.fit(library, obs[["cell_type"]], keys=["cell_type"])
    >>> sizes = model.sample(plan, np.random.default_rng(0))
    """

    keys: list[str] = field(default_factory=list)
    min_cells: int = 5
    joint: dict[str, list[float]] = field(default_factory=dict)
    first: dict[str, list[float]] = field(default_factory=dict)
    overall: list[float] = field(default_factory=lambda: [0.0, 1.0])

    @classmethod
    def fit(
        cls,
        library: np.ndarray,
        conditions: pd.DataFrame,
        keys: Sequence[str],
        min_cells: int = 5,
    ) -> LibrarySizeModel:
        """Fit the model on training library sizes.

        Parameters
        ----------
        library
            Total counts per training cell.
        conditions
            Condition columns of the training cells (category names).
        keys
            Columns of ``conditions`` to condition on, labels first.
        min_cells
            Minimum group size for group-specific parameters.

        Returns
        -------
        The fitted model.
        """
        library = np.asarray(library, dtype=np.float64).ravel()
        positive = library > 0
        if not positive.any():
            raise ValueError("Every cell has zero total counts; cannot fit library sizes.")
        log_lib = np.log(library[positive])
        conds = conditions.loc[positive] if len(keys) else conditions.iloc[:0]
        model = cls(keys=list(keys), min_cells=min_cells, overall=_normal_fit(log_lib))
        if keys:
            model.joint = _group_fits(log_lib, _combine(conds, keys), min_cells)
            model.first = _group_fits(log_lib, _combine(conds, keys[:1]), min_cells)
        return model

    def parameters(self, conditions: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation of log library size for each row of ``conditions``."""
        n = len(conditions)
        mu = np.full(n, self.overall[0])
        sd = np.full(n, self.overall[1])
        if not self.keys or n == 0:
            return mu, sd
        for table, keys in ((self.first, self.keys[:1]), (self.joint, self.keys)):
            names = _combine(conditions, keys)
            for i, name in enumerate(names):
                if name in table:
                    mu[i], sd[i] = table[name]
        return mu, sd

    def sample(self, conditions: pd.DataFrame, rng: np.random.Generator) -> np.ndarray:
        """Draw one library size (>= 1) per row of ``conditions``.

        Parameters
        ----------
        conditions
            One row per cell with the condition columns.
        rng
            Random generator.

        Returns
        -------
        Library sizes as float64.
        """
        mu, sd = self.parameters(conditions)
        return np.maximum(np.exp(rng.normal(mu, sd)), 1.0)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON representation, stored with the model."""
        return {
            "keys": list(self.keys),
            "min_cells": self.min_cells,
            "joint": self.joint,
            "first": self.first,
            "overall": self.overall,
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> LibrarySizeModel:
        """Rebuild a model saved with :meth:`to_dict`."""
        return cls(**state)


def _normal_fit(values: np.ndarray) -> list[float]:
    sd = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    # a floor keeps a one-cell or constant group from collapsing to a point mass
    return [float(values.mean()), max(sd, 1e-3)]


def _combine(conditions: pd.DataFrame, keys: Sequence[str]) -> np.ndarray:
    if not len(keys):
        return np.full(len(conditions), "", dtype=object)
    parts = [conditions[k].astype(str).to_numpy() for k in keys]
    out = parts[0].astype(object)
    for part in parts[1:]:
        out = out + _SEP + part.astype(object)
    return out


def _group_fits(log_lib: np.ndarray, groups: np.ndarray, min_cells: int) -> dict[str, list[float]]:
    fits = {}
    for name in pd.unique(groups):
        values = log_lib[groups == name]
        if len(values) >= min_cells:
            fits[str(name)] = _normal_fit(values)
    return fits


def per_cell_sizes(value: Any, n: int, argument: str) -> np.ndarray:
    """Library sizes of ``n`` cells from one number or one per cell; clear errors otherwise."""
    sizes = np.asarray(value, dtype=np.float64)
    if sizes.ndim > 1 or sizes.size not in (1, n):
        raise ValueError(
            f"`{argument}` must be one number or one per cell ({n}), got {sizes.size} values."
        )
    if np.any(~np.isfinite(sizes)) or np.any(sizes <= 0):
        raise ValueError(f"`{argument}` must be positive and finite.")
    return np.array(np.broadcast_to(sizes, (n,)))
