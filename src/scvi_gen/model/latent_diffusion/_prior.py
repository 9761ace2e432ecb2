"""The diffusion transformer (DiT) that models the autoencoder's latent tokens."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import nn

from scvi_gen.nn._embeddings import ConditionEmbedding, TimeEmbedding
from scvi_gen.nn._transformer import AdaLNFinalLayer, AdaLNTransformerBlock

logger = logging.getLogger(__name__)


class LatentDiT(nn.Module):
    """Velocity field over latent tokens: a DiT with adaptive layer norm on time and conditions.

    The conditioning vector is ``time_embedding(t) + condition_embedding(codes, continuous)``
    (each categorical attribute has a "null" code for classifier-free guidance); it modulates
    every block (adaLN-Zero) and the output layer.

    Parameters
    ----------
    n_tokens
        Number of latent tokens.
    token_dim
        Width of each latent token (input and output).
    n_categories
        Categories of every categorical attribute.
    n_continuous
        Number of continuous inputs (library size, continuous covariates).
    dim
        Width of the transformer.
    n_blocks
        Transformer blocks.
    n_heads
        Attention heads.
    mlp_ratio
        Hidden width of the MLPs relative to ``dim``.
    cond_dim
        Width of the conditioning vector (``None``: ``dim``).

    Examples
    --------
    >>> net = LatentDiT(4, 3, n_categories=[2], dim=16, n_blocks=1, n_heads=2)
    >>> c = net.condition_embedding(torch.tensor([[0], [1]]))
    >>> net(torch.randn(2, 4, 3), torch.rand(2, 1), c).shape
    torch.Size([2, 4, 3])
    """

    def __init__(
        self,
        n_tokens: int,
        token_dim: int,
        n_categories: Sequence[int],
        n_continuous: int = 0,
        dim: int = 64,
        n_blocks: int = 2,
        n_heads: int = 4,
        mlp_ratio: float = 2.0,
        cond_dim: int | None = None,
    ):
        super().__init__()
        cond_dim = cond_dim or dim
        self.n_tokens = n_tokens
        self.token_dim = token_dim
        self.time_embedding = TimeEmbedding(cond_dim)
        self.condition_embedding = ConditionEmbedding(n_categories, cond_dim, n_continuous)
        self.token_in = nn.Linear(token_dim, dim)
        self.position = nn.Parameter(torch.randn(n_tokens, dim) * 0.02)
        self.blocks = nn.ModuleList(
            AdaLNTransformerBlock(dim, n_heads, cond_dim, mlp_ratio) for _ in range(n_blocks)
        )
        self.final = AdaLNFinalLayer(dim, token_dim, cond_dim)

    def forward(self, x: torch.Tensor, t: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """Velocity of tokens ``x`` ``(n, n_tokens, token_dim)`` at times ``t``.

        Parameters
        ----------
        x
            Noisy latent tokens.
        t
            Times: a 0-d tensor or ``(n, 1)``.
        condition
            ``(n, cond_dim)`` condition embedding (:attr:`condition_embedding`).

        Returns
        -------
        ``(n, n_tokens, token_dim)``.
        """
        c = condition + self.time_embedding(t)
        h = self.token_in(x) + self.position
        for block in self.blocks:
            h = block(h, c)
        return self.final(h, c)
