"""Train/test splits, stratified k-fold and generation plans (how many cells per class).

Unlabelled cells (NaN in ``labels_key``) are never put in a test set: label-stratified metrics
cannot use them, but a generator can still learn from them, so they always go to train.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData
from mudata import MuData
from sklearn.model_selection import StratifiedKFold

from scvi_gen._settings import quiet_mudata

logger = logging.getLogger(__name__)

Labels = pd.Series | np.ndarray | pd.Categorical | Sequence[Any]


def _label_codes(data: AnnData | MuData, labels_key: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Class code per cell (-1 = unlabelled) and the class names; one class without a key."""
    if labels_key is None:
        return np.zeros(data.n_obs, dtype=np.int64), np.array(["all cells"])
    if labels_key not in data.obs:
        raise KeyError(f"{labels_key!r} is not in .obs; columns: {list(data.obs.columns)}.")
    codes, names = pd.factorize(data.obs[labels_key])  # NaN -> -1
    return codes.astype(np.int64), np.asarray(names)


def _n_test(n_cells: int, test_size: float) -> int:
    """Test cells for one class: rounded share, at least 1 and leaving at least 1 for train.

    Every class with >= 2 cells appears on both sides, so per-class metrics exist for each;
    a class with a single cell stays in train.
    """
    if n_cells < 2:
        return 0
    return int(np.clip(np.floor(test_size * n_cells + 0.5), 1, n_cells - 1))


