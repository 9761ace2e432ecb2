"""Train, save, load and generate from a collection of h5ad files too large to load together.

Usage::

    python benchmarks/scale_train_collection.py                    # 4 x 250,000 cells, cfgen+scvi
    python benchmarks/scale_train_collection.py --generators cfgen --max-steps 2000
    python benchmarks/scale_train_collection.py --cells-per-file 5000 --max-steps 20  # smoke run

Builds (once, under ``--cache``) ``--files`` h5ad files of ``--cells-per-file`` cells x the
2,000 seurat_v3 HVGs of PBMC3K, by resampling its cells with binomial thinning of their counts
(p ~ U(0.5, 1), as ``build_memory.py``); every file is written block by block, so no more
than one block of cells is ever in memory. Then, for every generator in its own process (so
that its peak RSS is its own): opens the files as one collection
(:func:`scvi_gen.base.open_collection`: counts stay on disk), ``setup_anndata``, builds the
model from the registry (``Model(None, registry=...)``), fits its data state from the
:class:`~scvi.dataloaders.DataSplitter`'s training loader (full streaming passes: this is
not capped by ``--max-steps``), trains one epoch per stage (at most ``--max-steps``
minibatches each), saves, loads and generates ``--n-generate`` cells. Prints one JSON line
per generator with the seconds of every step, training minibatches/s (reading from disk
included; ``train_s`` also holds validation, capped by ``--max-val-batches``, and any pass
after training) and the process's peak RSS (VmHWM).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _atlas import build_file, pbmc_hvgs, peak_rss_mb

DEFAULT = "cfgen,scvi"


def build_collection(cache: Path, n_files: int, cells_per_file: int) -> list[Path]:
    """The files of the collection under ``cache``, built when missing.

    Parameters
    ----------
    cache
        Folder of the files (named by their size, so other sizes do not clash).
    n_files
        Number of files.
    cells_per_file
        Cells per file.

    Returns
    -------
    The paths, in order.
    """
    paths = [cache / f"collection_{cells_per_file}_part{i}.h5ad" for i in range(n_files)]
    missing = [(i, p) for i, p in enumerate(paths) if not p.exists()]
    if missing:
        cache.mkdir(parents=True, exist_ok=True)
        real = pbmc_hvgs()
        for i, path in missing:
            start = time.perf_counter()
            build_file(path, real, cells_per_file, seed=i)
            print(f"built {path} in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return paths


def _step_clock() -> Any:
    """A Lightning callback timing training minibatches, loading included.

    It adds up the time from the start of an epoch (or the end of the previous minibatch) to
    the end of each minibatch, so the reading of cells from disk counts but validation, the
    trainer's setup and the passes a model makes after training (SCVIGenerator's label
    priors) do not. One instance serves both stages of a two-stage model.
    """
    from lightning.pytorch import Callback

    class StepClock(Callback):
        def __init__(self) -> None:
            self.steps = 0
            self.seconds = 0.0
            self._last = 0.0

        def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            self._last = time.perf_counter()

        def on_train_batch_end(self, *args: Any, **kwargs: Any) -> None:
            now = time.perf_counter()
            self.seconds += now - self._last
            self.steps += 1
            self._last = now

    return StepClock()


def _train_kwargs(name: str, max_steps: int | None, max_val_batches: int) -> dict[str, Any]:
    # scvi-tools 1.4.2's runner reads model.adata.n_obs to set up early stopping on a
    # DataSplitter; a registry-built model has no adata, and best-weights restoring needs
    # the validation loss of every epoch: both off for a one-epoch run.
    kwargs: dict[str, Any] = {
        "early_stopping": False,
        "enable_progress_bar": False,
        "accelerator": "cpu",
        "limit_val_batches": max_val_batches,
    }
    if name in ("cfgen", "latent_diffusion"):
        kwargs.update(max_epochs_autoencoder=1, max_epochs_flow=1, restore_best=False)
    else:
        kwargs["max_epochs"] = 1
    if max_steps:
        kwargs["max_steps"] = max_steps
    return kwargs


def measure(paths: list[str], name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Set up, fit, train, save, load and generate one generator (run in a fresh process).

    Parameters
    ----------
    paths
        The collection's files.
    name
        Registry name of the generator.
    args
        The command-line options.

    Returns
    -------
    Timings (s), minibatches/s of training and peak RSS (MiB).
    """
    import torch
    from scvi.dataloaders import DataSplitter

    from scvi_gen.base import open_collection
    from scvi_gen.model._registry import get_generator

    torch.set_num_threads(args.threads)
    spec = get_generator(name)
    cls = spec.model_class()
    times: dict[str, float] = {}

    start = time.perf_counter()
    adapter = open_collection(paths, layer="counts")
    cls.setup_anndata(adapter, layer="counts", labels_key="cell_type", **spec.setup_kwargs)
    manager = cls._get_most_recent_anndata_manager(adapter, required=True)
    datamodule = DataSplitter(
        manager, train_size=args.train_size, batch_size=args.batch_size, shuffle_set_split=True
    )
    times["setup_s"] = time.perf_counter() - start

    start = time.perf_counter()
    model = cls(None, registry=manager.registry, **spec.init_kwargs)
    # What train() would do first; timed apart from training (passes over all cells).
    model._ensure_data_state(datamodule)
    times["data_state_s"] = time.perf_counter() - start

    clock = _step_clock()
    start = time.perf_counter()
    model.train(
        **_train_kwargs(name, args.max_steps, args.max_val_batches),
        callbacks=[clock],
        datamodule=datamodule,
    )
    times["train_s"] = time.perf_counter() - start
    times["train_minibatches_s"] = clock.seconds

    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        model.save(Path(folder) / "model")
        times["save_s"] = time.perf_counter() - start
        start = time.perf_counter()
        loaded = cls.load(Path(folder) / "model")
        times["load_s"] = time.perf_counter() - start
    start = time.perf_counter()
    synthetic = loaded.generate(args.n_generate, seed=0)
    times["generate_s"] = time.perf_counter() - start
    return {
        "generator": name,
        "cells": adapter.n_obs,
        "genes": adapter.n_vars,
        "files": len(paths),
        "train_cells": len(datamodule.train_idx),
        "batch_size": args.batch_size,
        "train_minibatches": clock.steps,
        "minibatches_per_s": clock.steps / max(clock.seconds, 1e-9),
        **times,
        "generated": [synthetic.n_obs, synthetic.n_vars],
        "peak_rss_mb": peak_rss_mb(),
    }


