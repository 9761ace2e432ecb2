"""Reduced-precision inference of wide output layers (decoders onto all genes).

A decoder's last linear layer maps a few hundred hidden units onto every gene; at 10,000+
genes it is most of the cost of generating cells. Where the hardware multiplies bfloat16
natively (CPUs with AVX512-BF16 or AMX, CUDA GPUs with bf16 support) that product runs about
4x faster in bfloat16 with float32 accumulation. The logits then carry a relative error of
about 2^-9 per input, far below the sampling noise of the counts drawn from them; training
and every loss stay in float32.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import torch
from torch import nn

logger = logging.getLogger(__name__)

DecoderPrecision = Literal["auto", "float32", "bfloat16"]
DECODER_PRECISIONS: tuple[str, ...] = ("auto", "float32", "bfloat16")
_CACHE_ATTRIBUTE = "_scvi_gen_low_precision"


def native_bfloat16(device: torch.device | str) -> bool:
    """Whether ``device`` multiplies bfloat16 matrices natively (not by emulation).

    Parameters
    ----------
    device
        A torch device.

    Returns
    -------
    ``True`` for CUDA devices with bf16 support and CPUs with AVX512-BF16 or AMX tiles.

    Examples
    --------
    >>> native_bfloat16("meta")
    False
    """
    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    # torch exposes these CPU feature probes only as private helpers; absent means unknown.
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def resolve_decoder_precision(
    precision: DecoderPrecision, device: torch.device | str
) -> torch.dtype:
    """The dtype of a decoder's output layer at generation time.

    Parameters
    ----------
    precision
        ``"float32"``, ``"bfloat16"``, or ``"auto"`` (bfloat16 where the device computes it
        natively, float32 elsewhere).
    device
        Where the decoder runs.

    Returns
    -------
    ``torch.float32`` or ``torch.bfloat16``.

    Examples
    --------
    >>> resolve_decoder_precision("float32", "cpu")
    torch.float32
    """
    if precision not in DECODER_PRECISIONS:
        raise ValueError(
            f"Unknown decoder precision {precision!r}; use one of {list(DECODER_PRECISIONS)}."
        )
    if precision == "float32" or (precision == "auto" and not native_bfloat16(device)):
        return torch.float32
    return torch.bfloat16


def linear_in(layer: nn.Linear, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``layer(x)`` computed in ``dtype``, reusing one cast of the weights.

    The cast weights are cached on the layer and rebuilt whenever its parameters change
    (their version counter moves on every in-place update, e.g. an optimiser step or
    ``load_state_dict``).

    Parameters
    ----------
    layer
        The linear layer.
    x
        ``(n, in_features)`` inputs.
    dtype
        Compute dtype; ``torch.float32`` is a plain call.

    Returns
    -------
    ``(n, out_features)`` outputs in ``dtype``; a consumer such as :func:`torch.softmax`
    with ``dtype=torch.float32`` upcasts them on the fly, without another pass.

    Examples
    --------
    >>> layer = nn.Linear(4, 3)
    >>> linear_in(layer, torch.randn(2, 4), torch.bfloat16).dtype
    torch.bfloat16
    """
    if dtype == torch.float32:
        return layer(x)
    bias = layer.bias
    key = (
        dtype,
        layer.weight.device,
        layer.weight.data_ptr(),
        layer.weight._version,
        None if bias is None else bias._version,
    )
    cached = getattr(layer, _CACHE_ATTRIBUTE, None)
    if cached is None or cached[0] != key:
        with torch.no_grad():
            weight = layer.weight.detach().to(dtype)
            cast_bias = None if bias is None else bias.detach().to(dtype)
        cached = (key, weight, cast_bias)
        # A plain attribute, not a buffer: never saved, never moved by .to().
        object.__setattr__(layer, _CACHE_ATTRIBUTE, cached)
    _, weight, cast_bias = cached
    return nn.functional.linear(x.to(dtype), weight, cast_bias)


@contextmanager
def decoding_precision(module: nn.Module, dtype: torch.dtype) -> Iterator[None]:
    """Let ``module.decode`` use ``dtype`` for its output layer inside the block.

    Parameters
    ----------
    module
        A module whose ``decode`` reads ``module.decode_dtype``.
    dtype
        The output layer's compute dtype.

    Examples
    --------
    >>> m = nn.Module()
    >>> with decoding_precision(m, torch.bfloat16):
    ...     m.decode_dtype
    torch.bfloat16
    """
    before = getattr(module, "decode_dtype", torch.float32)
    module.decode_dtype = dtype
    try:
        yield
    finally:
        module.decode_dtype = before
