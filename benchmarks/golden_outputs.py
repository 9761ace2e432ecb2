"""Behaviour check across refactors: train every generator briefly with fixed seeds, save its cells.

Usage::

    python benchmarks/golden_outputs.py before.npz scvi,cfgen,latent_diffusion,maf,moe,discrete_diffusion
    # ... change the code ...
    python benchmarks/golden_outputs.py after.npz scvi,cfgen,latent_diffusion,maf,moe,discrete_diffusion
    python -c "import numpy as np; a, b = np.load('before.npz'), np.load('after.npz'); print({k: np.array_equal(a[k], b[k]) for k in b})"

600 PBMC3K cells x 300 genes, 2 epochs (1 for DiscreteDiffusion), 30 generated cells per
model with seed 3: a refactor that keeps behaviour gives bitwise-identical cells.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

import numpy as np
import scanpy as sc
import scvi
import torch

import scvi_gen
from scvi_gen.model._registry import get_generator

EPOCHS = {
    "cfgen": {"max_epochs_autoencoder": 2, "max_epochs_flow": 2},
    "latent_diffusion": {"max_epochs_autoencoder": 2, "max_epochs_flow": 2},
    "discrete_diffusion": {"max_epochs": 1},
    "maf": {"max_epochs": 2},
    "moe": {"max_epochs": 2},
}


def main() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    out, names = sys.argv[1], sys.argv[2].split(",")
    adata = scvi_gen.datasets.pbmc3k()
    adata = adata[adata.obs["cell_type"].notna()].copy()
    rng = np.random.default_rng(0)
    adata = adata[np.sort(rng.choice(adata.n_obs, 600, replace=False))].copy()
    sc.pp.filter_genes(adata, min_cells=30)
    adata = adata[:, :300].copy()
    results = {}
    for name in names:
        spec = get_generator(name)
        cls = spec.model_class()
        data = adata.copy()
        scvi.settings.seed = 0
        cls.setup_anndata(data, labels_key="cell_type")
        model = cls(data, **spec.init_kwargs)
        model.train(
            **EPOCHS.get(name, {"max_epochs": 2, "early_stopping": False}),
            enable_progress_bar=False,
        )
        cells = model.generate(labels={"B": 20, "NK": 10}, seed=3).X.toarray()
        results[name] = cells
        print(name, cells.sum(), flush=True)
    np.savez(out, **results)


if __name__ == "__main__":
    main()
