"""The benchmark runner: every (generator x split x seed) cell, resumable, with a report.

A run directory holds

- ``config.json``: the run's settings with every generator's full training settings, enough
  to repeat the run (``scvi-gen benchmark --config run_dir/config.json``);
- ``cells/<generator>/<split>_seed<seed>.csv``: the numbers of one finished cell (written
  atomically, so a cell file exists only when the cell finished); ``cells/_baselines/`` holds
  the generator-free rows of each replicate (classifiers on real and oversampled real cells,
  class counts of the plans). A resumed run skips every cell whose file exists;
- ``synthetic/<generator>__<split>_seed<seed>.h5ad``: the evaluation cells of the first
  replicate (for the embedding plots);
- ``results.csv``, ``summary.md`` and the PNG plots written by
  :func:`~scvi_gen.benchmark.write_report`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from scvi_gen._constants import FLOOR
from scvi_gen.benchmark._downstream import (
    AUGMENTED,
    OVERSAMPLED,
    REAL,
    SYNTHETIC_ONLY,
    FeatureSet,
    downstream_scores,
    training_sets,
)
from scvi_gen.benchmark._protocol import (
    CONFIG_FILE,
    BenchmarkConfig,
    Replicate,
    iter_replicates,
    load_dataset,
    replicate_keys,
)
from scvi_gen.benchmark._train_test import _tidy, train_generator
from scvi_gen.metrics import CommonSpace, evaluate

logger = logging.getLogger(__name__)

#: Columns of every results table of a run.
RESULT_COLUMNS: list[str] = [
    "generator",
    "split",
    "seed",
    "metric",
    "scope",
    "classifier",
    "train_set",
    "label",
    "value",
]
#: ``generator`` of the rows that need no generator (real and oversampled training sets).
BASELINES = "_baselines"
CELLS_DIR = "cells"
SYNTHETIC_DIR = "synthetic"
RESULTS_FILE = "results.csv"
#: Config fields that change the numbers; a run directory is only resumed when they match.
_PROTOCOL_FIELDS = (
    "dataset",
    "split",
    "n_folds",
    "labels_key",
    "test_size",
    "n_top_genes",
    "n_pcs",
    "quantile",
    "classifiers",
)
_PLAN_SEED_OFFSETS = {"evaluation": 0, "augmentation": 1, "synthetic_only": 2}


@dataclass
class BenchmarkRun:
    """What :func:`run_benchmark` produced.

    Attributes
    ----------
    out_dir
        The run directory.
    results
        Every number of the run (columns :data:`RESULT_COLUMNS`).
    report
        Path of ``summary.md`` (None when no report was written).
    seconds
        Wall time of this call.
    """

    out_dir: Path
    results: pd.DataFrame
    report: Path | None
    seconds: float


def cell_path(out_dir: Path, generator: str, split: str, seed: int) -> Path:
    """File of one finished (generator, split, seed) cell."""
    return Path(out_dir) / CELLS_DIR / generator / f"{split}_seed{seed}.csv"


def synthetic_path(out_dir: Path, generator: str, split: str, seed: int) -> Path:
    """Saved evaluation cells of a generator on one replicate."""
    return Path(out_dir) / SYNTHETIC_DIR / f"{generator}__{split}_seed{seed}.h5ad"


def run_benchmark(
    config: BenchmarkConfig,
    out_dir: str | Path,
    *,
    resume: bool = True,
    progress_bar: bool = True,
    report: bool = True,
    plots: bool = True,
) -> BenchmarkRun:
    """Run the benchmark protocol and write its report.

    For every replicate (a stratified train/test split per seed, or the folds of a stratified
    k-fold per seed), the common evaluation space is fitted on the real training cells and each
    generator is trained on them only. It then generates three samples (see
    :class:`~scvi_gen.benchmark.Replicate`): test-matched cells scored by
    :func:`scvi_gen.metrics.evaluate` against the held-out cells (with the real-vs-real
    floor); Q3 top-up cells added to the real training cells for downstream classification,
    next to a random-oversampling control; and train-matched cells for train-on-synthetic.

    Parameters
    ----------
    config
        Run settings.
    out_dir
        Run directory (created). An existing one is resumed when its ``config.json`` has the
        same protocol settings and the same settings for the generators both runs share.
    resume
        Skip cells whose files exist; with False an existing run directory is an error.
    progress_bar
        Show a progress bar over the (generator x split x seed) cells.
    report
        Write ``summary.md`` at the end (``results.csv`` is always written).
    plots
        With ``report``, also draw the PNG plots.

    Returns
    -------
    A :class:`BenchmarkRun`.

    Examples
    --------
    >>> config = BenchmarkConfig(dataset="pbmc3k", generators=["scvi", "gaussian_copula"])
    >>> run = run_benchmark(config, "runs/pbmc3k")
    >>> print(run.report.read_text())
    """
    start = time.perf_counter()
    out = Path(out_dir)
    config = _prepare_run_dir(config.resolved(), out, resume)
    if config.n_threads:
        import torch

        torch.set_num_threads(config.n_threads)
    keys = replicate_keys(config)
    todo = {
        key: [g for g in config.generators if not cell_path(out, g, *key).exists()] for key in keys
    }
    pending = [k for k in keys if todo[k] or not cell_path(out, BASELINES, *k).exists()]
    total = len(keys) * len(config.generators)
    done = total - sum(len(v) for v in todo.values())
    with tqdm(total=total, initial=done, desc="benchmark", disable=not progress_bar) as bar:
        if pending:
            adata = load_dataset(config.dataset)
            for replicate in iter_replicates(adata, config, only=pending):
                context = _ReplicateContext(replicate, config)
                key = (replicate.split, replicate.seed)
                if not cell_path(out, BASELINES, *key).exists():
                    _write_cell(context.baseline_rows(), cell_path(out, BASELINES, *key))
                for name in todo[key]:
                    bar.set_postfix_str(f"{name} {replicate.key}")
                    save = synthetic_path(out, name, *key) if key == keys[0] else None
                    block = context.generator_rows(name, save_synthetic=save)
                    _write_cell(block, cell_path(out, name, *key))
                    bar.update()
    results = collect_results(out, config)
    results.to_csv(out / RESULTS_FILE, index=False)
    summary = None
    if report:
        from scvi_gen.benchmark._report import write_report

        summary = write_report(out, config=config, results=results, plots=plots)
    return BenchmarkRun(out, results, summary, time.perf_counter() - start)


def collect_results(out_dir: str | Path, config: BenchmarkConfig) -> pd.DataFrame:
    """Concatenate the finished cells of the config's generators and replicates.

    Every generator cell carries the floor of its replicate; it is kept once.

    Parameters
    ----------
    out_dir
        Run directory.
    config
        Run settings (which generators and replicates to collect).

    Returns
    -------
    The results table (columns :data:`RESULT_COLUMNS`).
    """
    blocks = []
    for key in replicate_keys(config):
        for name in [BASELINES, *config.generators]:
            path = cell_path(Path(out_dir), name, *key)
            if path.exists():
                blocks.append(pd.read_csv(path, dtype={"split": str, "label": object}))
    if not blocks:
        return pd.DataFrame(columns=RESULT_COLUMNS)
    results = pd.concat(blocks, ignore_index=True)
    is_floor = results["generator"] == FLOOR
    identity = ["split", "seed", "metric", "scope"]
    floor = results[is_floor].drop_duplicates(identity)
    return pd.concat([results[~is_floor], floor], ignore_index=True)[RESULT_COLUMNS]


class _ReplicateContext:
    """A replicate's common space, classifier features and plans, shared by its cells."""

    def __init__(self, replicate: Replicate, config: BenchmarkConfig) -> None:
        self.replicate = replicate
        self.config = config
        labels_key = config.labels_key
        train, test = replicate.train, replicate.test
        self.space = CommonSpace(n_hvg=train.n_vars, n_pcs=config.n_pcs, seed=replicate.seed)
        train_pcs = self.space.fit_transform(train).pcs
        test_pcs = self.space.transform(test, kind="counts").pcs
        self.real = FeatureSet.of(train_pcs, train.obs[labels_key], train.obs_names, "real")
        self.held_out = FeatureSet.of(test_pcs, test.obs[labels_key], test.obs_names, "real")
        self.plans = replicate.plans(labels_key, config.quantile)
        self.rare = list(self.plans["augmentation"])

    def _rows(self, block: pd.DataFrame) -> pd.DataFrame:
        block = block.assign(split=self.replicate.split, seed=self.replicate.seed)
        return block.reindex(columns=RESULT_COLUMNS)

    def baseline_rows(self) -> pd.DataFrame:
        """Classifiers on the real and oversampled training sets, and the plans' class counts."""
        sets = training_sets(self.real, self.plans["augmentation"], self.replicate.seed)
        blocks = [self._plan_rows()]
        if self.config.classifiers:
            scores = downstream_scores(
                {k: sets[k] for k in (REAL, OVERSAMPLED)},
                self.held_out,
                self.rare,
                self.config.classifiers,
                self.replicate.seed,
            )
            blocks.append(scores.assign(generator=BASELINES, scope="downstream"))
        return self._rows(pd.concat(blocks, ignore_index=True))

    def _plan_rows(self) -> pd.DataFrame:
        train_counts = self.real.counts()
        test_counts = self.held_out.counts()
        rows = []
        for label in sorted(set(train_counts) | set(test_counts)):
            values = {
                "n_train": train_counts.get(label, 0),
                "n_test": test_counts.get(label, 0),
                "n_added": self.plans["augmentation"].get(label, 0),
            }
            rows += [{"metric": m, "label": label, "value": v} for m, v in values.items()]
        return pd.DataFrame(rows).assign(generator=BASELINES, scope="plan")

    def generator_rows(self, name: str, save_synthetic: Path | None = None) -> pd.DataFrame:
        """Train generator ``name``, generate the three plans and score them."""
        seed = self.replicate.seed
        model, train_s = train_generator(name, self.replicate.train, self.config, seed)
        tic = time.perf_counter()
        synthetic = {
            plan: model.generate(labels=counts, seed=_plan_seed(seed, plan), progress_bar=False)
            for plan, counts in self.plans.items()
            if sum(counts.values()) > 0
        }
        seconds = {"train_s": train_s, "generate_s": time.perf_counter() - tic}
        if save_synthetic is not None:
            save_synthetic.parent.mkdir(parents=True, exist_ok=True)
            synthetic["evaluation"].write_h5ad(save_synthetic)
        tic = time.perf_counter()
        scores = evaluate(
            self.replicate.train,
            self.replicate.test,
            synthetic["evaluation"],
            labels_key=self.config.labels_key,
            seed=seed,
            common_space=self.space,
        )
        seconds["evaluate_s"] = time.perf_counter() - tic
        blocks = []
        if self.config.classifiers:
            tic = time.perf_counter()
            blocks.append(self._downstream(name, synthetic))
            seconds["downstream_s"] = time.perf_counter() - tic
        blocks.insert(0, _tidy(scores, name, seed, seconds, include_floor=True))
        return self._rows(pd.concat(blocks, ignore_index=True))

    def _downstream(self, name: str, synthetic: dict[str, ad.AnnData]) -> pd.DataFrame:
        features = {plan: self._features(cells) for plan, cells in synthetic.items()}
        empty = self.real.take(np.zeros(0, dtype=np.int64), source="synthetic")
        sets = training_sets(
            self.real,
            self.plans["augmentation"],
            self.replicate.seed,
            augmentation=features.get("augmentation", empty),
            synthetic_only=features["synthetic_only"],
        )
        scores = downstream_scores(
            {k: sets[k] for k in (AUGMENTED, SYNTHETIC_ONLY)},
            self.held_out,
            self.rare,
            self.config.classifiers,
            self.replicate.seed,
        )
        return scores.assign(generator=name, scope="downstream")

    def _features(self, cells: ad.AnnData) -> FeatureSet:
        pcs = self.space.transform(cells, kind="auto").pcs
        labels = cells.obs[self.config.labels_key]
        return FeatureSet.of(pcs, labels, cells.obs_names, "synthetic")


