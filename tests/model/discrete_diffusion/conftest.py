from __future__ import annotations

from collections.abc import Iterator

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

#: Tiny architecture for fast CPU tests.
TINY = {"gene_dim": 16, "dim": 32, "n_heads": 2, "n_latents": 8, "n_layers": 2}
FAST = {"batch_size": 64, "enable_progress_bar": False}


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    # On a shared 2-core machine, two intra-op threads contend and run ~10x slower.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_two_cluster_adata(n_cells: int = 160, n_genes: int = 24, seed: int = 0) -> ad.AnnData:
    """Two cell types with opposite programmes (first/second half of the genes high)."""
    rng = np.random.default_rng(seed)
    labels = np.where(np.arange(n_cells) % 2 == 0, "A", "B")
    high = np.arange(n_genes) < n_genes // 2
    base = np.where(labels[:, None] == "A", np.where(high, 6.0, 0.4), np.where(high, 0.4, 6.0))
    mean = base * rng.lognormal(0.0, 0.3, size=(n_cells, 1))
    counts = rng.negative_binomial(4, 4 / (4 + mean)).astype(np.float32)
    adata = ad.AnnData(sp.csr_matrix(counts))
    adata.obs_names = [f"cell{i}" for i in range(n_cells)]
    adata.var_names = [f"gene{j}" for j in range(n_genes)]
    adata.obs["cell_type"] = pd.Categorical(labels)
    return adata


@pytest.fixture
def two_cluster_adata() -> ad.AnnData:
    return make_two_cluster_adata()
