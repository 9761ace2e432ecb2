"""Access to expression matrices in row blocks, shared by setup checks, models and metrics."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

#: Rows per block when scanning a matrix.
DEFAULT_CHUNK_SIZE = 10_000


def get_matrix(adata: AnnData, layer: str | None = None) -> Any:
    """The expression matrix of ``adata``: ``.X`` or ``.layers[layer]``, not copied.

    Parameters
    ----------
    adata
        AnnData object.
    layer
        Layer name; None means ``.X``.

    Returns
    -------
    Dense array, sparse matrix or backed dataset, as stored.

    Examples
    --------
    >>> counts = get_matrix(adata, layer="counts")
    """
    if layer is None:
        if adata.X is None:
            raise ValueError(
                "adata.X is empty (None); pass `layer=` naming the layer with counts."
            )
        return adata.X
    if layer not in adata.layers:
        raise KeyError(
            f"Layer {layer!r} not found in adata.layers (available: {list(adata.layers)}). "
            "Pass `layer=None` to use adata.X."
        )
    return adata.layers[layer]


def iter_row_chunks(matrix: Any, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[Any]:
    """Yield consecutive row blocks of ``matrix`` so no step densifies all cells at once.

    Parameters
    ----------
    matrix
        Dense array, sparse matrix or backed AnnData dataset.
    chunk_size
        Number of rows per block.

    Yields
    ------
    Row blocks in memory: CSR for sparse input (column selection is only cheap on CSR, and
    COO/CSC rows cannot be sliced), dense arrays otherwise.

    Examples
    --------
    >>> totals = np.concatenate([np.asarray(b.sum(1)).ravel() for b in iter_row_chunks(X)])
    """
    n_rows = matrix.shape[0]
    for start in range(0, n_rows, chunk_size):
        block = matrix[start : min(start + chunk_size, n_rows)]
        yield sp.csr_matrix(block) if sp.issparse(block) else np.asarray(block)
