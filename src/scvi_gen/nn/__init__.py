"""Reusable neural-network layers."""

from ._ema import EMACallback, ema_step
from ._embeddings import ConditionEmbedding, TimeEmbedding, sinusoidal_features
from ._mlp import MLP, ResidualBlock, ResNetMLP
from ._precision import (
    DecoderPrecision,
    decoding_precision,
    linear_in,
    native_bfloat16,
    resolve_decoder_precision,
)

__all__ = [
    "MLP",
    "ConditionEmbedding",
    "DecoderPrecision",
    "EMACallback",
    "ResNetMLP",
    "ResidualBlock",
    "TimeEmbedding",
    "decoding_precision",
    "ema_step",
    "linear_in",
    "native_bfloat16",
    "resolve_decoder_precision",
    "sinusoidal_features",
]
