"""Mixture-of-experts coupling layer with attention over gene-group tokens (MOE-FB, corrected).

The published MOE-FB applied "attention" to a length-1 sequence (a linear map) and multiplied
the data by a learnable mask outside any Jacobian term. Here:

* the layer is an affine **coupling**: genes are split into a conditioning half ``x_a`` (left
  unchanged) and a transformed half ``x_b``; ``y_b = x_b * exp(s) + t`` with ``(s, t)`` a
  function of ``x_a`` and the context, so the inverse and log-determinant (``sum(s)``) are
  exact;
* the conditioner cuts ``x_a`` into ``G`` gene groups, embeds each group as one token
  (``G`` tokens, ``G << genes``, so attention memory is ``O(G^2)`` not ``O(genes^2)``) and runs
  ``n_experts`` transformer blocks with real multi-head self-attention across the tokens;
* a per-cell softmax gate, computed from the cell's (masked) conditioner input and context,
  mixes the experts' token outputs;
* the learnable feature mask multiplies the conditioner's **input** only, so it changes what
  the conditioner sees, never the data, and the transformation stays a bijection.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from functools import partial

import torch
import torch.nn.functional as F
from torch import BoolTensor, Tensor, nn
from torch.distributions import Transform
from zuko.lazy import LazyTransform
from zuko.transforms import CouplingTransform, DependentTransform, MonotonicAffineTransform

from scvi_gen.model.flows._layers import ActNorm, AttentionExpert, GroupedLinear
from scvi_gen.model.flows._maf import gene_orders, maf_layer, marginal_spline_layer

logger = logging.getLogger(__name__)


class MixtureOfExpertsConditioner(nn.Module):
    """Shift and log-scale of ``x_b`` from ``x_a`` and the context, by gated attention experts.

    Parameters
    ----------
    in_features
        Size of the conditioning half ``x_a``.
    out_features
        Size of the transformed half ``x_b``.
    context
        Context dimension (0: unconditional).
    n_groups
        Number of gene-group tokens ``G`` (capped at ``in_features``).
    token_dim
        Token dimension (divisible by ``n_heads``).
    n_heads
        Attention heads per expert.
    n_experts
        Number of attention experts.
    gate_hidden
        Hidden units of the gating network.
    feature_mask
        Learn a soft mask (sigmoid, one value per gene of ``x_a``) on the conditioner input.

    Examples
    --------
    >>> cond = MixtureOfExpertsConditioner(10, 10, context=4, n_groups=5, token_dim=20)
    >>> shift, log_scale = cond(torch.randn(8, 10), torch.randn(8, 4))
    >>> cond.gate(torch.randn(8, 10), torch.randn(8, 4)).sum(-1)  # ones
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        context: int = 0,
        *,
        n_groups: int = 32,
        token_dim: int = 80,
        n_heads: int = 10,
        n_experts: int = 4,
        gate_hidden: int = 64,
        feature_mask: bool = True,
    ) -> None:
        super().__init__()
        if n_experts < 1:
            raise ValueError(f"`n_experts` must be at least 1, got {n_experts}.")
        self.in_features = in_features
        self.out_features = out_features
        self.n_groups = max(1, min(n_groups, in_features))
        self.group_in = math.ceil(in_features / self.n_groups)
        self.group_out = math.ceil(out_features / self.n_groups)
        self.mask_logits = nn.Parameter(torch.zeros(in_features)) if feature_mask else None
        self.tokenize = GroupedLinear(self.n_groups, self.group_in, token_dim)
        self.context_proj = nn.Linear(context, token_dim) if context else None
        self.experts = nn.ModuleList(AttentionExpert(token_dim, n_heads) for _ in range(n_experts))
        self.gate_net = nn.Sequential(
            nn.Linear(in_features + context, gate_hidden),
            nn.ReLU(),
            nn.Linear(gate_hidden, n_experts),
        )
        self.norm = nn.LayerNorm(token_dim)
        # Zero-initialised head: the coupling starts as the identity, which keeps the first
        # steps of training stable however deep the flow.
        self.head = GroupedLinear(self.n_groups, token_dim, 2 * self.group_out, zero_init=True)

    def feature_mask(self) -> Tensor | None:
        """The soft mask in ``(0, 1)`` applied to the conditioner input (``None`` if disabled)."""
        return None if self.mask_logits is None else torch.sigmoid(self.mask_logits)

    def _masked(self, x_a: Tensor) -> Tensor:
        mask = self.feature_mask()
        return x_a if mask is None else x_a * mask

    def _gate_logits(self, h: Tensor, c: Tensor | None) -> Tensor:
        gate_input = h if c is None else torch.cat([h, c], dim=-1)
        return self.gate_net(gate_input)

    def gate(self, x_a: Tensor, c: Tensor | None = None) -> Tensor:
        """Per-cell expert weights ``(n, n_experts)`` (softmax: each row sums to 1)."""
        return torch.softmax(self._gate_logits(self._masked(x_a), c), dim=-1)

    def tokens(self, h: Tensor, c: Tensor | None) -> Tensor:
        """Gene-group tokens ``(n, G, token_dim)`` of the masked input ``h``."""
        pad = self.n_groups * self.group_in - self.in_features
        grouped = F.pad(h, (0, pad)).unflatten(-1, (self.n_groups, self.group_in))
        tokens = self.tokenize(grouped)
        if self.context_proj is not None and c is not None:
            tokens = tokens + self.context_proj(c).unsqueeze(-2)
        return tokens

    def forward(self, x_a: Tensor, c: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Shift and unconstrained log-scale, each ``(n, out_features)``."""
        h = self._masked(x_a)
        tokens = self.tokens(h, c)
        weights = torch.softmax(self._gate_logits(h, c), dim=-1)
        expert_out = torch.stack([expert(tokens) for expert in self.experts], dim=-3)
        mixed = (weights[..., :, None, None] * expert_out).sum(dim=-3)
        params = self.head(self.norm(mixed)).unflatten(-1, (self.group_out, 2))
        params = params.flatten(-3, -2)[..., : self.out_features, :]
        return params[..., 0], params[..., 1]


class MoECoupling(LazyTransform):
    """Affine coupling layer whose conditioner is a :class:`MixtureOfExpertsConditioner`.

    Parameters
    ----------
    mask
        Boolean ``(features,)``: ``True`` for the conditioning half (unchanged), ``False``
        for the transformed half.
    context
        Context dimension.
    **conditioner_kwargs
        Passed to :class:`MixtureOfExpertsConditioner`.

    Examples
    --------
    >>> layer = MoECoupling(torch.arange(6) % 2 == 0, context=3, n_groups=3, token_dim=20)
    >>> t = layer(torch.randn(5, 3))
    >>> x = torch.randn(5, 6)
    >>> torch.allclose(t.inv(t(x)), x, atol=1e-5)
    True
    """

    def __init__(self, mask: BoolTensor, context: int = 0, **conditioner_kwargs) -> None:
        super().__init__()
        mask = torch.as_tensor(mask, dtype=torch.bool)
        n_a = int(mask.sum())
        if n_a == 0 or n_a == mask.numel():
            raise ValueError("The coupling mask must keep at least one feature on each side.")
        self.register_buffer("mask", mask)
        self.conditioner = MixtureOfExpertsConditioner(
            n_a, mask.numel() - n_a, context, **conditioner_kwargs
        )

    def meta(self, c: Tensor | None, x_a: Tensor) -> Transform:
        """The element-wise affine map of ``x_b`` given ``x_a`` and the context."""
        shift, log_scale = self.conditioner(x_a, c)
        return DependentTransform(MonotonicAffineTransform(shift, log_scale), 1)

    def forward(self, c: Tensor | None = None) -> Transform:
        """The coupling transformation for context ``c``."""
        return CouplingTransform(partial(self.meta, c), self.mask)


def coupling_mask(features: int, parity: int) -> BoolTensor:
    """Interleaved split: genes with ``index % 2 == parity`` condition the others."""
    return torch.arange(features) % 2 == parity


def moe_transforms(
    features: int,
    context: int,
    *,
    n_blocks: int = 2,
    hidden_features: Sequence[int] = (256, 256),
    passes: int | None = 16,
    randperm: bool = True,
    act_norm: bool = False,
    n_experts: int = 4,
    n_heads: int = 10,
    n_groups: int = 32,
    token_dim: int = 80,
    gate_hidden: int = 64,
    feature_mask: bool = True,
    marginal_bins: int | None = 8,
    seed: int = 0,
) -> list[LazyTransform]:
    """Layers of the MOE flow: per block ``[ActNorm] -> MoE coupling -> [ActNorm] -> MAF``.

    Successive blocks swap the coupling halves, so every gene is transformed by some coupling
    layer. With ``marginal_bins``, a per-gene conditional spline comes first (see
    :func:`~scvi_gen.model.flows.marginal_spline_layer`).

    Parameters
    ----------
    features
        Number of genes.
    context
        Context dimension.
    n_blocks
        Number of blocks.
    hidden_features
        Hidden sizes of each MAF layer's MADE network.
    passes
        Sequential blocks per MAF layer when sampling (``None``: fully autoregressive).
    randperm
        Random gene order per MAF layer.
    act_norm
        Insert data-initialised ActNorm layers before the coupling and the MAF layer.
    n_experts, n_heads, n_groups, token_dim, gate_hidden, feature_mask
        Passed to :class:`MixtureOfExpertsConditioner`.
    marginal_bins
        Bins of the leading per-gene spline (``None`` or 0: none).
    seed
        Seed of the MAF gene orders.

    Returns
    -------
    The layers, applied in order from data to noise.

    Examples
    --------
    >>> layers = moe_transforms(2000, 16, n_blocks=2, act_norm=True)
    """
    if n_blocks < 1:
        raise ValueError(f"`n_blocks` must be at least 1, got {n_blocks}.")
    if features < 2:
        raise ValueError(
            f"MOEFlow's coupling layers split the genes in two halves, so it needs at least 2 "
            f"genes, got {features}. Train on 2 or more genes, or use MAFFlow for one gene."
        )
    orders = gene_orders(features, n_blocks, randperm, seed)
    layers: list[LazyTransform] = []
    if marginal_bins:
        layers.append(marginal_spline_layer(features, context, marginal_bins))
    for i, order in enumerate(orders):
        if act_norm:
            layers.append(ActNorm(features))
        layers.append(
            MoECoupling(
                coupling_mask(features, i % 2),
                context,
                n_groups=n_groups,
                token_dim=token_dim,
                n_heads=n_heads,
                n_experts=n_experts,
                gate_hidden=gate_hidden,
                feature_mask=feature_mask,
            )
        )
        if act_norm:
            layers.append(ActNorm(features))
        layers.append(maf_layer(features, context, order, hidden_features, passes))
    return layers
