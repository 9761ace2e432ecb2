"""Data state fitted in streaming passes: batch sources and running statistics.

Everything a model fits from its training data (library sizes, condition pools, gene sets,
scalers, token bins, latent statistics) is computed here from a :data:`BatchSource`: a
callable that starts a new pass over the training cells and yields row blocks. The same
fitting code then serves an in-memory or backed AnnData (row chunks of the registered matrix,
:func:`manager_source`) and scvi-tools' custom data modules over data that never fits in
memory (:func:`loader_source`, used when a model is built with ``registry=`` and trained with
``train(datamodule=...)``). Memory of a pass is one block plus O(genes x conditions).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from scvi import REGISTRY_KEYS

from scvi_gen._matrix import DEFAULT_CHUNK_SIZE, iter_row_chunks

logger = logging.getLogger(__name__)

#: One row block of the training cells: ``REGISTRY_KEYS.X_KEY`` holds a CSR matrix of the
#: registered values, every other registered key a 2-D numpy array (category codes or
#: continuous covariates), as scvi-tools' data loaders deliver them.
Batch = dict[str, Any]
#: Starts a new pass over the training cells; several fits need two passes.
BatchSource = Callable[[], Iterator[Batch]]

_OBS_KEYS = (
    REGISTRY_KEYS.LABELS_KEY,
    REGISTRY_KEYS.BATCH_KEY,
    REGISTRY_KEYS.CAT_COVS_KEY,
    REGISTRY_KEYS.CONT_COVS_KEY,
)


def manager_source(
    adata_manager: Any,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    matrix_keys: Sequence[str] = (REGISTRY_KEYS.X_KEY,),
) -> BatchSource:
    """Batches of an AnnData registered with scvi-tools, read in row chunks.

    Works on in-memory, sparse and backed (``read_h5ad(backed="r")``) data alike: only one
    chunk of the matrix is in memory at a time.

    Parameters
    ----------
    adata_manager
        The model's :class:`~scvi.data.AnnDataManager`.
    chunk_size
        Rows per batch.
    matrix_keys
        Registry keys of count matrices (``X`` and, for MuData, further modalities), given
        as CSR blocks.

    Returns
    -------
    A :data:`BatchSource`.

    Examples
    --------
    >>> source = manager_source(model.adata_manager)
    >>> n_cells = sum(b["X"].shape[0] for b in source())
    """
    registry = adata_manager.data_registry
    keys = [k for k in _OBS_KEYS if k in registry]

    def batches() -> Iterator[Batch]:
        columns = {k: _as_2d(adata_manager.get_from_registry(k)) for k in keys}
        chunks = [
            iter_row_chunks(adata_manager.get_from_registry(k), chunk_size) for k in matrix_keys
        ]
        start = 0
        for blocks in zip(*chunks):
            end = start + blocks[0].shape[0]
            batch = {k: sp.csr_matrix(b) for k, b in zip(matrix_keys, blocks)}
            batch.update({k: v[start:end] for k, v in columns.items()})
            yield batch
            start = end

    return batches


def loader_source(
    make_loader: Callable[[], Iterable[Mapping[str, Any]]],
    matrix_keys: Sequence[str] = (REGISTRY_KEYS.X_KEY,),
) -> BatchSource:
    """Batches of a data loader yielding scvi-tools tensors (e.g. a data module's loader).

    Parameters
    ----------
    make_loader
        Returns a fresh iterable of ``{registry_key: tensor}`` minibatches, e.g.
        ``datamodule.train_dataloader``.
    matrix_keys
        Registry keys of count matrices, given as CSR blocks.

    Returns
    -------
    A :data:`BatchSource`.

    Examples
    --------
    >>> source = loader_source(datamodule.train_dataloader)
    """

    def batches() -> Iterator[Batch]:
        for tensors in make_loader():
            batch = {}
            for key, value in tensors.items():
                if key in matrix_keys:
                    batch[key] = _tensor_to_csr(value)
                elif key in _OBS_KEYS:
                    batch[key] = _as_2d(_to_numpy(value))
            yield batch

    return batches


def _to_numpy(value: Any) -> np.ndarray:
    if torch.is_tensor(value):
        if value.layout != torch.strided:
            value = value.to_dense()
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _tensor_to_csr(value: Any) -> sp.csr_matrix:
    if sp.issparse(value):
        return sp.csr_matrix(value)
    if torch.is_tensor(value) and value.layout == torch.sparse_csr:
        value = value.detach().cpu()
        return sp.csr_matrix(
            (value.values().numpy(), value.col_indices().numpy(), value.crow_indices().numpy()),
            shape=tuple(value.shape),
        )
    return sp.csr_matrix(_to_numpy(value))


def _as_2d(values: Any) -> np.ndarray:
    values = values.to_numpy() if isinstance(values, pd.DataFrame | pd.Series) else values
    values = np.asarray(values)
    return values.reshape(len(values), -1)


def row_sums(batch: Batch) -> np.ndarray:
    """Total of every cell (row) of a batch, float64."""
    return np.asarray(batch[REGISTRY_KEYS.X_KEY].sum(axis=1), dtype=np.float64).ravel()


class RunningMoments:
    """Mean and variance per column accumulated over batches (Chan et al.'s parallel update).

    A single update gives exactly numpy's ``mean`` and ``var``; later updates merge in
    float64, so memory is O(columns) whatever the number of rows.

    Parameters
    ----------
    n_columns
        Number of columns (``None``: taken from the first update).

    Examples
    --------
    >>> moments = RunningMoments()
    >>> for block in blocks:
    ...     moments.update(block)
    >>> moments.mean, moments.std(ddof=1)
    """

    def __init__(self, n_columns: int | None = None) -> None:
        self.count = 0
        self._mean = None if n_columns is None else np.zeros(n_columns)
        self._m2 = None if n_columns is None else np.zeros(n_columns)

    def update(self, values: np.ndarray) -> None:
        """Add rows (``(n,)`` or ``(n, n_columns)``)."""
        values = np.asarray(values, dtype=np.float64)
        n = len(values)
        if n == 0:
            return
        # A 1-D column is reduced as such: numpy sums it pairwise (as its own mean/var do),
        # a (n, 1) view would be summed sequentially.
        axis = 0 if values.ndim > 1 else None
        mean = np.atleast_1d(values.mean(axis=axis))
        centred = values - (mean if axis == 0 else mean[0])
        m2 = np.atleast_1d(np.sum(centred * centred, axis=axis))
        if self.count == 0:
            self._mean, self._m2, self.count = mean, m2, n
            return
        total = self.count + n
        delta = mean - self._mean
        self._mean = self._mean + delta * (n / total)
        self._m2 = self._m2 + m2 + delta * delta * (self.count * n / total)
        self.count = total

    @property
    def mean(self) -> np.ndarray:
        """Column means."""
        if self.count == 0:
            raise ValueError("No rows were seen.")
        return self._mean

    def var(self, ddof: int = 0) -> np.ndarray:
        """Column variances with ``ddof`` delta degrees of freedom (0 with too few rows)."""
        if self.count - ddof <= 0:
            return np.zeros_like(self.mean)
        return self._m2 / (self.count - ddof)

    def std(self, ddof: int = 0) -> np.ndarray:
        """Column standard deviations."""
        return np.sqrt(self.var(ddof))


class ReservoirSample:
    """A uniform sample of at most ``capacity`` rows from a stream (Algorithm R).

    Rows are kept in stream order while fewer than ``capacity`` have been seen, so small data
    is kept whole and in order. The replacement draws of a block are made at once: Algorithm
    R's choice for a row does not depend on earlier choices, only which row ends in a slot
    does (the last one drawn for it).

    Parameters
    ----------
    capacity
        Largest number of rows kept.
    seed
        Seed of the replacement draws.

    Examples
    --------
    >>> pool = ReservoirSample(50_000)
    >>> for frame in frames:
    ...     pool.update(frame)
    >>> kept = pool.result()
    """

    def __init__(self, capacity: int, seed: int = 0) -> None:
        self.capacity = int(capacity)
        self.seen = 0
        self._rng = np.random.default_rng(seed)
        self._columns: dict[str, np.ndarray] | None = None
        self._filled = 0

    def update(self, rows: pd.DataFrame) -> None:
        """Offer the rows of a frame to the sample."""
        n = len(rows)
        if self._columns is None:
            self._columns = {
                k: np.empty(self.capacity, dtype=rows[k].to_numpy().dtype) for k in rows.columns
            }
        room = min(n, self.capacity - self._filled)
        for key, column in self._columns.items():
            column[self._filled : self._filled + room] = rows[key].to_numpy()[:room]
        self._filled += room
        if room < n:
            stream_index = self.seen + np.arange(room, n)
            slots = self._rng.integers(0, stream_index + 1)
            chosen = np.flatnonzero(slots < self.capacity)
            # Several rows of a block may draw one slot: the last of them stays.
            slot_of = {int(slots[i]): int(i) for i in chosen}
            target = np.fromiter(slot_of, dtype=np.int64)
            source = np.fromiter(slot_of.values(), dtype=np.int64)
            for key, column in self._columns.items():
                column[target] = rows[key].to_numpy()[source]
        self.seen += n

    def result(self) -> pd.DataFrame:
        """The sampled rows, with a fresh integer index."""
        if self._columns is None:
            return pd.DataFrame()
        n = self._filled
        return pd.DataFrame({k: v[:n] for k, v in self._columns.items()}, index=np.arange(n))


def batch_conditions(batch: Batch, fields: Sequence[Any]) -> pd.DataFrame:
    """Condition columns of a batch as category names (and continuous values).

    Parameters
    ----------
    batch
        One batch of a :data:`BatchSource`.
    fields
        The model's :class:`~scvi_gen.base.ConditionField` list.

    Returns
    -------
    One column per field, named by its ``obs_key``, one row per cell.
    """
    n = batch[REGISTRY_KEYS.X_KEY].shape[0]
    data = {}
    for field in fields:
        values = batch[field.registry_key][:, field.column]
        if field.is_categorical:
            categories = np.asarray(field.categories, dtype=object)
            data[field.obs_key] = categories[values.astype(np.int64)].astype(str)
        else:
            data[field.obs_key] = values.astype(np.float64)
    return pd.DataFrame(data, index=np.arange(n))
