"""The flow's context vector: learned embeddings of the registered categorical conditions."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scvi import REGISTRY_KEYS
from torch import Tensor, nn

from scvi_gen.base import ConditionField, RunningMoments

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CategoricalSlot:
    """Where one categorical condition lives in the scvi-tools tensors, and its size."""

    registry_key: str
    column: int
    n_categories: int


def categorical_slots(fields: Sequence[ConditionField]) -> list[CategoricalSlot]:
    """Categorical conditions in the registry's order: labels first, then batch, covariates.

    Parameters
    ----------
    fields
        ``model.condition_fields``.

    Returns
    -------
    One slot per categorical field.
    """
    return [
        CategoricalSlot(f.registry_key, f.column, len(f.categories))
        for f in fields
        if f.is_categorical
    ]


class ConditionEncoder(nn.Module):
    """Context vector of a cell: condition embeddings, covariates and library size.

    One learned embedding per categorical condition. The label embedding comes first,
    followed by batch and categorical covariates (the order of ``model.condition_fields``),
    then the continuous covariates and ``log(library size)``, both standardised with stored
    training statistics. The library size is part of the
    context because the dequantised representation depends on it (a zero count of a cell with
    ``L`` counts spans ``[0, log1p(10^4 / L))``): training uses each cell's own total count,
    generation a library size drawn from the per-condition library-size model.

    Parameters
    ----------
    slots
        Categorical conditions (:func:`categorical_slots`).
    n_continuous
        Number of continuous covariates.
    embedding_dim
        Dimension of each categorical embedding.
    use_library
        Append the standardised log library size.

    Examples
    --------
    >>> encoder = ConditionEncoder(categorical_slots(model.condition_fields), 0, 16)
    >>> context = encoder({"labels": labels, "batch": batch}, library)  # (n, output_dim)
    """

    def __init__(
        self,
        slots: Sequence[CategoricalSlot],
        n_continuous: int,
        embedding_dim: int = 16,
        use_library: bool = True,
    ) -> None:
        super().__init__()
        self.slots = list(slots)
        self.n_continuous = int(n_continuous)
        self.use_library = use_library
        self.embeddings = nn.ModuleList(
            nn.Embedding(slot.n_categories, embedding_dim) for slot in self.slots
        )
        self.register_buffer("continuous_mean", torch.zeros(self.n_continuous))
        self.register_buffer("continuous_std", torch.ones(self.n_continuous))
        self.register_buffer("log_library_mean", torch.zeros(()))
        self.register_buffer("log_library_std", torch.ones(()))
        self.output_dim = (
            embedding_dim * len(self.slots) + self.n_continuous + int(self.use_library)
        )

    def fit_continuous(self, values: np.ndarray) -> None:
        """Store mean and standard deviation of the training continuous covariates.

        Parameters
        ----------
        values
            ``(n_cells, n_continuous)`` covariate values.
        """
        moments = RunningMoments(self.n_continuous)
        moments.update(np.asarray(values, dtype=np.float64).reshape(-1, self.n_continuous))
        self.set_continuous(moments)

    def set_continuous(self, moments: RunningMoments) -> None:
        """Store the continuous-covariate statistics accumulated over the training batches.

        Parameters
        ----------
        moments
            :class:`~scvi_gen.base.RunningMoments` of the ``(n_cells, n_continuous)`` values.
        """
        self.continuous_mean.copy_(torch.from_numpy(moments.mean).float())
        std = torch.from_numpy(moments.std()).float()
        self.continuous_std.copy_(torch.where(std > 0, std, torch.ones_like(std)))

    def fit_library(self, library: np.ndarray) -> None:
        """Store mean and standard deviation of the training cells' log library sizes.

        Parameters
        ----------
        library
            Total counts of every training cell.
        """
        moments = RunningMoments(1)
        moments.update(log_library_sizes(library))
        self.set_library(moments)

    def set_library(self, moments: RunningMoments) -> None:
        """Store the log-library-size statistics accumulated over the training batches.

        Parameters
        ----------
        moments
            :class:`~scvi_gen.base.RunningMoments` of :func:`log_library_sizes` (1-D updates).
        """
        self.log_library_mean.fill_(float(moments.mean[0]))
        self.log_library_std.fill_(float(moments.std()[0]) or 1.0)

    def forward(
        self, conditions: Mapping[str, Tensor], library: Tensor | None = None
    ) -> Tensor | None:
        """Build the ``(n, output_dim)`` context, or ``None`` when it is empty.

        Parameters
        ----------
        conditions
            ``{registry_key: tensor}`` (scvi-tools minibatch layout).
        library
            ``(n, 1)`` library sizes; required when ``use_library``.
        """
        if self.output_dim == 0:
            return None
        parts = [
            embedding(conditions[slot.registry_key][:, slot.column].long())
            for slot, embedding in zip(self.slots, self.embeddings)
        ]
        if self.n_continuous:
            cont = conditions[REGISTRY_KEYS.CONT_COVS_KEY].float()
            parts.append((cont - self.continuous_mean) / self.continuous_std)
        if self.use_library:
            log_library = library.float().clamp_min(1.0).log()
            parts.append((log_library - self.log_library_mean) / self.log_library_std)
        return torch.cat(parts, dim=-1)


def log_library_sizes(library: np.ndarray) -> np.ndarray:
    """``log(max(L, 1))`` of library sizes, float64 (the statistic the context standardises).

    Parameters
    ----------
    library
        Total counts of some cells.

    Returns
    -------
    ``(n,)`` log library sizes.
    """
    return np.log(np.maximum(np.asarray(library, dtype=np.float64).ravel(), 1.0))
