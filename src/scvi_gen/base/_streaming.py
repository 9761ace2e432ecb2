"""Stream generated cells into an ``.h5ad`` or ``.zarr`` store, chunk by chunk.

Generating millions of cells does not fit in memory as one matrix, so
``generate(..., out=path)`` writes each chunk to disk as soon as it is sampled.
anndata has no "append rows to an AnnData on disk" API, but it has the two
pieces such an API is made of: its element writers
(:func:`anndata.io.write_elem`, which give every element the same encoding
``write_h5ad``/``write_zarr`` would) and the appendable on-disk sparse matrix
(:func:`anndata.io.sparse_dataset` and its ``append``). :class:`GenerationWriter`
composes exactly these on an :class:`h5py.File` or a :class:`zarr.Group`, so the
result is an ordinary AnnData store and no container format is invented here.

Layout and life cycle
---------------------
At creation the whole store is written except the rows of ``X``/``layers``:
root ``encoding-type``/``encoding-version`` attributes, ``obs`` (all rows; the
caller knows every cell's conditions up front), ``var``, ``uns``, empty
``obsm``/``varm``/``obsp``/``varp``, and ``X`` plus each named layer as CSR
matrices with 0 rows. The store is first built under a temporary sibling name
and renamed into place, so a file at ``path`` is never half-initialised.

``uns["scvi_gen"]`` carries the bookkeeping:

``generation_key``
    Identifies the generation call; resuming with another key is refused.
``n_written``
    The commit counter: rows of ``X`` (and every layer) that are fully written.
    It is updated only after a chunk is completely on disk, so anything beyond
    it is debris of an interrupted ``append`` and is cut off on resume.
``complete``
    The completion marker, ``False`` until :meth:`GenerationWriter.finish`.
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anndata
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp
import zarr
from anndata.io import read_elem, sparse_dataset, write_elem

if TYPE_CHECKING:
    from anndata import AnnData

logger = logging.getLogger(__name__)

__all__ = ["GenerationWriter", "is_complete", "read_generated"]

_META = "scvi_gen"
_RESUME_HINT = "resume with model.generate(..., out=path, resume=True)"
# Chunk length (elements) of the 1-D data/indices/indptr arrays. Without it zarr
# picks a chunk of 1 element for an array created with 0 rows, which would mean
# one file per stored value; 2**16 float32 values are 256 KiB per chunk.
_CHUNK = 2**16


def _kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".h5ad":
        return "h5ad"
    if suffix == ".zarr":
        return "zarr"
    msg = f"Output path {str(path)!r} must end in '.h5ad' or '.zarr'."
    raise ValueError(msg)


def _open(path: Path, mode: str) -> h5py.File | zarr.Group:
    if _kind(path) == "h5ad":
        return h5py.File(path, mode)
    # Consolidated metadata (written by finish) would go stale once arrays grow,
    # so the writer always reads the real per-array metadata.
    return zarr.open_group(path, mode=mode, use_consolidated=False)


def _close(store: h5py.File | zarr.Group) -> None:
    if isinstance(store, h5py.File):
        store.close()


def _flush(store: h5py.File | zarr.Group) -> None:
    # zarr writes every chunk and metadata document through to the store at once.
    if isinstance(store, h5py.File):
        store.flush()


def _scalar(store: h5py.File | zarr.Group, key: str) -> Any:
    value = store[key][()]
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, np.ndarray):  # zarr returns 0-d arrays
        value = value.item()
    return value


def _n_rows(group: h5py.Group | zarr.Group) -> int:
    return int(group.attrs["shape"][0])


def _n_obs(store: h5py.File | zarr.Group) -> int:
    # Only the index length is needed; reading the whole obs frame would not scale.
    if "obs" not in store:
        return 0
    obs = store["obs"]
    return int(obs[obs.attrs["_index"]].shape[0])


def _meta(store: h5py.File | zarr.Group) -> dict[str, Any] | None:
    """Bookkeeping entries of ``uns["scvi_gen"]``, or ``None`` if absent."""
    if f"uns/{_META}" not in store:
        return None
    g = store[f"uns/{_META}"]
    return {
        k: _scalar(store, f"uns/{_META}/{k}")
        for k in ("generation_key", "n_written", "complete")
        if k in g
    }


def _status(path: Path) -> tuple[bool, int, int]:
    """Return ``(complete, rows written, total rows)`` of a store."""
    store = _open(path, "r")
    try:
        n_obs = _n_obs(store)
        meta = _meta(store) or {}
        if "n_written" in meta:
            n_written = int(meta["n_written"])
        elif "X" in store:
            n_written = _n_rows(store["X"])
        else:
            n_written = 0
        x_rows = _n_rows(store["X"]) if "X" in store else -1
        complete = bool(meta.get("complete", False)) and n_written == n_obs == x_rows
        return complete, n_written, n_obs
    finally:
        _close(store)


def _frames_equal(stored: pd.DataFrame, given: pd.DataFrame) -> bool:
    """Compare index and column values; dtypes may change in a round trip."""
    if not stored.index.astype(str).equals(given.index.astype(str)):
        return False
    if list(map(str, stored.columns)) != list(map(str, given.columns)):
        return False
    # String comparison treats categorical vs. object and NaN vs. NaN alike.
    return all(
        np.array_equal(
            np.asarray(stored[c].astype(str), dtype=str),
            np.asarray(given[c].astype(str), dtype=str),
        )
        for c in stored.columns
    )


class GenerationWriter:
    """Write generated cells chunk by chunk into an .h5ad or .zarr store that anndata reads.

    Parameters
    ----------
    path
        Output path ending in ``.h5ad`` (HDF5 via :mod:`h5py`) or ``.zarr``.
    obs
        Cell annotations of **all** cells to be generated, in output order;
        written at creation.
    var
        Feature annotations; its length is the number of columns of ``X``.
    uns
        Unstructured metadata; must contain a ``"scvi_gen"`` dict. A copy is
        written with ``generation_key``, ``n_written`` and ``complete`` added.
    layers
        Names of layers appended alongside ``X`` (CSR, like ``X``).
    resume
        If ``False``, an existing ``path`` is an error. If ``True``, a missing
        file is created, an incomplete file of the same generation call is
        continued after its last fully written row, and a complete one is left
        as it is (``n_written == len(obs)``).
    key
        Identifies the generation call (e.g. a hash of model and arguments).
        Resuming a store written under another key, or with other ``obs``/
        ``var``, raises :class:`ValueError`.

    Attributes
    ----------
    n_written
        Rows of ``X`` already in the store (0 for a new file).

    Examples
    --------
    >>> writer = GenerationWriter(
    ...     "cells.h5ad", obs=obs, var=var, uns={"scvi_gen": {}}, key="abc123"
    ... )  # doctest: +SKIP
    >>> for X in chunks[writer.n_written // chunk_size :]:  # doctest: +SKIP
    ...     writer.append(X)
    >>> writer.finish()  # doctest: +SKIP
    >>> adata = read_generated("cells.h5ad")  # doctest: +SKIP
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        obs: pd.DataFrame,
        var: pd.DataFrame,
        uns: dict,
        layers: Sequence[str] = (),
        resume: bool = False,
        key: str,
    ) -> None:
        self.path = Path(path)
        self._kind = _kind(self.path)
        if not isinstance(uns.get(_META), Mapping):
            msg = f"uns must contain a {_META!r} dict."
            raise ValueError(msg)
        if isinstance(layers, str):
            layers = [layers]
        self.layers: tuple[str, ...] = tuple(layers)
        if "X" in self.layers or len(set(self.layers)) != len(self.layers):
            msg = f"Layer names must be unique and not 'X', got {list(self.layers)}."
            raise ValueError(msg)
        self.key = str(key)
        self.n_obs = len(obs)
        self.n_vars = len(var)
        self._finished = False

        if self.path.exists():
            if not resume:
                msg = (
                    f"{str(self.path)!r} already exists. Write to another path, or pass "
                    "resume=True to continue (or reuse) the generation stored there."
                )
                raise FileExistsError(msg)
            self._store = _open(self.path, "r+")
            try:
                self._check_same_call(obs, var)
                self._recover()
            except BaseException:
                _close(self._store)
                raise
            logger.info(
                "Resuming %s: %d of %d cells already written.",
                self.path,
                self.n_written,
                self.n_obs,
            )
        else:
            self._create(obs, var, uns)
            self._store = _open(self.path, "r+")
            self.n_written = 0

    # -- creation / resume -------------------------------------------------------

    def _create(self, obs: pd.DataFrame, var: pd.DataFrame, uns: dict) -> None:
        # Build under a temporary sibling and rename, so that a crash during
        # creation never leaves a store at `path` that resume would have to guess about.
        tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:8]}.tmp")
        uns = copy.deepcopy(dict(uns))
        uns[_META] = {**uns[_META], "generation_key": self.key, "n_written": 0, "complete": False}
        # The anndata writers only accept string indices (AnnData would convert them too).
        obs = obs.copy()
        obs.index = obs.index.astype(str)
        var = var.copy()
        var.index = var.index.astype(str)
        # int64 indptr from the start, because anndata's append refuses to outgrow
        # int32 (millions of cells do). indices get int64 too: scipy needs indptr
        # and indices of one dtype (e.g. eliminate_zeros raises on a mix), which is
        # also what scipy itself produces for matrices this large.
        empty = sp.csr_matrix((0, self.n_vars), dtype=np.float32)
        empty.indptr = empty.indptr.astype(np.int64)
        empty.indices = empty.indices.astype(np.int64)
        matrix_kwargs: dict[str, Any] = {"chunks": (_CHUNK,)}
        try:
            if self._kind == "h5ad":
                store: h5py.File | zarr.Group = h5py.File(tmp, "w-")
            else:
                store = zarr.open_group(
                    tmp, mode="w-", zarr_format=anndata.settings.zarr_write_format
                )
            try:
                # Same root attributes as anndata.io.write_h5ad / write_zarr.
                store.attrs["encoding-type"] = "anndata"
                store.attrs["encoding-version"] = "0.1.0"
                write_elem(store, "obs", obs)
                write_elem(store, "var", var)
                for name in ("obsm", "varm", "obsp", "varp"):
                    write_elem(store, name, {})
                write_elem(store, "layers", {})
                for name in self.layers:
                    write_elem(store["layers"], name, empty, dataset_kwargs=matrix_kwargs)
                write_elem(store, "X", empty, dataset_kwargs=matrix_kwargs)
                write_elem(store, "uns", uns)
            finally:
                _close(store)
            tmp.replace(self.path)
        except BaseException:
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            elif tmp.exists():
                tmp.unlink()
            raise
        logger.info("Created %s for %d cells x %d features.", self.path, self.n_obs, self.n_vars)

    def _check_same_call(self, obs: pd.DataFrame, var: pd.DataFrame) -> None:
        meta = _meta(self._store)
        if meta is None or "generation_key" not in meta:
            msg = (
                f"{str(self.path)!r} was not written by scvi-gen's streaming writer "
                f"(no uns[{_META!r}]['generation_key']); write to another path."
            )
            raise ValueError(msg)
        reason = None
        if meta["generation_key"] != self.key:
            reason = f"its generation key is {meta['generation_key']!r}, not {self.key!r}"
        elif not _frames_equal(read_elem(self._store["obs"]), obs):
            reason = "its obs (cells and their conditions) differ"
        elif not _frames_equal(read_elem(self._store["var"]), var):
            reason = "its var (features) differ"
        elif set(self._store["layers"].keys()) != set(self.layers):
            reason = (
                f"its layers are {sorted(self._store['layers'].keys())}, not {sorted(self.layers)}"
            )
        if reason is not None:
            msg = (
                f"{str(self.path)!r} belongs to another generation call ({reason}), so it "
                "cannot be resumed with these arguments. Write to another path, or delete "
                "the file to start over."
            )
            raise ValueError(msg)

    def _recover(self) -> None:
        """Cut every matrix back to the committed row count.

        A process killed inside :meth:`append` can leave, in any matrix, a
        ``shape`` attribute, ``indptr`` and ``data``/``indices`` that are longer
        than the rows counted by ``n_written`` (and than each other). Cutting
        them to ``n_written`` rows makes the finished file identical to an
        uninterrupted one.
        """
        meta = _meta(self._store) or {}
        n = int(meta.get("n_written", _n_rows(self._store["X"])))
        self.n_written = n
        if meta.get("complete"):
            self._finished = True
            return
        for group in self._matrices():
            indptr = group["indptr"]
            if indptr.shape[0] < n + 1:
                msg = f"{str(self.path)!r} is damaged: {group.name} has fewer rows than recorded."
                raise ValueError(msg)
            nnz = int(indptr[n])
            for name, length in (("indptr", n + 1), ("data", nnz), ("indices", nnz)):
                if group[name].shape[0] != length:
                    logger.info("Truncating %s/%s to %d entries.", group.name, name, length)
                    group[name].resize((length,))
            group.attrs["shape"] = (n, self.n_vars)
        _flush(self._store)

    def _matrices(self) -> list[h5py.Group | zarr.Group]:
        return [self._store[f"layers/{name}"] for name in self.layers] + [self._store["X"]]

    # -- writing -----------------------------------------------------------------

    def append(self, X: sp.csr_matrix, layers: Mapping[str, sp.csr_matrix] | None = None) -> None:
        """Append a chunk of cells (the next ``X.shape[0]`` rows of ``obs``).

        Parameters
        ----------
        X
            Expression of the chunk's cells, ``(n_cells, n_vars)``; stored as
            CSR float32 (other sparse or dense inputs are converted).
        layers
            One matrix per layer named at construction, shaped like ``X``.

        Examples
        --------
        >>> writer.append(X_chunk, layers={"counts": counts_chunk})  # doctest: +SKIP
        """
        if self._finished:
            msg = f"{str(self.path)!r} is already finished; nothing more can be appended."
            raise RuntimeError(msg)
        X = sp.csr_matrix(X, dtype=np.float32)
        layers = dict(layers or {})
        if set(layers) != set(self.layers):
            msg = f"append needs exactly the layers {sorted(self.layers)}, got {sorted(layers)}."
            raise ValueError(msg)
        n_new = X.shape[0]
        if X.shape[1] != self.n_vars:
            msg = f"Chunk has {X.shape[1]} columns, the store has {self.n_vars} features."
            raise ValueError(msg)
        if self.n_written + n_new > self.n_obs:
            msg = (
                f"Chunk of {n_new} cells would exceed the {self.n_obs} cells in obs "
                f"({self.n_written} already written)."
            )
            raise ValueError(msg)
        chunks = {name: sp.csr_matrix(m, dtype=np.float32) for name, m in layers.items()}
        for name, m in chunks.items():
            if m.shape != X.shape:
                msg = f"Layer {name!r} chunk has shape {m.shape}, X chunk {X.shape}."
                raise ValueError(msg)
        # Layers first, then X, then the commit counter: whatever a kill leaves
        # behind lies beyond `n_written` in every matrix and is cut off on resume.
        # (anndata's append updates `shape` first and `indices` after `indptr`, so
        # the matrices alone cannot tell a torn chunk from a complete one.)
        for name in self.layers:
            sparse_dataset(self._store[f"layers/{name}"]).append(chunks[name])
        sparse_dataset(self._store["X"]).append(X)
        # The data must be on disk before the counter says it is.
        _flush(self._store)
        self._store[f"uns/{_META}/n_written"][()] = self.n_written + n_new
        _flush(self._store)
        self.n_written += n_new

    def finish(self) -> None:
        """Check that every cell is written, set the completion marker and close.

        Idempotent: a store that is already complete is left untouched.

        Raises
        ------
        ValueError
            If ``X`` does not have exactly ``len(obs)`` rows.

        Examples
        --------
        >>> writer.finish()  # doctest: +SKIP
        >>> is_complete("cells.h5ad")  # doctest: +SKIP
        True
        """
        if self._finished:
            self.close()
            return
        rows = _n_rows(self._store["X"])
        if rows != self.n_obs or self.n_written != self.n_obs:
            msg = (
                f"Cannot finish {str(self.path)!r}: {self.n_written} of {self.n_obs} cells "
                "are written."
            )
            raise ValueError(msg)
        self._store[f"uns/{_META}/complete"][()] = True
        _flush(self._store)
        if self._kind == "zarr":
            # Like write_zarr: readers open the store with one metadata read.
            # Only done now, because consolidated metadata goes stale as arrays grow.
            zarr.consolidate_metadata(self._store.store)
        self._finished = True
        self.close()
        logger.info("Finished %s (%d cells).", self.path, self.n_obs)

    def close(self) -> None:
        """Close the store without finishing it; :meth:`finish` calls this."""
        store = getattr(self, "_store", None)
        if store is not None:
            _close(store)
            self._store = None

    def __enter__(self) -> GenerationWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        # Deliberately no finish(): leaving the block early keeps the store resumable.
        self.close()

    def __repr__(self) -> str:
        return f"GenerationWriter({str(self.path)!r}, {self.n_written}/{self.n_obs} cells)"


