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
# # Large data: train from disk, stream a million cells
#
# Atlases hold 10^5 to 10^7 cells: more than a laptop's memory. scvi-gen never needs the whole
# count matrix in memory. A model reads its training cells from a **backed** `.h5ad` (or a
# collection of files) and fits everything it needs from them in streaming passes; generated
# cells are **streamed** to an `.h5ad`/`.zarr` store chunk by chunk, so memory is one chunk
# plus the model however many cells you ask for. This tutorial:
#
# 1. writes a synthetic atlas to disk block by block (standing in for your own atlas),
# 2. trains CFGen from the backed file and checks the process's peak memory,
# 3. streams a large synthetic atlas to disk, shows that the same seed gives the same cells
#    whatever the chunk size, and that an unfinished store is refused,
# 4. opens the result with scanpy and compares it with the real cells,
# 5. shows the code for several GPUs and nodes.
#
# **Settings.** Real settings by default (200,000 training cells, a million generated cells;
# about 20 minutes on a laptop CPU). `SCVI_GEN_TUTORIAL_QUICK=1` runs it in under a minute
# with 5,000 and 20,000 cells and one epoch (the test suite does this).

# %%
from __future__ import annotations

import os
from pathlib import Path

import anndata as ad
import h5py
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import scanpy as sc

import scvi_gen
from scvi_gen import datasets

QUICK = os.environ.get("SCVI_GEN_TUTORIAL_QUICK", "0") == "1"
N_TRAIN = 5_000 if QUICK else 200_000
N_GENERATE = 20_000 if QUICK else 1_000_000
EPOCHS = {"max_epochs_autoencoder": 1, "max_epochs_flow": 1} if QUICK else {}
BLOCK = 50_000
FIGURES = Path("figures")
FIGURES.mkdir(exist_ok=True)


def peak_memory_gb() -> float:
    """Peak resident memory of this process (Linux; NaN elsewhere)."""
    status = Path("/proc/self/status")
    if not status.exists():
        return float("nan")
    for line in status.read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024**2
    return float("nan")


# %% [markdown]
# ## 1. An atlas on disk
#
# We resample real PBMC3K cells (their 2,000 highly variable genes) and thin their counts
# binomially, and write them **block by block**: `obs` and `var` first, then `X` as an on-disk
# sparse matrix that grows with anndata's own `sparse_dataset(...).append`. Only one block is
# ever in memory. With your own atlas you skip this step.

# %%
real = datasets.pbmc3k()
real = real[real.obs["cell_type"].notna()].copy()
genes = scvi_gen.preprocessing.select_hvgs(real.X, real.var_names, 2000)
real = real[:, genes].copy()

rng = np.random.default_rng(0)
rows = rng.integers(0, real.n_obs, N_TRAIN)
obs = pd.DataFrame(
    {"cell_type": pd.Categorical(real.obs["cell_type"].astype(str).to_numpy()[rows])},
    index=[f"cell{i}" for i in range(N_TRAIN)],
)
atlas_path = Path("atlas.h5ad")
ad.AnnData(obs=obs, var=pd.DataFrame(index=real.var_names)).write_h5ad(atlas_path)
with h5py.File(atlas_path, "a") as handle:
    for start in range(0, N_TRAIN, BLOCK):
        block = real.X[rows[start : start + BLOCK]].tocsr()
        keep = np.repeat(rng.uniform(0.5, 1.0, block.shape[0]), np.diff(block.indptr))
        block.data = rng.binomial(block.data.astype(np.int64), keep).astype(np.float32)
        block.eliminate_zeros()
        if start == 0:
            ad.io.write_elem(handle, "X", block)
        else:
            ad.io.sparse_dataset(handle["X"]).append(block)
f"{atlas_path}: {atlas_path.stat().st_size / 1e6:.0f} MB on disk"

# %% [markdown]
# ## 2. Train from the backed file
#
# `anndata.read_h5ad(path, backed="r")` keeps `X` on disk. `setup_anndata` and the model
# accept it as it is: CFGen fits its library-size model, condition pool and statistics in
# streaming passes, and its training loader reads minibatches of cells from the file.

# %%
atlas = ad.read_h5ad(atlas_path, backed="r")
scvi_gen.CFGen.setup_anndata(atlas, labels_key="cell_type")
model = scvi_gen.CFGen(atlas)
model.train(**EPOCHS, enable_progress_bar=not QUICK)
f"trained on {atlas.n_obs:,} cells from disk; peak memory so far {peak_memory_gb():.2f} GB"

