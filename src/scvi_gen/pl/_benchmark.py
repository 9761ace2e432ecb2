"""Benchmark plots: metrics by generator and per-class F1 of downstream classifiers."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from scvi_gen._constants import FLOOR

logger = logging.getLogger(__name__)

_FLOOR_COLOUR = "0.6"


def _pyplot(path: str | Path | None):
    import matplotlib as mpl

    if path is not None:
        mpl.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path | None) -> None:
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
        logger.info("Saved %s", path)


def plot_metric_bars(
    results: pd.DataFrame,
    metrics: Sequence[str] | None = None,
    *,
    scope: str = "global",
    floor: str | None = FLOOR,
    n_cols: int = 4,
    path: str | Path | None = None,
    title: str = "",
):
    """One panel per metric, one bar per generator: mean over replicates with ±sd.

    Parameters
    ----------
    results
        Long table with columns ``generator``, ``metric``, ``scope`` and ``value`` (e.g.
        :func:`scvi_gen.benchmark.run_benchmark` results or ``run_train_test`` output).
    metrics
        Metrics to show, in order (default: all of ``scope``).
    scope
        Rows of this ``scope`` are plotted.
    floor
        Name of the real-vs-real floor in ``generator`` (drawn in grey, first); None if absent.
    n_cols
        Panels per row.
    path
        Where to save a PNG; ``None`` only returns the figure.
    title
        Figure title.

    Returns
    -------
    The matplotlib figure.

    Examples
    --------
    >>> fig = plot_metric_bars(run.results, ["c2st_auc", "mmd_rbf"], path="metrics.png")
    """
    plt = _pyplot(path)
    part = results[results["scope"] == scope]
    metrics = list(pd.unique(part["metric"])) if metrics is None else list(metrics)
    stats = part.groupby(["metric", "generator"], sort=False)["value"].agg(["mean", "std"])
    generators = [g for g in pd.unique(part["generator"]) if g != floor]
    if floor is not None and floor in set(part["generator"]):
        generators = [floor, *generators]
    cmap = plt.get_cmap("tab10")
    colours = [_FLOOR_COLOUR if g == floor else cmap(i % cmap.N) for i, g in enumerate(generators)]
    n_rows = max(1, math.ceil(len(metrics) / n_cols))
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(3.2 * n_cols, 2.8 * n_rows), squeeze=False)
    for ax, metric in zip(axes.ravel(), metrics):
        means = [_stat(stats, metric, g, "mean") for g in generators]
        sds = [_stat(stats, metric, g, "std") for g in generators]
        x = np.arange(len(generators))
        ax.bar(x, means, yerr=np.nan_to_num(sds), color=colours, capsize=2)
        ax.set_xticks(x, generators, rotation=45, ha="right", fontsize=7)
        ax.set_title(metric, fontsize=9)
    for ax in axes.ravel()[len(metrics) :]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    _save(fig, path)
    return fig


def _stat(stats: pd.DataFrame, metric: str, generator: str, column: str) -> float:
    try:
        return float(stats.loc[(metric, generator), column])
    except KeyError:
        return float("nan")


def plot_per_class_f1(
    f1: pd.DataFrame,
    *,
    order: Sequence[str] | None = None,
    rare: Sequence[str] = (),
    path: str | Path | None = None,
    title: str = "",
):
    """Grouped bars: the F1 of every class (x) for every classifier training set (colour).

    Parameters
    ----------
    f1
        Long table with columns ``label``, ``train_set`` and ``value`` (one row per replicate;
        bars show the mean and ±sd).
    order
        Classes in plotting order (default: as they appear); e.g. rarest first.
    rare
        Classes to mark with ``*`` (those the augmentation topped up).
    path
        Where to save a PNG; ``None`` only returns the figure.
    title
        Figure title.

    Returns
    -------
    The matplotlib figure.

    Examples
    --------
    >>> fig = plot_per_class_f1(f1_rows, rare=["DC", "Platelet"], path="per_class_f1.png")
    """
    plt = _pyplot(path)
    labels = list(pd.unique(f1["label"])) if order is None else list(order)
    sets = list(pd.unique(f1["train_set"]))
    stats = f1.groupby(["label", "train_set"], sort=False)["value"].agg(["mean", "std"])
    width = 0.8 / max(1, len(sets))
    cmap = plt.get_cmap("tab10" if len(sets) <= 10 else "tab20")
    width_in = max(6.0, 0.22 * len(labels) * max(1, len(sets))) + 3.0  # + legend
    fig, ax = plt.subplots(figsize=(min(width_in, 20.0), 4.8))
    x = np.arange(len(labels))
    for i, train_set in enumerate(sets):
        means = [_stat(stats, label, train_set, "mean") for label in labels]
        sds = [_stat(stats, label, train_set, "std") for label in labels]
        offset = (i - (len(sets) - 1) / 2) * width
        ax.bar(
            x + offset,
            means,
            width,
            yerr=np.nan_to_num(sds),
            capsize=1.5,
            color=cmap(i % cmap.N),
            label=train_set,
        )
    rare = set(rare)
    ax.set_xticks(
        x, [f"{label}*" if label in rare else label for label in labels], rotation=45, ha="right"
    )
    ax.set_ylabel("F1 on held-out cells")
    ax.set_ylim(0, 1.05)
    # Right of the axes: with several training sets a legend inside would hide bars.
    ax.legend(fontsize=7, frameon=False, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_title(title or "Per-class F1 (* = topped up by augmentation)", fontsize=10)
    _save(fig, path)
    return fig
