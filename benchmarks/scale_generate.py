"""Generation at scale: cells/s and peak memory of every generator, beside scVI's sampler.

Usage::

    python benchmarks/scale_generate.py                                   # all generators
    python benchmarks/scale_generate.py --generators cfgen --genes 2000 all --sizes 1000 10000
    python benchmarks/scale_generate.py --generators cfgen --genes 2000 --sizes 1000000

For every generator and gene set (2,000 seurat_v3 HVGs of PBMC3K, or all 13,714 genes) a model
is trained for one epoch per stage (speed does not depend on how well it is trained) and saved
under ``--cache``; then every size runs in its own process (``load``, ``generate``; sizes of
1,000,000 cells and more are streamed to an ``.h5ad`` with ``out=``) and prints cells/s and the
process's peak RSS (VmHWM). Each process first generates 1,024 cells (loading compiled
kernels, casting weights; its time is the "startup" column) and then times the call ("s").
scVI's ``posterior_predictive_sample`` on the same genes and number of cells runs in the same
way as the peer, and a floor line estimates what CFGen's generation cannot go below on this
machine: its decoder and flow matrix products at the measured matmul throughput (bfloat16 for
the decoder's output layer where the CPU has it natively) plus one pass over the means matrix
at the measured memory bandwidth for the draws. Set ``OMP_NUM_THREADS`` and state the load
when reporting.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_GENERATORS = "scvi,cfgen,latent_diffusion,maf,moe,discrete_diffusion"
STREAM_FROM = 1_000_000
WARMUP_CELLS = 1_024
#: Generators that take a guidance weight (--guidance applies to these).
GUIDED = ("cfgen", "latent_diffusion", "discrete_diffusion")
EPOCHS = {
    "cfgen": {"max_epochs_autoencoder": 1, "max_epochs_flow": 1},
    "latent_diffusion": {"max_epochs_autoencoder": 1, "max_epochs_flow": 1},
}


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _training_data(genes: str):
    import scvi_gen

    adata = scvi_gen.datasets.pbmc3k()
    adata = adata[adata.obs["cell_type"].notna()].copy()
    if genes != "all":
        mask = scvi_gen.preprocessing.select_hvgs(
            adata.X, adata.var_names, int(genes), return_mask=True
        )
        adata = adata[:, mask].copy()
    return adata


def train(name: str, genes: str, path: Path) -> None:
    """Train a generator (or scVI, ``name="scvi_peer"``) briefly and save it."""
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    adata = _training_data(genes)
    if name == "scvi_peer":
        import scvi

        scvi.model.SCVI.setup_anndata(adata)
        model = scvi.model.SCVI(adata)
        model.train(max_epochs=1, enable_progress_bar=False)
        model.save(str(path), overwrite=True)
        return
    from scvi_gen.model._registry import get_generator

    spec = get_generator(name)
    cls = spec.model_class()
    cls.setup_anndata(adata, labels_key="cell_type", **spec.setup_kwargs)
    model = cls(adata, **spec.init_kwargs)
    model.train(**EPOCHS.get(name, {"max_epochs": 1}), enable_progress_bar=False)
    model.save(path, overwrite=True)


def measure(
    name: str, genes: str, path: Path, n_cells: int, out_dir: Path, guidance: float | None
) -> dict:
    """Load a saved model and time one generation of ``n_cells`` cells."""
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    if name == "scvi_peer":
        import anndata as ad
        import numpy as np
        import scvi

        real = _training_data(genes)
        cells = ad.AnnData(real.X[np.arange(n_cells) % real.n_obs], var=real.var)
        scvi.model.SCVI.setup_anndata(cells)
        model = scvi.model.SCVI.load(str(path), adata=cells)
        start = time.perf_counter()
        model.posterior_predictive_sample(cells, batch_size=1024)
        seconds = time.perf_counter() - start
    else:
        from scvi_gen.model._registry import get_generator

        cls = get_generator(name).model_class()
        model = cls.load(path)
        out = out_dir / f"{name}_{genes}_{n_cells}.h5ad" if n_cells >= STREAM_FROM else None
        if out is not None and out.exists():
            out.unlink()
        # The first call of a process loads compiled kernels and casts weights: reported
        # apart ("startup"), so that "s" is the steady state a long run sees.
        start = time.perf_counter()
        kwargs = {"guidance": guidance} if guidance is not None and name in GUIDED else {}
        model.generate(WARMUP_CELLS, seed=1, progress_bar=False, **kwargs)
        startup = time.perf_counter() - start
        start = time.perf_counter()
        model.generate(n_cells, seed=0, out=out, progress_bar=False, **kwargs)
        seconds = time.perf_counter() - start
        return {
            "seconds": seconds,
            "startup": startup,
            "cells_per_s": n_cells / seconds,
            "peak_rss_mb": _peak_rss_mb(),
        }
    return {"seconds": seconds, "cells_per_s": n_cells / seconds, "peak_rss_mb": _peak_rss_mb()}


def _throughput(dtype: str) -> float:
    """Measured FLOP/s of a (1024 x 512) @ (512 x 13714) product in ``dtype``."""
    import torch

    a = torch.randn(1024, 512).to(getattr(torch, dtype))
    b = torch.randn(512, 13_714).to(getattr(torch, dtype))
    a @ b
    start = time.perf_counter()
    for _ in range(5):
        a @ b
    return 5 * 2 * 1024 * 512 * 13_714 / (time.perf_counter() - start)


def _bandwidth() -> float:
    """Measured bytes/s of one pass that reads and writes a large float32 array."""
    import torch

    x = torch.rand(64 * 2**20 // 4)
    x.mul_(1.0)
    start = time.perf_counter()
    for _ in range(5):
        x.mul_(1.0)
    return 5 * 2 * x.numel() * 4 / (time.perf_counter() - start)


def generation_floor(n_cells: int, n_genes: int) -> float:
    """Seconds CFGen's generation cannot go below on this machine (default settings).

    The decoder's matrix products (32 -> 256 -> 512 -> genes) at the measured throughput of
    the dtype its output layer uses, the flow's (5 midpoint steps = 10 evaluations of a
    3-block residual MLP of width 256) in float32, and the NB draws as one read-and-write pass
    over the means matrix at the measured memory bandwidth.
    """
    import torch

    from scvi_gen.nn import resolve_decoder_precision

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    decoder_dtype = str(resolve_decoder_precision("auto", "cpu")).removeprefix("torch.")
    decoder = 2 * n_cells * (32 * 256 + 256 * 512) / _throughput("float32")
    decoder += 2 * n_cells * 512 * n_genes / _throughput(decoder_dtype)
    flow = 10 * 2 * n_cells * (32 * 256 + 3 * 2 * 256 * 256 + 256 * 32) / _throughput("float32")
    draws = 2 * n_cells * n_genes * 4 / _bandwidth()
    return decoder + flow + draws


def _run(*args: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    result = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, env=env, check=False
    )
    if result.returncode != 0:
        return {"error": (result.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--generators", default=DEFAULT_GENERATORS)
    parser.add_argument("--genes", nargs="+", default=["2000", "all"])
    parser.add_argument(
        "--sizes", nargs="+", type=int, default=[1_000, 10_000, 100_000, 1_000_000]
    )
    parser.add_argument("--no-peer", action="store_true", help="skip scVI's sampler")
    parser.add_argument(
        "--guidance",
        type=float,
        default=None,
        help="guidance weight of the latent generators (default: each model's own)",
    )
    parser.add_argument(
        "--cache", default=os.environ.get("SCVI_GEN_BENCH_CACHE", "/tmp/scvi_gen_bench")
    )
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, name, genes, path, *rest = args.worker
        if kind == "train":
            train(name, genes, Path(path))
            print(json.dumps({"ok": True}))
        else:
            guidance = None if rest[1] == "default" else float(rest[1])
            result = measure(name, genes, Path(path), int(rest[0]), Path(args.cache), guidance)
            print(json.dumps(result))
        return
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    guidance = "default" if args.guidance is None else str(args.guidance)
    names = [g for g in args.generators.split(",") if g] + ([] if args.no_peer else ["scvi_peer"])
    print(f"threads {os.environ.get('OMP_NUM_THREADS', '1')}")
    print("| generator | genes | cells | s | startup s | cells/s | peak RSS MB | ratio to scVI |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for genes in args.genes:
        n_genes = 13_714 if genes == "all" else int(genes)
        peer = {}
        rows = []
        for name in names:
            path = cache / f"model_{name}_{genes}"
            if not path.exists():
                trained = _run("--worker", "train", name, genes, str(path))
                if "error" in trained:
                    print(f"| {name} | {genes} | training failed: {trained['error']} | | | | | |")
                    continue
            for n in args.sizes:
                if name == "scvi_peer" and n >= STREAM_FROM:
                    continue  # scVI's sampler holds every cell in memory
                row = _run("--worker", "measure", name, genes, str(path), str(n), guidance)
                if name == "scvi_peer":
                    peer[n] = row.get("cells_per_s")
                rows.append((name, n, row))
        for name, n, row in rows:
            if "error" in row:
                print(f"| {name} | {genes} | {n} | failed: {row['error']} | | | | |")
                continue
            ratio = row["cells_per_s"] / peer[n] if peer.get(n) else float("nan")
            startup = f"{row['startup']:.2f}" if "startup" in row else ""
            print(
                f"| {name} | {genes} | {n} | {row['seconds']:.2f} | {startup} | "
                f"{row['cells_per_s']:.0f} | {row['peak_rss_mb']:.0f} | {ratio:.2f} |",
                flush=True,
            )
        for n in args.sizes:
            floor = generation_floor(n, n_genes)
            print(
                f"| floor (CFGen: decoder + flow + one pass of draws) | {genes} | {n} | {floor:.2f} | | | | |"
            )


if __name__ == "__main__":
    main()
