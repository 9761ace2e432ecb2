"""Expression values <-> discrete tokens, with a dedicated zero bin and stored bin edges."""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)

BinningMethod = Literal["log_uniform", "uniform", "quantile"]
DecodeMode = Literal["centre", "sample", "mean"]
_METHODS = ("log_uniform", "uniform", "quantile")
#: Smallest gap between consecutive edges, relative to the value range: keeps every bin
#: non-empty in float32 so that a bin centre always lies strictly inside its bin.
_MIN_RELATIVE_GAP = 1e-4
#: Within-bin quantiles stored per bin (the empirical value profile used for decoding).
_N_QUANTILES = 32


class ExpressionTokenizer(nn.Module):
    """Bin non-negative expression values into ``num_bins`` tokens; ``num_bins`` is MASK.

    Token ``0`` is reserved for exact zeros. Tokens ``1 .. num_bins - 1`` cover the non-zero
    values with the bins ``[edges[k - 1], edges[k])`` (the first and last bins are open towards
    smaller and larger values). The absorbing MASK token has index ``num_bins``: it is never a
    data value and never produced by :meth:`tokenize` or :meth:`detokenize`. The edges and,
    for every bin, the quantiles of the training values that fell into it (``profile``) are
    buffers, saved with the model. Decoding uses that profile: a bin's centre is the median
    of its training values, a sample follows their distribution within the bin (wide bins of
    rare high values are not flattened into a uniform spread).

    Parameters
    ----------
    num_bins
        Number of data tokens including the zero bin (at least 2).
    method
        Edges of the non-zero bins: ``"log_uniform"`` (geometric spacing between the smallest
        and largest non-zero value), ``"uniform"`` (linear spacing) or ``"quantile"`` (equal
        numbers of non-zero training values per bin).

    Examples
    --------
    >>> tok = ExpressionTokenizer(num_bins=5, method="uniform").fit(np.array([1.0, 2.0, 5.0]))
    >>> tok.tokenize(torch.tensor([0.0, 1.0, 4.9]))
    tensor([0, 1, 4])
    >>> tok.detokenize(torch.tensor([0, 4]))
    tensor([0., 5.])
    """

    def __init__(self, num_bins: int = 32, method: BinningMethod = "quantile"):
        super().__init__()
        if num_bins < 2:
            raise ValueError(f"`num_bins` must be at least 2 (zero bin + one), got {num_bins}.")
        if method not in _METHODS:
            raise ValueError(f"`method` must be one of {_METHODS}, got {method!r}.")
        self.num_bins = int(num_bins)
        self.method = method
        self.register_buffer("edges", torch.linspace(0.0, 1.0, self.num_bins))
        self.register_buffer("profile", torch.zeros(self.num_bins, _N_QUANTILES + 1))

    @property
    def mask_index(self) -> int:
        """Index of the absorbing MASK token (one past the last data token)."""
        return self.num_bins

    @property
    def vocab_size(self) -> int:
        """Number of input tokens: data tokens plus MASK."""
        return self.num_bins + 1

    def fit(self, nonzero_values: np.ndarray) -> ExpressionTokenizer:
        """Set the bin edges from the non-zero training values.

        Parameters
        ----------
        nonzero_values
            Positive expression values (zeros are dropped if present).

        Returns
        -------
        ``self``.
        """
        values = np.asarray(nonzero_values, dtype=np.float64).ravel()
        values = values[np.isfinite(values) & (values > 0)]
        if values.size == 0:
            raise ValueError("No non-zero values to fit the bin edges on.")
        lo, hi = float(values.min()), float(values.max())
        if hi <= lo:
            hi = lo * (1.0 + 1e-2) + 1e-6
        n_edges = self.num_bins
        if self.method == "uniform":
            edges = np.linspace(lo, hi, n_edges)
        elif self.method == "log_uniform":
            edges = np.geomspace(lo, hi, n_edges)
        else:
            edges = np.quantile(values, np.linspace(0.0, 1.0, n_edges))
        self.edges.copy_(
            torch.as_tensor(_strictly_increasing(edges, hi - lo), dtype=torch.float32)
        )
        self.profile.copy_(self._profile(values))
        return self

    def _profile(self, values: np.ndarray) -> torch.Tensor:
        """Quantiles of the training values within each bin (evenly spread if a bin is empty)."""
        tokens = self.tokenize(torch.as_tensor(values, dtype=torch.float32)).numpy()
        values32 = values.astype(np.float32)
        levels = np.linspace(0.0, 1.0, _N_QUANTILES + 1)
        low, high = (b.numpy() for b in self.bounds())
        out = np.zeros((self.num_bins, _N_QUANTILES + 1), dtype=np.float32)
        for k in range(1, self.num_bins):
            inside = values32[tokens == k]
            if inside.size:
                out[k] = np.quantile(inside, levels)
            else:
                # stay strictly below the upper edge, which belongs to the next bin
                top = np.nextafter(high[k], np.float32(-np.inf))
                out[k] = np.linspace(low[k], top, _N_QUANTILES + 1)
        return torch.as_tensor(out)

    def tokenize(self, values: torch.Tensor) -> torch.Tensor:
        """Map values (any shape) to tokens in ``0 .. num_bins - 1`` (``<= 0`` -> zero bin)."""
        inner = self.edges[1:-1].contiguous()
        tokens = torch.bucketize(values.contiguous(), inner, right=True) + 1
        return torch.where(values > 0, tokens, torch.zeros_like(tokens))

    def centres(self) -> torch.Tensor:
        """Each data token's centre: the median of its training values (``0`` for zero)."""
        return self.profile[:, _N_QUANTILES // 2]

    def means(self) -> torch.Tensor:
        """Each data token's mean training value (trapezoid rule over the profile)."""
        inner = self.profile[:, 1:-1].sum(dim=1)
        return (inner + 0.5 * (self.profile[:, 0] + self.profile[:, -1])) / _N_QUANTILES

    def bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Lower and upper value of each data token's bin (both ``0`` for the zero bin)."""
        zero = self.edges.new_zeros(1)
        return torch.cat([zero, self.edges[:-1]]), torch.cat([zero, self.edges[1:]])

    def detokenize(self, tokens: torch.Tensor, mode: DecodeMode = "centre") -> torch.Tensor:
        """Map data tokens back to values.

        Parameters
        ----------
        tokens
            Data tokens (any shape); MASK is rejected.
        mode
            ``"centre"``: the bin centre (exact inverse of :meth:`tokenize` on centres);
            ``"mean"``: the bin's mean training value; ``"sample"``: a value drawn from the
            bin's training-value profile (torch's global RNG).

        Returns
        -------
        Float values, same shape as ``tokens``; the zero bin maps to ``0``.
        """
        if bool((tokens >= self.num_bins).any()) or bool((tokens < 0).any()):
            raise ValueError("Cannot detokenize MASK or out-of-range tokens.")
        if mode == "centre":
            return self.centres()[tokens]
        if mode == "mean":
            return self.means()[tokens]
        if mode != "sample":
            raise ValueError(f"`mode` must be 'centre', 'mean' or 'sample', got {mode!r}.")
        # inverse-CDF sampling, linear between the stored within-bin quantiles
        position = torch.rand(tokens.shape, device=tokens.device) * _N_QUANTILES
        index = position.floor().long().clamp_max(_N_QUANTILES - 1)
        rows = self.profile[tokens]
        lower = rows.gather(-1, index.unsqueeze(-1)).squeeze(-1)
        upper = rows.gather(-1, (index + 1).unsqueeze(-1)).squeeze(-1)
        return lower + (position - index) * (upper - lower)


def _strictly_increasing(edges: np.ndarray, value_range: float) -> np.ndarray:
    """Push tied edges (e.g. repeated quantiles of integer counts) apart by a small gap."""
    gap = _MIN_RELATIVE_GAP * max(value_range, 1e-6)
    out = np.array(edges, dtype=np.float64)
    for i in range(1, len(out)):
        out[i] = max(out[i], out[i - 1] + gap)
    return out
