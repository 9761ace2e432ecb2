"""Multimodal CFGen on real data: CITE-seq (RNA + protein) and multiome (RNA + ATAC).

Data sets: ``citeseq`` (ECCITE-seq PBMC, 500 cells, 49 proteins), ``citeseq5k`` (10x
pbmc_5k_protein_v3, 200 cells, 29 TotalSeq-B proteins) and ``multiome`` (10x Multiome PBMC,
1,000 cells, 45 genes, 174 peaks).

For each data set and seed: split cells into train/test, train one CFGen on all modalities of
the training cells, generate as many cells as the test set, and print

- per-modality and joint metrics against the held-out cells next to the real-vs-real floor
  (:func:`scvi_gen.metrics.evaluate_multimodal`);
- output checks (integer protein counts, binary ATAC);
- RNA-protein marker correlations (CD3E/CD3, CD14/CD14 ...) of generated vs real cells;
- cross-modal prediction from RNA (``predict_modality``): per-feature Pearson on held-out cells
  against predicting each feature's training mean (and, for proteins, against the mean
  protein composition scaled by the predicted protein library).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/multimodal.py                # all data sets, seed 0
    OMP_NUM_THREADS=1 python benchmarks/multimodal.py --datasets citeseq --seeds 0 1 2
    OMP_NUM_THREADS=1 python benchmarks/multimodal.py --datasets citeseq5k --fixed-epochs 400 500
    OMP_NUM_THREADS=1 python benchmarks/multimodal.py --datasets citeseq --cluster-labels 8 --guidance 2

RNA HVGs (500 by default, plus the marker genes of the protein panel) are chosen on the training
cells here, not in the model. The CITE-seq sets have 150 and 375 training cells: with 2,000
genes (``--n-hvg 2000``) the autoencoder early-stops before it separates small populations, and
generated RNA-protein marker correlations are weaker (citeseq CD8A/CD8 0.52-0.54 against 0.58-0.67
with 500 genes, real 0.86; 3 seeds each).

The marker table ends with :func:`~scvi_gen.metrics.joint_sign_stability` of all real cells:
how often a bootstrap resample of the real cells keeps the real sign of every pair at once,
about the chance that a generator sampling cells exactly as the real ones were sampled passes
an every-pair sign check. It is 16-20% on citeseq (24 pairs; PTPRC/CD45 has a real correlation
of 0.000, and CD34, PDCD1/PD-1 and CD274/PD-L1 are detected in 2-7 of 500 cells) and 80-82% on
citeseq5k (seeds 0-2: the RNA gene set, and so CP10k, follows the training split).

The flow keeps an exponential moving average of its weights (``CFGen(ema_decay=0.999)``, the
default), used for validation and generation. Against ``ema_decay=0`` (3 seeds each):
magnitude-consistent marker pairs 10-14 against 9-13 of 24 (citeseq) and 5-7 against 3-6 of
20 (citeseq5k); multiome seed 0 RNA C2ST 0.545 against 0.594 (floor 0.547).

Longer training trades distribution fit for marker fidelity. ``--fixed-epochs 1000 3000``
(3 seeds): magnitude-consistent pairs rise to 14-16 of 24 (citeseq) and 10-11 of 20
(citeseq5k), but citeseq RNA C2ST rises to 0.62 (floor 0.53) and RNA -> protein Pearson falls
from 0.49-0.53 to 0.43-0.47. The default keeps early stopping.

The data sets have no cell-type labels. ``--cluster-labels K --guidance 2`` conditions the model
on K k-means clusters of the training cells (3 seeds; K = 8 for citeseq, 6 for citeseq5k):
magnitude-consistent pairs 13 of 24 in every seed (default 10-14) and 9-10 of 20 (default 5-7);
C2ST stays at the floor (citeseq RNA 0.521, joint 0.559 against 0.526 / 0.579).
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings
from typing import Any

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import torch
from sklearn.cluster import KMeans

import scvi_gen
from scvi_gen.datasets import train_test_indices
from scvi_gen.metrics import (
    ModalitySpace,
    compare_marker_correlations,
    evaluate_multimodal,
    joint_sign_stability,
    match_marker_pairs,
    multimodal_table,
    prediction_scores,
    select_hvgs,
)
from scvi_gen.model.cfgen import CFGen

logger = logging.getLogger(__name__)

N_HVG = 500
#: The standard error of a correlation over n cells is about 1/sqrt(n): 0.022 with 2,000
#: generated cells, as large as the weakest real marker correlations (|r| ~ 0.02-0.03), so the
#: generated side alone flipped their signs; 0.010 with 10,000.
N_MARKER_CELLS = 10_000
TEST_SIZE = 0.25
INIT_KWARGS: dict[str, Any] = {
    "n_latent": 32,
    "encoder_hidden": (256, 128),
    "decoder_hidden": (128, 256),
    "flow_hidden": 128,
    "flow_blocks": 2,
    "flow_context": 64,
}
TRAIN_KWARGS: dict[str, Any] = {
    "max_epochs_autoencoder": 300,
    "max_epochs_flow": 500,
    "batch_size": 128,
    "early_stopping_patience_autoencoder": 50,
    "early_stopping_patience_flow": 40,
    "enable_progress_bar": False,
}
DATASETS = {
    "citeseq": {
        "loader": scvi_gen.datasets.citeseq_pbmc,
        "modalities": {"rna": "rna", "prot": "protein"},
    },
    "citeseq5k": {
        "loader": scvi_gen.datasets.citeseq_pbmc5k,
        "modalities": {"rna": "rna", "prot": "protein"},
    },
    "multiome": {
        "loader": scvi_gen.datasets.multiome_pbmc,
        "modalities": {"rna": "rna", "atac": "atac"},
    },
}
_SETUP_ARG = {"rna": "rna_layer", "protein": "protein_layer", "atac": "atac_layer"}


def _subset(mdata: md.MuData, idx: np.ndarray, genes: pd.Index | None) -> md.MuData:
    """Copy of some cells (and RNA genes) of the modelled modalities."""
    parts = {}
    for name, mod in mdata.mod.items():
        part = mod[idx]
        if name == "rna" and genes is not None:
            part = part[:, genes]
        parts[name] = part.copy()
    with md.set_options(pull_on_update=False):
        return md.MuData(parts)


def prepare(name: str, seed: int, n_hvg: int = N_HVG) -> tuple[md.MuData, md.MuData]:
    """Train/test MuData of a data set, RNA reduced to training HVGs (+ protein markers)."""
    spec = DATASETS[name]
    full = spec["loader"]()
    with md.set_options(pull_on_update=False):
        full = md.MuData({k: full.mod[k] for k in spec["modalities"]})
    train_idx, test_idx = train_test_indices(full, None, test_size=TEST_SIZE, seed=seed)
    rna = full.mod["rna"]
    genes = select_hvgs(rna.X[train_idx], pd.Index(rna.var_names), n_hvg)
    if "prot" in full.mod:
        markers = [g for g, _ in match_marker_pairs(rna.var_names, full.mod["prot"].var_names)]
        genes = pd.Index(rna.var_names[rna.var_names.isin(genes.union(markers))])
    return _subset(full, train_idx, genes), _subset(full, test_idx, genes)


def cluster_labels(
    train: md.MuData, modalities: dict[str, str], n_clusters: int, seed: int
) -> np.ndarray:
    """k-means clusters of the training cells in the joint evaluation space.

    Each modality is embedded as the metrics embed it (:class:`~scvi_gen.metrics.ModalitySpace`:
    PCs of log1p CP10k HVGs or of CLR proteins, LSI of peaks) and scaled to unit mean squared
    norm, so every modality weighs the same. The data sets have no cell-type labels; clusters
    stand in for them as a user would use Leiden clusters.
    """
    blocks = []
    for name, kind in modalities.items():
        space = ModalitySpace(kind, n_components=20, seed=seed).fit(train.mod[name])
        pcs = space.transform(train.mod[name]).pcs
        pcs = pcs - pcs.mean(axis=0)
        blocks.append(pcs / np.sqrt((pcs**2).sum(axis=1).mean()))
    kmeans = KMeans(n_clusters, n_init=10, random_state=seed)
    return kmeans.fit_predict(np.hstack(blocks)).astype(str)


def train_model(
    train: md.MuData,
    modalities: dict[str, str],
    seed: int,
    train_kwargs: dict[str, Any] | None = None,
    n_clusters: int | None = None,
    guidance: float = 1.0,
) -> tuple[CFGen, float]:
    """Set up, build and train a multimodal CFGen; return it and the training time.

    ``train_kwargs`` replaces :data:`TRAIN_KWARGS` (see :func:`fixed_epoch_kwargs`). With
    ``n_clusters`` the model is conditioned on :func:`cluster_labels` of the training cells
    (stored in ``train.obs["cluster"]``); generation then draws clusters with their training
    frequencies, guided with weight ``guidance``.
    """
    scvi_gen_seed(seed)
    labels_key = None
    if n_clusters:
        train.obs["cluster"] = cluster_labels(train, modalities, n_clusters, seed)
        labels_key = "cluster"
    CFGen.setup_mudata(
        train,
        labels_key=labels_key,
        modalities={_SETUP_ARG[k]: n for n, k in modalities.items()},
    )
    model = CFGen(train, **INIT_KWARGS, default_guidance=guidance)
    start = time.perf_counter()
    model.train(**(TRAIN_KWARGS if train_kwargs is None else train_kwargs))
    return model, time.perf_counter() - start


def fixed_epoch_kwargs(autoencoder: int, flow: int) -> dict[str, Any]:
    """:data:`TRAIN_KWARGS` for exactly these epochs per stage (no early stopping)."""
    return {
        **TRAIN_KWARGS,
        "early_stopping": False,
        "restore_best": False,
        "max_epochs_autoencoder": autoencoder,
        "max_epochs_flow": flow,
    }


def scvi_gen_seed(seed: int) -> None:
    """Seed torch/numpy (scvi-tools' global seed)."""
    import scvi

    scvi.settings.seed = seed


def output_checks(syn: md.MuData) -> dict[str, bool]:
    """Generated proteins/RNA are integer counts; generated ATAC is binary."""
    checks = {}
    for name, mod in syn.mod.items():
        data = mod.X.data
        if name == "atac":
            checks[f"{name}_binary"] = bool(np.all(np.isin(data, [0.0, 1.0])))
        else:
            checks[f"{name}_integer"] = bool(np.all(data == np.round(data)) and np.all(data >= 0))
    return checks


def marker_table(model: CFGen, train: md.MuData, test: md.MuData, seed: int) -> pd.DataFrame:
    """RNA-protein marker correlations: generated cells vs all real cells, and the floor.

    The floor is real against real: the sign of each pair in the training cells against the
    test cells. A pair whose real sign is not stable under resampling the real cells
    (``real_sign_stable`` false) has no sign a generator could match, other than by chance.
    """
    syn = model.generate(N_MARKER_CELLS, seed=seed + 1, progress_bar=False)
    with md.set_options(pull_on_update=False):
        real = md.MuData({k: ad.concat([train.mod[k], test.mod[k]]) for k in ("rna", "prot")})
    table = compare_marker_correlations(
        real.mod["rna"], real.mod["prot"], syn.mod["rna"], syn.mod["prot"], seed=seed
    )
    # Only the floor's signs and magnitudes are used: one resample for its unused stability.
    floor = compare_marker_correlations(
        train.mod["rna"],
        train.mod["prot"],
        test.mod["rna"],
        test.mod["prot"],
        n_bootstrap=1,
        seed=seed,
    )
    table.insert(3, "real_train", floor["real"].to_numpy())
    table.insert(4, "real_test", floor["synthetic"].to_numpy())
    table["floor_same_sign"] = floor["same_sign"].to_numpy()
    table["floor_consistent"] = floor["consistent"].to_numpy()
    print(
        f"\nRNA-protein marker correlations (Pearson; log1p CP10k RNA, CLR protein): "
        f"{N_MARKER_CELLS} generated cells vs all {real.n_obs} real cells; floor: the "
        f"{train.n_obs} training vs the {test.n_obs} test cells"
    )
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(
        "same sign, generated vs real: "
        + _sign_summary(table, "same_sign")
        + "\nsame sign, floor (training vs test cells): "
        + _sign_summary(table, "floor_same_sign")
        + "\nmagnitude consistent (Fisher z, 5%): generated vs real "
        + f"{_count(table, 'consistent')}, floor {_count(table, 'floor_consistent')}"
    )
    pairs = list(zip(table["gene"], table["protein"]))
    ceiling = joint_sign_stability(real.mod["rna"], real.mod["prot"], pairs, seed=seed)
    print(
        f"every pair keeps its real sign in {ceiling:.1%} of bootstrap resamples of the real "
        "cells: about how often a generator sampling cells as the real ones were sampled "
        "passes the all-pairs sign check"
    )
    return table


def _count(table: pd.DataFrame, column: str) -> str:
    """``true/defined`` over the rows where ``column`` is defined."""
    valid = table[column].dropna().astype(bool)
    return f"{int(valid.sum())}/{len(valid)}"


def _sign_summary(table: pd.DataFrame, column: str) -> str:
    """Agreeing pairs: all with both signs defined, significant and stable real signs."""
    parts = [f"{_count(table, column)} pairs with both defined"]
    for flag, what in (
        ("real_significant", "significant (Fisher z, 5%)"),
        ("real_sign_stable", "stable (>= 95% of bootstrap resamples)"),
    ):
        subset = table[table[flag].astype(bool)]
        parts.append(f"{_count(subset, column)} with a {what} real sign")
    return "; ".join(parts)


def protein_prediction(model: CFGen, train: md.MuData, test: md.MuData) -> pd.DataFrame:
    """Pearson per protein of predict_modality(RNA -> protein) vs mean baselines."""
    pred = model.predict_modality(test.mod["rna"], from_="rna", to="prot", seed=0)
    train_prot = train.mod["prot"].X
    mean = np.asarray(train_prot.mean(axis=0)).ravel()
    composition = mean / mean.sum()
    library = np.asarray(pred.X.sum(axis=1)).ravel()
    scaled = library[:, None] * composition[None, :]
    rows = []
    for transform in ("log1p", "clr"):
        const = prediction_scores(test.mod["prot"], pred, baseline=mean, transform=transform)
        lib = prediction_scores(test.mod["prot"], pred, baseline=scaled, transform=transform)
        rows.append(
            {
                "transform": transform,
                "pearson_model": const["pearson"].mean(),
                "pearson_mean_baseline": np.nan_to_num(const["baseline_pearson"]).mean(),
                "pearson_library_scaled_mean": np.nan_to_num(lib["baseline_pearson"]).mean(),
                "mse_model": const["mse"].mean(),
                "mse_mean_baseline": const["baseline_mse"].mean(),
                "frac_proteins_beating_mean": float((const["pearson"] > 0).mean()),
                "frac_proteins_beating_scaled": float(
                    (const["pearson"] > np.nan_to_num(lib["baseline_pearson"])).mean()
                ),
            }
        )
    return pd.DataFrame(rows)


def atac_prediction(model: CFGen, train: md.MuData, test: md.MuData) -> pd.DataFrame:
    """Per-peak Pearson of predicted accessibility from RNA vs the training open fraction."""
    pred = model.predict_modality(test.mod["rna"], from_="rna", to="atac", seed=0)
    observed = test.mod["atac"].copy()
    observed.X = (observed.X > 0).astype(np.float32)
    mean = np.asarray((train.mod["atac"].X > 0).mean(axis=0)).ravel()
    scores = prediction_scores(observed, pred, baseline=mean, transform="none")
    return pd.DataFrame(
        [
            {
                "pearson_model": scores["pearson"].mean(),
                "pearson_mean_baseline": np.nan_to_num(scores["baseline_pearson"]).mean(),
                "mse_model": scores["mse"].mean(),
                "mse_mean_baseline": scores["baseline_mse"].mean(),
            }
        ]
    )


def run(
    name: str,
    seed: int,
    n_hvg: int = N_HVG,
    train_kwargs: dict[str, Any] | None = None,
    n_clusters: int | None = None,
    guidance: float = 1.0,
) -> dict[str, Any]:
    """Train, generate and evaluate one data set with one seed; print everything.

    The keywords are those of :func:`prepare` and :func:`train_model`.
    """
    modalities = DATASETS[name]["modalities"]
    train, test = prepare(name, seed, n_hvg)
    print(
        f"\n=== {name} seed {seed}: train {train.n_obs}, test {test.n_obs} cells; "
        + ", ".join(f"{k} {m.n_vars}" for k, m in train.mod.items())
    )
    model, seconds = train_model(train, modalities, seed, train_kwargs, n_clusters, guidance)
    if n_clusters:
        sizes = train.obs["cluster"].value_counts().sort_index().tolist()
        print(f"conditioned on {n_clusters} k-means clusters (sizes {sizes}), guidance {guidance}")
    epochs = {k: len(v) for k, v in model.history_.items() if k.endswith("train_loss")}
    print(f"trained in {seconds:.0f} s, epochs {epochs}")
    start = time.perf_counter()
    syn = model.generate(test.n_obs, seed=seed, progress_bar=False)
    print(
        f"generated {syn.n_obs} cells in {time.perf_counter() - start:.2f} s; "
        f"checks {output_checks(syn)}"
    )
    table = multimodal_table(evaluate_multimodal(train, test, syn, modalities, seed=seed))
    with pd.option_context("display.width", 160, "display.max_rows", 200):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    result: dict[str, Any] = {"table": table, "train_s": seconds}
    if "prot" in modalities:
        markers = marker_table(model, train, test, seed)
        prediction = protein_prediction(model, train, test)
        print("\npredict_modality RNA -> protein on held-out cells (mean over proteins)")
        print(prediction.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        result.update(markers=markers, prediction=prediction)
    if "atac" in modalities:
        prediction = atac_prediction(model, train, test)
        print("\npredict_modality RNA -> ATAC on held-out cells (mean over peaks)")
        print(prediction.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        result.update(prediction=prediction)
    return result


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument(
        "--n-hvg", type=int, default=N_HVG, help="RNA HVGs of the training cells (+ markers)"
    )
    parser.add_argument(
        "--fixed-epochs",
        type=int,
        nargs=2,
        metavar=("AUTOENCODER", "FLOW"),
        help="train exactly this many epochs per stage: no early stopping, last weights kept",
    )
    parser.add_argument(
        "--cluster-labels",
        type=int,
        metavar="K",
        help="condition on K k-means clusters of the training cells (the data have no labels)",
    )
    parser.add_argument(
        "--guidance", type=float, default=1.0, help="guidance weight with --cluster-labels"
    )
    args = parser.parse_args()
    train_kwargs = fixed_epoch_kwargs(*args.fixed_epochs) if args.fixed_epochs else None
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=FutureWarning)
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    for name in args.datasets.split(","):
        for seed in args.seeds:
            run(name, seed, args.n_hvg, train_kwargs, args.cluster_labels, args.guidance)


if __name__ == "__main__":
    main()
