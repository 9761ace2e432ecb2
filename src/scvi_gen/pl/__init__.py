"""Plots: real vs synthetic cells in one embedding, metrics by generator, per-class F1, paths."""

from ._benchmark import plot_metric_bars, plot_per_class_f1
from ._embedding import plot_real_vs_synthetic, real_vs_synthetic_embedding
from ._interpolation import interpolation

__all__ = [
    "interpolation",
    "plot_metric_bars",
    "plot_per_class_f1",
    "plot_real_vs_synthetic",
    "real_vs_synthetic_embedding",
]
