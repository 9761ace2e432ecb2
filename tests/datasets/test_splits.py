from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from anndata import AnnData
from mudata import MuData

from scvi_gen import datasets as ds

RequireData = Callable[[str], Path]

# 200 + 80 + 30 + 7 + 3 + 1 labelled cells and 9 unlabelled ones.
SIZES = {"big": 200, "mid": 80, "small": 30, "tiny": 7, "rare": 3, "single": 1}
N_UNLABELLED = 9


@pytest.fixture
def labelled() -> AnnData:
    labels = [name for name, n in SIZES.items() for _ in range(n)] + [None] * N_UNLABELLED
    rng = np.random.default_rng(1)
    labels = list(rng.permutation(np.array(labels, dtype=object)))
    n = len(labels)
    X = sp.random(n, 12, density=0.4, format="csr", random_state=2)
    obs = pd.DataFrame(
        {"cell_type": pd.Categorical(labels, categories=[*SIZES, "never_seen"])},
        index=[f"c{i}" for i in range(n)],
    )
    return AnnData(X=X, obs=obs)


def _check_partition(n: int, train: np.ndarray, test: np.ndarray) -> None:
    assert np.intersect1d(train, test).size == 0
    np.testing.assert_array_equal(np.union1d(train, test), np.arange(n))
    assert np.all(np.diff(train) > 0) and np.all(np.diff(test) > 0)


def test_train_test_indices_stratified(labelled: AnnData) -> None:
    train, test = ds.train_test_indices(labelled, "cell_type", test_size=0.25, seed=0)
    _check_partition(labelled.n_obs, train, test)
    labels = labelled.obs["cell_type"]
    assert labels.iloc[test].notna().all()  # unlabelled cells stay in train
    test_counts = labels.iloc[test].value_counts()
    for name, n in SIZES.items():
        if n >= 2:
            assert 1 <= test_counts[name] <= n - 1
            assert abs(test_counts[name] / n - 0.25) <= 0.5 / n + 1e-12
        else:
            assert test_counts[name] == 0


def test_train_test_split_copies_and_leaves_input(labelled: AnnData) -> None:
    X_before = labelled.X.copy()
    obs_before = labelled.obs.copy()
    train, test = ds.train_test_split(labelled, "cell_type", test_size=0.3, seed=3)
    assert not train.is_view and not test.is_view
    assert train.n_obs + test.n_obs == labelled.n_obs
    assert set(train.obs_names).isdisjoint(test.obs_names)
    train.X.data[:] = -5
    train.obs["cell_type"] = "changed"
    assert (labelled.X != X_before).nnz == 0
    pd.testing.assert_frame_equal(labelled.obs, obs_before)


def test_split_is_seeded(labelled: AnnData) -> None:
    a = ds.train_test_indices(labelled, "cell_type", seed=7)[1]
    b = ds.train_test_indices(labelled, "cell_type", seed=7)[1]
    c = ds.train_test_indices(labelled, "cell_type", seed=8)[1]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_split_without_labels(labelled: AnnData) -> None:
    train, test = ds.train_test_indices(labelled, None, test_size=0.2)
    _check_partition(labelled.n_obs, train, test)
    assert test.size == round(0.2 * labelled.n_obs)


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, 1.5])
def test_split_rejects_bad_size(labelled: AnnData, bad: float) -> None:
    with pytest.raises(ValueError, match="test_size"):
        ds.train_test_indices(labelled, "cell_type", test_size=bad)


def test_split_unknown_key(labelled: AnnData) -> None:
    with pytest.raises(KeyError, match="not in .obs"):
        ds.train_test_indices(labelled, "nope")


def test_split_real_pbmc3k(require_data: RequireData) -> None:
    require_data("pbmc3k")
    adata = ds.pbmc3k()
    train, test = ds.train_test_split(adata, "cell_type", test_size=0.25, seed=0)
    assert test.obs["cell_type"].notna().all()
    assert train.obs["cell_type"].isna().sum() == 62
    full = adata.obs["cell_type"].value_counts(normalize=True)
    held = test.obs["cell_type"].value_counts(normalize=True)
    assert (full - held[full.index]).abs().max() < 0.01


