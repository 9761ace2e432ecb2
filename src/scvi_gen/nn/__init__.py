"""Reusable neural-network layers."""

from ._ema import EMACallback, ema_step
from ._embeddings import ConditionEmbedding, TimeEmbedding, sinusoidal_features
from ._mlp import MLP, ResidualBlock, ResNetMLP

__all__ = [
    "MLP",
    "ConditionEmbedding",
    "EMACallback",
    "ResNetMLP",
    "ResidualBlock",
    "TimeEmbedding",
    "ema_step",
    "sinusoidal_features",
]
