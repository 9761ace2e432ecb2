from __future__ import annotations

from collections.abc import Callable

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

N_GENES = 200
LABELS = ("alpha", "beta", "gamma")
GENES_PER_PROGRAM = 15


def label_gene_means(seed: int = 0, n_genes: int = N_GENES) -> dict[str, np.ndarray]:
    """Mean expression of every gene per label: shared baseline plus a label-specific program."""
    rng = np.random.default_rng(seed)
    baseline = rng.gamma(shape=0.6, scale=3.0, size=n_genes) + 0.05
    means = {}
    for i, label in enumerate(LABELS):
        program = np.ones(n_genes)
        program[i * GENES_PER_PROGRAM : (i + 1) * GENES_PER_PROGRAM] = 6.0
        means[label] = baseline * program
    return means


def simulate_counts(
    n_cells: int,
    seed: int,
    *,
    gene_means: dict[str, np.ndarray] | None = None,
    theta: float = 5.0,
    sparse: bool = True,
) -> ad.AnnData:
    """Negative-binomial counts for three labels with label-specific gene programs."""
    rng = np.random.default_rng(seed)
    gene_means = label_gene_means() if gene_means is None else gene_means
    n_genes = next(iter(gene_means.values())).size
    labels = rng.choice(LABELS, size=n_cells, p=[0.5, 0.3, 0.2])
    size_factors = rng.lognormal(mean=0.0, sigma=0.3, size=n_cells)
    mu = np.stack([gene_means[label] for label in labels]) * size_factors[:, None]
    counts = rng.negative_binomial(theta, theta / (theta + mu)).astype(np.float32)
    adata = ad.AnnData(
        X=sp.csr_matrix(counts) if sparse else counts,
        obs=pd.DataFrame(
            {"cell_type": pd.Categorical(labels)},
            index=[f"cell{seed}_{i}" for i in range(n_cells)],
        ),
        var=pd.DataFrame(index=[f"gene{j}" for j in range(n_genes)]),
    )
    return adata


def shifted_gene_means(factor: float = 3.0, n_shifted: int = 60) -> dict[str, np.ndarray]:
    """Gene means of a different distribution: many genes scaled up in every label."""
    means = label_gene_means()
    rng = np.random.default_rng(123)
    shifted = rng.choice(N_GENES, size=n_shifted, replace=False)
    out = {}
    for label, m in means.items():
        m = m.copy()
        m[shifted] *= factor
        out[label] = m
    return out


def log_cp10k(adata: ad.AnnData) -> np.ndarray:
    """Reference log1p(CP10k) of a small AnnData, computed densely."""
    counts = adata.X.toarray() if sp.issparse(adata.X) else np.asarray(adata.X)
    counts = counts.astype(np.float64)
    return np.log1p(counts / counts.sum(axis=1, keepdims=True) * 1e4)


@pytest.fixture(scope="session")
def simulate() -> Callable[..., ad.AnnData]:
    return simulate_counts


@pytest.fixture(scope="session")
def reference_log_cp10k() -> Callable[[ad.AnnData], np.ndarray]:
    return log_cp10k


@pytest.fixture(scope="session")
def train_adata() -> ad.AnnData:
    return simulate_counts(300, seed=1)


@pytest.fixture(scope="session")
def test_adata() -> ad.AnnData:
    return simulate_counts(300, seed=2)


@pytest.fixture(scope="session")
def real_synthetic_adata() -> ad.AnnData:
    """A fresh real sample from the same distribution (what a perfect generator returns)."""
    return simulate_counts(300, seed=3)


@pytest.fixture(scope="session")
def shifted_synthetic_adata() -> ad.AnnData:
    return simulate_counts(300, seed=4, gene_means=shifted_gene_means())
