"""Synthetic atlases for the scale benchmarks: real PBMC3K cells resampled with count noise.

Shared by ``scale_train.py``, ``scale_train_collection.py`` and ``build_memory.py``. A file is
written block by block (``obs``/``var`` first, then ``X`` grown as an on-disk CSR dataset), so
no more than one block of cells is ever in memory, whatever the size.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

#: Cells resampled per block while writing a file (bounds the builder's memory).
BUILD_BLOCK = 50_000


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM) in MiB.

    Not ``getrusage``: on Linux its ``ru_maxrss`` survives ``fork``/``exec``, so a child of
    the process that built the files would report that process's peak.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pbmc_hvgs() -> Any:
    """PBMC3K's labelled cells on its 2,000 seurat_v3 HVGs (CSR counts in ``.X``)."""
    import scipy.sparse as sp

    import scvi_gen

    real = scvi_gen.datasets.pbmc3k()
    real = real[real.obs["cell_type"].notna()].copy()
    mask = scvi_gen.preprocessing.select_hvgs(real.X, real.var_names, 2000, return_mask=True)
    real = real[:, mask].copy()
    real.X = sp.csr_matrix(real.X)
    return real


def build_file(path: Path, real: Any, n_cells: int, seed: int) -> None:
    """Write ``n_cells`` resampled PBMC3K cells, counts thinned binomially (p ~ U(0.5, 1)).

    Parameters
    ----------
    path
        The h5ad file to write (via a ``.partial`` file renamed at the end).
    real
        Source cells (:func:`pbmc_hvgs`).
    n_cells
        Cells in the file.
    seed
        Seed of the resampling and thinning.
    """
    import anndata as ad
    import h5py
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    rows = rng.integers(0, real.n_obs, n_cells)
    labels = real.obs["cell_type"].astype(str).to_numpy()[rows]
    obs = pd.DataFrame(
        {"cell_type": pd.Categorical(labels)},
        index=[f"s{seed}c{i}" for i in range(n_cells)],
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    # Cells and genes only; X is added below, and checked for its shape when read.
    ad.AnnData(obs=obs, var=pd.DataFrame(index=real.var_names)).write_h5ad(partial)
    with h5py.File(partial, "a") as handle:
        for start in range(0, n_cells, BUILD_BLOCK):
            block = real.X[rows[start : start + BUILD_BLOCK]].tocsr()
            keep = rng.uniform(0.5, 1.0, block.shape[0])
            p = np.repeat(keep, np.diff(block.indptr))
            block.data = rng.binomial(block.data.astype(np.int64), p).astype(np.float32)
            block.eliminate_zeros()
            if start == 0:
                ad.io.write_elem(handle, "X", block)
            else:
                ad.io.sparse_dataset(handle["X"]).append(block)
    partial.rename(path)


def atlas(cache: Path, n_cells: int, seed: int = 0) -> Path:
    """The atlas of ``n_cells`` cells under ``cache``, built once and reused."""
    path = cache / f"atlas_{n_cells}.h5ad"
    if not path.exists():
        start = time.perf_counter()
        build_file(path, pbmc_hvgs(), n_cells, seed)
        print(f"built {path} in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    return path
