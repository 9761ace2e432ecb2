from __future__ import annotations

import numpy as np
import pytest

from scvi_gen.benchmark import FeatureSet, downstream_scores, training_sets
from scvi_gen.benchmark._downstream import TRAIN_SETS, oversample, score_classifier


def _blobs(sizes: dict[str, int], seed: int, source: str, prefix: str) -> FeatureSet:
    rng = np.random.default_rng(seed)
    centres = {"A": (0.0, 0.0), "B": (6.0, 0.0), "C": (0.0, 6.0)}
    y = np.repeat(list(sizes), list(sizes.values()))
    x = np.array([centres[label] for label in y]) + rng.normal(size=(len(y), 2))
    return FeatureSet.of(x, y, [f"{prefix}{i}" for i in range(len(y))], source)


@pytest.fixture
def data():
    real = _blobs({"A": 40, "B": 30, "C": 6}, 0, "real", "cell")
    test = _blobs({"A": 15, "B": 10, "C": 4}, 1, "real", "test")
    plan = {"B": 10, "C": 34}
    augmentation = _blobs(plan, 2, "synthetic", "gen_")
    synthetic_only = _blobs({"A": 40, "B": 30, "C": 6}, 3, "synthetic", "gen_tstr")
    return real, test, plan, augmentation, synthetic_only


def test_augmentation_path_scores_every_training_set_and_classifier(data):
    real, test, plan, augmentation, synthetic_only = data
    sets = training_sets(real, plan, 0, augmentation, synthetic_only)
    assert list(sets) == list(TRAIN_SETS)
    scores = downstream_scores(
        sets, test, list(plan), ["random_forest", "logistic_regression"], seed=0
    )
    summary = scores[scores["metric"] != "f1"]
    assert len(summary) == 4 * 2 * 3
    assert summary["value"].between(0, 1).all()
    per_class = scores[scores["metric"] == "f1"]
    assert set(per_class["label"]) == {"A", "B", "C"}
    accuracy = scores[(scores["metric"] == "accuracy")]["value"]
    assert (accuracy > 0.9).all()  # separated blobs


def test_oversampling_redraws_only_real_training_cells(data):
    real, _, plan, _, _ = data
    extra = oversample(real, plan, seed=0)
    assert extra.counts() == plan
    assert set(extra.ids) <= set(real.ids)
    assert (extra.source == "oversampled").all()


def test_label_missing_from_training_scores_zero_f1(data):
    real, test, _, _, _ = data
    without_c = real.take(np.flatnonzero(real.y != "C"))
    rows = score_classifier("logistic_regression", without_c, test, ["C"], seed=0)
    f1 = {r["label"]: r["value"] for r in rows if r["metric"] == "f1"}
    rare = next(r["value"] for r in rows if r["metric"] == "rare_macro_f1")
    assert f1["C"] == 0.0 and rare == 0.0


def test_rare_macro_f1_is_nan_without_rare_classes(data):
    real, test, _, _, _ = data
    rows = score_classifier("logistic_regression", real, test, [], seed=0)
    rare = next(r["value"] for r in rows if r["metric"] == "rare_macro_f1")
    assert np.isnan(rare)
