"""CFGen's ODE solver: quality against cost on a validation split, to choose the default.

Usage::

    OMP_NUM_THREADS=2 python benchmarks/cfgen_ode_solver.py                 # seeds 0 1 2
    OMP_NUM_THREADS=2 python benchmarks/cfgen_ode_solver.py --seeds 0 --max-epochs 20

Per seed, the protocol's stratified split of PBMC3K (``benchmarks/quality.py``) gives the
training cells; the test cells are never touched. The training cells are split again
(stratified, 25 %) into fit and validation cells; CFGen is trained with its defaults on the fit
cells, then generates validation-matched cells with every solver setting and
:func:`scvi_gen.metrics.evaluate` scores them against the validation cells (C2ST, MMD, energy,
k-NN label accuracy). The seconds to generate 10,000 cells are printed beside each setting, with
the number of velocity evaluations per cell. A solver whose scores lie within the seed-to-seed
spread of the most accurate setting is as good; the cheapest such one is the default.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
import warnings

import pandas as pd
import torch

from scvi_gen import datasets
from scvi_gen.base._ode import FIXED_STEP_METHODS
from scvi_gen.benchmark import (
    TrainTestConfig,
    drop_unlabelled,
    guidance_sweep,
    markdown_table,
    split_for_seed,
    train_generator,
)

METRICS = ["c2st_auc", "mmd_rbf", "energy_distance", "knn_label_accuracy"]
#: (method, steps): the current default first, then cheaper and more accurate ones.
SETTINGS = [
    ("midpoint", 20),
    ("midpoint", 10),
    ("midpoint", 5),
    ("euler", 10),
    ("euler", 5),
    ("heun", 5),
    ("rk4", 3),
    ("rk4", 10),
]


def _label(method: str, steps: int) -> str:
    return f"{method}-{steps} ({FIXED_STEP_METHODS[method] * steps} NFE)"


def _timing(model, n_cells: int, seed: int) -> float:
    model.generate(256, seed=seed, progress_bar=False)  # warm-up
    start = time.perf_counter()
    model.generate(n_cells, seed=seed, progress_bar=False)
    return time.perf_counter() - start


def run_seed(adata, config: TrainTestConfig, seed: int, n_timing: int) -> pd.DataFrame:
    """Scores and timings of every solver setting for one seed."""
    train, _test = split_for_seed(adata, config, seed)
    fit, validation = split_for_seed(train, config, seed + 1000)
    model, _ = train_generator("cfgen", fit, config, seed)
    frames = []
    for method, steps in SETTINGS:
        model.set_ode_solver(method, steps)
        table = guidance_sweep(model, fit, validation, [None], config.labels_key, seed=seed)
        table = table[(table["scope"] == "global") & table["metric"].isin(METRICS)]
        table = table.assign(
            solver=_label(method, steps), seed=seed, seconds_10k=_timing(model, n_timing, seed)
        )
        frames.append(table)
    return pd.concat(frames, ignore_index=True)


def summarise(results: pd.DataFrame) -> None:
    """Print mean ± sd over seeds per solver, and the floor."""
    order = [_label(m, s) for m, s in SETTINGS]
    synthetic = results[results["comparison"] == "synthetic"]
    stats = synthetic.groupby(["solver", "metric"])["value"].agg(["mean", "std"])
    text = stats["mean"].map("{:.4g}".format) + " ± " + stats["std"].fillna(0).map("{:.2g}".format)
    table = text.unstack("metric")[METRICS].reindex(order)
    seconds = synthetic.groupby("solver")["seconds_10k"].mean().reindex(order)
    table["seconds / 10k cells"] = seconds.map("{:.2f}".format)
    print("\n## CFGen by ODE solver (validation split)\n")
    print(markdown_table(table, index=True))
    floor = results[results["comparison"] == "floor"].groupby("metric")["value"].mean()
    print("\nreal-vs-real floor:", ", ".join(f"{m} {floor[m]:.4g}" for m in METRICS if m in floor))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max-epochs", type=int, default=None, help="cap both stages")
    parser.add_argument("--n-timing", type=int, default=10_000, help="cells for the timing")
    parser.add_argument("--out", default=None, help="CSV of every score")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    logging.basicConfig(level=logging.WARNING)
    for name in ("scvi", "lightning", "lightning.pytorch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning)

    train_kwargs = {"enable_progress_bar": False}
    if args.max_epochs:
        train_kwargs["max_epochs"] = args.max_epochs
    config = TrainTestConfig(overrides={"cfgen": {"train": train_kwargs}})
    adata = drop_unlabelled(datasets.pbmc3k(), config.labels_key)
    frames = []
    for seed in args.seeds:
        frames.append(run_seed(adata, config, seed, args.n_timing))
        print(f"seed {seed} done", flush=True)
    results = pd.concat(frames, ignore_index=True)
    if args.out:
        results.to_csv(args.out, index=False)
    summarise(results)


if __name__ == "__main__":
    main()