def test_split_mudata(require_data: RequireData) -> None:
    require_data("multiome_pbmc")
    mdata = ds.multiome_pbmc()
    train, test = ds.train_test_split(mdata, test_size=0.25)
    assert isinstance(train, MuData) and isinstance(test, MuData)
    assert (train.n_obs, test.n_obs) == (750, 250)
    assert test["atac"].n_obs == 250


def test_kfold_partitions_labelled_cells(labelled: AnnData) -> None:
    with pytest.warns(UserWarning, match="round-robin") as record:
        folds = ds.kfold_splits(labelled, "cell_type", n_splits=5, seed=0)
    message = str(record[0].message)
    assert "rare" in message and "single" in message and "tiny" not in message
    assert len(folds) == 5
    labels = labelled.obs["cell_type"]
    labelled_idx = np.flatnonzero(labels.notna().to_numpy())
    tests = [test for _, test in folds]
    for train, test in folds:
        _check_partition(labelled.n_obs, train, test)
    all_tests = np.concatenate(tests)
    assert all_tests.size == np.unique(all_tests).size  # test folds are disjoint
    np.testing.assert_array_equal(np.sort(all_tests), labelled_idx)
    # Stratified: each class with >= n_splits cells differs by at most one cell across folds.
    per_fold = pd.DataFrame([labels.iloc[t].value_counts() for t in tests])
    for name in ("big", "mid", "small", "tiny"):
        assert per_fold[name].max() - per_fold[name].min() <= 1
    # Rare cells (3 + 1) dealt round-robin: never two in one fold.
    rare_per_fold = per_fold["rare"] + per_fold["single"]
    assert rare_per_fold.max() == 1 and rare_per_fold.sum() == 4


def test_kfold_without_labels_and_errors(labelled: AnnData) -> None:
    folds = ds.kfold_splits(labelled, None, n_splits=3)
    sizes = [test.size for _, test in folds]
    assert sum(sizes) == labelled.n_obs and max(sizes) - min(sizes) <= 1
    with pytest.raises(ValueError, match="n_splits"):
        ds.kfold_splits(labelled, "cell_type", n_splits=1)


def test_q3_plan_known_values() -> None:
    labels = ["a"] * 10 + ["b"] * 20 + ["c"] * 30 + ["d"] * 100
    # percentile([10, 20, 30, 100], 75) = 30 + 0.25 * 70 = 47.5 -> ceil 48
    assert ds.q3_generation_plan(labels) == {"a": 38, "b": 28, "c": 18}
    assert ds.q3_generation_plan(labels, include_zero=True) == {"a": 38, "b": 28, "c": 18, "d": 0}
    assert ds.q3_generation_plan(labels, q=1.0) == {"a": 90, "b": 80, "c": 70}


def test_q3_plan_tops_up_exactly(labelled: AnnData) -> None:
    labels = labelled.obs["cell_type"]
    plan = ds.q3_generation_plan(labels, include_zero=True)
    counts = pd.Series(SIZES)
    target = int(np.ceil(np.percentile(counts, 75)))
    assert list(plan) == list(SIZES)  # category order; NaN and unseen category dropped
    for name, n in SIZES.items():
        assert n + plan[name] == max(n, target)


def test_q3_plan_errors() -> None:
    with pytest.raises(ValueError, match="q must be"):
        ds.q3_generation_plan(["a", "b"], q=0.0)
    with pytest.raises(ValueError, match="No labelled cells"):
        ds.q3_generation_plan([None, np.nan])


def test_matched_generation_plan_counts_test_labels(labelled: AnnData) -> None:
    _, test = ds.train_test_split(labelled, "cell_type", seed=0)
    plan = ds.matched_generation_plan(test.obs["cell_type"])
    expected = test.obs["cell_type"].value_counts()
    assert plan == {str(k): int(v) for k, v in expected.items() if v > 0}
    assert all(isinstance(v, int) for v in plan.values())
    assert ds.matched_generation_plan(np.array(["B", "NK", "B"])) == {"B": 2, "NK": 1}


def test_split_of_an_empty_anndata_is_an_error(labelled: AnnData) -> None:
    with pytest.raises(ValueError, match="at least 2 cells, got 0"):
        ds.train_test_indices(labelled[:0], "cell_type")
