"""Per-condition log-normal model of library sizes (total counts per cell)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from scvi_gen.base._data_state import RunningMoments

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
        fitter = LibrarySizeFitter(keys, min_cells)
        fitter.update(library, conditions)
        return fitter.result()

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


class LibrarySizeFitter:
    """Fit a :class:`LibrarySizeModel` over batches of cells (memory O(condition groups)).

    Parameters
    ----------
    keys
        Condition columns to condition on, labels first.
    min_cells
        Minimum group size for group-specific parameters.

    Examples
    --------
    >>> fitter = LibrarySizeFitter(["cell_type"])
    >>> for library, conditions in blocks:
    ...     fitter.update(library, conditions)
    >>> model = fitter.result()
    """

    def __init__(self, keys: Sequence[str], min_cells: int = 5) -> None:
        self.keys = list(keys)
        self.min_cells = min_cells
        self._overall = RunningMoments(1)
        self._joint: dict[str, RunningMoments] = {}
        self._first: dict[str, RunningMoments] = {}

    def update(self, library: np.ndarray, conditions: pd.DataFrame) -> None:
        """Add the library sizes of some cells and their condition columns."""
        library = np.asarray(library, dtype=np.float64).ravel()
        positive = library > 0
        log_lib = np.log(library[positive])
        self._overall.update(log_lib)
        if not self.keys:
            return
        conds = conditions.loc[positive]
        for table, keys in ((self._joint, self.keys), (self._first, self.keys[:1])):
            groups = _combine(conds, keys)
            for name in pd.unique(groups):
                table.setdefault(str(name), RunningMoments(1)).update(log_lib[groups == name])

    def result(self) -> LibrarySizeModel:
        """The fitted model."""
        if self._overall.count == 0:
            raise ValueError("Every cell has zero total counts; cannot fit library sizes.")
        model = LibrarySizeModel(
            keys=self.keys, min_cells=self.min_cells, overall=_normal_fit(self._overall)
        )
        for table, out in ((self._joint, model.joint), (self._first, model.first)):
            for name, moments in table.items():
                if moments.count >= self.min_cells:
                    out[name] = _normal_fit(moments)
        return model


def _normal_fit(moments: RunningMoments) -> list[float]:
    sd = float(moments.std(ddof=1)[0]) if moments.count > 1 else 0.0
    # a floor keeps a one-cell or constant group from collapsing to a point mass
    return [float(moments.mean[0]), max(sd, 1e-3)]


def _combine(conditions: pd.DataFrame, keys: Sequence[str]) -> np.ndarray:
    if not len(keys):
        return np.full(len(conditions), "", dtype=object)
    parts = [conditions[k].astype(str).to_numpy() for k in keys]
    out = parts[0].astype(object)
    for part in parts[1:]:
        out = out + _SEP + part.astype(object)
    return out


#: Largest library size (total counts per cell) ``generate`` accepts. Library sizes travel as
#: float32 and the generated counts are stored as float32, which holds every integer exactly
#: only up to 2**24 (~1.7e7); scvi-tools' NB sampler also clamps each gene's Poisson rate at
#: 1e8, so SCVIGenerator silently caps a gene at 1e8 counts (measured on a 20-gene model: at
#: ``library_size=1e9`` the top gene already hits 1e8, at 1e12 cells sum to 0.2% of the size;
#: at 1e7 the top gene drew 9.4e6) and sizes near float32's limit (3.4e38) overflow to inf
#: (NaN / all-zero cells). At 1e7 every gene's expected count stays below 2**24 and well
#: below the clamp, while the deepest real cells hold ~1e6 counts.
MAX_LIBRARY_SIZE = 1e7


def per_cell_sizes(value: Any, n: int, argument: str) -> np.ndarray:
    """Library sizes of ``n`` cells from one number or one per cell; clear errors otherwise.

    Parameters
    ----------
    value
        One library size for all cells, or one per cell.
    n
        Number of cells.
    argument
        Name of the argument in error messages (e.g. ``"library_size"``).

    Returns
    -------
    ``(n,)`` float64 library sizes, each in ``(0, MAX_LIBRARY_SIZE]``.
    """
    try:
        sizes = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"`{argument}` must be one number or one number per cell, got {value!r}."
        ) from err
    if sizes.ndim > 1 or sizes.size not in (1, n):
        raise ValueError(
            f"`{argument}` must be one number or one per cell ({n}), got {sizes.size} values."
        )
    if np.any(~np.isfinite(sizes)) or np.any(sizes <= 0):
        raise ValueError(f"`{argument}` must be positive and finite.")
    if np.any(sizes > MAX_LIBRARY_SIZE):
        raise ValueError(
            f"`{argument}` must be at most {MAX_LIBRARY_SIZE:.0e} total counts per cell, got "
            f"{float(sizes.max()):.3g}: larger sizes overflow the float32 counts and samplers; "
            "pass a realistic library size (real cells hold up to ~1e6 counts)."
        )
    return np.array(np.broadcast_to(sizes, (n,)))
