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
# # Generate cells in a scanpy workflow
#
# This tutorial trains a generator on the 10x PBMC3K data set, generates synthetic blood cells
# of every cell type, and then looks at real and synthetic cells side by side with ordinary
# scanpy: a joint UMAP, marker genes per cell type (`rank_genes_groups`), a dot plot of known
# markers and Leiden clustering. It ends with `scvi_gen.metrics.evaluate`, scoring the
# synthetic cells against real held-out cells **of the same cell-type mix**, next to the
# real-vs-real floor.
#
# **Settings.** The tutorial runs with the real settings by default (about 10-20 minutes on a
# laptop CPU). Set the environment variable `SCVI_GEN_TUTORIAL_QUICK=1` to run it in about a
# minute with a few hundred cells and a few epochs (the test suite does this); the numbers are
# then meaningless, only the steps are the same. Data are read from `$SCVI_GEN_DATA_DIR` (or
# the user cache directory, see `scvi_gen.datasets`).

# %%
# ruff: noqa: B018 -- a cell ends with the value it displays; helpers are local
from __future__ import annotations

import os
from pathlib import Path

import anndata as ad
import matplotlib.pyplot as plt
import scanpy as sc

import scvi_gen
from scvi_gen import datasets, metrics, preprocessing

QUICK = os.environ.get("SCVI_GEN_TUTORIAL_QUICK", "0") == "1"
N_HVG = 500 if QUICK else 2000
EPOCHS = {"max_epochs_autoencoder": 3, "max_epochs_flow": 3} if QUICK else {}
FIGURES = Path("figures")
FIGURES.mkdir(exist_ok=True)
sc.settings.verbosity = 1

# %% [markdown]
# ## Load the data and hold out test cells
#
# `pbmc3k()` returns raw integer counts with the Seurat tutorial's cell-type labels in
# `obs["cell_type"]` (62 cells that fail QC have no label; we drop them). We split the cells
# 75/25 **per cell type** before doing anything else: the test cells are only used at the end,
# to judge the synthetic cells, never to choose genes or settings.

# %%
adata = datasets.pbmc3k()
adata = adata[adata.obs["cell_type"].notna()].copy()
if QUICK:
    sc.pp.subsample(adata, n_obs=1000, random_state=0)
adata.obs["cell_type"] = adata.obs["cell_type"].astype("category")
train, test = datasets.train_test_split(adata, labels_key="cell_type", test_size=0.25, seed=0)
print(f"{train.n_obs} training cells, {test.n_obs} test cells, {adata.n_vars} genes")
train.obs["cell_type"].value_counts()

# %% [markdown]
# ## Choose the genes
#
# Generators model a few thousand informative genes far better than the whole transcriptome:
# on PBMC3K, CFGen trained on all 13,714 genes made B, T and NK cells that mix in a Leiden
# clustering, while the same recipe on 2,000 highly variable genes kept them apart. We select
# 2,000 seurat_v3 highly variable genes **of the training counts** (scanpy's flavour, computed
# in streaming passes) and keep the same genes in the test cells.

# %%
genes = preprocessing.select_hvgs(train.X, train.var_names, N_HVG)
train, test = train[:, genes].copy(), test[:, genes].copy()
train

# %% [markdown]
# ## Train CFGen
#
# CFGen is a negative-binomial count autoencoder with a flow-matching model in its latent
# space, conditioned on the cell type. `setup_anndata` registers the counts (`.X` here) and the
# label column, exactly as for any scvi-tools model. Training runs two stages (autoencoder,
# then flow), each with early stopping on a validation split of the training cells.

# %%
scvi_gen.CFGen.setup_anndata(train, labels_key="cell_type")
model = scvi_gen.CFGen(train)
model.train(**EPOCHS, enable_progress_bar=not QUICK)

# %% [markdown]
# ## Generate cells
#
# We generate as many cells of every type as the test set has (`matched_generation_plan`), so
# that real and synthetic cells can be compared like for like. The result is an AnnData of
# integer counts with the training genes, the cell type in `obs` and the provenance in
# `uns["scvi_gen"]`; the same seed gives the same cells.

# %%
plan = datasets.matched_generation_plan(test.obs["cell_type"])
syn = model.generate(labels=plan, seed=0)
syn

# %% [markdown]
# ## Real and synthetic cells in one scanpy analysis
#
# We concatenate the held-out real cells and the synthetic cells and run the standard scanpy
# recipe on both together: normalise to 10,000 counts per cell, log-transform, PCA, a
# neighbour graph and UMAP. Good synthetic cells sit on top of the real cells of their type.

# %%
both = ad.concat({"real": test, "synthetic": syn}, label="source", index_unique="-")
both.obs["cell_type"] = both.obs["cell_type"].astype("category")
both.layers["counts"] = both.X.copy()
sc.pp.normalize_total(both, target_sum=1e4)
sc.pp.log1p(both)
sc.pp.pca(both, n_comps=30)
sc.pp.neighbors(both, n_neighbors=15)
sc.tl.umap(both, random_state=0)
sc.pl.umap(both, color=["source", "cell_type"], wspace=0.4, show=False)
plt.savefig(FIGURES / "01_umap_real_vs_synthetic.png", dpi=100, bbox_inches="tight")
plt.show()

# %% [markdown]
# The same UMAP split by source makes it easier to see whether every population is present in
# the synthetic cells with the right shape.

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
for ax, source in zip(axes, ["real", "synthetic"]):
    sc.pl.umap(
        both[both.obs["source"] == source],
        color="cell_type",
        ax=ax,
        title=source,
        show=False,
        legend_loc="on data" if source == "real" else "none",
    )
