"""CFGen with two attributes on pancreas: compositional guidance and an unseen combination.

Usage::

    python benchmarks/cfgen_pancreas.py                      # seeds 0 1 2, weight 2
    python benchmarks/cfgen_pancreas.py --seeds 0 --weight 2 --n-per-pair 60

Protocol. ``pancreas()`` (350 cells, 5 cell types x 2 species, 35 cells per pair). The 2,000
seurat_v3 HVGs of the training counts are modelled. CFGen is set up with
``labels_key="cell_type"`` and ``categorical_covariate_keys=["species"]``, so the flow sees
both attributes and learns the unconditional and each single-attribute field (condition
dropout). Two k-NN classifiers (k=15) are fitted on real **training** cells in the common
space (PCA of log1p(CP10k) HVGs fitted on train): one for cell type, one for species. For
every (cell_type, species) pair ``--n-per-pair`` cells are generated under three guidance
settings, and the fraction of generated cells classified correctly is reported for each
attribute and for both at once:

- ``both``: ``{"cell_type": w, "species": w}`` (compositional guidance),
- ``cell_type only``: ``{"cell_type": w, "species": 0}``,
- ``species only``: ``{"cell_type": 0, "species": w}``.

The same classifiers applied to the real held-out cells give the reference ("real test").

Unseen combination. CFGen is retrained on every cell except the (macrophage, mouse) pair,
then ``n`` (macrophage, mouse) cells are generated with compositional guidance; reported is
how often classifiers fitted on **all** real cells (the held-out pair included, as the judge
must know what a mouse macrophage looks like) call them macrophage, mouse, and both.
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings

import anndata as ad
import pandas as pd
import scvi
from sklearn.neighbors import KNeighborsClassifier

from scvi_gen import datasets
from scvi_gen.benchmark import markdown_table
from scvi_gen.metrics import CommonSpace, select_hvgs
from scvi_gen.model.cfgen import CFGen

ATTRIBUTES = ("cell_type", "species")
HELD_OUT_PAIR = ("macrophage", "mouse")


def train_cfgen(train: ad.AnnData, seed: int, args: argparse.Namespace) -> CFGen:
    """Train CFGen on ``train`` conditioned on cell type and species."""
    scvi.settings.seed = seed
    train = train.copy()
    CFGen.setup_anndata(train, labels_key="cell_type", categorical_covariate_keys=["species"])
    model = CFGen(train)
    model.train(
        max_epochs_autoencoder=args.epochs_autoencoder,
        max_epochs_flow=args.epochs_flow,
        enable_progress_bar=False,
    )
    return model


def fit_judges(space: CommonSpace, real: ad.AnnData) -> dict[str, KNeighborsClassifier]:
    """One k-NN classifier per attribute on the real cells' principal components."""
    pcs = space.transform(real).pcs
    return {
        key: KNeighborsClassifier(n_neighbors=15).fit(pcs, real.obs[key].astype(str).to_numpy())
        for key in ATTRIBUTES
    }


def accuracy(
    judges: dict[str, KNeighborsClassifier], space: CommonSpace, cells: ad.AnnData
) -> dict[str, float]:
    """Fractions of cells whose predicted cell type / species / both equal their conditions."""
    pcs = space.transform(cells, kind="counts").pcs
    correct = {
        key: judges[key].predict(pcs) == cells.obs[key].astype(str).to_numpy()
        for key in ATTRIBUTES
    }
    return {
        "cell_type": float(correct["cell_type"].mean()),
        "species": float(correct["species"].mean()),
        "both": float((correct["cell_type"] & correct["species"]).mean()),
    }


def generate_pairs(
    model: CFGen,
    pairs: list[tuple[str, str]],
    n_per_pair: int,
    guidance: dict[str, float],
    seed: int,
) -> ad.AnnData:
    """``n_per_pair`` generated cells for every (cell_type, species) pair."""
    blocks = [
        model.generate(
            labels={cell_type: n_per_pair},
            covariates={"species": species},
            guidance=guidance,
            seed=seed + i,
            progress_bar=False,
        )
        for i, (cell_type, species) in enumerate(pairs)
    ]
    return ad.concat(blocks, index_unique="-")


def split(adata: ad.AnnData, seed: int) -> tuple[ad.AnnData, ad.AnnData]:
    """Stratified 75/25 split on the (cell_type, species) pair."""
    pair = adata.obs["cell_type"].astype(str) + "|" + adata.obs["species"].astype(str)
    strat = adata.copy()
    strat.obs["pair"] = pair.to_numpy()
    train, test = datasets.train_test_split(strat, labels_key="pair", test_size=0.25, seed=seed)
    return train, test


