"""Does the fast generation path give the same distribution as the textbook one?

Usage::

    OMP_NUM_THREADS=2 python benchmarks/sampler_equivalence.py --genes all --seeds 0 1 2

Trains CFGen once on a stratified 75% of PBMC3K (``--genes`` HVGs of the training cells or
``all``; cached under ``--cache``), then for every seed generates the test split's label mix
three ways from the same model:

- ``fast``: the default path (decoder output layer in bfloat16 where the CPU has it, NB counts
  from the compiled inversion sampler);
- ``float32``: the same sampler with the decoder in float32;
- ``reference``: float32 decoder and scvi-tools' gamma-Poisson ``NegativeBinomial.sample``.

Each set is scored against the real test cells with :func:`scvi_gen.metrics.evaluate`
(C2ST, MMD, energy distance, gene mean correlation), and ``fast`` against ``reference``
directly (C2ST of one generated set against the other: 0.5 when a classifier cannot tell
them apart). Prints mean and spread over seeds.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

import scvi_gen
from scvi_gen.metrics import CommonSpace, classifier_two_sample_auc

METRICS = ["c2st_auc", "mmd_rbf", "energy_distance", "gene_mean_corr"]


def _reference_sampler(mu: torch.Tensor, theta: torch.Tensor) -> sp.csr_matrix:
    from scvi.distributions import NegativeBinomial

    counts = NegativeBinomial(mu=mu, theta=theta.expand_as(mu)).sample()
    return sp.csr_matrix(counts.cpu().numpy().astype(np.float32))


def _model(train, genes: str, cache: Path, epochs: tuple[int, int]):
    path = cache / f"cfgen_{genes}"
    if (path / "model_meta.json").exists():
        return scvi_gen.CFGen.load(path)
    data = train.copy()
    scvi_gen.CFGen.setup_anndata(data, labels_key="cell_type")
    model = scvi_gen.CFGen(data)
    start = time.perf_counter()
    model.train(
        max_epochs_autoencoder=epochs[0], max_epochs_flow=epochs[1], enable_progress_bar=False
    )
    print(f"trained in {time.perf_counter() - start:.0f} s", flush=True)
    model.save(path, overwrite=True)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--genes", default="all", help="'all' or a number of HVGs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, nargs=2, default=[100, 300])
    parser.add_argument("--cache", default="/tmp/scvi_gen_sampler_equivalence")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)

    adata = scvi_gen.datasets.pbmc3k()
    adata = adata[adata.obs["cell_type"].notna()].copy()
    train, test = scvi_gen.datasets.train_test_split(adata, labels_key="cell_type", seed=0)
    if args.genes != "all":
        genes = scvi_gen.preprocessing.select_hvgs(train.X, train.var_names, int(args.genes))
        train, test = train[:, genes].copy(), test[:, genes].copy()
    model = _model(train, args.genes, cache, tuple(args.epochs))
    plan = scvi_gen.datasets.matched_generation_plan(test.obs["cell_type"])
    space = CommonSpace(n_hvg=2000, n_pcs=30, seed=0).fit(train)

    import scvi_gen.base._latent_model as latent_model

    fast_sampler = latent_model.sample_nb_csr
    rows = []
    for seed in args.seeds:
        sets = {}
        for name, precision, sampler in (
            ("fast", "auto", fast_sampler),
            ("float32", "float32", fast_sampler),
            ("reference", "float32", _reference_sampler),
        ):
            model.set_decoder_precision(precision)
            latent_model.sample_nb_csr = sampler
            try:
                sets[name] = model.generate(labels=plan, seed=seed, progress_bar=False)
            finally:
                latent_model.sample_nb_csr = fast_sampler
            table = scvi_gen.metrics.evaluate(
                train, test, sets[name], labels_key="cell_type", metrics=METRICS, seed=seed
            )
            glob = table[(table["scope"] == "global")]
            for _, r in glob.iterrows():
                rows.append(
                    {
                        "seed": seed,
                        "set": name,
                        "comparison": r["comparison"],
                        "metric": r["metric"],
                        "value": r["value"],
                    }
                )
        pcs = {k: space.transform(v, kind="counts").pcs for k, v in sets.items()}
        auc = classifier_two_sample_auc(pcs["fast"], pcs["reference"], seed=seed)
        rows.append(
            {
                "seed": seed,
                "set": "fast vs reference",
                "comparison": "direct",
                "metric": "c2st_auc",
                "value": auc,
            }
        )
        print(f"seed {seed}: fast vs reference C2ST {auc:.3f}", flush=True)
    df = pd.DataFrame(rows)
    summary = (
        df.groupby(["set", "comparison", "metric"])["value"]
        .agg(["mean", "std", "count"])
        .reset_index()
    )
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.4f}"))


if __name__ == "__main__":
    main()
