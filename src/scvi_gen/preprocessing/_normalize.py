"""log1p(CP10k): every cell scaled to :data:`TARGET_SUM` total counts, then ``log1p``."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import scipy.sparse as sp

logger = logging.getLogger(__name__)

#: Library size each cell is normalised to before ``log1p`` (CP10k), in every model and metric.
TARGET_SUM = 1e4


def log1p_cp10k(counts: Any, library: np.ndarray | None = None) -> Any:
    """``log1p(counts / library * TARGET_SUM)`` row by row; rows with library 0 stay 0.

    Parameters
    ----------
    counts
        Cells x genes counts, dense or sparse (not modified).
    library
        Library size of every row (e.g. its total over more genes than ``counts`` holds);
        None means the row sums of ``counts``.

    Returns
    -------
    float32 values, CSR for sparse ``counts`` (zeros stay implicit), a dense array otherwise.

    Examples
    --------
    >>> import numpy as np
    >>> log1p_cp10k(np.array([[1.0, 3.0]]))  # 1/4 and 3/4 of 10,000 counts
    array([[7.8244457, 8.9227915]], dtype=float32)
    """
    if library is None:
        library = np.asarray(counts.sum(axis=1), dtype=np.float64).ravel()
    library = np.asarray(library, dtype=np.float64).ravel()
    if library.shape[0] != counts.shape[0]:
        raise ValueError(
            f"`library` has {library.shape[0]} values for {counts.shape[0]} rows of counts."
        )
    # Empty cells have no composition; they stay at 0 instead of producing NaN.
    scale = np.divide(TARGET_SUM, library, out=np.zeros_like(library), where=library > 0)
    if sp.issparse(counts):
        out = sp.csr_matrix(sp.diags(scale) @ sp.csr_matrix(counts, dtype=np.float64))
        out.data = np.log1p(out.data)
        return out.astype(np.float32)
    values = np.asarray(counts, dtype=np.float64) * scale[:, None]
    return np.log1p(values).astype(np.float32)