def multi_attribute(adata: ad.AnnData, seed: int, args: argparse.Namespace) -> pd.DataFrame:
    """Per-attribute accuracy of generated cells under each guidance setting."""
    train, test = split(adata, seed)
    genes = select_hvgs(train.X, train.var_names, args.n_top_genes)
    train, test = train[:, genes].copy(), test[:, genes].copy()
    space = CommonSpace(n_hvg=train.n_vars, seed=seed).fit(train)
    judges = fit_judges(space, train)
    start = time.perf_counter()
    model = train_cfgen(train, seed, args)
    train_s = time.perf_counter() - start
    pairs = sorted(set(zip(train.obs["cell_type"].astype(str), train.obs["species"].astype(str))))
    w = args.weight
    settings = {
        "both": {"cell_type": w, "species": w},
        "cell_type only": {"cell_type": w, "species": 0.0},
        "species only": {"cell_type": 0.0, "species": w},
    }
    rows = [{"setting": "real test", **accuracy(judges, space, test)}]
    for name, guidance in settings.items():
        cells = generate_pairs(model, pairs, args.n_per_pair, guidance, seed)
        rows.append({"setting": name, **accuracy(judges, space, cells)})
    table = pd.DataFrame(rows)
    table["seed"] = seed
    table["train_s"] = train_s
    return table


def unseen_combination(adata: ad.AnnData, seed: int, args: argparse.Namespace) -> pd.DataFrame:
    """How often generated (macrophage, mouse) cells are called macrophage and mouse."""
    held_out = (adata.obs["cell_type"].astype(str) == HELD_OUT_PAIR[0]) & (
        adata.obs["species"].astype(str) == HELD_OUT_PAIR[1]
    )
    train = adata[~held_out.to_numpy()].copy()
    genes = select_hvgs(train.X, train.var_names, args.n_top_genes)
    train, full = train[:, genes].copy(), adata[:, genes].copy()
    space = CommonSpace(n_hvg=train.n_vars, seed=seed).fit(full)
    judges = fit_judges(space, full)
    model = train_cfgen(train, seed, args)
    rows = []
    for w in args.unseen_weights:
        cells = generate_pairs(
            model, [HELD_OUT_PAIR], args.n_unseen, {"cell_type": w, "species": w}, seed
        )
        rows.append({"weight": w, **accuracy(judges, space, cells)})
    real = full[held_out.to_numpy()]
    rows.append({"weight": "real (macrophage, mouse)", **accuracy(judges, space, real)})
    table = pd.DataFrame(rows)
    table["seed"] = seed
    return table


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--weight", type=float, default=2.0)
    parser.add_argument("--unseen-weights", type=float, nargs="+", default=[1.0, 2.0, 3.0])
    parser.add_argument("--n-per-pair", type=int, default=50)
    parser.add_argument("--n-unseen", type=int, default=200)
    parser.add_argument("--n-top-genes", type=int, default=2000)
    parser.add_argument("--epochs-autoencoder", type=int, default=None)
    parser.add_argument("--epochs-flow", type=int, default=None)
    parser.add_argument(
        "--parts", nargs="+", default=["multi", "unseen"], choices=["multi", "unseen"]
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    for name in ("scvi", "lightning", "lightning.pytorch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning)

    adata = datasets.pancreas()
    start = time.perf_counter()
    if "multi" in args.parts:
        report_multi_attribute(adata, args)
    if "unseen" in args.parts:
        report_unseen_combination(adata, args)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


def report_multi_attribute(adata: ad.AnnData, args: argparse.Namespace) -> None:
    """Print the multi-attribute accuracy table (mean ± sd over seeds)."""
    multi = pd.concat([multi_attribute(adata, seed, args) for seed in args.seeds])
    summary = multi.groupby("setting", sort=False)[["cell_type", "species", "both"]].agg(
        ["mean", "std"]
    )
    summary.columns = [f"{a} {b}" for a, b in summary.columns]
    print(f"# CFGen on pancreas, cell_type x species, weight {args.weight}, seeds {args.seeds}\n")
    print("## Fraction of generated cells a real-data k-NN classifies correctly\n")
    print(markdown_table(summary.round(3), index=True))
    print(f"\nmean CFGen training time {multi['train_s'].mean():.0f} s\n")


def report_unseen_combination(adata: ad.AnnData, args: argparse.Namespace) -> None:
    """Print how often generated (macrophage, mouse) cells are called so."""
    unseen = pd.concat([unseen_combination(adata, seed, args) for seed in args.seeds])
    unseen["weight"] = unseen["weight"].astype(str)
    summary = unseen.groupby("weight", sort=False)[["cell_type", "species", "both"]].agg(
        ["mean", "std"]
    )
    summary.columns = [f"{a} {b}" for a, b in summary.columns]
    print("## Unseen combination (macrophage, mouse): fraction called each attribute\n")
    print(markdown_table(summary.round(3), index=True))


if __name__ == "__main__":
    main()
