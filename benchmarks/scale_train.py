"""Training at atlas scale from a backed h5ad: throughput, peak memory, data-state time.

Usage::

    OMP_NUM_THREADS=2 python benchmarks/scale_train.py                     # 10k, 100k, 1M cells
    OMP_NUM_THREADS=2 python benchmarks/scale_train.py --sizes 100000 --generators cfgen
    OMP_NUM_THREADS=2 python benchmarks/scale_train.py --sizes 100000 --generators cfgen \\
        --in-memory                                          # the same cells loaded in memory

Builds (once, under ``--cache``) a synthetic atlas per size: PBMC3K cells on their 2,000
seurat_v3 HVGs resampled with binomial thinning of their counts (``_atlas.py``, written block
by block). Then for every generator, and for plain scVI (``scvi.model.SCVI``) as the peer, in a
fresh process: open the file with ``anndata.read_h5ad(backed="r")`` (or load it with
``--in-memory``), ``setup_anndata``, build the model with its registry defaults (the time of
fitting its data state from the file in streaming passes is ``state s``), and train with the
model's default batch size: one epoch per stage for scVI, SCVIGenerator and CFGen, at most
``--max-steps`` minibatches per stage for the others (minibatches drawn from the whole file).
Prints training cells/s (cells of the minibatches over the time of the training steps, reading
from disk included, validation excluded; overall and of the first stage, e.g. CFGen's
autoencoder), the ratio to scVI's, and the process's peak RSS (VmHWM). Run one size at a time on a quiet machine; state the load when reporting.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _atlas import atlas, peak_rss_mb

DEFAULT = "scvi,cfgen,latent_diffusion,discrete_diffusion,maf,moe"
PEER = "scvi_peer"
#: Generators trained for one whole epoch (per stage); the others for --max-steps minibatches.
WHOLE_EPOCH = ("scvi_peer", "scvi", "cfgen")


def _step_clock() -> Any:
    """A Lightning callback adding up the time and cells of training minibatches, per stage.

    Reading the minibatch from disk counts (the time runs from the previous minibatch's end);
    validation, setup and the passes after training do not. Each ``fit`` (a stage of the
    two-stage models) gets its own entry.
    """
    from lightning.pytorch import Callback

    class StepClock(Callback):
        def __init__(self) -> None:
            self.stages: list[dict[str, float]] = []
            self._last = 0.0

        def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
            self.stages.append({"steps": 0, "seconds": 0.0, "cells": 0})

        def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            self._last = time.perf_counter()

        def on_train_batch_end(
            self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, *args: Any
        ) -> None:
            now = time.perf_counter()
            stage = self.stages[-1]
            stage["seconds"] += now - self._last
            stage["steps"] += 1
            stage["cells"] += int(next(v for v in batch.values() if hasattr(v, "shape")).shape[0])
            self._last = now

    return StepClock()


def _train_kwargs(name: str, max_steps: int) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "enable_progress_bar": False,
        "accelerator": "cpu",
        "early_stopping": False,
        "limit_val_batches": 20,
    }
    if name in ("cfgen", "latent_diffusion"):
        kwargs.update(max_epochs_autoencoder=1, max_epochs_flow=1, restore_best=False)
    else:
        kwargs["max_epochs"] = 1
    if name not in WHOLE_EPOCH:
        kwargs["max_steps"] = max_steps
    return kwargs


def measure(path: str, name: str, max_steps: int, in_memory: bool) -> dict[str, Any]:
    """Set up, build and train one generator on the atlas (run in a fresh process)."""
    import anndata as ad
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    adata = ad.read_h5ad(path) if in_memory else ad.read_h5ad(path, backed="r")
    if name == PEER:
        import scvi

        cls, init = scvi.model.SCVI, {}
        scvi.model.SCVI.setup_anndata(adata, labels_key="cell_type")
    else:
        from scvi_gen.model._registry import get_generator

        spec = get_generator(name)
        cls, init = spec.model_class(), spec.init_kwargs
        cls.setup_anndata(adata, labels_key="cell_type", **spec.setup_kwargs)
    start = time.perf_counter()
    model = cls(adata, **init)
    state_s = time.perf_counter() - start
    clock = _step_clock()
    start = time.perf_counter()
    model.train(**_train_kwargs(name, max_steps), callbacks=[clock])
    train_s = time.perf_counter() - start
    stages = clock.stages
    return {
        "generator": name,
        "cells": adata.n_obs,
        "in_memory": in_memory,
        "state_s": state_s,
        "train_s": train_s,
        "minibatches": sum(st["steps"] for st in stages),
        "cells_per_s": sum(st["cells"] for st in stages) / sum(st["seconds"] for st in stages),
        "stage1_cells_per_s": stages[0]["cells"] / max(stages[0]["seconds"], 1e-9),
        "peak_rss_mb": peak_rss_mb(),
    }


def _run(path: Path, name: str, args: argparse.Namespace) -> dict[str, Any]:
    command = [sys.executable, __file__, "--measure", str(path), name, str(args.max_steps)]
    if args.in_memory:
        command.append("--in-memory")
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        return {"generator": name, "error": (result.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--generators", default=DEFAULT)
    parser.add_argument("--max-steps", type=int, default=2000)
    parser.add_argument("--in-memory", action="store_true", help="load the atlas into memory")
    parser.add_argument("--no-peer", action="store_true", help="skip plain scVI")
    parser.add_argument(
        "--cache", default=os.environ.get("SCVI_GEN_BENCH_CACHE", "/tmp/scvi_gen_bench")
    )
    parser.add_argument("--measure", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        path, name, max_steps = args.measure
        print(json.dumps(measure(path, name, int(max_steps), args.in_memory)))
        return
    names = [PEER] * (not args.no_peer) + [g for g in args.generators.split(",") if g]
    print(f"threads {os.environ.get('OMP_NUM_THREADS', '1')}, in memory: {args.in_memory}")
    print(
        "| generator | cells | state s | train s | minibatches | cells/s | stage 1 cells/s "
        "| vs scVI | peak RSS MB |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for size in args.sizes:
        path = atlas(Path(args.cache), size)
        peer = None
        for name in names:
            row = _run(path, name, args)
            if "error" in row:
                print(f"| {name} | {size} | failed: {row['error']} | | | | | | |", flush=True)
                continue
            if name == PEER:
                peer = row["cells_per_s"]
            ratio = f"{row['cells_per_s'] / peer:.2f}" if peer else ""
            print(
                f"| {name} | {size} | {row['state_s']:.1f} | {row['train_s']:.1f} | "
                f"{row['minibatches']} | {row['cells_per_s']:.0f} | "
                f"{row['stage1_cells_per_s']:.0f} | {ratio} | "
                f"{row['peak_rss_mb']:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
