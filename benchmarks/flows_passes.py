"""What block-autoregressive sampling costs in quality: MAFFlow with several ``passes``.

Sampling a masked autoregressive layer takes one network evaluation per autoregressive step.
``passes=None`` is the exact fully autoregressive flow (one step per gene: 2,000 sequential
evaluations per layer at 2,000 genes); ``passes=k`` (MAFFlow's default 16) makes each layer
autoregressive over k blocks of genes, so sampling takes k evaluations per layer. This script
trains the ``maf`` benchmark entry with each ``passes`` value on the same PBMC3K splits and
prints the quality protocol's metrics side by side, with training and generation seconds.

Usage::

    python benchmarks/flows_passes.py                      # passes 16 and None, seed 0
    python benchmarks/flows_passes.py --passes 4 16 0 --seeds 0 1 2   # 0 means None
"""

from __future__ import annotations

import argparse
import logging
import time

import pandas as pd

from scvi_gen import datasets
from scvi_gen.benchmark import TrainTestConfig, markdown_table, run_train_test, summarize

METRICS = ["c2st_auc", "mmd_rbf", "energy_distance", "knn_label_accuracy", "gene_corr_error"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--passes", type=int, nargs="+", default=[16, 0], help="0: None")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--max-epochs", type=int, default=None)
    parser.add_argument("--out", default="benchmark_results/flows_passes.csv")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    for name in ("scvi", "lightning", "lightning.pytorch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    adata = datasets.pbmc3k()
    blocks = []
    for passes in args.passes:
        override: dict = {"init": {"passes": passes or None}}
        if args.max_epochs:
            override["train"] = {"max_epochs": args.max_epochs}
        config = TrainTestConfig(overrides={"maf": override})
        start = time.perf_counter()
        results = run_train_test(adata, ["maf"], args.seeds, config)
        label = f"maf passes={passes or 'None'}"
        results["generator"] = results["generator"].replace({"maf": label})
        print(f"[{time.perf_counter() - start:7.1f}s] {label} done", flush=True)
        if blocks:  # the floor of these seeds is already there
            results = results[results["generator"] == label]
        blocks.append(results)
    results = pd.concat(blocks, ignore_index=True)
    results.to_csv(args.out, index=False)
    table = pd.concat([summarize(results, "global").loc[METRICS], summarize(results, "time")])
    print(markdown_table(table, index=True))


if __name__ == "__main__":
    main()
