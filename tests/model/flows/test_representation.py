from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from scvi_gen.model.flows import (
    ZERO_WIDTH,
    LogNormRepresentation,
    dequantise,
    n_modelled_genes,
    select_genes,
)
from tests.conftest import make_counts_adata


@pytest.fixture
def adata():
    return make_counts_adata(n_cells=80, n_genes=25)


def test_explicit_genes_keep_var_order(adata):
    genes = select_genes(adata.X, adata.var_names, genes=["gene7", "gene2", "gene11"])
    assert genes == ["gene2", "gene7", "gene11"]


def test_unknown_gene_is_a_clear_error(adata):
    with pytest.raises(ValueError, match="not in adata.var_names"):
        select_genes(adata.X, adata.var_names, genes=["gene1", "CD3E"])


def test_hvg_selection_returns_requested_number(adata):
    genes = select_genes(adata.X, adata.var_names, n_top_genes=10)
    assert len(genes) == 10 == n_modelled_genes(adata.n_vars, 10, None)
    assert set(genes) <= set(adata.var_names)


def test_all_genes_when_fewer_than_requested(adata):
    assert select_genes(adata.X, adata.var_names, n_top_genes=2000) == list(adata.var_names)
    assert n_modelled_genes(adata.n_vars, None, None) == adata.n_vars


def test_fitted_statistics_match_dense_computation(adata):
    positions = np.array([0, 3, 5, 9])
    rep = LogNormRepresentation(len(positions))
    rep.fit(sp.csr_matrix(adata.X), positions)
    counts = torch.as_tensor(adata.X.toarray(), dtype=torch.float64)
    u = torch.rand(
        (adata.n_obs, len(positions)),
        generator=torch.Generator().manual_seed(0),
        dtype=torch.float64,
    )  # the same seeded draws
    values = dequantise(counts[:, positions], 1e4 / counts.sum(1, keepdim=True), u).numpy()
    assert np.allclose(rep.mean.numpy(), values.mean(0), atol=1e-5)
    assert np.allclose(rep.std.numpy(), values.std(0), rtol=1e-4)
    assert rep.gene_index.tolist() == positions.tolist()


def test_midpoint_encoding_is_the_real_lognorm_value():
    counts = torch.tensor([[0.0, 1.0, 3.0, 6.0]])
    x = dequantise(counts, torch.tensor([[1e4 / 10]]), torch.full_like(counts, 0.5))
    expected = torch.log1p(counts * 1e3)
    assert torch.allclose(x[:, 1:], expected[:, 1:])
    assert x[0, 0] == -ZERO_WIDTH / 2


def test_zeros_and_counts_are_separated_by_an_empty_gap():
    counts = torch.tensor([[0.0, 1.0]]).expand(1000, 2)
    scale = torch.full((1000, 1), 5.0)
    x = dequantise(counts, scale, torch.rand(1000, 2))
    assert torch.all(x[:, 0] <= 0) and torch.all(x[:, 0] >= -ZERO_WIDTH)
    assert torch.all(x[:, 1] >= torch.log1p(torch.tensor(2.5)))  # half a count above zero


def test_decode_inverts_encode_to_the_real_lognorm_values(adata):
    rep = LogNormRepresentation(adata.n_vars)
    rep.fit(adata.X, np.arange(adata.n_vars))
    counts = torch.as_tensor(adata.X.toarray())
    library = counts.sum(1, keepdim=True)
    lognorm, decoded_counts = rep.decode(rep.encode(counts, dequantize=True), library)
    assert torch.equal(decoded_counts, counts)
    expected = torch.log1p(counts / library * 1e4)
    assert torch.allclose(lognorm, expected, atol=1e-4)
    assert torch.all(lognorm[counts == 0] == 0)


def test_decode_is_never_negative():
    rep = LogNormRepresentation(5)
    lognorm, counts = rep.decode(torch.randn(100, 5) * 10, torch.full((100, 1), 2000.0))
    assert torch.all(lognorm >= 0) and torch.all(counts >= 0)
    assert torch.any(lognorm == 0) and torch.any(lognorm > 0)


def test_library_size_uses_all_genes_not_only_modelled_ones():
    counts = torch.tensor([[10.0, 0.0, 90.0]])
    rep = LogNormRepresentation(1)
    rep.gene_index.fill_(0)
    value = rep.encode(counts, dequantize=False)
    assert torch.allclose(value, torch.log1p(torch.tensor([[10 / 100 * 1e4]])))


def test_gene_names_are_strings_even_for_numeric_var_names():
    genes = select_genes(np.ones((3, 4)), pd.Index([1, 2, 3, 4]), genes=["2", "4"])
    assert genes == ["2", "4"]