# %% [markdown]
# The peak stays near 1 GB whether the file holds 10^5 or 10^6 cells
# (`benchmarks/scale_train.py` measures it). For files too large to keep as one, open several
# with `scvi_gen.base.open_collection(paths)` and train from a data module (README, "Large
# data").
#
# ## 3. Stream a large synthetic atlas to disk
#
# `generate(n, out=...)` writes each chunk as soon as it is made and returns the finished store
# opened backed. The store is marked complete only at the end.

# %%
out = Path("synthetic_atlas.h5ad")
synthetic = model.generate(N_GENERATE, seed=0, out=out)
print(f"{synthetic.n_obs:,} cells, {out.stat().st_size / 1e6:.0f} MB")
print(f"peak memory: {peak_memory_gb():.2f} GB")
synthetic.file.close()

# %% [markdown]
# **Same seed, same cells, whatever the chunk size.** Every block of 256 cells draws from its
# own random stream, derived from the seed and the block's position, so a call gives the same
# cells in chunks of 256 or of 4,096 (and on one device or several):

# %%
in_small_chunks = model.generate(3_000, seed=1, batch_size=256, progress_bar=False)
in_large_chunks = model.generate(3_000, seed=1, batch_size=4_096, progress_bar=False)
f"identical: {(in_small_chunks.X != in_large_chunks.X).nnz == 0}"

# %% [markdown]
# **A store that is not finished is refused.** If a run is killed, the store on disk has fewer
# rows than planned and no completion marker: reading it says how to continue
# (`resume=True` picks up after the last complete chunk and gives the same file as an
# uninterrupted run).


# %%
def set_complete(path: Path, value: bool) -> None:
    """Rewrite the store's completion marker (here only to imitate a killed run)."""
    with h5py.File(path, "a") as handle:
        del handle["uns/scvi_gen/complete"]
        ad.io.write_elem(handle["uns/scvi_gen"], "complete", value)


set_complete(out, False)  # pretend the run was killed before it finished
try:
    scvi_gen.base.read_generated(out)
except ValueError as err:
    print(err)

# %% [markdown]
# ## 4. Open the synthetic atlas with scanpy
#
# The store is an ordinary `.h5ad`. We compare library sizes and cell-type composition of a
# sample of generated cells with the real cells they imitate.

# %%
set_complete(out, True)  # it was finished: mark it again for the rest of the tutorial
backed = sc.read_h5ad(out, backed="r")
sample = backed[np.sort(rng.choice(backed.n_obs, 5_000, replace=False))].to_memory()
backed.file.close()
reference = ad.read_h5ad(atlas_path, backed="r")
reference = reference[np.sort(rng.choice(reference.n_obs, 5_000, replace=False))].to_memory()

fig, ax = plt.subplots(figsize=(5, 3.5))
for name, cells in (("real", reference), ("synthetic", sample)):
    ax.hist(np.log10(cells.X.sum(axis=1).A1 + 1), bins=40, alpha=0.5, label=name, density=True)
ax.set_xlabel("log10 total counts")
ax.set_ylabel("density")
ax.legend()
fig.savefig(FIGURES / "07_library_sizes.png", dpi=120, bbox_inches="tight")

composition = pd.DataFrame(
    {
        "real": reference.obs["cell_type"].value_counts(normalize=True),
        "synthetic": sample.obs["cell_type"].value_counts(normalize=True),
    }
)
ax = composition.plot.barh(figsize=(5, 4))
ax.set_xlabel("fraction of cells")
ax.figure.savefig(FIGURES / "07_cell_types.png", dpi=120, bbox_inches="tight")
composition.round(3)

# %% [markdown]
# ## 5. Several GPUs and nodes
#
# Training and generation run on several devices through Lightning. Lightning's default
# `ddp` strategy relaunches the script once per extra device, so this goes in a script, not a
# notebook (on a SLURM cluster: `srun python train_atlas.py` with `num_nodes=...`):
#
# ```python
# import anndata as ad
# import scvi_gen
#
# atlas = ad.read_h5ad("atlas.h5ad", backed="r")
# scvi_gen.CFGen.setup_anndata(atlas, labels_key="cell_type")
# model = scvi_gen.CFGen(atlas)
# model.train(accelerator="gpu", devices=4, strategy="ddp_find_unused_parameters_true")
# model.save("atlas_model/")  # rank 0 writes
# # each GPU generates its own run of chunks; rank 0 merges them into one store
# model.generate(10_000_000, seed=0, out="synthetic_atlas.h5ad", accelerator="gpu", devices=4)
# ```
#
# The generated cells are the same as on one device: the random stream of every block of
# cells depends on the seed and the block, not on which process made it.
