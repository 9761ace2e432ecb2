"""Masked autoregressive (MAF) layers from zuko, with block-autoregressive sampling.

Inverting a MAF layer (sampling) takes one network pass per autoregressive step: with one
step per gene that is 2,000 sequential passes at 2,000 genes. zuko's ``passes`` argument groups
the genes into ``passes`` consecutive blocks of the layer's ordering: genes within a block are
transformed in parallel (conditioned on all earlier blocks), so sampling costs ``passes``
network evaluations per layer instead of one per gene. ``passes=None`` keeps the fully
autoregressive flow. Different random gene orders per layer (``randperm=True``) put every pair
of genes in different blocks in some layer, which recovers most of the lost dependence.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial

import torch
from zuko.flows.autoregressive import MaskedAutoregressiveTransform
from zuko.flows.gaussianization import ElementWiseTransform
from zuko.transforms import MonotonicRQSTransform

logger = logging.getLogger(__name__)


def gene_orders(features: int, n_layers: int, randperm: bool, seed: int) -> list[torch.Tensor]:
    """Autoregressive orders of successive layers.

    Parameters
    ----------
    features
        Number of genes.
    n_layers
        Number of MAF layers.
    randperm
        Random permutations (seeded, so a model rebuilt on load has the same orders);
        otherwise alternate ascending / descending order.
    seed
        Seed of the permutations.

    Returns
    -------
    One order per layer.
    """
    if not randperm:
        ascending = torch.arange(features)
        return [ascending if i % 2 == 0 else ascending.flip(0) for i in range(n_layers)]
    generator = torch.Generator().manual_seed(seed)
    return [torch.randperm(features, generator=generator) for _ in range(n_layers)]


def maf_layer(
    features: int,
    context: int,
    order: torch.Tensor,
    hidden_features: Sequence[int],
    passes: int | None,
) -> MaskedAutoregressiveTransform:
    """One conditional MAF layer (affine, MADE conditioner).

    Parameters
    ----------
    features
        Number of genes.
    context
        Context dimension.
    order
        Autoregressive order of the genes.
    hidden_features
        Hidden sizes of the MADE network.
    passes
        Number of sequential blocks for sampling (``None``: one per gene).

    Returns
    -------
    A zuko lazy transform.
    """
    layer = MaskedAutoregressiveTransform(
        features=features,
        context=context,
        passes=passes,
        order=order,
        hidden_features=tuple(hidden_features),
    )
    # Zero output layer: shift 0 and log-scale 0, so every layer starts as the identity and a
    # deep flow starts from the standardised data's Gaussian fit instead of a random map.
    with torch.no_grad():
        layer.hyper[-1].weight.zero_()
        layer.hyper[-1].bias.zero_()
    return layer


def marginal_spline_layer(
    features: int,
    context: int,
    bins: int = 8,
    bound: float = 8.0,
    hidden_features: Sequence[int] = (),
) -> ElementWiseTransform:
    """Per-gene monotonic rational-quadratic spline, conditioned on the context only.

    Affine autoregressive layers make every conditional Gaussian-like, which cannot represent a
    gene's marginal in the dequantised space: a box of zeros (most of the mass for sparse genes)
    plus a tail of expressed values. This element-wise layer, applied first (on the data side),
    learns one monotonic spline per gene and context (cell type...), reshaping each marginal
    before the autoregressive layers model the dependencies. Its parameters are a linear
    function of the context (``context * genes * (3 * bins - 1)`` weights; the context already
    is a learned embedding, so with one label this is one spline per gene and label), or free
    parameters without context. It starts as the identity.

    Parameters
    ----------
    features
        Number of genes.
    context
        Context dimension (0: one spline per gene).
    bins
        Spline bins.
    bound
        The spline acts on ``[-bound, bound]`` (standardised units) and is the identity outside.
    hidden_features
        Hidden sizes of an MLP from context to spline parameters (empty: linear).

    Returns
    -------
    A zuko lazy transform.
    """
    layer = ElementWiseTransform(
        features,
        context,
        univariate=partial(MonotonicRQSTransform, bound=bound),
        shapes=((bins,), (bins,), (bins - 1,)),
        hidden_features=tuple(hidden_features),
    )
    with torch.no_grad():  # all-zero spline parameters give the identity map
        params = layer.hyper[-1].parameters() if context > 0 else layer.phi.parameters()
        for p in params:
            p.zero_()
    return layer


def maf_transforms(
    features: int,
    context: int,
    *,
    n_transforms: int = 4,
    hidden_features: Sequence[int] = (256, 256),
    passes: int | None = 16,
    randperm: bool = True,
    marginal_bins: int | None = 8,
    seed: int = 0,
) -> list[torch.nn.Module]:
    """Layers of a conditional masked autoregressive flow.

    Parameters
    ----------
    features
        Number of genes.
    context
        Context dimension.
    n_transforms
        Number of MAF layers.
    hidden_features
        Hidden sizes of each layer's MADE network.
    passes
        Sequential blocks per layer when sampling (``None``: fully autoregressive).
    randperm
        Random gene order per layer instead of alternating ascending / descending.
    marginal_bins
        Bins of the per-gene conditional spline applied first (:func:`marginal_spline_layer`);
        ``None`` or 0 leaves it out (a pure MAF).
    seed
        Seed of the random orders.

    Returns
    -------
    The layers, applied in order from data to noise.

    Examples
    --------
    >>> layers = maf_transforms(2000, 16, n_transforms=4, passes=16)
    """
    if n_transforms < 1:
        raise ValueError(f"`n_transforms` must be at least 1, got {n_transforms}.")
    orders = gene_orders(features, n_transforms, randperm, seed)
    layers = [maf_layer(features, context, order, hidden_features, passes) for order in orders]
    if marginal_bins:
        layers.insert(0, marginal_spline_layer(features, context, marginal_bins))
    return layers
