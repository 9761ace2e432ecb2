"""Reusable neural-network layers."""

from ._embeddings import ConditionEmbedding, TimeEmbedding, sinusoidal_features
from ._mlp import MLP, ResidualBlock, ResNetMLP

__all__ = [
    "MLP",
    "ConditionEmbedding",
    "ResNetMLP",
    "ResidualBlock",
    "TimeEmbedding",
    "sinusoidal_features",
]
