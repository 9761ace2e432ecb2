"""Perturbation response on kang_ifnb_832: predict a cell type's unseen IFN-beta response.

Usage::

    python benchmarks/perturbation.py --quick                   # smoke test, minutes
    python benchmarks/perturbation.py --seeds 0 1 2 --out /tmp/perturbation.csv

For each of the 6 cell types in turn: train on every cell except that type's STIM cells,
predict them from its CTRL cells (``model.predict_perturbation``), and score the prediction
against the real STIM cells of that type (``scvi_gen.metrics.perturbation_scores``):

- ``r2_all`` / ``r2_top_degs``: R^2 of per-gene mean log1p(CP10k), all genes / the top-100
  DEGs of real STIM vs CTRL of the held-out type;
- ``e_distance_relative``: E-distance to the real STIM cells in the protocol's PCA space
  (fitted on the training cells), divided by the CTRL-vs-STIM E-distance ("no change" = 1);
- ``deg_jaccard``: Jaccard of the top-100 ``rank_genes_groups`` DEGs, predicted vs real;
- ``knn_type``: fraction of predicted cells a k-NN cell-type classifier (k=15, trained on
  all real cells in the same PCA space) calls the held-out type.

Methods: CFGen and LatentDiffusion (counterfactual transfer through the flow),
SCVIGenerator (scGen latent arithmetic, labels = condition, shift averaged over the other
cell types), and two baselines: ``no_change`` (the CTRL cells themselves) and
``mean_shift`` (CTRL log1p(CP10k) + the mean STIM-CTRL shift of the other cell types).
Genes: ``--genes`` seurat_v3 HVGs selected on the training cells only. Model settings are
fixed in ``SETTINGS`` (modest sizes, early stopping on a validation split of the training
cells); nothing is tuned on the held-out STIM cells. Writes a per-type CSV (``--out``)
and an interpolation figure (``--figure``).
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from scvi_gen import CFGen, LatentDiffusion, SCVIGenerator, datasets
from scvi_gen.metrics import (
    CommonSpace,
    knn_label_accuracy,
    mean_log_expression,
    perturbation_scores,
    select_hvgs,
)
from scvi_gen.preprocessing import log1p_cp10k

CONDITION, CELL_TYPE, CTRL, STIM = "condition", "cell_type", "CTRL", "STIM"
METRICS = ["r2_all", "r2_top_degs", "e_distance_relative", "deg_jaccard", "knn_type"]
#: Model sizes and epochs (early stopping on 10% of the training cells decides the rest).
SETTINGS: dict[str, dict[str, Any]] = {
    "CFGen": {
        "init": {"n_latent": 32, "encoder_hidden": (256,), "decoder_hidden": (256,)},
        "train": {"max_epochs_autoencoder": 200, "max_epochs_flow": 400},
    },
    "LatentDiffusion": {
        "init": {"n_tokens": 4, "latent_dim": 8, "token_dim": 64, "prior_dim": 64},
        "train": {"max_epochs_autoencoder": 20, "max_epochs_flow": 150},
    },
    "SCVIGenerator": {
        "init": {"n_latent": 10, "n_hidden": 128},
        "train": {"max_epochs": 300, "early_stopping": True},
    },
}
QUICK = {
    "CFGen": {"max_epochs_autoencoder": 20, "max_epochs_flow": 30},
    "LatentDiffusion": {"max_epochs_autoencoder": 2, "max_epochs_flow": 5},
    "SCVIGenerator": {"max_epochs": 20, "early_stopping": True},
}


def _split(adata: ad.AnnData, cell_type: str) -> tuple[ad.AnnData, ad.AnnData, ad.AnnData]:
    is_type = (adata.obs[CELL_TYPE] == cell_type).to_numpy()
    is_stim = (adata.obs[CONDITION] == STIM).to_numpy()
    train = adata[~(is_type & is_stim)].copy()
    return train, adata[is_type & ~is_stim].copy(), adata[is_type & is_stim].copy()


def _train(name: str, train: ad.AnnData, seed: int, quick: bool) -> Any:
    import scvi

    scvi.settings.seed = seed
    data = train.copy()
    cls = {"CFGen": CFGen, "LatentDiffusion": LatentDiffusion, "SCVIGenerator": SCVIGenerator}
    if name == "SCVIGenerator":
        # scGen's setting: the condition is the label, cell identity lives in the latent.
        cls[name].setup_anndata(data, labels_key=CONDITION)
    else:
        cls[name].setup_anndata(data, labels_key=CELL_TYPE, categorical_covariate_keys=[CONDITION])
    model = cls[name](data, **SETTINGS[name]["init"])
    kwargs = dict(QUICK[name] if quick else SETTINGS[name]["train"])
    model.train(train_size=0.9, enable_progress_bar=False, **kwargs)
    return model


def _predict(name: str, model: Any, ctrl: ad.AnnData, seed: int) -> ad.AnnData:
    extra = {"group_key": CELL_TYPE} if name == "SCVIGenerator" else {}
    return model.predict_perturbation(ctrl, CONDITION, STIM, seed=seed, **extra)


def _mean_shift(train: ad.AnnData, ctrl: ad.AnnData) -> ad.AnnData:
    """CTRL log1p(CP10k) + the equal-weight mean STIM-CTRL shift of the other types."""
    shifts = []
    for cell_type in train.obs[CELL_TYPE].unique():
        cells = train[train.obs[CELL_TYPE] == cell_type]
        sides = [cells[cells.obs[CONDITION] == c] for c in (STIM, CTRL)]
        if min(s.n_obs for s in sides) > 0:
            shifts.append(mean_log_expression(sides[0]) - mean_log_expression(sides[1]))
    shift = pd.concat(shifts, axis=1).mean(axis=1).to_numpy()
    values = log1p_cp10k(ctrl.X).toarray() + shift[None, :]  # control cells of one type only
    out = ad.AnnData(sp.csr_matrix(np.clip(values, 0, None).astype(np.float32)), obs=ctrl.obs)
    out.var_names = ctrl.var_names
    return out


def _score(
    pred: ad.AnnData,
    real: ad.AnnData,
    ctrl: ad.AnnData,
    space: CommonSpace,
    knn: tuple[np.ndarray, np.ndarray],
    cell_type: str,
    kind: str = "counts",
) -> dict[str, float]:
    scores = perturbation_scores(pred, real, ctrl, space=space, predicted_kind=kind)
    pcs = space.transform(pred, kind=kind).pcs
    scores["knn_type"] = knn_label_accuracy(knn[0], knn[1], pcs, [cell_type] * len(pcs))
    return scores


def run(args: argparse.Namespace) -> pd.DataFrame:
    full = datasets.kang_ifnb()
    full.obs[CELL_TYPE] = full.obs[CELL_TYPE].astype(str).astype("category")
    full.obs[CONDITION] = full.obs[CONDITION].astype(str).astype("category")
    cell_types = args.cell_types or sorted(full.obs[CELL_TYPE].unique())
    rows, figure_done = [], False
    for cell_type in cell_types:
        train_all_genes, _, _ = _split(full, cell_type)
        genes = select_hvgs(train_all_genes.X, train_all_genes.var_names, args.genes)
        adata = full[:, genes].copy()
        train, ctrl, real = _split(adata, cell_type)
        space = CommonSpace(n_hvg=len(genes), n_pcs=30, seed=0).fit(train)
        knn = (space.transform(adata, kind="counts").pcs, adata.obs[CELL_TYPE].astype(str))
        base = {"cell_type": cell_type, "n_ctrl": ctrl.n_obs, "n_stim": real.n_obs}
        for method, pred, kind in (
            ("no_change", ctrl, "counts"),
            ("mean_shift", _mean_shift(train, ctrl), "lognorm"),
        ):
            scores = _score(pred, real, ctrl, space, knn, cell_type, kind)
            rows.append({**base, "method": method, "seed": 0, **scores, "seconds": 0.0})
        for name in args.models:
            seeds = args.seeds if name in args.all_seeds_for else args.seeds[:1]
            for seed in seeds:
                start = time.perf_counter()
                model = _train(name, train, seed, args.quick)
                pred = _predict(name, model, ctrl, seed)
                seconds = time.perf_counter() - start
                scores = _score(pred, real, ctrl, space, knn, cell_type)
                rows.append({**base, "method": name, "seed": seed, **scores, "seconds": seconds})
                print(
                    f"{cell_type:>14} {name:>16} seed {seed}: "
                    + " ".join(f"{m}={scores[m]:.3f}" for m in METRICS)
                    + f" ({seconds:.0f} s)",
                    flush=True,
                )
                if not figure_done and args.figure and name == "CFGen":
                    _interpolation_figure(model, train, args.figure, seed)
                    figure_done = True
    return pd.DataFrame(rows)


def _interpolation_figure(model: Any, train: ad.AnnData, path: str, seed: int) -> None:
    """CTRL -> STIM latent path of the monocytes, on the real embedding, with IFN genes."""
    from scvi_gen import pl
    from scvi_gen.base import embed_interpolation

    mono = train[train.obs[CELL_TYPE].astype(str).str.contains("Mono")]
    group = mono.obs[CELL_TYPE].value_counts().index[0] if mono.n_obs else None
    cells = train if group is None else train[train.obs[CELL_TYPE] == group].copy()
    path_cells = model.interpolate_groups(
        cells, CONDITION, CTRL, STIM, n_steps=12, n_samples=20, seed=seed
    )
    genes = [g for g in ("ISG15", "IFI6", "IFIT1", "MX1", "LY6E") if g in train.var_names]
    path_emb, real_emb = embed_interpolation(path_cells, train, basis="umap", seed=seed)
    fig = pl.interpolation(
        path_emb,
        real_emb,
        genes=genes or list(train.var_names[:3]),
        color=CONDITION,
        show=False,
        return_fig=True,
    )
    fig.savefig(path, dpi=120, bbox_inches="tight")
    print(f"interpolation figure: {path}", flush=True)


def _report(table: pd.DataFrame) -> None:
    from scvi_gen.benchmark import markdown_table

    per_run = table.groupby(["cell_type", "method"])[METRICS].mean()
    print("\n## Per held-out cell type (mean over seeds)\n")
    print(markdown_table(per_run.reset_index(), digits=3))
    by_method = table.groupby(["method", "cell_type"])[METRICS].mean().groupby("method")
    means = by_method.mean()
    spread = table.groupby(["method", "seed"])[METRICS].mean().groupby("method").std()
    text = means.map("{:.3f}".format) + spread.reindex(means.index).map(
        lambda v: "" if pd.isna(v) else f" ± {v:.3f}"
    )
    print("\n## Mean over the held-out cell types (± sd over seeds)\n")
    print(markdown_table(text.reset_index(), digits=3))
    methods = [m for m in table["method"].unique() if m not in ("no_change", "mean_shift")]
    ed = per_run["e_distance_relative"].unstack("method")
    for m in methods:
        for ref in ("mean_shift", "SCVIGenerator"):
            if ref in ed and ref != m:
                wins = int((ed[m] < ed[ref]).sum())
                print(f"{m} beats {ref} on E-distance for {wins} of {len(ed)} cell types")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--models", nargs="+", default=["CFGen", "LatentDiffusion", "SCVIGenerator"]
    )
    parser.add_argument(
        "--all-seeds-for",
        nargs="+",
        default=["CFGen", "SCVIGenerator"],
        help="models run on every seed (the others on the first seed only)",
    )
    parser.add_argument("--cell-types", nargs="+", default=None)
    parser.add_argument("--genes", type=int, default=2000, help="HVGs of the training cells")
    parser.add_argument("--quick", action="store_true", help="few epochs, first seed only")
    parser.add_argument("--out", default=None, help="CSV of every (type, method, seed)")
    parser.add_argument("--figure", default="perturbation_interpolation.png")
    args = parser.parse_args()
    if args.quick:
        args.seeds = args.seeds[:1]
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)
    for name in ("scvi", "lightning", "lightning.pytorch", "scvi_gen"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    table = run(args)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out, index=False)
    _report(table)


if __name__ == "__main__":
    main()
