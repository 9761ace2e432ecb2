"""Peak memory of building each generator from a large backed h5ad (data state in streaming passes).

Usage::

    python benchmarks/build_memory.py                       # 200,000 cells x 2,000 genes
    python benchmarks/build_memory.py --n-cells 100000 --generators cfgen,maf

Builds (once, under ``--cache``) a synthetic atlas by resampling real PBMC3K cells (its 2,000
seurat_v3 HVGs) with binomial thinning of their counts, then, for every generator in its own
process: opens the file with ``anndata.read_h5ad(backed="r")``, ``setup_anndata``, builds the
model with its registry defaults (this fits its whole data state from the file) and prints the
process's peak RSS and the build time. Nothing is trained.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

DEFAULT = "scvi,cfgen,latent_diffusion,maf,moe,discrete_diffusion"


def build_atlas(path: Path, n_cells: int, seed: int = 0) -> None:
    """Resample PBMC3K cells with binomial thinning (p ~ U(0.5, 1)) into a CSR h5ad."""
    import anndata as ad
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp

    import scvi_gen

    real = scvi_gen.datasets.pbmc3k()
    real = real[real.obs["cell_type"].notna()].copy()
    mask = scvi_gen.preprocessing.select_hvgs(real.X, real.var_names, 2000, return_mask=True)
    real = real[:, mask].copy()
    X = sp.csr_matrix(real.X)
    rng = np.random.default_rng(seed)
    blocks, labels = [], []
    for start in range(0, n_cells, 50_000):
        n = min(50_000, n_cells - start)
        rows = rng.integers(0, X.shape[0], n)
        block = X[rows].tocsr()
        keep = rng.uniform(0.5, 1.0, n)
        p = np.repeat(keep, np.diff(block.indptr))
        block.data = rng.binomial(block.data.astype(np.int64), p).astype(np.float32)
        block.eliminate_zeros()
        blocks.append(block)
        labels.append(real.obs["cell_type"].to_numpy()[rows])
    out = ad.AnnData(
        sp.vstack(blocks, format="csr"),
        obs=pd.DataFrame(
            {"cell_type": pd.Categorical(np.concatenate(labels).astype(str))},
            index=[f"c{i}" for i in range(n_cells)],
        ),
        var=pd.DataFrame(index=real.var_names),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    out.write_h5ad(path)


def _peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM).

    Not ``getrusage``: on Linux its ``ru_maxrss`` survives ``fork``/``exec``, so a child of
    the process that built the file would report that process's peak.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(path: str, name: str) -> dict:
    """Build one generator on the backed file (run in a fresh process)."""
    import anndata as ad
    import torch

    from scvi_gen.model._registry import get_generator

    torch.set_num_threads(1)
    spec = get_generator(name)
    cls = spec.model_class()
    adata = ad.read_h5ad(path, backed="r")
    start = time.perf_counter()
    cls.setup_anndata(adata, labels_key="cell_type", **spec.setup_kwargs)
    cls(adata, **spec.init_kwargs)
    seconds = time.perf_counter() - start
    peak_mb = _peak_rss_mb()
    return {"generator": name, "cells": adata.n_obs, "build_s": seconds, "peak_rss_mb": peak_mb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n-cells", type=int, default=200_000)
    parser.add_argument("--generators", default=DEFAULT)
    parser.add_argument(
        "--cache", default=os.environ.get("SCVI_GEN_BENCH_CACHE", "/tmp/scvi_gen_bench")
    )
    parser.add_argument("--measure", nargs=2, metavar=("PATH", "NAME"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure)))
        return
    path = Path(args.cache) / f"atlas_{args.n_cells}.h5ad"
    if not path.exists():
        start = time.perf_counter()
        build_atlas(path, args.n_cells)
        print(f"built {path} in {time.perf_counter() - start:.0f} s", flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    print("| generator | cells | build s | peak RSS MB |\n| --- | --- | --- | --- |")
    for name in args.generators.split(","):
        result = subprocess.run(
            [sys.executable, __file__, "--measure", str(path), name],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        if result.returncode != 0:
            print(f"| {name} | failed: {result.stderr.strip().splitlines()[-1]} | | |", flush=True)
            continue
        row = json.loads(result.stdout.strip().splitlines()[-1])
        print(
            f"| {name} | {row['cells']} | {row['build_s']:.1f} | {row['peak_rss_mb']:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