def main() -> None:
    """Build the files once, then measure every generator in its own process."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cache", type=Path, default=Path("/tmp/scvi_gen_bench"))
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--cells-per-file", type=int, default=250_000)
    parser.add_argument("--generators", default=DEFAULT, help="comma-separated registry names")
    parser.add_argument(
        "--max-steps", type=int, default=2000, help="minibatches per stage (0: a whole epoch)"
    )
    parser.add_argument("--max-val-batches", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--train-size", type=float, default=0.99)
    parser.add_argument("--n-generate", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 2)))
    parser.add_argument("--measure", nargs=2, metavar=("PATHS", "NAME"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.measure:
        paths, name = args.measure
        print(json.dumps(measure(paths.split(os.pathsep), name, args)))
        return

    paths = build_collection(args.cache, args.files, args.cells_per_file)
    forwarded = [
        f"--{key.replace('_', '-')}={value}"
        for key, value in vars(args).items()
        if key not in ("measure", "cache", "generators") and value is not None
    ]
    for name in args.generators.split(","):
        result = subprocess.run(
            [
                sys.executable,
                __file__,
                "--measure",
                os.pathsep.join(map(str, paths)),
                name,
                *forwarded,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        lines = result.stdout.strip().splitlines()
        if result.returncode != 0 or not lines:
            print(json.dumps({"generator": name, "error": result.stderr[-2000:]}))
            continue
        print(lines[-1], flush=True)


if __name__ == "__main__":
    main()