fig.savefig(FIGURES / "01_umap_by_source.png", dpi=100, bbox_inches="tight")
plt.show()

# %% [markdown]
# ## Marker genes: do the synthetic cells carry the right markers?
#
# A dot plot of textbook PBMC markers, one row per cell type and source: dot size is the
# fraction of cells expressing the gene, colour the mean expression. The synthetic rows should
# repeat the real rows.

# %%
markers = {
    "T": ["CD3E", "IL7R", "CD8A"],
    "B": ["MS4A1", "CD79A"],
    "NK": ["GNLY", "NKG7"],
    "Mono": ["CD14", "LYZ", "FCGR3A"],
    "DC": ["FCER1A", "CST3"],
    "Platelet": ["PPBP"],
}
markers = {k: [g for g in v if g in both.var_names] for k, v in markers.items()}
markers = {k: v for k, v in markers.items() if v}
both.obs["type_source"] = (
    both.obs["cell_type"].astype(str) + " | " + both.obs["source"].astype(str)
).astype("category")
sc.pl.dotplot(both, markers, groupby="type_source", show=False)
plt.savefig(FIGURES / "01_dotplot_markers.png", dpi=100, bbox_inches="tight")
plt.show()

# %% [markdown]
# `rank_genes_groups` finds the marker genes of every cell type within each data set
# separately, as you would on either alone. We plot the top markers found in the real cells
# and in the synthetic cells.

# %%
real = both[both.obs["source"] == "real"].copy()
synthetic = both[both.obs["source"] == "synthetic"].copy()
for name, cells in (("real", real), ("synthetic", synthetic)):
    sizes = cells.obs["cell_type"].value_counts()
    groups = sizes.index[sizes >= 3].tolist()  # a test needs a few cells per group
    sc.tl.rank_genes_groups(cells, "cell_type", groups=groups, method="wilcoxon")
    sc.pl.rank_genes_groups_dotplot(cells, n_genes=3, show=False, title=name)
    plt.savefig(FIGURES / f"01_rank_genes_{name}.png", dpi=100, bbox_inches="tight")
    plt.show()

# %% [markdown]
# `metrics.marker_overlap` puts a number on this: the Jaccard overlap of each type's top-50
# markers in real and synthetic cells (1 = the same markers).

# %%
metrics.marker_overlap(test, syn, labels_key="cell_type", n_top=50)

# %% [markdown]
# ## Do the cell types stay apart? Leiden clustering
#
# Cluster the real cells and the synthetic cells separately with Leiden and compare the
# clusters with the cell-type labels (adjusted Rand index). The synthetic value should be
# close to the real one: much lower means cell types blur into each other.

# %%
ari = {
    "real test cells": metrics.cluster_label_ari(test, "cell_type", seed=0),
    "synthetic cells": metrics.cluster_label_ari(syn, "cell_type", seed=0),
}
ari

# %% [markdown]
# ## Evaluate like against like
#
# `metrics.evaluate` compares synthetic cells with real held-out cells in one fixed space
# (seurat_v3 HVGs of the training counts, log1p(CP10k), PCA fitted on the real training
# cells): distribution distances (Wasserstein, MMD, energy), a classifier two-sample test
# (C2ST: 0.5 = indistinguishable), precision/recall/density/coverage, per-gene statistics and
# k-NN label accuracy, globally and per cell type. Every number has a **floor**: a real sample
# of the training cells scored the same way against the test cells. A generator is good when
# its numbers are close to the floor, not when they are close to 0.
#
# The synthetic cells must have the same cell-type mix as the test cells they are compared
# with: that is why we generated `plan`. Comparing e.g. 500 B cells and 200 NK cells with all
# nine types of the test set would measure the difference of mixtures, not the generator.

# %%
table = metrics.evaluate(train, test, syn, labels_key="cell_type", seed=0)
summary = metrics.evaluate_table(table)
summary[summary["scope"] == "global"].round(4)

# %% [markdown]
# The same numbers per cell type (`scope` is the label): a type whose ratio to the floor is
# far above 1 (for metrics where lower is better) is one the generator has not learnt well.

# %%
c2st = summary[summary["metric"] == "c2st_auc"].set_index("scope")
ax = c2st[["synthetic", "floor"]].plot.bar(figsize=(7, 3.5), ylabel="C2ST AUC (0.5 = ideal)")
ax.axhline(0.5, color="grey", lw=0.8, ls="--")
plt.savefig(FIGURES / "01_c2st_per_label.png", dpi=100, bbox_inches="tight")
plt.show()

# %% [markdown]
# If you only need some cell types, generate them and compare them with the test cells of
# **those types only**:

# %%
few = {"B": int(plan.get("B", 20)), "NK": int(plan.get("NK", 20))}
syn_few = model.generate(labels=few, seed=1)
test_few = test[test.obs["cell_type"].isin(list(few))].copy()
test_few.obs["cell_type"] = test_few.obs["cell_type"].cat.remove_unused_categories()
table_few = metrics.evaluate(train, test_few, syn_few, labels_key="cell_type", seed=0)
metrics.evaluate_table(table_few).query("scope == 'global'").round(4)

# %% [markdown]
# ## Save the model and the cells
#
# `save` writes the weights as safetensors and the settings as JSON: loading a model never
# unpickles anything, so a model file from someone else cannot run code on your machine.

# %%
model.save("pbmc3k_cfgen", overwrite=True)
model = scvi_gen.CFGen.load("pbmc3k_cfgen", adata=train)
syn.write_h5ad("pbmc3k_synthetic.h5ad")
