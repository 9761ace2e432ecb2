"""Keeping torch's thread count across third-party code that changes it."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import torch

logger = logging.getLogger(__name__)


@contextmanager
def torch_threads_kept() -> Iterator[None]:
    """Restore torch's intra-op thread count after code that changes it behind our back.

    scanpy's numba-parallel code (seurat_v3 HVGs, neighbours, UMAP) sets the OpenMP thread
    count shared with torch to all cores, so torch trained afterwards ignored
    ``OMP_NUM_THREADS=1``; on 2 cores shared by two runs that made LatentDiffusion's epochs
    about 3x slower.

    Examples
    --------
    >>> with torch_threads_kept():
    ...     pass
    """
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