def train_test_indices(
    adata: AnnData | MuData,
    labels_key: str | None = None,
    test_size: float = 0.25,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Positional indices of a stratified train/test split.

    Each class is shuffled and its rounded ``test_size`` share goes to test, at least one cell
    and never all of them (a class of one cell stays in train). Unlabelled cells (NaN) always
    go to train. Without ``labels_key`` the split is a plain random one.

    Parameters
    ----------
    adata
        AnnData or MuData; only ``obs`` and ``n_obs`` are read.
    labels_key
        Column of ``obs`` to stratify by, or ``None``.
    test_size
        Fraction of each class in the test set, in (0, 1).
    seed
        Seed of the shuffle; same seed, same split.

    Returns
    -------
    ``(train_idx, test_idx)``: sorted, disjoint integer arrays covering all cells.

    Examples
    --------
    >>> import scvi_gen
    >>> adata = scvi_gen.datasets.pbmc68k_reduced()
    >>> train_idx, test_idx = scvi_gen.datasets.train_test_indices(adata, "cell_type")
    >>> len(train_idx) + len(test_idx) == adata.n_obs
    True
    """
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"test_size must be in (0, 1), got {test_size}.")
    if adata.n_obs < 2:
        raise ValueError(f"Splitting needs at least 2 cells, got {adata.n_obs}.")
    codes, _ = _label_codes(adata, labels_key)
    rng = np.random.default_rng(seed)
    test_parts = []
    for code in range(codes.max(initial=-1) + 1):
        members = rng.permutation(np.flatnonzero(codes == code))
        test_parts.append(members[: _n_test(len(members), test_size)])
    test_idx = np.sort(np.concatenate([np.empty(0, dtype=np.int64), *test_parts]))
    train_idx = np.setdiff1d(np.arange(adata.n_obs), test_idx)
    return train_idx, test_idx


def train_test_split(
    adata: AnnData | MuData,
    labels_key: str | None = None,
    test_size: float = 0.25,
    seed: int = 0,
) -> tuple[AnnData | MuData, AnnData | MuData]:
    """Stratified train/test split returning copies; the input is left unchanged.

    See :func:`train_test_indices` for the rules (unlabelled cells go to train).

    Parameters
    ----------
    adata
        AnnData or MuData to split.
    labels_key
        Column of ``obs`` to stratify by, or ``None`` for a plain random split.
    test_size
        Fraction of each class in the test set, in (0, 1).
    seed
        Seed of the shuffle.

    Returns
    -------
    ``(train, test)``, independent copies of the same type as ``adata``.

    Examples
    --------
    >>> import scvi_gen
    >>> adata = scvi_gen.datasets.pbmc68k_reduced()
    >>> train, test = scvi_gen.datasets.train_test_split(adata, "cell_type", test_size=0.2)
    >>> train.n_obs + test.n_obs
    700
    """
    train_idx, test_idx = train_test_indices(adata, labels_key, test_size=test_size, seed=seed)
    # Slicing a MuData calls .update(), which warns about pull_on_update on mudata 0.3.
    with quiet_mudata() if isinstance(adata, MuData) else nullcontext():
        return adata[train_idx].copy(), adata[test_idx].copy()


def kfold_splits(
    adata: AnnData | MuData,
    labels_key: str | None,
    n_splits: int = 5,
    seed: int = 0,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified k-fold positional indices.

    Classes with at least ``n_splits`` cells are split by scikit-learn's
    :class:`~sklearn.model_selection.StratifiedKFold` (shuffled). Cells of smaller classes
    (with a :class:`UserWarning`) are dealt to folds round-robin, continuing across classes
    so no fold collects all of them. Unlabelled cells are in every fold's train set and in no
    test set, so the test folds partition the labelled cells.

    Parameters
    ----------
    adata
        AnnData or MuData; only ``obs`` and ``n_obs`` are read.
    labels_key
        Column of ``obs`` to stratify by, or ``None`` for unstratified folds.
    n_splits
        Number of folds, >= 2.
    seed
        Seed of the shuffles.

    Returns
    -------
    ``n_splits`` pairs ``(train_idx, test_idx)`` of sorted integer arrays.

    Examples
    --------
    >>> import scvi_gen
    >>> adata = scvi_gen.datasets.pbmc68k_reduced()
    >>> folds = scvi_gen.datasets.kfold_splits(adata, "cell_type", n_splits=5)
    >>> sum(len(test) for _, test in folds)
    700
    """
    if n_splits < 2:
        raise ValueError(f"n_splits must be >= 2, got {n_splits}.")
    codes, names = _label_codes(adata, labels_key)
    labelled = codes >= 0
    if labelled.sum() < n_splits:
        raise ValueError(f"{labelled.sum()} labelled cells cannot fill {n_splits} folds.")
    fold_of = np.full(adata.n_obs, -1, dtype=np.int64)
    class_sizes = np.bincount(codes[labelled])
    rare = np.flatnonzero((class_sizes > 0) & (class_sizes < n_splits))
    common = np.flatnonzero(labelled & ~np.isin(codes, rare))
    if common.size:
        skf = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        for fold, (_, test) in enumerate(skf.split(np.zeros(common.size), codes[common])):
            fold_of[common[test]] = fold
    if rare.size:
        warnings.warn(
            f"Classes with fewer than n_splits={n_splits} cells are dealt to folds "
            f"round-robin and are missing from some test folds: {[str(n) for n in names[rare]]}.",
            UserWarning,
            stacklevel=2,
        )
        _deal_round_robin(fold_of, codes, rare, n_splits, np.random.default_rng(seed))
    all_idx = np.arange(adata.n_obs)
    return [(all_idx[fold_of != k], all_idx[fold_of == k]) for k in range(n_splits)]


def _deal_round_robin(
    fold_of: np.ndarray,
    codes: np.ndarray,
    rare: np.ndarray,
    n_splits: int,
    rng: np.random.Generator,
) -> None:
    """Assign the cells of rare classes to folds in turn, in place."""
    next_fold = int(rng.integers(n_splits))
    for code in rare:
        members = rng.permutation(np.flatnonzero(codes == code))
        fold_of[members] = (next_fold + np.arange(members.size)) % n_splits
        next_fold = (next_fold + members.size) % n_splits


def _class_counts(labels: Labels) -> pd.Series:
    """Cells per observed class, NaN ignored; category order for categoricals, else first seen.

    Categories with no cell are dropped: a generator cannot be asked for a class it never saw,
    and a 0 would drag the quantile down.
    """
    series = labels if isinstance(labels, pd.Series) else pd.Series(labels)
    counts = series.value_counts(dropna=True, sort=False)
    counts = counts[counts > 0]
    counts.index = counts.index.map(str)
    return counts


def q3_generation_plan(
    labels: Labels, q: float = 0.75, include_zero: bool = False
) -> dict[str, int]:
    """Cells to generate per class to top every class up to the upper quartile of class sizes.

    With class counts ``c_k`` (NaN ignored, unobserved categories dropped), the target is
    ``T = ceil(percentile(c, 100 q))`` (numpy's linear interpolation; the ceiling so the
    target is a whole number of cells never below the quantile) and ``plan[k] = max(0, T - c_k)``.
    Example: counts ``{a: 10, b: 20, c: 30, d: 100}`` give percentile 47.5, ``T = 48`` and
    ``{a: 38, b: 28, c: 18}``.

    Parameters
    ----------
    labels
        One label per (training) cell: Series, array, Categorical or list.
    q
        Quantile of the class sizes to top up to, in (0, 1]; 0.75 is Q3.
    include_zero
        Also list classes already at or above the target, with 0.

    Returns
    -------
    ``{class name (str): cells to generate}``, in category order (first-seen order for
    non-categorical labels). Only classes that need cells unless ``include_zero``.

    Examples
    --------
    >>> from scvi_gen.datasets import q3_generation_plan
    >>> q3_generation_plan(["a"] * 10 + ["b"] * 20 + ["c"] * 30 + ["d"] * 100)
    {'a': 38, 'b': 28, 'c': 18}
    """
    if not 0.0 < q <= 1.0:
        raise ValueError(f"q must be in (0, 1], got {q}.")
    counts = _class_counts(labels)
    if counts.empty:
        raise ValueError("No labelled cells: cannot build a generation plan.")
    quantile = float(np.percentile(counts.to_numpy(), 100.0 * q))
    # The tolerance keeps float noise (47.0000000001) from adding a cell.
    target = int(np.ceil(quantile - 1e-9))
    logger.info("Generation plan target: %d cells per class (q=%g)", target, q)
    plan = {name: max(0, target - int(c)) for name, c in counts.items()}
    return plan if include_zero else {name: n for name, n in plan.items() if n > 0}


def matched_generation_plan(test_labels: Labels) -> dict[str, int]:
    """Generate as many cells per class as the test set holds.

    Parameters
    ----------
    test_labels
        Labels of the test cells; NaN ignored, unobserved categories dropped.

    Returns
    -------
    ``{class name (str): cells in the test set}``.

    Examples
    --------
    >>> from scvi_gen.datasets import matched_generation_plan
    >>> matched_generation_plan(["B", "NK", "B", None])
    {'B': 2, 'NK': 1}
    """
    return {name: int(c) for name, c in _class_counts(test_labels).items()}


# The name starts with "test_": keep pytest from collecting it wherever it is imported.
