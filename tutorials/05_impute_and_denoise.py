# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Impute and denoise with DiscreteDiffusion
#
# `DiscreteDiffusion` turns each cell's expression into tokens (binned log1p(CP10k) values of
# its highly variable genes) and learns to fill in masked tokens given the others. The same
# network that generates cells can therefore **impute** entries you hide or distrust
# (`impute`, observed entries untouched) and **denoise** a cell by re-sampling its least
# plausible entries (`denoise`). This tutorial hides 10% of the non-zero entries of held-out
# PBMC3K cells, imputes them, and compares the result with the per-gene mean and a
# nearest-neighbour average (the protocol of `benchmarks/imputation.py`).
#
# **Settings.** Real settings by default (about 10 minutes on a laptop CPU).
# `SCVI_GEN_TUTORIAL_QUICK=1` runs it in about a minute with few cells and one epoch (the test
# suite does this); the numbers are then meaningless.

# %%
# ruff: noqa: D103 -- a cell ends with the value it displays; helpers are local
from __future__ import annotations

import os
from pathlib import Path

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import scanpy as sc
import scipy.sparse as sp
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors

import scvi_gen
from scvi_gen import datasets

QUICK = os.environ.get("SCVI_GEN_TUTORIAL_QUICK", "0") == "1"
N_HVG = 300 if QUICK else 2000
EPOCHS = 1 if QUICK else 10
HIDDEN = 0.1
FIGURES = Path("figures")
FIGURES.mkdir(exist_ok=True)

# %% [markdown]
# ## Data and model
#
# DiscreteDiffusion selects its genes itself (`n_top_genes` seurat_v3 HVGs of the training
# counts); it is trained on raw counts of the training split.

# %%
adata = datasets.pbmc3k()
adata = adata[adata.obs["cell_type"].notna()].copy()
if QUICK:
    sc.pp.subsample(adata, n_obs=600, random_state=0)
adata.obs["cell_type"] = adata.obs["cell_type"].astype("category")
train, test = datasets.train_test_split(adata, labels_key="cell_type", test_size=0.25, seed=0)

scvi_gen.DiscreteDiffusion.setup_anndata(train, labels_key="cell_type")
model = scvi_gen.DiscreteDiffusion(train, n_top_genes=N_HVG)
model.train(max_epochs=EPOCHS, enable_progress_bar=not QUICK)
genes = pd.Index(model.gene_names_)
columns = test.var_names.get_indexer(genes)
print(f"{len(genes)} modelled genes")

# %% [markdown]
# ## Hide entries
#
# In every held-out cell we hide 10% of its non-zero modelled entries: set them to zero in the
# counts the methods see, and remember where they were (`mask`). The truth is the hidden count
# on the log1p(CP10k) scale of the masked cell.


# %%
def log_cp10k(counts: np.ndarray) -> np.ndarray:
    library = np.maximum(counts.sum(axis=1, keepdims=True), 1.0)
    return np.log1p(counts * 1e4 / library)


rng = np.random.default_rng(0)
counts = test.X.toarray().astype(np.float64)
mask = np.zeros(counts.shape, dtype=bool)
for i in range(counts.shape[0]):
    nonzero = columns[counts[i, columns] > 0]
    n_hide = int(round(HIDDEN * len(nonzero)))
    if n_hide:
        mask[i, rng.choice(nonzero, n_hide, replace=False)] = True
masked = np.where(mask, 0.0, counts)
query = ad.AnnData(sp.csr_matrix(masked.astype(np.float32)), obs=test.obs.copy(), var=test.var)
library = masked.sum(axis=1, keepdims=True)
truth = np.log1p(counts * 1e4 / np.maximum(library, 1.0))[mask]
print(f"{int(mask.sum())} hidden entries in {test.n_obs} cells")

