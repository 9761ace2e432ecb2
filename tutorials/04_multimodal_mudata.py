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
# # CITE-seq and multiome with MuData
#
# CFGen trains one generator on several modalities measured in the same cells: RNA + surface
# proteins (CITE-seq) or RNA + chromatin accessibility (multiome). The generated MuData is
# consistent cell by cell, and the trained model predicts a missing modality from a measured
# one (`predict_modality`). This tutorial does both on two small PBMC data sets and checks
# the RNA-protein marker correlations (CD3E/CD3, CD14/CD14 ...) of the generated cells.
#
# **Settings.** Real settings by default (about 10 minutes on a laptop CPU).
# `SCVI_GEN_TUTORIAL_QUICK=1` runs it in about a minute with few epochs (the test suite does
# this); the numbers are then meaningless.

# %%
# ruff: noqa: B018 -- a cell ends with the value it displays; helpers are local
from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import mudata as md
import numpy as np
import pandas as pd

import scvi_gen
from scvi_gen import datasets, metrics, preprocessing

QUICK = os.environ.get("SCVI_GEN_TUTORIAL_QUICK", "0") == "1"
N_HVG = 200 if QUICK else 500
EPOCHS = (
    {"max_epochs_autoencoder": 3, "max_epochs_flow": 3}
    if QUICK
    else {"max_epochs_autoencoder": 300, "max_epochs_flow": 500}
)
FIGURES = Path("figures")
FIGURES.mkdir(exist_ok=True)
md.set_options(pull_on_update=False)

# %% [markdown]
# ## CITE-seq: RNA + protein
#
# The ECCITE-seq PBMC set (500 cells, 49 antibodies). We keep the RNA and protein modalities
# (not the hashtags), split the cells 75/25 and keep 500 highly variable genes of the training
# cells plus the genes of the antibody panel's markers, so that marker pairs can be compared.
# With only 375 training cells, fewer genes train better.

# %%
mdata = datasets.citeseq_pbmc()
mdata = md.MuData({"rna": mdata["rna"], "prot": mdata["prot"]})
train, test = datasets.train_test_split(mdata, labels_key=None, test_size=0.25, seed=0)
rna = train["rna"]
hvgs = preprocessing.select_hvgs(rna.X, rna.var_names, N_HVG)
markers = [gene for gene, _ in metrics.match_marker_pairs(rna.var_names, train["prot"].var_names)]
genes = rna.var_names[rna.var_names.isin(hvgs.union(markers))]
train = md.MuData({"rna": train["rna"][:, genes].copy(), "prot": train["prot"].copy()})
test = md.MuData({"rna": test["rna"][:, genes].copy(), "prot": test["prot"].copy()})
train

# %% [markdown]
# `setup_mudata` says which modality holds what. The model has one encoder per modality and a
# shared latent space; the flow generates in that space and every decoder turns the latent
# cell into its modality's counts.

# %%
scvi_gen.CFGen.setup_mudata(train, modalities={"rna_layer": "rna", "protein_layer": "prot"})
model = scvi_gen.CFGen(train)
model.train(**EPOCHS, enable_progress_bar=not QUICK)
syn = model.generate(test.n_obs, seed=0)
syn

# %% [markdown]
# ### Per-modality and joint evaluation
#
# `evaluate_multimodal` scores each modality in its own space (log1p CP10k PCA for RNA, CLR
# PCA for protein, LSI for ATAC) and both together, next to the real-vs-real floor.

# %%
table = metrics.evaluate_multimodal(train, test, syn)
metrics.multimodal_table(table).round(4)

# %% [markdown]
# ### Marker correlations
#
# In real cells CD3E RNA and CD3 protein go up together, CD14 RNA with CD14 protein and so on.
# `compare_marker_correlations` puts the correlation of every matched gene/protein pair in
# real and generated cells side by side, with how stable the real sign is when the real cells
# are resampled: a pair whose real sign flips under resampling has no sign to match.

# %%
pairs = metrics.compare_marker_correlations(test["rna"], test["prot"], syn["rna"], syn["prot"])
pairs.head(12)

# %%
fig, ax = plt.subplots(figsize=(4.5, 4.5))
stable = pairs["real_sign_stability"] >= 0.95
ax.scatter(pairs.loc[stable, "real"], pairs.loc[stable, "synthetic"], label="stable real sign")
ax.scatter(
    pairs.loc[~stable, "real"], pairs.loc[~stable, "synthetic"], alpha=0.5, label="unstable"
)
ax.plot([-1, 1], [-1, 1], color="grey", lw=0.8, ls="--")
ax.set_xlabel("RNA-protein correlation, real cells")
ax.set_ylabel("... generated cells")
ax.legend(fontsize=8)
fig.savefig(FIGURES / "04_marker_correlations.png", dpi=100, bbox_inches="tight")
plt.show()

# %% [markdown]
# ### Predict proteins from RNA
#
# For cells with RNA only, `predict_modality` encodes the RNA into the shared latent space and
# decodes the proteins (expected counts). We check the prediction on held-out cells, whose
# proteins were measured, with the Pearson correlation per protein on the CLR scale.

# %%
predicted = model.predict_modality(test["rna"], from_="rna", to="prot")
measured_clr = metrics.clr_transform(test["prot"].X)
predicted_clr = metrics.clr_transform(predicted.X)
per_protein = pd.Series(
    [
        np.corrcoef(measured_clr[:, j], predicted_clr[:, j])[0, 1]
        for j in range(test["prot"].n_vars)
    ],
    index=test["prot"].var_names,
    name="pearson",
).sort_values()
fig, ax = plt.subplots(figsize=(4, 8))
per_protein.plot.barh(ax=ax)
ax.set_xlabel("Pearson r, predicted vs measured (CLR)")
fig.savefig(FIGURES / "04_predicted_proteins.png", dpi=100, bbox_inches="tight")
plt.show()

# %% [markdown]
# ## Multiome: RNA + ATAC
#
# The 10x Multiome PBMC subset (1,000 cells, 45 genes, 174 peaks). Peaks are modelled as
# binary accessibility (Bernoulli, the default; `atac_likelihood="poisson"` models peak
# counts). Generated ATAC is binary.

# %%
multiome = datasets.multiome_pbmc()
m_train, m_test = datasets.train_test_split(multiome, labels_key=None, test_size=0.25, seed=0)
scvi_gen.CFGen.setup_mudata(m_train, modalities={"rna_layer": "rna", "atac_layer": "atac"})
m_model = scvi_gen.CFGen(m_train)
m_model.train(**EPOCHS, enable_progress_bar=not QUICK)
m_syn = m_model.generate(m_test.n_obs, seed=0)
print("generated ATAC values:", np.unique(m_syn["atac"].X.data))
metrics.multimodal_table(metrics.evaluate_multimodal(m_train, m_test, m_syn)).round(4)

# %% [markdown]
# Predict accessibility from RNA and compare the predicted probability of each peak with its
# measured accessibility in the held-out cells (fraction of cells with the peak open).

# %%
atac = m_model.predict_modality(m_test["rna"], from_="rna", to="atac")
observed = np.asarray((m_test["atac"].X > 0).mean(axis=0)).ravel()
expected = np.asarray(atac.X.mean(axis=0)).ravel()
fig, ax = plt.subplots(figsize=(4.5, 4.5))
ax.scatter(observed, expected, s=8)
ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
ax.set_xlabel("fraction of held-out cells with the peak open")
ax.set_ylabel("mean predicted probability")
fig.savefig(FIGURES / "04_predicted_peaks.png", dpi=100, bbox_inches="tight")
plt.show()
