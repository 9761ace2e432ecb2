from __future__ import annotations

import numpy as np
import pytest
import torch

from scvi_gen.model.discrete_diffusion import ExpressionTokenizer

METHODS = ["log_uniform", "uniform", "quantile"]


def _values(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.log1p(rng.gamma(1.0, 20.0, size=5000))


@pytest.mark.parametrize("method", METHODS)
def test_bin_centres_round_trip_exactly(method):
    tok = ExpressionTokenizer(num_bins=16, method=method).fit(_values())
    tokens = torch.arange(16)
    assert torch.equal(tok.tokenize(tok.detokenize(tokens, mode="centre")), tokens)


def test_round_trip_survives_tied_quantiles_of_integer_counts():
    counts = np.random.default_rng(0).poisson(1.5, size=3000).astype(float)
    tok = ExpressionTokenizer(num_bins=12, method="quantile").fit(counts)
    assert torch.all(tok.edges[1:] > tok.edges[:-1])
    tokens = torch.arange(12)
    assert torch.equal(tok.tokenize(tok.detokenize(tokens)), tokens)


def test_zero_has_its_own_bin_and_non_zero_values_never_map_to_it():
    tok = ExpressionTokenizer(num_bins=8, method="log_uniform").fit(_values())
    values = torch.tensor([0.0, 1e-6, 0.5, 100.0])
    tokens = tok.tokenize(values)
    assert tokens[0] == 0
    assert torch.all(tokens[1:] >= 1)
    assert tokens[-1] == 7  # beyond the largest edge: last bin


def test_mask_is_a_dedicated_index_never_produced_by_tokenize():
    tok = ExpressionTokenizer(num_bins=8).fit(_values())
    assert tok.mask_index == 8
    assert tok.vocab_size == 9
    tokens = tok.tokenize(torch.linspace(0, 50, 1000))
    assert tokens.max() < tok.mask_index


def test_detokenize_rejects_the_mask_token():
    tok = ExpressionTokenizer(num_bins=8).fit(_values())
    with pytest.raises(ValueError, match="MASK"):
        tok.detokenize(torch.tensor([1, 8]))


def test_sampling_within_a_bin_stays_in_that_bin():
    tok = ExpressionTokenizer(num_bins=10, method="uniform").fit(_values())
    tokens = torch.randint(0, 10, (2000,))
    values = tok.detokenize(tokens, mode="sample")
    assert torch.equal(tok.tokenize(values), tokens)
    assert torch.all(values[tokens == 0] == 0)


def test_edges_are_a_buffer_saved_in_the_state_dict():
    tok = ExpressionTokenizer(num_bins=8).fit(_values())
    fresh = ExpressionTokenizer(num_bins=8)
    fresh.load_state_dict(tok.state_dict())
    assert "edges" in tok.state_dict()
    assert torch.equal(fresh.edges, tok.edges)


def test_invalid_arguments_raise():
    with pytest.raises(ValueError, match="num_bins"):
        ExpressionTokenizer(num_bins=1)
    with pytest.raises(ValueError, match="method"):
        ExpressionTokenizer(method="kmeans")
    with pytest.raises(ValueError, match="non-zero"):
        ExpressionTokenizer().fit(np.zeros(10))


def test_decoding_follows_the_training_values_within_a_bin():
    # one wide bin holding skewed values: samples, centre and mean follow the data,
    # not the uniform spread between the edges
    values = np.concatenate([np.full(50, 1.0), np.random.default_rng(0).exponential(1.0, 5000)])
    values = 1.0 + values[values > 0]
    tok = ExpressionTokenizer(num_bins=2, method="uniform").fit(values)
    ones = torch.ones(20000, dtype=torch.long)
    inside = torch.as_tensor(values, dtype=torch.float32)
    sampled = tok.detokenize(ones, mode="sample")
    # (linear interpolation between 32 quantiles: the sparse tail costs a few percent)
    assert float(sampled.mean()) == pytest.approx(float(inside.mean()), rel=0.05)
    mean = float(tok.detokenize(ones[:1], mode="mean"))
    assert mean == pytest.approx(float(inside.mean()), rel=0.05)
    assert float(tok.centres()[1]) == pytest.approx(float(inside.median()), rel=0.01)
    assert float(sampled.mean()) < float(tok.edges.mean()) - 1.0  # uniform would sit mid-bin
