"""Plots: real vs synthetic cells in one embedding, metrics by generator, per-class F1."""

from ._benchmark import plot_metric_bars, plot_per_class_f1
from ._embedding import plot_real_vs_synthetic, real_vs_synthetic_embedding

__all__ = [
    "plot_metric_bars",
    "plot_per_class_f1",
    "plot_real_vs_synthetic",
    "real_vs_synthetic_embedding",
]
