"""Plots: real vs synthetic cells in one embedding."""

from ._embedding import plot_real_vs_synthetic, real_vs_synthetic_embedding

__all__ = ["plot_real_vs_synthetic", "real_vs_synthetic_embedding"]
