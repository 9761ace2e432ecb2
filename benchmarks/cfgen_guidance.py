"""CFGen guidance-weight sweep on PBMC3K: label fidelity against distribution match.

Usage::

    python benchmarks/cfgen_guidance.py                           # seeds 0 1 2
    python benchmarks/cfgen_guidance.py --seeds 0 --weights 1 2 4

Same protocol as ``benchmarks/quality.py`` (stratified 75/25 split per seed, 2,000 training
HVGs, test-matched labels): CFGen is trained once per seed, then
:func:`scvi_gen.benchmark.guidance_sweep` generates and scores cells for every weight.
Prints mean ± sd over seeds of the global C2ST AUC, MMD, energy distance and k-NN label
accuracy per weight, next to the real-vs-real floor.
"""

from __future__ import annotations

import argparse
import logging
import warnings

import pandas as pd

from scvi_gen import datasets
from scvi_gen.benchmark import (
    TrainTestConfig,
    drop_unlabelled,
    guidance_sweep,
    markdown_table,
    split_for_seed,
    train_generator,
)

METRICS = ["c2st_auc", "mmd_rbf", "energy_distance", "knn_label_accuracy", "de_logfc_corr"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--weights", type=float, nargs="+", default=[1.0, 1.5, 2.0, 3.0])
    parser.add_argument("--max-epochs", type=int, default=None, help="cap both stages")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    for name in ("scvi", "lightning", "lightning.pytorch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning)

    config = TrainTestConfig(
        overrides={
            "cfgen": {
                "train": {"enable_progress_bar": False}
                | ({"max_epochs": args.max_epochs} if args.max_epochs else {})
            }
        },
    )
    adata = drop_unlabelled(datasets.pbmc3k(), config.labels_key)
    frames = []
    for seed in args.seeds:
        train, test = split_for_seed(adata, config, seed)
        model, _ = train_generator("cfgen", train, config, seed)
        table = guidance_sweep(model, train, test, args.weights, config.labels_key, seed=seed)
        table["seed"] = seed
        frames.append(table)
        print(f"seed {seed} done", flush=True)
    results = pd.concat(frames, ignore_index=True)
    results = results[(results["scope"] == "global") & results["metric"].isin(METRICS)]
    for comparison, label in (("synthetic", "guidance"), ("floor", None)):
        block = results[results["comparison"] == comparison]
        keys = [label, "metric"] if label else ["metric"]
        stats = block.groupby(keys)["value"].agg(["mean", "std"])
        text = stats["mean"].map("{:.4g}".format) + " ± " + stats["std"].map("{:.2g}".format)
        table = text.unstack("metric") if label else text.to_frame("floor").T
        print(f"\n## {'CFGen by guidance weight' if label else 'real-vs-real floor'}\n")
        print(markdown_table(table[[m for m in METRICS if m in table.columns]], index=True))


if __name__ == "__main__":
    main()
