"""Fast exact negative binomial sampling straight into sparse form.

Generated count matrices are mostly zeros. Drawing a gamma and a Poisson variate for every
entry (the textbook gamma-Poisson sampler) dominates the cost of generating cells with
10,000+ genes on a CPU. Here every entry costs one uniform variate and one comparison with
its zero probability ``P(X = 0) = (theta / (theta + mu))^theta``; only the (few) non-zero
entries are drawn further: by inversion of the CDF where zeros dominate (small means), and
from the zero-truncated distribution by rejection (gamma-Poisson) elsewhere. Both branches are exact,
and the choice of branch depends on the parameters only, so the result is an exact NB sample.
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp
import torch
from torch.distributions import Gamma

logger = logging.getLogger(__name__)

#: Non-zero entries whose zero probability is below this use rejection sampling (at most
#: 1 / (1 - 0.5) = 2 rounds expected); the others, concentrated on small counts, use inversion.
_REJECTION_MAX_P_ZERO = 0.5
_MAX_INVERSION_STEPS = 100_000


def sample_nb_entries(
    mu: torch.Tensor, theta: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw NB counts for a ``(n, g)`` mean matrix, returning only the non-zero entries.

    Parameters
    ----------
    mu
        ``(n, g)`` non-negative means.
    theta
        Inverse dispersion, broadcastable to ``(n, g)`` (e.g. ``(g,)``); positive.

    Returns
    -------
    Row indices, column indices (row-major order) and counts (>= 1, int64) of the non-zero
    entries.

    Examples
    --------
    >>> rows, cols, counts = sample_nb_entries(torch.full((2, 3), 5.0), torch.ones(3))
    >>> bool((counts > 0).all())
    True
    """
    mu = mu.float()
    theta = theta.float().expand_as(mu)
    u = torch.rand(mu.shape, device=mu.device)
    # P(X = 0) = exp(-theta * log1p(mu / theta)), computed in place on one buffer.
    p_zero = torch.div(mu, theta).log1p_().mul_(theta).neg_().exp_()
    flat = torch.gt(u, p_zero).view(-1).nonzero().squeeze(1)
    n_genes = mu.shape[1]
    rows, cols = flat // n_genes, flat % n_genes
    mu_nz, theta_nz = mu.reshape(-1)[flat], theta.reshape(-1)[flat]
    p_zero_nz, u_nz = p_zero.view(-1)[flat], u.view(-1)[flat]
    counts = torch.empty(flat.shape[0], dtype=torch.long, device=mu.device)
    rejection = p_zero_nz < _REJECTION_MAX_P_ZERO
    low = (~rejection).nonzero().squeeze(1)
    high = rejection.nonzero().squeeze(1)
    if low.numel():
        counts[low] = _invert_positive(u_nz[low], mu_nz[low], theta_nz[low], p_zero_nz[low])
    if high.numel():
        counts[high] = _zero_truncated(mu_nz[high], theta_nz[high])
    return rows, cols, counts


def _invert_positive(
    u: torch.Tensor, mu: torch.Tensor, theta: torch.Tensor, p_zero: torch.Tensor
) -> torch.Tensor:
    """Inversion of the NB CDF for entries known to be >= 1 (``u > P(0)``)."""
    u, mu, theta = u.double(), mu.double(), theta.double()
    p = p_zero.double()
    cdf = p.clone()
    ratio = mu / (mu + theta)
    out = torch.empty(u.shape[0], dtype=torch.long, device=u.device)
    active = torch.arange(u.shape[0], device=u.device)
    k = 0
    while active.numel():
        k += 1
        p = p * ((k - 1 + theta) / k) * ratio
        cdf = cdf + p
        # p == 0: the remaining tail underflowed; stop there (probability < 1e-300).
        done = (u <= cdf) | (p == 0) | (k >= _MAX_INVERSION_STEPS)
        out[active[done]] = k
        keep = (~done).nonzero().squeeze(1)
        # Index gathers are much faster than boolean-mask ones on large CPU tensors.
        active, u, p, cdf = active[keep], u[keep], p[keep], cdf[keep]
        theta, ratio = theta[keep], ratio[keep]
    return out


def _zero_truncated(mu: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Gamma-Poisson draws conditioned on being >= 1, by rejection (P(0) < 1/2 here)."""
    out = torch.zeros(mu.shape[0], dtype=torch.long, device=mu.device)
    todo = torch.arange(mu.shape[0], device=mu.device)
    while todo.numel():
        rate = Gamma(theta[todo], theta[todo] / mu[todo]).sample()
        draw = torch.poisson(rate).long()
        out[todo] = draw
        todo = todo[draw == 0]
    return out


def sample_nb_csr(mu: torch.Tensor, theta: torch.Tensor) -> sp.csr_matrix:
    """Draw an NB count matrix as a float32 CSR matrix.

    Parameters
    ----------
    mu
        ``(n, g)`` means.
    theta
        Inverse dispersion, broadcastable to ``(n, g)``.

    Returns
    -------
    ``(n, g)`` sparse counts.
    """
    rows, cols, counts = sample_nb_entries(mu, theta)
    n, g = mu.shape
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows.cpu().numpy(), minlength=n), out=indptr[1:])
    return sp.csr_matrix(
        (counts.cpu().numpy().astype(np.float32), cols.cpu().numpy(), indptr), shape=(n, g)
    )


def sample_nb_dense(mu: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Draw an NB count matrix as a dense float tensor (same draws as :func:`sample_nb_csr`).

    Parameters
    ----------
    mu
        ``(n, g)`` means.
    theta
        Inverse dispersion, broadcastable to ``(n, g)``.

    Returns
    -------
    ``(n, g)`` counts.
    """
    rows, cols, counts = sample_nb_entries(mu, theta)
    out = torch.zeros(mu.shape, dtype=torch.float32, device=mu.device)
    out[rows, cols] = counts.float()
    return out
