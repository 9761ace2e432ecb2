"""Transformer blocks with adaptive layer norm (adaLN-Zero, as in DiT) on a conditioning vector.

The blocks are generic: tokens ``x`` of shape ``(batch, tokens, dim)``, a conditioning vector
``c`` of shape ``(batch, cond_dim)`` (or one per token, ``(batch, tokens, cond_dim)``) that
produces a shift, a scale and a gate for every sub-layer, and optionally a ``context`` sequence
to cross-attend to. Attention goes through
:func:`torch.nn.functional.scaled_dot_product_attention`, so no tokens x tokens matrix is built
in this code and PyTorch can pick its memory-efficient / flash kernels.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Apply an adaptive affine map ``x * (1 + scale) + shift``.

    Parameters
    ----------
    x
        Tokens, ``(batch, tokens, dim)``.
    shift, scale
        ``(batch, dim)`` (broadcast over tokens) or ``(batch, tokens, dim)``.

    Returns
    -------
    The modulated tokens, same shape as ``x``.

    Examples
    --------
    >>> x = torch.ones(2, 3, 4)
    >>> modulate(x, torch.zeros(2, 4), torch.ones(2, 4)).mean().item()
    2.0
    """
    if shift.dim() == 2:
        shift, scale = shift.unsqueeze(1), scale.unsqueeze(1)
    return x * (1 + scale) + shift