# %% [markdown]
# ## Impute
#
# `impute(mask=...)` re-samples only the masked entries given the rest of each cell and
# returns a new AnnData (the input is never modified) with the posterior mean in
# `layers["log1p_norm"]`. `exclude_zero=True` tells the model that the hidden entries are known
# to be non-zero, a fairer comparison with methods that average only non-zero values.

# %%
imputed = model.impute(query, mask=mask, seed=0)
imputed_nonzero = model.impute(query, mask=mask, exclude_zero=True, seed=0)


def dense(matrix) -> np.ndarray:
    return matrix.toarray() if sp.issparse(matrix) else np.asarray(matrix)


train_counts = train.X.toarray().astype(np.float64)
train_log = log_cp10k(train_counts)[:, columns]
masked_log = np.log1p(masked * 1e4 / np.maximum(library, 1.0))[:, columns]
pca = PCA(n_components=30, random_state=0).fit(train_log)
_, neighbours = (
    NearestNeighbors(n_neighbors=15)
    .fit(pca.transform(train_log))
    .kneighbors(pca.transform(masked_log))
)
knn = np.zeros(counts.shape)
knn[:, columns] = train_log[neighbours].mean(axis=1)
gene_mean = np.zeros(counts.shape)
gene_mean[:, columns] = train_log.mean(axis=0)

predictions = {
    "gene mean": gene_mean[mask],
    "15 nearest training cells": knn[mask],
    "DiscreteDiffusion": dense(imputed.layers["log1p_norm"])[mask],
    "DiscreteDiffusion, non-zero": dense(imputed_nonzero.layers["log1p_norm"])[mask],
}
scores = pd.DataFrame(
    {
        name: {
            "MAE": float(np.abs(p - truth).mean()),
            "pearson": float(np.corrcoef(p, truth)[0, 1]),
        }
        for name, p in predictions.items()
    }
).T
scores.round(3)

# %%
fig, axes = plt.subplots(1, 2, figsize=(9, 4), sharey=True)
for ax, name in zip(axes, ["15 nearest training cells", "DiscreteDiffusion, non-zero"]):
    ax.hexbin(truth, predictions[name], gridsize=40, bins="log", cmap="viridis")
    ax.plot([0, truth.max()], [0, truth.max()], color="white", lw=0.8, ls="--")
    ax.set_title(name)
    ax.set_xlabel("hidden value, log1p(CP10k)")
axes[0].set_ylabel("imputed value")
fig.savefig(FIGURES / "05_imputed_vs_truth.png", dpi=100, bbox_inches="tight")
plt.show()

# %% [markdown]
# ## Denoise
#
# `denoise(fraction=0.05)` scores every modelled entry of a cell by how plausible the model
# finds it given the rest of the cell and re-samples the 5% least plausible ones.
# `layers["resampled"]` marks what was changed. Marker genes should stay crisp after
# denoising: compare the dot plots of a few markers before and after.

# %%
denoised = model.denoise(test, fraction=0.05, seed=0)
changed = dense(denoised.layers["resampled"]).sum(axis=1)
print(f"re-sampled entries per cell: median {np.median(changed):.0f}")

before = test[:, genes].copy()
sc.pp.normalize_total(before, target_sum=1e4)
sc.pp.log1p(before)
after = ad.AnnData(
    sp.csr_matrix(dense(denoised.layers["log1p_norm"])[:, columns]),
    obs=test.obs.copy(),
    var=pd.DataFrame(index=genes),
)
marker_genes = [g for g in ["CD3E", "MS4A1", "GNLY", "NKG7", "CD14", "LYZ", "PPBP"] if g in genes]
fig, axes = plt.subplots(1, 2, figsize=(12, 4))
for ax, (title, cells) in zip(axes, [("measured", before), ("denoised", after)]):
    sc.pl.dotplot(cells, marker_genes, groupby="cell_type", ax=ax, show=False, title=title)
fig.savefig(FIGURES / "05_denoise_dotplot.png", dpi=100, bbox_inches="tight")
plt.show()
