"""Quality benchmark: evaluate() tables for the floor and each generator over several seeds.

Usage::

    python benchmarks/quality.py                      # PBMC3K, scvi + scvi_unconditional, 3 seeds
    python benchmarks/quality.py --generators scvi,cfgen --seeds 0 1 2 --out results/quality
    # seeds in parallel processes, then one summary over all of them:
    python benchmarks/quality.py --generators maf --seeds 1 --out results/q_s1
    python benchmarks/quality.py --merge results/q_s0 results/q_s1 --out results/quality

Prints mean ± sd over seeds of every metric (global and per-label mean) with the real-vs-real
floor first, the ratio to the floor, and training/generation times; writes the long CSV.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import pandas as pd

from scvi_gen import datasets
from scvi_gen.benchmark import (
    FLOOR,
    TrainTestConfig,
    markdown_table,
    ratio_to_floor,
    run_train_test,
    summarize,
)

LOADERS = {
    "pbmc3k": datasets.pbmc3k,
    "pbmc68k_reduced": datasets.pbmc68k_reduced,
    "pancreas": datasets.pancreas,
    "kang_ifnb": datasets.kang_ifnb,
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default="pbmc3k", choices=sorted(LOADERS))
    parser.add_argument("--generators", default="scvi,scvi_unconditional")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--labels-key", default="cell_type")
    parser.add_argument("--n-top-genes", type=int, default=2000)
    parser.add_argument("--out", default="benchmark_results/quality")
    parser.add_argument(
        "--max-epochs", type=int, default=None, help="cap every generator's training epochs"
    )
    parser.add_argument(
        "--merge",
        nargs="+",
        type=Path,
        default=None,
        help="summarise the results_long.csv of earlier runs (directories) instead of running",
    )
    args = parser.parse_args()
    if args.merge:
        merge_runs(args.merge, Path(args.out), args.dataset, args.n_top_genes)
        return
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("scvi").setLevel(logging.ERROR)
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    generators = [g.strip() for g in args.generators.split(",") if g.strip()]
    overrides = (
        {g: {"train": {"max_epochs": args.max_epochs}} for g in generators}
        if args.max_epochs
        else {}
    )
    config = TrainTestConfig(
        labels_key=args.labels_key, n_top_genes=args.n_top_genes, overrides=overrides
    )
    start = time.perf_counter()

    def report_progress(block: pd.DataFrame) -> None:
        gen = [g for g in block["generator"].unique() if g != FLOOR][0]
        got = block.set_index(["generator", "metric", "scope"])["value"]
        print(
            f"[{time.perf_counter() - start:7.1f}s] seed {block['seed'].iloc[0]} {gen}: "
            f"c2st {got.get((gen, 'c2st_auc', 'global'), float('nan')):.3f}, "
            f"mmd {got.get((gen, 'mmd_rbf', 'global'), float('nan')):.4f}, "
            f"knn acc {got.get((gen, 'knn_label_accuracy', 'global'), float('nan')):.3f}",
            flush=True,
        )

    results = run_train_test(
        LOADERS[args.dataset](), generators, args.seeds, config, on_result=report_progress
    )
    write_summary(results, out, args.dataset, args.n_top_genes)
    print(
        f"total {time.perf_counter() - start:.0f} s; wrote {out}/results_long.csv and summary.md"
    )


def merge_runs(dirs: list[Path], out: Path, dataset: str, n_top_genes: int) -> None:
    """One summary over the long tables of several runs (e.g. one seed per process)."""
    results = pd.concat([pd.read_csv(d / "results_long.csv") for d in dirs], ignore_index=True)
    identity = ["generator", "seed", "metric", "scope"]
    floor = results["generator"] == FLOOR
    # Every run of a seed scores the same floor: keep it once.
    results = pd.concat(
        [results[floor].drop_duplicates(identity), results[~floor]], ignore_index=True
    )
    duplicated = results.duplicated(identity)
    if duplicated.any():
        twice = results.loc[duplicated, ["generator", "seed"]].drop_duplicates()
        raise ValueError(f"Runs overlap (generator, seed): {twice.to_records(index=False)}.")
    out.mkdir(parents=True, exist_ok=True)
    write_summary(results, out, dataset, n_top_genes)
    print(f"merged {len(dirs)} runs; wrote {out}/results_long.csv and summary.md")


def write_summary(results: pd.DataFrame, out: Path, dataset: str, n_top_genes: int) -> None:
    """Write the long table and the markdown summary; print the summary."""
    results.to_csv(out / "results_long.csv", index=False)
    generators = [g for g in results["generator"].unique() if g != FLOOR]
    seeds = sorted(int(s) for s in results["seed"].unique())
    sections = [
        f"# Quality on {dataset}: {', '.join(generators)}; seeds {seeds}; "
        f"{n_top_genes or 'all'} genes\n",
        "## Global metrics (mean ± sd over seeds)\n",
        markdown_table(summarize(results, "global"), index=True),
        "## Per-label means (mean ± sd over seeds)\n",
        markdown_table(summarize(results, "per_label_mean"), index=True),
        "## Ratio to the real-vs-real floor (global, mean over seeds)\n",
        markdown_table(ratio_to_floor(results, "global"), index=True),
        "## Seconds (mean ± sd)\n",
        markdown_table(summarize(results, "time"), index=True),
    ]
    text = "\n".join(sections)
    (out / "summary.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
