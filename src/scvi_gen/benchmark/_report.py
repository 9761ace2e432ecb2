"""The report of a benchmark run: ``summary.md`` with mean ± sd tables and PNG plots."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from scvi_gen._constants import FLOOR
from scvi_gen.benchmark._downstream import AUGMENTED, OVERSAMPLED, REAL, SYNTHETIC_ONLY
from scvi_gen.benchmark._protocol import CONFIG_FILE, BenchmarkConfig, replicate_keys
from scvi_gen.benchmark._runner import RESULTS_FILE, collect_results, synthetic_path
from scvi_gen.benchmark._tables import markdown_table
from scvi_gen.benchmark._train_test import floor_ratios
from scvi_gen.metrics import HIGHER_IS_BETTER

logger = logging.getLogger(__name__)

SUMMARY_FILE = "summary.md"
METRICS_PNG = "metrics.png"
PER_CLASS_PNG = "per_class_f1.png"
#: Metrics of the metric-by-generator chart (those present are drawn).
CHART_METRICS = (
    "c2st_auc",
    "mmd_rbf",
    "energy_distance",
    "wasserstein_2",
    "prdc_precision",
    "prdc_recall",
    "prdc_coverage",
    "gene_mean_corr",
    "gene_var_corr",
    "gene_corr_error",
    "knn_label_accuracy",
    "de_logfc_corr",
)
_DOWNSTREAM_METRICS = ("accuracy", "macro_f1", "rare_macro_f1")


def mean_sd_table(
    rows: pd.DataFrame, index: str, columns: str, higher_is_better: dict[str, bool] | None = None
) -> pd.DataFrame:
    """``"mean ± sd"`` over replicates with the best entry of every column in bold.

    Parameters
    ----------
    rows
        Long table with ``index``, ``columns`` and ``value`` columns.
    index
        Column giving the table rows (e.g. ``generator``).
    columns
        Column giving the table columns (e.g. ``metric``).
    higher_is_better
        Direction per table column; columns without one get no mark. Rows named
        :data:`~scvi_gen.benchmark.FLOOR` are a reference and never marked.

    Returns
    -------
    The formatted table (index: ``index`` values in order of appearance).

    Examples
    --------
    >>> mean_sd_table(results[results.scope == "global"], "generator", "metric", HIGHER_IS_BETTER)
    """
    stats = rows.groupby([index, columns], sort=False)["value"].agg(["mean", "std"])
    mean = stats["mean"].unstack(columns)
    sd = stats["std"].unstack(columns).fillna(0.0)
    order_rows = list(pd.unique(rows[index]))
    if FLOOR in order_rows:  # the reference first
        order_rows = [FLOOR] + [r for r in order_rows if r != FLOOR]
    order_cols = list(pd.unique(rows[columns]))
    mean = mean.reindex(index=order_rows, columns=order_cols)
    sd = sd.reindex(index=order_rows, columns=order_cols)
    table = mean.copy().astype(object)
    for col in order_cols:
        direction = (higher_is_better or {}).get(col)
        candidates = mean[col].drop(FLOOR, errors="ignore").dropna()
        best = None
        if direction is not None and len(candidates) > 1:
            best = candidates.idxmax() if direction else candidates.idxmin()
        for row in order_rows:
            m, s = mean.at[row, col], sd.at[row, col]
            text = "" if pd.isna(m) else f"{m:.4g} ± {s:.2g}"
            table.at[row, col] = f"**{text}**" if row == best and text else text
    table.index.name = index
    table.columns.name = None
    return table


def write_report(
    out_dir: str | Path,
    *,
    config: BenchmarkConfig | None = None,
    results: pd.DataFrame | None = None,
    plots: bool = True,
) -> Path:
    """Write ``summary.md`` (and, with ``plots``, the PNGs) of a run directory.

    Parameters
    ----------
    out_dir
        Run directory of :func:`~scvi_gen.benchmark.run_benchmark`.
    config
        Its settings (read from ``config.json`` when None).
    results
        Its results (collected from the cell files when None).
    plots
        Draw ``metrics.png``, ``per_class_f1.png`` and one ``embedding_<generator>.png`` each.

    Returns
    -------
    Path of ``summary.md``.

    Examples
    --------
    >>> write_report("runs/pbmc3k")
    """
    out = Path(out_dir)
    config = config or BenchmarkConfig.load(out / CONFIG_FILE)
    results = collect_results(out, config) if results is None else results
    figures = _draw_plots(out, config, results) if plots else []
    sections = [
        _header(config, results),
        _distribution_sections(results),
        _downstream_sections(results, config),
        _plan_section(results),
        _time_section(results),
        _figure_section(figures),
        _settings_section(config),
    ]
    path = out / SUMMARY_FILE
    path.write_text("\n".join(s for s in sections if s))
    logger.info("Wrote %s", path)
    return path


def _header(config: BenchmarkConfig, results: pd.DataFrame) -> str:
    n_rep = len(replicate_keys(config))
    scheme = (
        f"stratified train/test split ({config.test_size:.0%} held out) per seed"
        if config.split == "train-test"
        else f"stratified {config.n_folds}-fold cross-validation per seed"
    )
    return (
        f"# Benchmark: {', '.join(config.generators)} on {config.dataset}\n\n"
        f"Protocol: {scheme}; seeds {config.seeds} ({n_rep} replicates); "
        f"{config.n_top_genes or 'all'} seurat_v3 HVGs of the training counts; evaluation in "
        f"PCA({config.n_pcs}) of log1p(CP10k) fitted on the real training cells. Generators see "
        "the training cells only. Distribution metrics compare test-matched synthetic cells "
        "with the held-out real cells; `floor` scores a real held-out half against the other "
        "half the same way. Augmentation tops every class up to the "
        f"{config.quantile:.0%} quantile of the training class sizes. Numbers are mean ± sd "
        "over replicates; the best generator per column is in bold. Every number is in "
        f"`{RESULTS_FILE}`.\n"
    )


def _distribution_sections(results: pd.DataFrame) -> str:
    parts = []
    for scope, title in (("global", "all cells"), ("per_label_mean", "mean over labels")):
        rows = results[results["scope"] == scope]
        if rows.empty:
            continue
        table = mean_sd_table(rows, "generator", "metric", HIGHER_IS_BETTER)
        parts += [f"## Distribution metrics ({title})\n", markdown_table(table, index=True)]
    ratios = floor_ratios(results, "global")
    if not ratios.empty:
        table = mean_sd_table(ratios.assign(value=ratios["ratio"]), "generator", "metric")
        parts += [
            "## Ratio to the real-vs-real floor (all cells)\n",
            "Each replicate's value divided by its floor; 1 = as good as real held-out cells.\n",
            markdown_table(table, index=True),
        ]
    return "\n".join(parts)


def _train_set_name(generator: str, train_set: str) -> str:
    names = {REAL: "real", OVERSAMPLED: "real + random oversampling"}
    if train_set in names:
        return names[train_set]
    if train_set == AUGMENTED:
        return f"real + {generator}"
    if train_set == SYNTHETIC_ONLY:
        return f"{generator} only (train on synthetic)"
    return f"{generator}: {train_set}"


def _downstream_rows(results: pd.DataFrame) -> pd.DataFrame:
    rows = results[results["scope"] == "downstream"].copy()
    rows["training set"] = [
        _train_set_name(g, t) for g, t in zip(rows["generator"], rows["train_set"])
    ]
    order = {REAL: 0, OVERSAMPLED: 1, AUGMENTED: 2, SYNTHETIC_ONLY: 3}
    rows["_order"] = rows["train_set"].map(order)
    return rows.sort_values("_order", kind="stable").drop(columns="_order")


def _downstream_sections(results: pd.DataFrame, config: BenchmarkConfig) -> str:
    rows = _downstream_rows(results)
    if rows.empty:
        return ""
    parts = [
        "## Downstream classification (held-out real cells)\n",
        "Classifiers on the common-space PCs. `rare_macro_f1` averages the classes the "
        "augmentation topped up. The oversampling control adds as many re-drawn real cells per "
        "class as the generator adds synthetic ones.\n",
    ]
    higher = dict.fromkeys(_DOWNSTREAM_METRICS, True)
    for classifier in config.classifiers:
        part = rows[(rows["classifier"] == classifier) & rows["metric"].isin(_DOWNSTREAM_METRICS)]
        if part.empty:
            continue
        table = mean_sd_table(part, "training set", "metric", higher)
        parts += [f"### {classifier}\n", markdown_table(table, index=True)]
    parts.append(_per_class_section(results, rows, config.classifiers[0]))
    return "\n".join(parts)


def _plan_counts(results: pd.DataFrame) -> pd.DataFrame:
    plan = results[results["scope"] == "plan"]
    if plan.empty:
        return pd.DataFrame()
    counts = plan.groupby(["label", "metric"])["value"].mean().unstack("metric")
    return counts.sort_values("n_train")


def _per_class_section(results: pd.DataFrame, rows: pd.DataFrame, classifier: str) -> str:
    f1 = rows[(rows["classifier"] == classifier) & (rows["metric"] == "f1")]
    if f1.empty:
        return ""
    table = f1.groupby(["label", "training set"], sort=False)["value"].mean().unstack()
    table = table[list(pd.unique(f1["training set"]))]
    counts = _plan_counts(results)
    if not counts.empty:
        table = table.reindex([c for c in counts.index if c in table.index])
        table.insert(0, "n_added", counts["n_added"].reindex(table.index).round(1))
        table.insert(0, "n_train", counts["n_train"].reindex(table.index).round(1))
    table.index = [f"{label}*" if _is_rare(counts, label) else label for label in table.index]
    table.index.name = "class"
    return (
        f"### Per-class F1 ({classifier}, mean over replicates; rarest first; * = topped up)\n\n"
        + markdown_table(table, digits=3, index=True)
    )


def _is_rare(counts: pd.DataFrame, label: str) -> bool:
    return not counts.empty and label in counts.index and counts.at[label, "n_added"] > 0


def _plan_section(results: pd.DataFrame) -> str:
    counts = _plan_counts(results)
    if counts.empty:
        return ""
    counts = counts.assign(n_augmented=counts["n_train"] + counts["n_added"]).round(1)
    counts = counts[["n_train", "n_test", "n_added", "n_augmented"]]
    counts.index.name = "class"
    return (
        "## Augmentation plan (mean over replicates)\n\n"
        "Training and held-out cells per class, the synthetic cells added and the class size "
        "after augmentation (every class below the Q3 of the training class sizes is topped "
        "up to it).\n\n" + markdown_table(counts, index=True)
    )


def _time_section(results: pd.DataFrame) -> str:
    rows = results[results["scope"] == "time"]
    if rows.empty:
        return ""
    table = mean_sd_table(
        rows, "generator", "metric", dict.fromkeys(pd.unique(rows.metric), False)
    )
    return "## Seconds per replicate\n\n" + markdown_table(table, index=True)


def _figure_section(figures: list[Path]) -> str:
    if not figures:
        return ""
    return "## Figures\n\n" + "".join(f"![{p.stem}]({p.name})\n\n" for p in figures)


def _settings_section(config: BenchmarkConfig) -> str:
    settings = json.dumps(config.resolved().overrides, indent=1)
    return (
        "## Generator settings\n\nRepeat this run with "
        f"`scvi-gen benchmark --config {CONFIG_FILE}`.\n\n```json\n{settings}\n```\n"
    )


def _draw_plots(out: Path, config: BenchmarkConfig, results: pd.DataFrame) -> list[Path]:
    import matplotlib.pyplot as plt

    from scvi_gen.pl import plot_metric_bars, plot_per_class_f1

    figures = []
    present = [m for m in CHART_METRICS if m in set(results["metric"])]
    if present:
        fig = plot_metric_bars(
            results, present, path=out / METRICS_PNG, title="Metrics by generator (all cells)"
        )
        plt.close(fig)
        figures.append(out / METRICS_PNG)
    rows = _downstream_rows(results)
    first = config.classifiers[0] if config.classifiers else None
    f1 = rows[(rows["metric"] == "f1") & (rows["classifier"] == first)]
    if not f1.empty:
        counts = _plan_counts(results)
        order = [c for c in counts.index if c in set(f1["label"])] if not counts.empty else None
        rare = [c for c in counts.index if _is_rare(counts, c)] if not counts.empty else []
        fig = plot_per_class_f1(
            f1.assign(train_set=f1["training set"]),
            order=order,
            rare=rare,
            path=out / PER_CLASS_PNG,
            title=f"Per-class F1 on held-out cells ({first}; * = topped up)",
        )
        plt.close(fig)
        figures.append(out / PER_CLASS_PNG)
    figures += _embedding_plots(out, config)
    return figures


def _embedding_plots(out: Path, config: BenchmarkConfig) -> list[Path]:
    """Real held-out vs synthetic cells of the first replicate, one UMAP per generator."""
    import anndata as ad
    import matplotlib.pyplot as plt

    from scvi_gen.benchmark._protocol import iter_replicates, load_dataset
    from scvi_gen.metrics import CommonSpace
    from scvi_gen.pl import plot_real_vs_synthetic, real_vs_synthetic_embedding

    first = replicate_keys(config)[0]
    saved = {g: synthetic_path(out, g, *first) for g in config.generators}
    saved = {g: p for g, p in saved.items() if p.exists()}
    if not saved:
        return []
    replicate = next(iter_replicates(load_dataset(config.dataset), config, only=[first]))
    space = CommonSpace(n_hvg=replicate.train.n_vars, n_pcs=config.n_pcs, seed=replicate.seed).fit(
        replicate.train
    )
    figures = []
    for name, path in saved.items():
        emb = real_vs_synthetic_embedding(
            replicate.train,
            replicate.test,
            ad.read_h5ad(path),
            config.labels_key,
            space=space,
            seed=replicate.seed,
        )
        png = out / f"embedding_{name}.png"
        fig = plot_real_vs_synthetic(
            emb,
            config.labels_key,
            path=png,
            title=f"{name}: real held-out vs synthetic ({replicate.key})",
        )
        plt.close(fig)
        figures.append(png)
    return figures
