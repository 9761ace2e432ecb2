"""Benchmark settings and replicates: train/test splits or stratified k-fold, with their plans.

A *replicate* is one (split, seed): the real training cells a generator may see, the held-out
cells it is scored on, and three generation plans derived from the training labels only:

- ``evaluation``: as many cells per label as the held-out set has (distribution metrics);
- ``augmentation``: every class topped up to the upper quartile (Q3) of the training class
  sizes (:func:`scvi_gen.datasets.q3_generation_plan`, the flow-based study's scheme);
- ``synthetic_only``: as many cells per label as the training set has (train on synthetic,
  test on real).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import anndata as ad

from scvi_gen import datasets
from scvi_gen.benchmark._downstream import CLASSIFIERS
from scvi_gen.benchmark._train_test import (
    TrainTestConfig,
    drop_unlabelled,
    generator_settings,
    restrict_to_hvgs,
    split_for_seed,
)

logger = logging.getLogger(__name__)

Split = Literal["train-test", "kfold"]
TRAIN_TEST: Split = "train-test"
KFOLD: Split = "kfold"
CONFIG_FILE = "config.json"
_DATASET_LOADERS = ("pbmc3k", "pbmc68k_reduced", "pancreas", "kang_ifnb")


@dataclass
class BenchmarkConfig(TrainTestConfig):
    """Settings of a benchmark run; saved as ``config.json`` in the run directory.

    Attributes
    ----------
    labels_key, test_size, n_top_genes, n_pcs
        As in :class:`~scvi_gen.benchmark.TrainTestConfig`.
    overrides
        Per generator ``{"init": {...}, "train": {...}, "setup": {...}}``. A saved config holds
        every generator's full settings (registry defaults with overrides applied), so a run
        can be repeated from it alone.
    dataset
        A loader of :mod:`scvi_gen.datasets` (``pbmc3k``, ``pancreas``, ``kang_ifnb``,
        ``pbmc68k_reduced``) or the path of an ``.h5ad`` file with raw counts.
    generators
        Registered generator names.
    split
        ``"train-test"`` (stratified, ``test_size`` held out) or ``"kfold"`` (stratified).
    seeds
        Seeds; each gives one split (train-test) or one set of ``n_folds`` folds (kfold).
    n_folds
        Folds of the k-fold scheme.
    quantile
        Quantile of the training class sizes every class is topped up to (0.75: Q3).
    classifiers
        Downstream classifiers (names in :data:`~scvi_gen.benchmark.CLASSIFIERS`); empty to
        skip downstream classification.
    n_threads
        ``torch.set_num_threads`` for the run (None: leave as is).

    Examples
    --------
    >>> config = BenchmarkConfig(dataset="pbmc3k", generators=["scvi", "gaussian_copula"])
    >>> config.save("runs/pbmc3k/config.json")
    """

    dataset: str = "pbmc3k"
    generators: list[str] = field(default_factory=lambda: ["scvi"])
    split: Split = TRAIN_TEST
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    n_folds: int = 5
    quantile: float = 0.75
    classifiers: list[str] = field(default_factory=lambda: list(CLASSIFIERS))
    n_threads: int | None = None

    def __post_init__(self) -> None:
        if self.split not in (TRAIN_TEST, KFOLD):
            raise ValueError(f"`split` must be {TRAIN_TEST!r} or {KFOLD!r}, got {self.split!r}.")
        if not self.generators:
            raise ValueError("Name at least one generator.")
        if len(set(self.generators)) != len(self.generators):
            raise ValueError(f"Generators are listed twice: {self.generators}.")
        if not self.seeds:
            raise ValueError("Give at least one seed.")
        unknown = sorted(set(self.classifiers) - set(CLASSIFIERS))
        if unknown:
            raise ValueError(f"Unknown classifiers {unknown}; choose from {sorted(CLASSIFIERS)}.")
        self.generators = [str(g) for g in self.generators]
        self.seeds = [int(s) for s in self.seeds]
        for name in self.generators:
            generator_settings(name, self)  # unknown names and bad overrides fail early

    def resolved(self) -> BenchmarkConfig:
        """A copy whose ``overrides`` hold every generator's complete settings."""
        settings = {name: generator_settings(name, self) for name in self.generators}
        return dataclasses.replace(self, overrides=settings)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form of the config."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def save(self, path: str | Path) -> None:
        """Write the resolved config as JSON."""
        Path(path).write_text(json.dumps(self.resolved().to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> BenchmarkConfig:
        """Read a config written by :meth:`save`.

        Parameters
        ----------
        path
            A ``config.json`` file.

        Returns
        -------
        The config.
        """
        values = json.loads(Path(path).read_text())
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{path}: unknown config fields {unknown}.")
        return cls(**values)


@dataclass
class Replicate:
    """One (split, seed): real training and held-out cells restricted to the training HVGs.

    Attributes
    ----------
    split
        ``"train-test"`` or ``"fold<k>"``.
    seed
        The seed of the split, the generators and the metrics.
    train
        Real training cells (raw counts).
    test
        Held-out real cells (raw counts), never shown to a generator.
    """

    split: str
    seed: int
    train: ad.AnnData
    test: ad.AnnData

    @property
    def key(self) -> str:
        """File-name friendly identifier, e.g. ``fold2_seed0``."""
        return f"{self.split}_seed{self.seed}"

    def plans(self, labels_key: str, quantile: float = 0.75) -> dict[str, dict[str, int]]:
        """The ``evaluation``, ``augmentation`` and ``synthetic_only`` plans (module docstring)."""
        train_labels = self.train.obs[labels_key]
        return {
            "evaluation": datasets.matched_generation_plan(self.test.obs[labels_key]),
            "augmentation": datasets.q3_generation_plan(train_labels, q=quantile),
            "synthetic_only": datasets.matched_generation_plan(train_labels),
        }


def replicate_keys(config: BenchmarkConfig) -> list[tuple[str, int]]:
    """``(split, seed)`` of every replicate of the config, in run order."""
    splits = (
        [TRAIN_TEST] if config.split == TRAIN_TEST else [f"fold{k}" for k in range(config.n_folds)]
    )
    return [(split, seed) for seed in config.seeds for split in splits]


def iter_replicates(
    adata: ad.AnnData, config: BenchmarkConfig, only: Sequence[tuple[str, int]] | None = None
) -> Iterator[Replicate]:
    """Build the replicates of a run (HVGs selected on each training part).

    Parameters
    ----------
    adata
        Real counts with labels (unlabelled cells are dropped).
    config
        Run settings.
    only
        Build only these ``(split, seed)`` keys (the others are skipped cheaply).

    Yields
    ------
    Replicates in :func:`replicate_keys` order.
    """
    adata = drop_unlabelled(adata, config.labels_key)
    wanted = set(replicate_keys(config) if only is None else only)
    for seed in config.seeds:
        if config.split == TRAIN_TEST:
            if (TRAIN_TEST, seed) in wanted:
                yield Replicate(TRAIN_TEST, seed, *split_for_seed(adata, config, seed))
            continue
        folds = datasets.kfold_splits(adata, config.labels_key, config.n_folds, seed=seed)
        for k, (train_idx, test_idx) in enumerate(folds):
            if (f"fold{k}", seed) not in wanted:
                continue
            train, test = restrict_to_hvgs(
                adata[train_idx].copy(), adata[test_idx].copy(), config.n_top_genes
            )
            yield Replicate(f"fold{k}", seed, train, test)


def load_dataset(name: str) -> ad.AnnData:
    """Load a benchmark data set by loader name or ``.h5ad`` path.

    Parameters
    ----------
    name
        ``pbmc3k``, ``pancreas``, ``kang_ifnb``, ``pbmc68k_reduced`` or a file path.

    Returns
    -------
    The AnnData (raw counts).
    """
    if name in _DATASET_LOADERS:
        return getattr(datasets, name)()
    path = Path(name)
    if path.suffix == ".h5ad" and path.exists():
        return ad.read_h5ad(path)
    raise ValueError(
        f"Unknown dataset {name!r}: use one of {list(_DATASET_LOADERS)} or an existing .h5ad path."
    )