def _plan_seed(seed: int, plan: str) -> int:
    """Distinct generation seeds per plan, so the samples are not the same draws."""
    return int(np.random.SeedSequence([seed, _PLAN_SEED_OFFSETS[plan]]).generate_state(1)[0])


def _write_cell(block: pd.DataFrame, path: Path) -> None:
    """Write a cell's CSV atomically: a crash never leaves a file that looks finished."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".csv.tmp")
    block.to_csv(tmp, index=False)
    tmp.replace(path)


def _prepare_run_dir(config: BenchmarkConfig, out: Path, resume: bool) -> BenchmarkConfig:
    """Create or check the run directory and write the (merged) config."""
    path = out / CONFIG_FILE
    if path.exists():
        if not resume:
            raise FileExistsError(f"{out} already holds a run; pass resume=True or another dir.")
        saved = BenchmarkConfig.load(path)
        _check_compatible(saved, config, out)
    out.mkdir(parents=True, exist_ok=True)
    config.save(path)
    return config


def _check_compatible(saved: BenchmarkConfig, config: BenchmarkConfig, out: Path) -> None:
    """Refuse to mix cells computed with different settings in one directory."""
    old, new = saved.to_dict(), config.to_dict()
    changed = [f for f in _PROTOCOL_FIELDS if old[f] != new[f]]
    for name in set(saved.generators) & set(config.generators):
        if old["overrides"].get(name) != new["overrides"].get(name):
            changed.append(f"settings of {name}")
    if changed:
        raise ValueError(
            f"{out} holds a run with other settings ({', '.join(changed)}); resume it with "
            f"`--config {out / CONFIG_FILE}` or choose another output directory."
        )
