"""Downstream classification: does adding synthetic cells help a cell-type classifier?

Classifiers (a random forest and a logistic regression) are trained on the principal
components of the common evaluation space (:class:`~scvi_gen.metrics.CommonSpace`, fitted on
the real training cells) and scored on the held-out real cells. Training sets:

- ``real``: the real training cells;
- ``real+oversampled``: plus randomly re-drawn real training cells of each class (the control),
  as many per class as the generator adds;
- ``real+synthetic``: plus the generator's cells of the augmentation plan (every class topped
  up to the upper quartile of the class sizes);
- ``synthetic``: synthetic cells only, as many per class as the real training set has
  (train on synthetic, test on real).

Scores: accuracy, macro-F1 over the held-out classes, macro-F1 over the rare classes (those the
plan tops up) and the F1 of every class.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.base import ClassifierMixin
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

logger = logging.getLogger(__name__)

REAL = "real"
OVERSAMPLED = "real+oversampled"
AUGMENTED = "real+synthetic"
SYNTHETIC_ONLY = "synthetic"
#: Training sets in report order.
TRAIN_SETS: tuple[str, ...] = (REAL, OVERSAMPLED, AUGMENTED, SYNTHETIC_ONLY)


def _random_forest(seed: int) -> ClassifierMixin:
    return RandomForestClassifier(n_estimators=100, n_jobs=1, random_state=seed)


def _logistic_regression(seed: int) -> ClassifierMixin:
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))


#: Classifier factories by name: ``factory(seed) -> unfitted scikit-learn classifier``.
CLASSIFIERS: dict[str, Callable[[int], ClassifierMixin]] = {
    "random_forest": _random_forest,
    "logistic_regression": _logistic_regression,
}


@dataclass(frozen=True)
class FeatureSet:
    """Cells as classifier features.

    Attributes
    ----------
    x
        ``(n, d)`` features (principal components of the common space).
    y
        ``(n,)`` labels as strings.
    ids
        ``(n,)`` cell identifiers: real ``obs_names`` (re-drawn cells keep theirs) or the
        synthetic cells' names.
    source
        ``(n,)`` ``"real"``, ``"oversampled"`` or ``"synthetic"``.
    """

    x: np.ndarray
    y: np.ndarray
    ids: np.ndarray
    source: np.ndarray

    @classmethod
    def of(cls, x: np.ndarray, y: Sequence, ids: Sequence, source: str) -> FeatureSet:
        """Build a set whose cells all come from one ``source``."""
        y = np.asarray(y).astype(str)
        return cls(np.asarray(x), y, np.asarray(ids).astype(str), np.full(len(y), source))

    def __len__(self) -> int:
        return len(self.y)

    def take(self, idx: np.ndarray, source: str | None = None) -> FeatureSet:
        """Subset (or re-draw) cells by position, optionally relabelling their source."""
        src = self.source[idx] if source is None else np.full(len(idx), source)
        return FeatureSet(self.x[idx], self.y[idx], self.ids[idx], src)

    def concat(self, other: FeatureSet) -> FeatureSet:
        """Cells of ``self`` followed by those of ``other``."""
        return FeatureSet(
            np.vstack([self.x, other.x]),
            np.concatenate([self.y, other.y]),
            np.concatenate([self.ids, other.ids]),
            np.concatenate([self.source, other.source]),
        )

    def counts(self) -> dict[str, int]:
        """Cells per label."""
        return {str(k): int(v) for k, v in pd.Series(self.y).value_counts().items()}


def oversample(real: FeatureSet, plan: Mapping[str, int], seed: int) -> FeatureSet:
    """Re-draw ``plan[label]`` real training cells of every label, with replacement.

    Parameters
    ----------
    real
        The real training cells.
    plan
        Cells to add per label (the generator's augmentation plan).
    seed
        Seed of the draw.

    Returns
    -------
    The re-drawn cells (source ``"oversampled"``).
    """
    rng = np.random.default_rng(seed)
    picks = [
        rng.choice(np.flatnonzero(real.y == label), size=n, replace=True)
        for label, n in plan.items()
        if n > 0
    ]
    idx = np.concatenate(picks) if picks else np.zeros(0, dtype=np.int64)
    return real.take(idx, source="oversampled")


def training_sets(
    real: FeatureSet,
    plan: Mapping[str, int],
    seed: int,
    augmentation: FeatureSet | None = None,
    synthetic_only: FeatureSet | None = None,
) -> dict[str, FeatureSet]:
    """The classifier training sets of one replicate (see the module docstring).

    Parameters
    ----------
    real
        Real training cells.
    plan
        Augmentation plan ``{label: cells to add}``.
    seed
        Seed of the oversampling control.
    augmentation
        Synthetic cells of the plan (``None``: generator-free sets only).
    synthetic_only
        Synthetic cells for train-on-synthetic (``None``: skipped).

    Returns
    -------
    ``{train set name: cells}``: ``real`` and ``real+oversampled`` always; ``real+synthetic``
    and ``synthetic`` when the synthetic cells are given.
    """
    sets = {REAL: real, OVERSAMPLED: real.concat(oversample(real, plan, seed))}
    if augmentation is not None:
        sets[AUGMENTED] = real.concat(augmentation)
    if synthetic_only is not None:
        sets[SYNTHETIC_ONLY] = synthetic_only
    return sets


def score_classifier(
    classifier: str,
    train: FeatureSet,
    test: FeatureSet,
    rare_labels: Sequence[str],
    seed: int,
) -> list[dict[str, object]]:
    """Fit one classifier and score it on the held-out cells.

    Parameters
    ----------
    classifier
        Name in :data:`CLASSIFIERS`.
    train
        Training cells.
    test
        Held-out real cells.
    rare_labels
        Labels averaged in ``rare_macro_f1``.
    seed
        Seed of the classifier.

    Returns
    -------
    Rows ``{"metric", "label", "value"}``: ``accuracy``, ``macro_f1`` and ``rare_macro_f1``
    (label None) and ``f1`` per held-out label. Labels the training set lacks score F1 = 0.
    """
    model = CLASSIFIERS[classifier](seed)
    model.fit(train.x, train.y)
    predicted = model.predict(test.x)
    labels = sorted(set(test.y.tolist()))
    per_label = f1_score(test.y, predicted, labels=labels, average=None, zero_division=0)
    f1 = dict(zip(labels, per_label.tolist()))
    rare = [label for label in labels if label in set(rare_labels)]
    rows: list[dict[str, object]] = [
        {"metric": "accuracy", "label": None, "value": float(accuracy_score(test.y, predicted))},
        {"metric": "macro_f1", "label": None, "value": float(np.mean(per_label))},
        {
            "metric": "rare_macro_f1",
            "label": None,
            "value": float(np.mean([f1[r] for r in rare])) if rare else float("nan"),
        },
    ]
    rows += [{"metric": "f1", "label": label, "value": value} for label, value in f1.items()]
    return rows


def downstream_scores(
    sets: Mapping[str, FeatureSet],
    test: FeatureSet,
    rare_labels: Sequence[str],
    classifiers: Sequence[str],
    seed: int,
) -> pd.DataFrame:
    """Score every classifier on every training set.

    Parameters
    ----------
    sets
        Output of :func:`training_sets` (or a subset of it).
    test
        Held-out real cells.
    rare_labels
        Labels averaged in ``rare_macro_f1``.
    classifiers
        Names in :data:`CLASSIFIERS`.
    seed
        Seed of the classifiers.

    Returns
    -------
    Long table: ``classifier``, ``train_set``, ``metric``, ``label``, ``value``.

    Examples
    --------
    >>> sets = training_sets(real, plan={"DC": 40}, seed=0, augmentation=synthetic)
    >>> downstream_scores(sets, test, ["DC"], ["random_forest"], seed=0)
    """
    unknown = sorted(set(classifiers) - set(CLASSIFIERS))
    if unknown:
        raise ValueError(f"Unknown classifiers {unknown}; choose from {sorted(CLASSIFIERS)}.")
    rows = []
    for name, train in sets.items():
        for classifier in classifiers:
            for row in score_classifier(classifier, train, test, rare_labels, seed):
                rows.append({"classifier": classifier, "train_set": name, **row})
    return pd.DataFrame(rows, columns=["classifier", "train_set", "metric", "label", "value"])
