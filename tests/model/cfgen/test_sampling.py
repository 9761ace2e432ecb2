from __future__ import annotations

import numpy as np
import pytest
import torch

from scvi_gen.base._sampling import sample_nb_csr, sample_nb_dense


@pytest.mark.parametrize(
    ("mu", "theta"), [(0.05, 0.5), (1.5, 1.0), (6.0, 0.2), (40.0, 3.0), (3.0, 0.02)]
)
def test_nb_sampler_matches_the_nb_moments_and_zero_probability(mu, theta):
    torch.manual_seed(0)
    n = 100_000
    x = sample_nb_dense(torch.full((n, 1), mu), torch.tensor([theta])).numpy().ravel()
    variance = mu + mu**2 / theta
    p_zero = (theta / (theta + mu)) ** theta
    assert abs(x.mean() - mu) < 5 * np.sqrt(variance / n)
    assert abs((x == 0).mean() - p_zero) < 5 * np.sqrt(p_zero * (1 - p_zero) / n)
    if theta >= 0.2:
        assert abs(x.var() / variance - 1) < 0.1


def test_nb_sampler_gives_zero_for_zero_mean():
    x = sample_nb_dense(torch.zeros(5, 4), torch.ones(4))
    assert torch.count_nonzero(x) == 0


def test_sparse_and_dense_samplers_agree_for_the_same_seed():
    mu = torch.rand(20, 30) * 4
    theta = torch.rand(30) + 0.5
    torch.manual_seed(1)
    csr = sample_nb_csr(mu, theta)
    torch.manual_seed(1)
    dense = sample_nb_dense(mu, theta)
    assert np.array_equal(csr.toarray(), dense.numpy())
    assert csr.has_sorted_indices and np.all(csr.data > 0)


@pytest.mark.parametrize(("mu", "theta"), [(0.002, 0.5), (0.3, 2.0), (2.0, 0.3), (8.0, 5.0)])
def test_nb_sampler_matches_the_nb_probabilities_of_small_counts(mu, theta):
    from scipy.stats import nbinom

    torch.manual_seed(2)
    n = 400_000
    x = sample_nb_dense(torch.full((n, 1), mu), torch.tensor([theta])).numpy().ravel()
    for k in range(6):
        expected = nbinom.pmf(k, theta, theta / (theta + mu))
        observed = (x == k).mean()
        assert abs(observed - expected) <= 5 * np.sqrt(expected * (1 - expected) / n) + 1e-6


def test_nb_sampler_takes_one_dispersion_per_entry():
    torch.manual_seed(3)
    mu = torch.full((50_000, 2), 3.0)
    theta = torch.tensor([[0.1, 50.0]]).expand(50_000, 2).contiguous()
    x = sample_nb_dense(mu, theta).numpy()
    variances = x.var(axis=0)
    np.testing.assert_allclose(variances, 3.0 + 9.0 / np.array([0.1, 50.0]), rtol=0.15)