def is_complete(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` holds a finished generation.

    Parameters
    ----------
    path
        An ``.h5ad`` or ``.zarr`` store written by :class:`GenerationWriter`.

    Returns
    -------
    bool
        ``True`` if the completion marker is set and ``X`` has one row per
        ``obs`` row; ``False`` otherwise, including when ``path`` does not exist.

    Examples
    --------
    >>> is_complete("cells.h5ad")  # doctest: +SKIP
    True
    """
    path = Path(path)
    _kind(path)
    if not path.exists():
        return False
    return _status(path)[0]


def read_generated(path: str | os.PathLike[str], backed: bool = True) -> AnnData:
    """Open a finished generation, refusing unfinished ones.

    Parameters
    ----------
    path
        An ``.h5ad`` or ``.zarr`` store written by :class:`GenerationWriter`.
    backed
        For ``.h5ad``: open read-only backed (``X`` stays on disk) if ``True``,
        else load into memory. Zarr stores have no backed mode in anndata and
        are always loaded into memory (``backed`` is ignored).

    Returns
    -------
    AnnData
        ``anndata.read_h5ad(path, backed="r")``, ``anndata.read_h5ad(path)`` or
        ``anndata.read_zarr(path)``.

    Raises
    ------
    ValueError
        If the store is not complete (marker unset or missing, or fewer rows in
        ``X`` than in ``obs``).

    Examples
    --------
    >>> adata = read_generated("cells.h5ad")  # doctest: +SKIP
    >>> adata = read_generated("cells.zarr")  # doctest: +SKIP
    """
    path = Path(path)
    kind = _kind(path)
    if not path.exists():
        msg = f"No generated store at {str(path)!r}."
        raise FileNotFoundError(msg)
    complete, n_written, n_obs = _status(path)
    if not complete:
        msg = (
            f"{str(path)!r} is an unfinished generation: {n_written} of {n_obs} cells are "
            f"written. To complete it, {_RESUME_HINT}."
        )
        raise ValueError(msg)
    if kind == "zarr":
        return anndata.read_zarr(path)
    return anndata.read_h5ad(path, backed="r") if backed else anndata.read_h5ad(path)
