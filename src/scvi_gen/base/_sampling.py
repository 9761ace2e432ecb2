"""Fast exact negative binomial sampling straight into sparse form.

Generated count matrices are mostly zeros. Drawing a gamma and a Poisson variate for every
entry (the textbook gamma-Poisson sampler) dominates the cost of generating cells with
10,000+ genes on a CPU. Here every entry costs one uniform ``w`` and one comparison: an entry
is non-zero iff ``w < P(X > 0)``, and because ``P(X > 0) <= E[X] = mu`` (Markov's inequality)
only the entries with ``w < mu`` (about as many as the non-zeros) are candidates whose exact
``P(X > 0) = -expm1(theta * log(theta / (theta + mu)))`` is computed. The non-zero entries are
then drawn by inversion of the CDF with the same ``w``; only entries whose zero probability
underflows (far beyond single-cell means) are drawn from the zero-truncated distribution by
rejection (gamma-Poisson). Both are exact, and which one an entry takes depends on its
parameters only, so the result is an exact NB sample (up to the 2^-24 resolution of the
float32 uniforms).

On the CPU the uniforms come from a counter-based generator and the inversion runs entry by
entry in compiled code (:mod:`scvi_gen.base._nb_kernel`); on other devices both are torch
operations (``torch.rand``, and inversion by rounds of tensor operations only where zeros
dominate, rejection elsewhere).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import numba
import numpy as np
import scipy.sparse as sp
import torch
from torch.distributions import Gamma

from scvi_gen.base._nb_kernel import candidates, finish_candidates

logger = logging.getLogger(__name__)

#: Below this ``log P(X = 0)`` an entry is drawn by rejection (never rejected in practice:
#: it is non-zero with probability 1 - 2e-22); above it, by inversion.
_LOG_P_ZERO_MIN = -50.0
#: Off the CPU, entries with ``P(X = 0)`` below this use rejection (at most 2 rounds expected),
#: the others, concentrated on small counts, inversion by rounds of tensor operations.
_TORCH_REJECTION_MAX_P_ZERO = 0.5
_MAX_INVERSION_STEPS = 100_000


def sample_nb_csr(mu: torch.Tensor, theta: torch.Tensor) -> sp.csr_matrix:
    """Draw an NB count matrix as a float32 CSR matrix.

    The randomness comes from torch's generator of ``mu``'s device (seed it for
    reproducible draws).

    Parameters
    ----------
    mu
        ``(n, g)`` non-negative means.
    theta
        Inverse dispersion, broadcastable to ``(n, g)`` (e.g. ``(g,)``); positive.

    Returns
    -------
    ``(n, g)`` sparse counts (sorted indices, no explicit zeros).

    Examples
    --------
    >>> counts = sample_nb_csr(torch.full((2, 3), 5.0), torch.ones(3))
    >>> counts.shape
    (2, 3)
    """
    n, g = mu.shape
    if mu.device.type == "cpu":
        counts, cols, indptr = _sample_cpu(mu.float(), theta)
    else:
        counts, cols, indptr = _sample_torch(mu.float(), theta)
    # int32 indices where they fit, as scipy would choose: int64 ones make every later
    # vstack of the blocks rescan and convert them.
    index_dtype = np.int32 if max(g, counts.shape[0]) < np.iinfo(np.int32).max else np.int64
    return sp.csr_matrix(
        (counts.astype(np.float32), cols.astype(index_dtype), indptr.astype(index_dtype)),
        shape=(n, g),
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
    ``(n, g)`` counts on ``mu``'s device.

    Examples
    --------
    >>> sample_nb_dense(torch.zeros(2, 3), torch.ones(3)).sum().item()
    0.0
    """
    return torch.from_numpy(sample_nb_csr(mu, theta).toarray()).to(mu.device)


def _sample_cpu(mu: torch.Tensor, theta: torch.Tensor) -> tuple[np.ndarray, ...]:
    """CSR parts ``(counts, cols, indptr)`` of an NB draw, with the compiled kernels."""
    n, g = mu.shape
    key = int(torch.randint(0, 2**62, (1,)).item())
    theta_np = _theta_rows(theta.detach().cpu().double(), n, g)
    with _threads_like_torch():
        offsets, cols, w, m, t = candidates(mu.contiguous().numpy(), theta_np, key)
        log_p_zero = torch.from_numpy(m / t).log1p_().mul_(torch.from_numpy(t)).neg_().numpy()
        counts, nonzero_per_row = finish_candidates(offsets, w, m, t, log_p_zero, _LOG_P_ZERO_MIN)
    kept = counts != 0
    counts, cols = counts[kept], cols[kept]
    rejected = np.flatnonzero(counts < 0)
    if rejected.size:
        mu_r = torch.from_numpy(m[kept][rejected]).float()
        theta_r = torch.from_numpy(t[kept][rejected]).float()
        counts[rejected] = _zero_truncated(mu_r, theta_r).numpy()
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(nonzero_per_row, out=indptr[1:])
    return counts, cols, indptr


