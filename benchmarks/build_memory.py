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
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _atlas import atlas, peak_rss_mb

DEFAULT = "scvi,cfgen,latent_diffusion,maf,moe,discrete_diffusion"


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
    peak_mb = peak_rss_mb()
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
    path = atlas(Path(args.cache), args.n_cells)
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
