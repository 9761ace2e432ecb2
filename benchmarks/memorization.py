"""Do generators copy their training cells? Closest-record ratio on PBMC3K splits.

For each generator and seed: the quality protocol's split (stratified 75/25, 2,000 training
HVGs), train the registry entry, generate test-matched cells, map train, test and generated
cells into the :class:`~scvi_gen.metrics.CommonSpace` (PCA 30) and print
:func:`~scvi_gen.metrics.closest_record_ratio`: the median distance of generated cells to their
nearest training cell over that of held-out real cells. The floor row does the same for one
half of the test cells against the other half (about 1). Values well below 1 mean the generator
reproduces training cells rather than the population; a two-sample test against held-out cells
cannot see that.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/memorization.py --generators latent_diffusion,cfgen
    OMP_NUM_THREADS=1 python benchmarks/memorization.py --generators maf --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import logging

import anndata as ad
import numpy as np
import pandas as pd

from scvi_gen import datasets
from scvi_gen.benchmark import (
    TrainTestConfig,
    drop_unlabelled,
    split_for_seed,
    train_and_generate,
)
from scvi_gen.metrics import CommonSpace, closest_record_ratio
from scvi_gen.metrics._evaluate import _stratified_halves

N_PCS = 30


def ratios_for_seed(
    adata: ad.AnnData, generators: list[str], config: TrainTestConfig, seed: int
) -> list[dict[str, object]]:
    """Closest-record ratios of the floor and of every generator on one seeded split."""
    train, test = split_for_seed(adata, config, seed)
    space = CommonSpace(n_hvg=train.n_vars, n_pcs=N_PCS, seed=seed).fit(train)
    train_pcs = space.transform(train).pcs
    test_pcs = space.transform(test).pcs
    # Halves stratified by label, as evaluate()'s floor.
    half_a, half_b = _stratified_halves(
        test.obs[config.labels_key].to_numpy(), test.n_obs, np.random.default_rng(seed)
    )
    rows = [
        {
            "generator": "floor (test half vs half)",
            "seed": seed,
            "ratio": closest_record_ratio(train_pcs, test_pcs[half_b], test_pcs[half_a]),
        }
    ]
    for name in generators:
        synthetic, _ = train_and_generate(name, train, test, config, seed)
        ratio = closest_record_ratio(train_pcs, test_pcs, space.transform(synthetic).pcs)
        rows.append({"generator": name, "seed": seed, "ratio": ratio})
        print(f"seed {seed} {name}: closest-record ratio {ratio:.3f}", flush=True)
    return rows


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--generators", default="latent_diffusion,cfgen,scvi")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    for name in ("scvi", "lightning", "lightning.pytorch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    config = TrainTestConfig()
    adata = drop_unlabelled(datasets.pbmc3k(), config.labels_key)
    generators = [g.strip() for g in args.generators.split(",") if g.strip()]
    rows = []
    for seed in args.seeds:
        rows += ratios_for_seed(adata, generators, config, seed)
    table = pd.DataFrame(rows).groupby("generator", sort=False)["ratio"].agg(["mean", "std"])
    print("\nclosest-record ratio (1: like unseen real cells; < 1: near copies of training cells)")
    print(table.to_string(float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