def _sample_torch(mu: torch.Tensor, theta: torch.Tensor) -> tuple[np.ndarray, ...]:
    """CSR parts ``(counts, cols, indptr)`` of an NB draw, with torch operations."""
    n, g = mu.shape
    w = torch.rand(mu.shape, device=mu.device)
    flat = torch.lt(w, mu).view(-1).nonzero().squeeze(1)
    w_c, mu_c = w.view(-1)[flat].double(), mu.reshape(-1)[flat].double()
    theta_c = _entries_of(theta.float(), mu.shape, flat).double()
    log_p_zero = torch.div(mu_c, theta_c).log1p_().mul_(theta_c).neg_()
    survival = torch.expm1(log_p_zero).neg_()
    keep = torch.lt(w_c, survival).nonzero().squeeze(1)
    flat = flat[keep]
    w_c, mu_c, theta_c = w_c[keep], mu_c[keep], theta_c[keep]
    survival, log_p_zero = survival[keep], log_p_zero[keep]
    counts = torch.empty(flat.shape[0], dtype=torch.long, device=mu.device)
    inverted = log_p_zero >= float(np.log(_TORCH_REJECTION_MAX_P_ZERO))
    low, high = inverted.nonzero().squeeze(1), (~inverted).nonzero().squeeze(1)
    if low.numel():
        parts = (w_c[low], mu_c[low], theta_c[low], survival[low], log_p_zero[low])
        counts[low] = _invert_positive_torch(*parts)
    if high.numel():
        counts[high] = _zero_truncated(mu_c[high].float(), theta_c[high].float())
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount((flat // g).cpu().numpy(), minlength=n), out=indptr[1:])
    return counts.cpu().numpy(), (flat % g).cpu().numpy(), indptr


def _theta_rows(theta: torch.Tensor, n: int, g: int) -> np.ndarray:
    """``theta`` as a C-contiguous ``(1, g)`` (one per gene) or ``(n, g)`` float64 array."""
    if theta.numel() == 1:
        return np.full((1, g), float(theta.reshape(-1)[0]))
    if theta.dim() == 2 and theta.shape[0] == n and n > 1:
        return np.ascontiguousarray(theta.numpy())
    return np.ascontiguousarray(theta.reshape(1, g).numpy())


@contextmanager
def _threads_like_torch() -> Iterator[None]:
    """Numba kernels on as many threads as torch uses (never more than numba has)."""
    before = numba.get_num_threads()
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        numba.set_num_threads(before)


def _entries_of(theta: torch.Tensor, shape: torch.Size, flat: torch.Tensor) -> torch.Tensor:
    """``theta`` broadcast to ``shape`` at the flat indices, without expanding it first."""
    if theta.numel() == 1:
        return theta.reshape(1).expand(flat.shape[0])
    if theta.dim() == 1 or (theta.dim() == 2 and theta.shape[0] == 1):
        return theta.reshape(-1)[flat % shape[1]]
    return theta.expand(shape).reshape(-1)[flat]


def _invert_positive_torch(
    w: torch.Tensor,
    mu: torch.Tensor,
    theta: torch.Tensor,
    survival: torch.Tensor,
    log_p_zero: torch.Tensor,
) -> torch.Tensor:
    """:func:`~scvi_gen.base._nb_kernel.invert_positive` by rounds of tensor operations."""
    p = log_p_zero.exp()
    ratio = mu / (mu + theta)
    out = torch.empty(w.shape[0], dtype=torch.long, device=w.device)
    active = torch.arange(w.shape[0], device=w.device)
    k = 0
    while active.numel():
        k += 1
        p = p * ((k - 1 + theta) / k) * ratio
        survival = survival - p
        # p == 0: the remaining tail underflowed; stop there (probability < 1e-300).
        done = (survival <= w) | (p == 0) | (k >= _MAX_INVERSION_STEPS)
        out[active[done]] = k
        keep = (~done).nonzero().squeeze(1)
        # Index gathers are much faster than boolean-mask ones on large tensors.
        active, w, p, survival = active[keep], w[keep], p[keep], survival[keep]
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
