"""Train/test protocol: train each generator on the training split, score test-matched cells."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from scvi_gen import datasets
from scvi_gen._constants import FLOOR
from scvi_gen.metrics import CommonSpace, evaluate
from scvi_gen.model._registry import get_generator

logger = logging.getLogger(__name__)


@dataclass
class TrainTestConfig:
    """Settings of a train/test quality run.

    Attributes
    ----------
    labels_key
        ``obs`` column with labels; cells without a label are dropped.
    test_size
        Fraction of each label held out.
    n_top_genes
        seurat_v3 HVGs of the training counts that generators model (0: all genes).
    n_pcs
        PCs of the evaluation space.
    overrides
        Per generator ``{"init": {...}, "train": {...}}`` on top of the registry defaults.
    """

    labels_key: str = "cell_type"
    test_size: float = 0.25
    n_top_genes: int = 2000
    n_pcs: int = 30
    overrides: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)


def drop_unlabelled(adata: ad.AnnData, labels_key: str) -> ad.AnnData:
    """Copy of ``adata`` without cells whose label is missing, unused categories removed.

    Parameters
    ----------
    adata
        Cells with a label column (never modified).
    labels_key
        Column of ``adata.obs`` holding the labels.

    Returns
    -------
    The labelled cells; their label column is categorical with only used categories.

    Examples
    --------
    >>> labelled = drop_unlabelled(adata, "cell_type")
    """
    keep = adata.obs[labels_key].notna().to_numpy()
    out = adata[keep].copy()
    out.obs[labels_key] = out.obs[labels_key].astype("category").cat.remove_unused_categories()
    return out


def restrict_to_hvgs(
    train: ad.AnnData, test: ad.AnnData, n_top_genes: int
) -> tuple[ad.AnnData, ad.AnnData]:
    """Keep the ``n_top_genes`` seurat_v3 HVGs of the training counts in both sets (0: all)."""
    from scvi_gen._demo import select_hvgs

    if not n_top_genes:
        return train, test
    genes = select_hvgs(train, n_top_genes)
    return train[:, genes].copy(), test[:, genes].copy()


def split_for_seed(
    adata: ad.AnnData, config: TrainTestConfig, seed: int
) -> tuple[ad.AnnData, ad.AnnData]:
    """The protocol's split of one seed: stratified train/test, then the training HVGs.

    Parameters
    ----------
    adata
        Labelled cells (see :func:`drop_unlabelled`).
    config
        ``labels_key``, ``test_size`` and ``n_top_genes`` (0 keeps every gene).
    seed
        Seed of the split.

    Returns
    -------
    Training and test cells (copies), restricted to the same genes.

    Examples
    --------
    >>> train, test = split_for_seed(adata, TrainTestConfig(), seed=0)
    """
    train, test = datasets.train_test_split(
        adata, labels_key=config.labels_key, test_size=config.test_size, seed=seed
    )
    return restrict_to_hvgs(train, test, config.n_top_genes)


def generator_settings(name: str, config: TrainTestConfig) -> dict[str, Any]:
    """The registry's settings of generator ``name`` with the config's overrides applied.

    Parameters
    ----------
    name
        Registered generator name.
    config
        Protocol settings; ``config.overrides[name]`` may hold ``init``, ``train`` and
        ``setup`` dictionaries.

    Returns
    -------
    ``{"target", "init", "train", "setup"}``: what :func:`train_generator` uses.
    """
    spec = get_generator(name)
    override = config.overrides.get(name, {})
    unknown = sorted(set(override) - {"target", "init", "train", "setup"})
    if unknown:
        raise ValueError(
            f"Overrides of {name!r} have unknown sections {unknown}; use init, train, setup."
        )
    if override.get("target", spec.target) != spec.target:
        raise ValueError(
            f"Settings of {name!r} name class {override['target']!r} but the registry has "
            f"{spec.target!r}."
        )
    return {
        "target": spec.target,
        "init": {**spec.init_kwargs, **override.get("init", {})},
        "train": {**spec.train_kwargs, **override.get("train", {})},
        "setup": {**spec.setup_kwargs, **override.get("setup", {})},
    }


def train_generator(
    name: str, train: ad.AnnData, config: TrainTestConfig, seed: int
) -> tuple[Any, float]:
    """Set up, build and train generator ``name`` on a copy of ``train``.

    Parameters
    ----------
    name
        Registered generator name (a key of ``scvi_gen.model.GENERATORS``).
    train
        Training cells (never modified: registration works on a copy).
    config
        Protocol settings, including per-generator overrides.
    seed
        scvi-tools' global seed for the training.

    Returns
    -------
    The trained model and the seconds spent training.

    Examples
    --------
    >>> model, seconds = train_generator("cfgen", train, TrainTestConfig(), seed=0)
    """
    import scvi

    settings = generator_settings(name, config)
    scvi.settings.seed = seed
    train = train.copy()  # registration adds columns; keep the caller's object untouched
    model_cls = get_generator(name).model_class()
    model_cls.setup_anndata(train, labels_key=config.labels_key, **settings["setup"])
    model = model_cls(train, **settings["init"])
    start = time.perf_counter()
    model.train(**settings["train"])
    return model, time.perf_counter() - start


def train_and_generate(
    name: str, train: ad.AnnData, test: ad.AnnData, config: TrainTestConfig, seed: int
) -> tuple[ad.AnnData, dict[str, float]]:
    """Train generator ``name`` on ``train`` and generate test-matched cells per label.

    Parameters
    ----------
    name
        Registered generator name.
    train, test
        Training cells, and the held-out cells whose label counts are generated.
    config
        Protocol settings.
    seed
        Seed of training and generation.

    Returns
    -------
    The synthetic cells and the seconds spent training and generating.

    Examples
    --------
    >>> synthetic, seconds = train_and_generate("cfgen", train, test, TrainTestConfig(), 0)
    """
    model, train_s = train_generator(name, train, config, seed)
    seconds = {"train_s": train_s}
    start = time.perf_counter()
    plan = datasets.matched_generation_plan(test.obs[config.labels_key])
    synthetic = model.generate(labels=plan, seed=seed, progress_bar=False)
    seconds["generate_s"] = time.perf_counter() - start
    return synthetic, seconds


def run_train_test(
    adata: ad.AnnData,
    generators: Sequence[str],
    seeds: Sequence[int],
    config: TrainTestConfig | None = None,
    on_result: Callable[[pd.DataFrame], None] | None = None,
) -> pd.DataFrame:
    """Score each generator and the real-vs-real floor over several seeds.

    For each seed: a stratified split, HVGs and the evaluation space fitted on the training
    cells, each generator trained on train only and asked for as many cells per label as the
    test set has, and :func:`scvi_gen.metrics.evaluate` against the test set.

    Parameters
    ----------
    adata
        Real counts with labels.
    generators
        Registered generator names.
    seeds
        Seeds (split, training, generation and evaluation).
    config
        Protocol settings.
    on_result
        Called with each (generator, seed) block of results as it is ready.

    Returns
    -------
    Long table: ``generator``, ``seed``, ``metric``, ``scope``, ``value``, plus timing rows
    (metric ``train_s``/``generate_s``). The floor appears as generator ``FLOOR``.

    Examples
    --------
    >>> results = run_train_test(scvi_gen.datasets.pbmc3k(), ["scvi"], seeds=[0, 1, 2])
    """
    config = config or TrainTestConfig()
    adata = drop_unlabelled(adata, config.labels_key)
    blocks = []
    for seed in seeds:
        train, test = split_for_seed(adata, config, seed)
        space = CommonSpace(n_hvg=train.n_vars, n_pcs=config.n_pcs, seed=seed).fit(train)
        for name in generators:
            synthetic, seconds = train_and_generate(name, train, test, config, seed)
            scores = evaluate(
                train,
                test,
                synthetic,
                labels_key=config.labels_key,
                seed=seed,
                common_space=space,
            )
            block = _tidy(scores, name, seed, seconds, include_floor=name == generators[0])
            blocks.append(block)
            if on_result is not None:
                on_result(block)
    return pd.concat(blocks, ignore_index=True)


def _tidy(
    scores: pd.DataFrame, name: str, seed: int, seconds: dict[str, float], include_floor: bool
) -> pd.DataFrame:
    out = scores.copy()
    out["generator"] = np.where(out["comparison"] == "floor", FLOOR, name)
    if not include_floor:
        out = out[out["comparison"] != "floor"]
    timing = pd.DataFrame(
        {
            "generator": name,
            "metric": list(seconds),
            "scope": "time",
            "value": list(seconds.values()),
        }
    )
    out = pd.concat([out.drop(columns="comparison"), timing], ignore_index=True)
    out["seed"] = seed
    return out[["generator", "seed", "metric", "scope", "value"]]


def _check_scope(results: pd.DataFrame, scope: str) -> None:
    """Raise when no result row has ``scope`` (a typo would otherwise give an empty table)."""
    scopes = sorted(results["scope"].unique())
    if scope not in scopes:
        raise ValueError(f"No results with scope {scope!r}; the results have {scopes}.")


def summarize(results: pd.DataFrame, scope: str = "global") -> pd.DataFrame:
    """Mean +/- sd over seeds, one row per metric and one column per generator.

    Parameters
    ----------
    results
        Output of :func:`run_train_test`.
    scope
        ``"global"``, ``"per_label_mean"`` or ``"time"``.

    Returns
    -------
    A table of ``"mean ± sd"`` strings (index: metric; columns: floor first, then generators).
    """
    _check_scope(results, scope)
    part = results[results["scope"] == scope]
    stats = part.groupby(["metric", "generator"], sort=False)["value"].agg(
        ["mean", "std", "count"]
    )
    cells = stats.apply(
        lambda r: f"{r['mean']:.4g} ± {0 if np.isnan(r['std']) else r['std']:.2g}", axis=1
    )
    table = cells.unstack("generator")
    order = [FLOOR] + [g for g in pd.unique(part["generator"]) if g != FLOOR]
    return table[[c for c in order if c in table.columns]]


def ratio_to_floor(results: pd.DataFrame, scope: str = "global") -> pd.DataFrame:
    """Mean over seeds (and folds) of each generator's metric divided by the same split's floor.

    Parameters
    ----------
    results
        Output of :func:`run_train_test` or :func:`~scvi_gen.benchmark.run_benchmark`.
    scope
        ``"global"`` or ``"per_label_mean"``.

    Returns
    -------
    One row per metric, one column per generator.
    """
    rows = floor_ratios(results, scope)
    return rows.groupby(["metric", "generator"], sort=False)["ratio"].mean().unstack("generator")


def floor_ratios(results: pd.DataFrame, scope: str = "global") -> pd.DataFrame:
    """Each generator row of ``scope`` with ``ratio``: its value over the same split's floor.

    The floor of a replicate is matched on ``seed`` (and ``split`` when the table has one).
    """
    part = results[results["scope"] == scope]
    keys = [k for k in ("seed", "split") if k in part.columns] + ["metric"]
    floor = part[part["generator"] == FLOOR].drop_duplicates(keys).set_index(keys)["value"]
    rows = part[part["generator"] != FLOOR].copy()
    with np.errstate(divide="ignore", invalid="ignore"):
        rows["ratio"] = (
            rows["value"].to_numpy()
            / floor.reindex(pd.MultiIndex.from_frame(rows[keys])).to_numpy()
        )
    return rows