class Attention(nn.Module):
    """Multi-head (self- or cross-) attention through ``scaled_dot_product_attention``.

    Parameters
    ----------
    dim
        Width of the query tokens (also the inner and output width).
    n_heads
        Number of heads; must divide ``dim``.
    context_dim
        Width of the key/value tokens for cross-attention (``None``: same as ``dim``).
    inner_dim
        Width of queries, keys and values (``None``: ``dim``); a smaller one makes attention
        over a long context cheaper.
    dropout
        Attention dropout (training only).

    Examples
    --------
    >>> attn = Attention(16, n_heads=4, context_dim=8, inner_dim=8)
    >>> attn(torch.randn(2, 5, 16), context=torch.randn(2, 100, 8)).shape
    torch.Size([2, 5, 16])
    """

    def __init__(
        self,
        dim: int,
        n_heads: int,
        context_dim: int | None = None,
        inner_dim: int | None = None,
        dropout: float = 0.0,
    ):
        super().__init__()
        inner_dim = inner_dim or dim
        if inner_dim % n_heads:
            raise ValueError(f"`n_heads` ({n_heads}) must divide the width ({inner_dim}).")
        self.n_heads = n_heads
        self.inner_dim = inner_dim
        self.dropout = dropout
        self.to_q = nn.Linear(dim, inner_dim)
        self.to_kv = nn.Linear(context_dim or dim, 2 * inner_dim)
        self.to_out = nn.Linear(inner_dim, dim)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attend from ``x`` to ``context`` (or to ``x`` itself).

        Parameters
        ----------
        x
            Query tokens ``(batch, n, dim)``.
        context
            Key/value tokens ``(batch, m, context_dim)``; ``None`` for self-attention.
        key_padding_mask
            Optional ``(batch, m)`` boolean mask, ``True`` where a key may be attended to.

        Returns
        -------
        ``(batch, n, dim)``.
        """
        batch, n, _ = x.shape
        context = x if context is None else context
        heads, head_dim = self.n_heads, self.inner_dim // self.n_heads
        q = self.to_q(x).view(batch, n, heads, head_dim).transpose(1, 2)
        k, v = (
            self.to_kv(context)
            .view(batch, context.shape[1], 2, heads, head_dim)
            .permute(2, 0, 3, 1, 4)
            .unbind(0)
        )
        mask = None if key_padding_mask is None else key_padding_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )
        return self.to_out(out.transpose(1, 2).reshape(batch, n, self.inner_dim))


class AdaLNTransformerBlock(nn.Module):
    """Pre-norm transformer block whose layer norms are modulated by a conditioning vector.

    Each sub-layer (self-attention, cross-attention to ``context``, MLP) computes
    ``x = x + gate * sublayer(modulate(LayerNorm(x), shift, scale))`` with ``shift``, ``scale``
    and ``gate`` regressed from ``c``. The regression is zero-initialised (adaLN-Zero), so every
    block starts as the identity.

    Parameters
    ----------
    dim
        Token width.
    n_heads
        Attention heads.
    cond_dim
        Width of the conditioning vector ``c``.
    mlp_ratio
        Hidden width of the MLP relative to ``dim``; ``0`` drops the MLP sub-layer.
    dropout
        Dropout in attention and MLP.
    self_attention
        Include a self-attention sub-layer.
    context_dim
        Width of a context sequence to cross-attend to; ``None``: no cross-attention.
    attn_dim
        Inner width of the attention sub-layers (``None``: ``dim``).
    norm_context
        Layer-normalise the context before cross-attention (turn off for a long context of
        embeddings that need no normalisation: it saves a pass over the context).

    Examples
    --------
    >>> block = AdaLNTransformerBlock(32, n_heads=4, cond_dim=16)
    >>> block(torch.randn(2, 10, 32), torch.randn(2, 16)).shape
    torch.Size([2, 10, 32])
    >>> reader = AdaLNTransformerBlock(32, 4, 16, self_attention=False, context_dim=8)
    >>> reader(torch.randn(2, 4, 32), torch.randn(2, 16), context=torch.randn(2, 500, 8)).shape
    torch.Size([2, 4, 32])
    """

    def __init__(
        self,
        dim: int,
        n_heads: int,
        cond_dim: int,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        self_attention: bool = True,
        context_dim: int | None = None,
        attn_dim: int | None = None,
        norm_context: bool = True,
    ):
        super().__init__()
        self.sublayers = []
        if self_attention:
            self.norm_self = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
            self.self_attn = Attention(dim, n_heads, inner_dim=attn_dim, dropout=dropout)
            self.sublayers.append("self")
        if context_dim is not None:
            self.norm_cross = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
            self.norm_context = (
                nn.LayerNorm(context_dim, eps=1e-6) if norm_context else nn.Identity()
            )
            self.cross_attn = Attention(
                dim, n_heads, context_dim=context_dim, inner_dim=attn_dim, dropout=dropout
            )
            self.sublayers.append("cross")
        if mlp_ratio > 0:
            hidden = max(1, int(dim * mlp_ratio))
            self.norm_mlp = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
            self.mlp = nn.Sequential(
                nn.Linear(dim, hidden),
                nn.GELU(approximate="tanh"),
                nn.Dropout(dropout),
                nn.Linear(hidden, dim),
            )
            self.sublayers.append("mlp")
        if not self.sublayers:
            raise ValueError("A block needs at least one sub-layer.")
        self.modulation = nn.Sequential(
            nn.SiLU(), nn.Linear(cond_dim, 3 * dim * len(self.sublayers))
        )
        nn.init.zeros_(self.modulation[-1].weight)
        nn.init.zeros_(self.modulation[-1].bias)

    def forward(
        self,
        x: torch.Tensor,
        c: torch.Tensor,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Update the tokens.

        Parameters
        ----------
        x
            Tokens ``(batch, n, dim)``.
        c
            Conditioning ``(batch, cond_dim)`` or ``(batch, n, cond_dim)``.
        context
            Sequence to cross-attend to, ``(batch, m, context_dim)`` (required when the block
            was built with ``context_dim``).
        context_mask
            Optional ``(batch, m)`` boolean mask of attendable context tokens.

        Returns
        -------
        Updated tokens ``(batch, n, dim)``.
        """
        params = self.modulation(c).chunk(3 * len(self.sublayers), dim=-1)
        for i, name in enumerate(self.sublayers):
            shift, scale, gate = params[3 * i : 3 * i + 3]
            if gate.dim() == 2:
                gate = gate.unsqueeze(1)
            if name == "self":
                h = self.self_attn(modulate(self.norm_self(x), shift, scale))
            elif name == "cross":
                if context is None:
                    raise ValueError("This block cross-attends: pass `context`.")
                h = self.cross_attn(
                    modulate(self.norm_cross(x), shift, scale),
                    context=self.norm_context(context),
                    key_padding_mask=context_mask,
                )
            else:
                h = self.mlp(modulate(self.norm_mlp(x), shift, scale))
            x = x + gate * h
        return x


class AdaLNFinalLayer(nn.Module):
    """Output projection with an adaptive layer norm (DiT's final layer).

    Parameters
    ----------
    dim
        Token width.
    out_dim
        Output width per token.
    cond_dim
        Width of the conditioning vector.
    zero_init
        Zero-initialise the projection (the model then starts from its output bias).

    Examples
    --------
    >>> head = AdaLNFinalLayer(32, out_dim=7, cond_dim=16)
    >>> head(torch.randn(2, 10, 32), torch.randn(2, 16)).shape
    torch.Size([2, 10, 7])
    """

    def __init__(self, dim: int, out_dim: int, cond_dim: int, zero_init: bool = True):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, 2 * dim))
        self.linear = nn.Linear(dim, out_dim)
        nn.init.zeros_(self.modulation[-1].weight)
        nn.init.zeros_(self.modulation[-1].bias)
        if zero_init:
            nn.init.zeros_(self.linear.weight)
            nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Project ``(batch, n, dim)`` tokens to ``(batch, n, out_dim)``."""
        shift, scale = self.modulation(c).chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x), shift, scale))
