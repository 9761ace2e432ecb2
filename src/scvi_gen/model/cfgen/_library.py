"""Joint log-normal model of the library sizes of several modalities of the same cell."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

#: Ridge added to covariance diagonals: a small or constant group stays non-degenerate.
_RIDGE = 1e-6
_MIN_SD = 1e-3


@dataclass
class JointLibrarySizeModel:
    """Multivariate log-normal library sizes (one per modality) per label.

    RNA and protein (or ATAC) depths of a cell are correlated; drawing them independently would
    break that. ``log(library)`` of the modalities is modelled as a multivariate normal per
    category of ``key`` (the label), with the pooled fit for labels with fewer than
    ``min_cells`` cells, unseen labels, or no label at all.

    Parameters
    ----------
    n_modalities
        Number of library sizes per cell.
    key
        Condition column the fit is stratified by (``None``: one pooled fit).
    min_cells
        Minimum cells of a label for its own fit.

    Examples
    --------
    >>> model = JointLibrarySizeModel.fit(libraries, obs, key="cell_type")
    >>> sizes = model.sample(plan, np.random.default_rng(0))
    """

    n_modalities: int
    key: str | None = None
    min_cells: int = 10
    groups: dict[str, dict[str, list]] = field(default_factory=dict)
    overall: dict[str, list] = field(default_factory=dict)

    @classmethod
    def fit(
        cls,
        libraries: np.ndarray,
        conditions: pd.DataFrame,
        key: str | None,
        min_cells: int = 10,
    ) -> JointLibrarySizeModel:
        """Fit on ``(n_cells, n_modalities)`` training library sizes.

        Parameters
        ----------
        libraries
            Library size of every modality of every training cell (0 is treated as 1).
        conditions
            Condition columns of the training cells (category names).
        key
            Column of ``conditions`` to stratify by, or ``None``.
        min_cells
            Minimum group size for a group-specific fit.

        Returns
        -------
        The fitted model.
        """
        log_lib = np.log(np.maximum(np.asarray(libraries, dtype=np.float64), 1.0))
        if log_lib.ndim != 2 or len(log_lib) == 0:
            raise ValueError("`libraries` must be a non-empty (n_cells, n_modalities) array.")
        model = cls(n_modalities=log_lib.shape[1], key=key, min_cells=min_cells)
        model.overall = _gaussian_fit(log_lib)
        if key is not None:
            labels = conditions[key].astype(str).to_numpy()
            for name in pd.unique(labels):
                rows = log_lib[labels == name]
                if len(rows) >= min_cells:
                    model.groups[str(name)] = _gaussian_fit(rows)
        return model

    def _parameters(self, label: str | None) -> tuple[np.ndarray, np.ndarray]:
        fit = self.groups.get(str(label), self.overall) if label is not None else self.overall
        return np.asarray(fit["mean"]), np.asarray(fit["cov"])

    def sample(
        self,
        conditions: pd.DataFrame,
        rng: np.random.Generator,
        fixed: Mapping[int, np.ndarray] | None = None,
    ) -> np.ndarray:
        """Draw library sizes (>= 1), optionally given some modalities' library sizes.

        Parameters
        ----------
        conditions
            One row per cell with the condition columns.
        rng
            Random generator.
        fixed
            ``{modality position: library sizes per cell}`` to condition on: the other
            modalities are drawn from the conditional normal given these.

        Returns
        -------
        ``(n_cells, n_modalities)`` float64 library sizes.
        """
        n = len(conditions)
        fixed = {
            int(k): np.broadcast_to(np.asarray(v, float), (n,)) for k, v in (fixed or {}).items()
        }
        out = np.empty((n, self.n_modalities))
        labels = (
            conditions[self.key].astype(str).to_numpy()
            if self.key is not None and self.key in conditions
            else np.full(n, None, dtype=object)
        )
        for label in pd.unique(labels):
            rows = np.flatnonzero(labels == label)
            mean, cov = self._parameters(label)
            given = {k: np.log(np.maximum(v[rows], 1.0)) for k, v in fixed.items()}
            out[rows] = _conditional_draw(mean, cov, given, len(rows), rng)
        for k, values in fixed.items():
            out[:, k] = np.log(np.maximum(values, 1.0))
        return np.maximum(np.exp(out), 1.0)

    def conditional_mean(self, position: int, given: Mapping[int, np.ndarray]) -> np.ndarray:
        """Pooled conditional mean library of one modality given others' library sizes.

        Parameters
        ----------
        position
            Modality whose library size is wanted.
        given
            ``{modality position: library sizes per cell}``.

        Returns
        -------
        Library sizes per cell (``exp`` of the conditional mean of the log).
        """
        mean, cov = self._parameters(None)
        logs = {k: np.log(np.maximum(np.asarray(v, float), 1.0)) for k, v in given.items()}
        mu, _ = _conditional(mean, cov, logs)
        return np.exp(mu[:, position])

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON representation, stored with the model."""
        return {
            "n_modalities": self.n_modalities,
            "key": self.key,
            "min_cells": self.min_cells,
            "groups": self.groups,
            "overall": self.overall,
        }

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> JointLibrarySizeModel:
        """Rebuild a model saved with :meth:`to_dict`."""
        return cls(**dict(state))


def _gaussian_fit(values: np.ndarray) -> dict[str, list]:
    mean = values.mean(axis=0)
    if len(values) > 1:
        cov = np.atleast_2d(np.cov(values, rowvar=False))
    else:
        cov = np.zeros((values.shape[1], values.shape[1]))
    cov = cov + np.diag(np.maximum(_MIN_SD**2 - np.diag(cov), 0.0) + _RIDGE)
    return {"mean": mean.tolist(), "cov": cov.tolist()}


def _conditional(
    mean: np.ndarray, cov: np.ndarray, given: Mapping[int, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Per-cell conditional means ``(n, k)`` and the shared conditional covariance."""
    k = len(mean)
    if not given:
        return mean[None, :], cov
    known = sorted(given)
    free = [i for i in range(k) if i not in known]
    values = np.stack([given[i] for i in known], axis=1)
    gain = cov[np.ix_(free, known)] @ np.linalg.inv(cov[np.ix_(known, known)])
    mu = np.repeat(mean[None, :], len(values), axis=0)
    mu[:, free] = mean[free] + (values - mean[known]) @ gain.T
    mu[:, known] = values
    cond_cov = np.zeros_like(cov)
    cond_cov[np.ix_(free, free)] = cov[np.ix_(free, free)] - gain @ cov[np.ix_(known, free)]
    return mu, cond_cov


def _conditional_draw(
    mean: np.ndarray,
    cov: np.ndarray,
    given: Mapping[int, np.ndarray],
    n: int,
    rng: np.random.Generator,
) -> np.ndarray:
    mu, cond_cov = _conditional(mean, cov, given)
    # Symmetrise and floor the eigenvalues: a conditional covariance can be slightly negative.
    values, vectors = np.linalg.eigh((cond_cov + cond_cov.T) / 2)
    root = vectors * np.sqrt(np.clip(values, 0.0, None))
    return mu + rng.standard_normal((n, len(mean))) @ root.T
