"""Reusable normalizing-flow layers: ActNorm, element-wise affine maps, attention experts."""

from __future__ import annotations

import logging
import math

import torch
from torch import Tensor, nn
from torch.distributions import Transform, constraints
from zuko.lazy import LazyTransform

logger = logging.getLogger(__name__)


class ElementwiseAffineTransform(Transform):
    """Bijection ``y = x * exp(log_scale) + shift`` applied to every feature of a vector.

    Parameters
    ----------
    shift
        ``(features,)`` shifts.
    log_scale
        ``(features,)`` log scales.

    Examples
    --------
    >>> t = ElementwiseAffineTransform(torch.zeros(3), torch.ones(3))
    >>> t.inv(t(torch.ones(2, 3)))
    tensor([[1., 1., 1.],
            [1., 1., 1.]])
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, shift: Tensor, log_scale: Tensor) -> None:
        super().__init__()
        self.shift = shift
        self.log_scale = log_scale

    def _call(self, x: Tensor) -> Tensor:
        return x * self.log_scale.exp() + self.shift

    def _inverse(self, y: Tensor) -> Tensor:
        return (y - self.shift) * torch.exp(-self.log_scale)

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        """Log-determinant, one value per vector: ``sum(log_scale)``."""
        return self.log_scale.sum().expand(x.shape[:-1])


class ActNorm(LazyTransform):
    """Activation normalisation (Glow) with data-dependent initialisation.

    A learned per-feature affine map. When :meth:`initialize` is called (before training, on
    a sample of the training cells, see :func:`~scvi_gen.model.flows.fit_module_state`), shift
    and scale are set so that these cells leave the layer with zero mean and unit variance per
    feature; afterwards both are ordinary parameters. The ``initialized`` flag is a buffer, so a saved
    model is never re-initialised.

    Parameters
    ----------
    features
        Number of features.
    eps
        Floor on the standard deviation used at initialisation.

    Examples
    --------
    >>> layer = ActNorm(4)
    >>> x = torch.randn(64, 4) * 3 + 1
    >>> layer.initialize(x)
    >>> y = layer()(x)
    >>> bool(y.mean(0).abs().max() < 1e-5)
    True
    """

    def __init__(self, features: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.shift = nn.Parameter(torch.zeros(features))
        self.log_scale = nn.Parameter(torch.zeros(features))
        self.register_buffer("initialized", torch.tensor(False))

    def forward(self, c: Tensor | None = None) -> Transform:
        """The affine transformation (unconditional: ``c`` is ignored)."""
        return ElementwiseAffineTransform(self.shift, self.log_scale)

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        """Set shift and scale so that ``x`` is mapped to zero mean and unit variance.

        Parameters
        ----------
        x
            ``(n, features)`` inputs arriving at this layer (a sample of training cells).
        """
        mean = x.mean(dim=0)
        std = x.std(dim=0, unbiased=False).clamp_min(self.eps)
        self.log_scale.copy_(-std.log())
        self.shift.copy_(-mean / std)
        self.initialized.fill_(True)


class GroupedLinear(nn.Module):
    """One independent linear map per group: ``(n, groups, in) -> (n, groups, out)``.

    Used to turn groups of genes into tokens and tokens back into per-gene parameters without
    a dense genes x genes weight.

    Parameters
    ----------
    n_groups
        Number of groups.
    in_features
        Input features per group.
    out_features
        Output features per group.
    zero_init
        Start from a zero map (so a coupling layer starts as the identity).
    """

    def __init__(
        self, n_groups: int, in_features: int, out_features: int, zero_init: bool = False
    ) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(in_features)
        weight = torch.empty(n_groups, in_features, out_features).uniform_(-bound, bound)
        self.weight = nn.Parameter(torch.zeros_like(weight) if zero_init else weight)
        self.bias = nn.Parameter(torch.zeros(n_groups, out_features))

    def forward(self, x: Tensor) -> Tensor:
        """Apply the per-group maps to ``x`` of shape ``(..., groups, in_features)``."""
        return torch.einsum("...gi,gio->...go", x, self.weight) + self.bias


class AttentionExpert(nn.Module):
    """A pre-norm transformer block: multi-head self-attention over tokens, then an MLP.

    Parameters
    ----------
    token_dim
        Token dimension (divisible by ``n_heads``).
    n_heads
        Attention heads.
    ff_mult
        Width of the MLP relative to ``token_dim``.
    dropout
        Dropout on attention weights and MLP.

    Examples
    --------
    >>> expert = AttentionExpert(token_dim=20, n_heads=10)
    >>> expert(torch.randn(8, 5, 20)).shape
    torch.Size([8, 5, 20])
    """

    def __init__(
        self, token_dim: int, n_heads: int, ff_mult: int = 2, dropout: float = 0.0
    ) -> None:
        super().__init__()
        if token_dim % n_heads:
            raise ValueError(f"token_dim ({token_dim}) must be divisible by n_heads ({n_heads}).")
        self.norm_attn = nn.LayerNorm(token_dim)
        self.attention = nn.MultiheadAttention(
            token_dim, n_heads, dropout=dropout, batch_first=True
        )
        self.norm_ff = nn.LayerNorm(token_dim)
        self.feed_forward = nn.Sequential(
            nn.Linear(token_dim, ff_mult * token_dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(ff_mult * token_dim, token_dim),
        )

    def forward(self, tokens: Tensor) -> Tensor:
        """Self-attention across the token axis of ``tokens`` ``(n, n_tokens, token_dim)``."""
        h = self.norm_attn(tokens)
        attended, _ = self.attention(h, h, h, need_weights=False)
        tokens = tokens + attended
        return tokens + self.feed_forward(self.norm_ff(tokens))
