"""Embeddings of diffusion/flow time and of categorical conditions with a "null" category."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
from torch import nn

logger = logging.getLogger(__name__)


def sinusoidal_features(
    t: torch.Tensor, n_frequencies: int = 64, max_period: float = 10_000.0
) -> torch.Tensor:
    """Sinusoidal features of a time in ``[0, 1]`` (as in transformers and diffusion models).

    Parameters
    ----------
    t
        Times, shape ``(n,)``, ``(n, 1)`` or a scalar.
    n_frequencies
        Number of features (half cosines, half sines); must be even.
    max_period
        Longest period, in units of ``1000 * t``.

    Returns
    -------
    ``(n, n_frequencies)`` features.

    Examples
    --------
    >>> sinusoidal_features(torch.tensor([0.0, 0.5]), 8).shape
    torch.Size([2, 8])
    """
    if n_frequencies % 2:
        raise ValueError(f"`n_frequencies` must be even, got {n_frequencies}.")
    half = n_frequencies // 2
    exponent = -math.log(max_period) * torch.arange(half, device=t.device) / half
    args = 1000.0 * t.reshape(-1, 1).float() * torch.exp(exponent)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimeEmbedding(nn.Module):
    """Sinusoidal features of a time in ``[0, 1]`` followed by a two-layer MLP.

    Parameters
    ----------
    dim
        Output width.
    n_frequencies
        Number of sinusoidal features.
    max_period
        Longest period of the features (see :func:`sinusoidal_features`).

    Examples
    --------
    >>> emb = TimeEmbedding(32)
    >>> emb(torch.rand(5)).shape
    torch.Size([5, 32])
    """

    def __init__(self, dim: int, n_frequencies: int = 64, max_period: float = 10_000.0):
        super().__init__()
        self.n_frequencies = n_frequencies
        self.max_period = max_period
        self.mlp = nn.Sequential(nn.Linear(n_frequencies, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """Embed ``t`` (scalar, ``(n,)`` or ``(n, 1)``) into ``(n, dim)``."""
        return self.mlp(sinusoidal_features(t, self.n_frequencies, self.max_period))


class ConditionEmbedding(nn.Module):
    """Sum of per-attribute embeddings, each with an extra "null" (dropped) category.

    Attribute ``i`` with ``n_categories[i]`` categories gets an embedding table with
    ``n_categories[i] + 1`` rows; the last row (:attr:`null_index`) stands for "attribute not
    given" and is what classifier-free guidance uses for the unconditional field. Optional
    continuous inputs (always given, never dropped) are added through a linear map.

    Parameters
    ----------
    n_categories
        Number of categories of each categorical attribute.
    dim
        Embedding width.
    n_continuous
        Number of continuous inputs.

    Examples
    --------
    >>> emb = ConditionEmbedding([3, 2], dim=8)
    >>> codes = torch.tensor([[0, 1], [2, 0]])
    >>> emb(codes).shape
    torch.Size([2, 8])
    >>> emb(emb.null_codes(2)).shape  # every attribute dropped
    torch.Size([2, 8])
    """

    def __init__(self, n_categories: Sequence[int], dim: int, n_continuous: int = 0):
        super().__init__()
        self.n_categories = [int(n) for n in n_categories]
        self.dim = dim
        self.n_continuous = int(n_continuous)
        self.embeddings = nn.ModuleList(nn.Embedding(n + 1, dim) for n in self.n_categories)
        self.continuous = nn.Linear(self.n_continuous, dim) if self.n_continuous else None
        self.bias = nn.Parameter(torch.zeros(dim))
        self.register_buffer(
            "null_index", torch.tensor(self.n_categories, dtype=torch.long), persistent=False
        )

    @property
    def n_attributes(self) -> int:
        """Number of categorical attributes."""
        return len(self.n_categories)

    def null_codes(self, n: int) -> torch.Tensor:
        """``(n, n_attributes)`` codes with every attribute set to its null index."""
        return self.null_index.expand(n, -1).clone()

    def forward(
        self, codes: torch.Tensor | None, continuous: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Embed ``(n, n_attributes)`` codes (null index allowed) and continuous inputs.

        Parameters
        ----------
        codes
            Category codes per attribute; the null index marks a dropped attribute.
        continuous
            ``(n, n_continuous)`` continuous inputs.

        Returns
        -------
        ``(n, dim)`` embedding.
        """
        n = codes.shape[0] if codes is not None else continuous.shape[0]
        out = self.bias.expand(n, -1)
        for i, embedding in enumerate(self.embeddings):
            out = out + embedding(codes[:, i])
        if self.continuous is not None:
            out = out + self.continuous(continuous)
        return out
