"""Speed and memory of MAFFlow and MOEFlow at 2,000 genes.

Usage::

    python benchmarks/speed_flows.py                       # both models, default preset
    python benchmarks/speed_flows.py --models maf --epochs 5 --passes 16 32
    python benchmarks/speed_flows.py --full-ar-cells 50    # also time fully autoregressive sampling

For every model (and every ``passes`` value) a fresh subprocess trains for ``--epochs`` epochs
on PBMC3K (2,000 seurat_v3 HVGs of a 75% split; synthetic NB counts when the file is absent),
then generates 1,000 and 10,000 cells. It prints seconds per training epoch (median over
epochs), the validation NLL reached, generation times, and the peak resident memory of the
subprocess (``resource.getrusage(...).ru_maxrss``), so numbers of different models do not mix.

Sampling a MAF layer needs one network evaluation per autoregressive step. ``passes=None`` is
the fully autoregressive flow (2,000 sequential evaluations per layer at 2,000 genes, the
published MAF-FB); ``passes=k`` groups the genes of each layer into k blocks sampled in parallel.
``--full-ar-cells`` times the fully autoregressive flow on a few cells and extrapolates.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import time
import warnings

import numpy as np

MODELS = {"maf": "scvi_gen.model.flows.MAFFlow", "moe": "scvi_gen.model.flows.MOEFlow"}


def _quiet() -> None:
    warnings.filterwarnings("ignore")
    for name in ("scvi", "lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _data(n_genes: int):
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    from scvi_gen import datasets
    from scvi_gen.benchmark import TrainTestConfig, drop_unlabelled, split_for_seed

    try:
        adata = drop_unlabelled(datasets.pbmc3k(), "cell_type")
        train, _ = split_for_seed(adata, TrainTestConfig(n_top_genes=n_genes), seed=0)
        return train, "PBMC3K"
    except (FileNotFoundError, OSError, ValueError):
        rng = np.random.default_rng(0)
        labels = rng.integers(0, 8, 2000)
        means = rng.gamma(0.3, 2.0, (8, n_genes))[labels]
        counts = rng.poisson(means).astype(np.float32)
        obs = pd.DataFrame({"cell_type": pd.Categorical(labels.astype(str))})
        obs.index = obs.index.astype(str)
        return ad.AnnData(sp.csr_matrix(counts), obs=obs), "synthetic NB"


def _model_class(name: str):
    import importlib

    module, cls = MODELS[name].rsplit(".", 1)
    return getattr(importlib.import_module(module), cls)


def run_one(name: str, passes: int | None, args: argparse.Namespace) -> dict:
    """Train and generate with one model in this process; return the measurements."""
    import torch

    from scvi_gen.benchmark import EpochTimer, peak_rss_mib

    _quiet()
    torch.manual_seed(0)
    train, source = _data(args.n_genes)
    model_cls = _model_class(name)
    model_cls.setup_anndata(train, labels_key="cell_type")
    model = model_cls(train, preset=args.preset, passes=passes)
    after_init = peak_rss_mib()
    timer = EpochTimer()
    model.train(
        max_epochs=args.epochs,
        early_stopping=False,
        enable_progress_bar=False,
        callbacks=[timer],
    )
    after_train = peak_rss_mib()
    out = {
        "model": name,
        "passes": passes,
        "data": f"{source} {train.n_obs} cells x {model.module.n_genes} genes",
        "chunk": args.batch_size or model_cls._generation_chunk,
        "epoch_s": statistics.median(timer.seconds),
        "val_nll": float(model.history["validation_loss"].iloc[-1, 0]),
        "peak_mb_init": after_init,
        "peak_mb_train": after_train,
    }
    for n in (1_000, 10_000):
        start = time.perf_counter()
        model.generate(n, seed=0, batch_size=args.batch_size, progress_bar=False)
        out[f"generate_{n}_s"] = time.perf_counter() - start
    out["peak_mb_generate"] = peak_rss_mib()
    if args.full_ar_cells:
        full = model_cls(train, preset=args.preset, passes=None)
        full.module.eval()
        full.is_trained_ = True
        start = time.perf_counter()
        full.generate(args.full_ar_cells, seed=0, progress_bar=False)
        per_cell = (time.perf_counter() - start) / args.full_ar_cells
        out["full_ar_generate_1000_s_est"] = per_cell * 1_000
    return out


def _print(result: dict) -> None:
    passes = result["passes"] if result["passes"] is not None else "none (one per gene)"
    print(f"\n{result['model']} (passes={passes}) on {result['data']}")
    print(f"  train: {result['epoch_s']:.2f} s/epoch, validation NLL {result['val_nll']:.1f}")
    print(
        f"  generate ({result['chunk']} cells per chunk): "
        f"1,000 cells {result['generate_1000_s']:.2f} s, "
        f"10,000 cells {result['generate_10000_s']:.2f} s"
    )
    if "full_ar_generate_1000_s_est" in result:
        print(
            "  fully autoregressive (passes=None): ~"
            f"{result['full_ar_generate_1000_s_est']:.0f} s per 1,000 cells (extrapolated)"
        )
    print(
        f"  peak RSS: {result['peak_mb_init']:.0f} MB after setup, "
        f"{result['peak_mb_train']:.0f} MB after training, "
        f"{result['peak_mb_generate']:.0f} MB after generating"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="maf,moe")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--n-genes", type=int, default=2000)
    parser.add_argument("--preset", default="default", choices=["default", "paper"])
    parser.add_argument(
        "--passes", type=int, nargs="+", default=[16], help="0 means fully autoregressive"
    )
    parser.add_argument(
        "--batch-size", type=int, default=None, help="cells per chunk (default: the model's)"
    )
    parser.add_argument("--full-ar-cells", type=int, default=0)
    parser.add_argument("--single", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.single:  # child process: one model, JSON on the last line
        name, passes = args.single.split(":")
        result = run_one(name, int(passes) or None, args)
        print(json.dumps(result))
        return
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        for passes in args.passes:
            child = [sys.executable, __file__, "--single", f"{name}:{passes}", *sys.argv[1:]]
            done = subprocess.run(child, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                print(f"\n{name} (passes={passes}) failed:\n{done.stderr[-2000:]}")
                continue
            _print(json.loads(done.stdout.strip().splitlines()[-1]))


if __name__ == "__main__":
    main()
