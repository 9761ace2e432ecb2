"""Quality of CFGen trained on 2 processes, and of a run killed in stage 2 and resumed.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/train_modes_quality.py --seeds 0 1 2
    OMP_NUM_THREADS=1 python benchmarks/train_modes_quality.py --modes single resumed --seeds 0

On PBMC3K (the benchmark protocol's split: 2,000 seurat_v3 HVGs of a stratified 75% training
split, :func:`scvi_gen.benchmark.split_for_seed`), for every seed CFGen is
trained three ways with the same epochs and early stopping, each in fresh processes:

- ``single``: one process;
- ``ddp``: two CPU processes (Lightning DDP, gloo; ``strategy="ddp_find_unused_parameters_true"``);
- ``resumed``: one process with a ``ModelCheckpoint`` (last and best), killed with
  ``os._exit`` after ``--kill-after`` epochs of stage 2 (the flow), then a new process
  resumes from ``last.ckpt`` with ``ckpt_path``.

Each model generates the test split's label mix and is scored against the test cells with
:func:`scvi_gen.metrics.evaluate` (C2ST, MMD). Prints every run and the mean and spread per
mode: a mode is as good as ``single`` when its mean lies within the seed-to-seed spread.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pandas as pd

from scvi_gen.benchmark import markdown_table, mean_sd_table

_TRAIN = textwrap.dedent(
    """
    import json, os, sys, warnings, logging
    import torch
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    import scvi, scvi_gen
    from lightning.pytorch.callbacks import Callback, ModelCheckpoint

    from scvi_gen.benchmark import TrainTestConfig, drop_unlabelled, split_for_seed

    mode, seed, out, epochs, kill_after = sys.argv[1:6]
    seed, kill_after = int(seed), int(kill_after)
    epochs = json.loads(epochs)
    adata = drop_unlabelled(scvi_gen.datasets.pbmc3k(), "cell_type")
    train, _ = split_for_seed(adata, TrainTestConfig(), seed)
    scvi.settings.seed = seed
    scvi_gen.CFGen.setup_anndata(train, labels_key="cell_type")
    model = scvi_gen.CFGen(train)
    kwargs = dict(epochs, enable_progress_bar=False)
    if mode == "ddp":
        kwargs.update(accelerator="cpu", devices=2, strategy="ddp_find_unused_parameters_true")
    if mode.startswith("resumed"):
        class Kill(Callback):
            def on_train_epoch_end(self, trainer, pl_module):
                if getattr(pl_module, "stage", None) == "flow" and trainer.current_epoch + 1 >= kill_after:
                    trainer.save_checkpoint(f"{out}.ckpt/last.ckpt")
                    os._exit(3)
        checkpoint = ModelCheckpoint(dirpath=f"{out}.ckpt", save_last=True)
        kwargs.update(callbacks=[checkpoint], enable_checkpointing=True)
        if mode == "resumed_first":
            kwargs["callbacks"].append(Kill())
        else:
            kwargs["ckpt_path"] = f"{out}.ckpt/last.ckpt"
    model.train(**kwargs)
    model.save(out, overwrite=True)
    """
)

_SCORE = textwrap.dedent(
    """
    import json, sys, warnings, logging
    import torch
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    import scvi_gen
    from scvi_gen.benchmark import TrainTestConfig, drop_unlabelled, split_for_seed

    path, seed = sys.argv[1], int(sys.argv[2])
    adata = drop_unlabelled(scvi_gen.datasets.pbmc3k(), "cell_type")
    train, test = split_for_seed(adata, TrainTestConfig(), seed)
    model = scvi_gen.CFGen.load(path)
    plan = scvi_gen.datasets.matched_generation_plan(test.obs["cell_type"])
    syn = model.generate(labels=plan, seed=seed, progress_bar=False)
    table = scvi_gen.metrics.evaluate(
        train, test, syn, labels_key="cell_type", metrics=["c2st_auc", "mmd_rbf"], seed=seed
    )
    glob = table[(table["scope"] == "global") & (table["comparison"] == "synthetic")]
    print(json.dumps(dict(zip(glob["metric"], glob["value"]))))
    """
)


def _python(code: str, *args: str, expect: int = 0) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as fh:
        fh.write(code)
    run = subprocess.run(
        [sys.executable, fh.name, *args], capture_output=True, text=True, env=env, check=False
    )
    Path(fh.name).unlink()
    if run.returncode != expect:
        raise RuntimeError(f"exit {run.returncode}: {run.stderr[-2000:]}")
    return run.stdout


def train(mode: str, seed: int, out: Path, epochs: dict, kill_after: int) -> None:
    """Train one model (in fresh processes) and save it at ``out``."""
    args = (json.dumps(epochs), str(kill_after))
    if mode == "resumed":
        _python(_TRAIN, "resumed_first", str(seed), str(out), *args, expect=3)
        _python(_TRAIN, "resumed_second", str(seed), str(out), *args)
    else:
        _python(_TRAIN, mode, str(seed), str(out), *args)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--modes", nargs="+", default=["single", "ddp", "resumed"])
    parser.add_argument("--epochs", type=int, nargs=2, default=[100, 300])
    parser.add_argument("--kill-after", type=int, default=40, help="flow epochs before the kill")
    parser.add_argument("--cache", default="/tmp/scvi_gen_train_modes")
    args = parser.parse_args()
    epochs = {"max_epochs_autoencoder": args.epochs[0], "max_epochs_flow": args.epochs[1]}
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in args.seeds:
        for mode in args.modes:
            out = cache / f"{mode}_seed{seed}"
            train(mode, seed, out, epochs, args.kill_after)
            score = json.loads(_python(_SCORE, str(out), str(seed)).strip().splitlines()[-1])
            rows += [{"mode": mode, "metric": k, "value": v} for k, v in score.items()]
            print(
                f"seed {seed} {mode:>8}: C2ST {score['c2st_auc']:.3f} MMD {score['mmd_rbf']:.4f}"
            )
    print()
    print(markdown_table(mean_sd_table(pd.DataFrame(rows), "mode", "metric"), index=True))


if __name__ == "__main__":
    main()
