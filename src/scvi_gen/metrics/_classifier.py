"""Classifier two-sample test (C2ST) ROC AUC."""

from __future__ import annotations

import logging

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from threadpoolctl import threadpool_limits

from ._utils import as_2d_float_array, check_same_n_features

logger = logging.getLogger(__name__)

_MIN_CELLS_PER_CLASS = 2


def _balanced_subsample(
    x: np.ndarray, y: np.ndarray, max_cells: int | None, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Subsample both samples to the same size so that AUC 0.5 means 'indistinguishable'."""
    n = min(x.shape[0], y.shape[0])
    if max_cells is not None:
        n = min(n, max_cells)
    x_idx = np.sort(rng.choice(x.shape[0], size=n, replace=False))
    y_idx = np.sort(rng.choice(y.shape[0], size=n, replace=False))
    return x[x_idx], y[y_idx]


def _make_classifier(n_per_class: int, seed: int) -> HistGradientBoostingClassifier:
    """Gradient-boosted trees whose capacity shrinks with the number of cells."""
    # sklearn's default min_samples_leaf=20 cannot split a few dozen points, which would
    # pin the AUC of small per-label comparisons at 0.5; and on a few dozen points extra
    # boosting rounds only add fixed per-round cost (~2 ms), not power.
    min_samples_leaf = int(np.clip(n_per_class // 10, 2, 20))
    max_iter = int(np.clip(n_per_class // 2, 25, 100))
    return HistGradientBoostingClassifier(
        max_iter=max_iter,
        min_samples_leaf=min_samples_leaf,
        early_stopping=False,
        random_state=seed,
    )


def classifier_two_sample_auc(
    x: np.ndarray,
    y: np.ndarray,
    seed: int = 0,
    *,
    n_splits: int = 5,
    max_cells: int | None = 2000,
) -> float:
    """Cross-validated ROC AUC of a classifier separating ``x`` from ``y`` (C2ST).

    Both samples are subsampled (seeded, without replacement) to the same size
    ``min(len(x), len(y), max_cells)``; a
    :class:`~sklearn.ensemble.HistGradientBoostingClassifier` (no early stopping,
    ``max_iter = clip(n_per_class // 2, 25, 100)``, i.e. 100 rounds from 200 cells per sample
    on, and ``min_samples_leaf = clip(n_per_class // 10, 2, 20)``, so that small samples can
    still be split) is trained single-threaded (OpenMP overhead dominates at this size) in
    stratified ``n_splits``-fold cross-validation, and the mean held-out ROC AUC over folds is
    returned. 0.5 means the samples are indistinguishable, 1.0 perfectly separable. The
    value is not clipped (it can fall slightly below 0.5 by chance).

    Parameters
    ----------
    x
        First sample, shape ``(n, d)``.
    y
        Second sample, shape ``(m, d)``.
    seed
        Seed of the subsampling, fold assignment and classifier.
    n_splits
        Number of cross-validation folds; reduced to the per-class size when that is smaller.
    max_cells
        Maximum number of points kept per sample; None keeps all.

    Returns
    -------
    float
        Mean held-out ROC AUC; NaN if a sample has fewer than 2 points.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> a, b = rng.normal(size=(200, 2)), rng.normal(loc=10.0, size=(200, 2))
    >>> classifier_two_sample_auc(a, b, seed=0) > 0.95
    True
    """
    x = as_2d_float_array(x, "x")
    y = as_2d_float_array(y, "y")
    check_same_n_features(x, y)
    rng = np.random.default_rng(seed)
    x, y = _balanced_subsample(x, y, max_cells, rng)
    n_per_class = x.shape[0]
    if n_per_class < _MIN_CELLS_PER_CLASS:
        logger.info("C2ST skipped: only %d cell(s) per sample.", n_per_class)
        return float("nan")
    features = np.vstack([x, y])
    is_second = np.repeat([0, 1], n_per_class)
    folds = StratifiedKFold(n_splits=min(n_splits, n_per_class), shuffle=True, random_state=seed)
    aucs = []
    with threadpool_limits(limits=1, user_api="openmp"):
        for train_idx, test_idx in folds.split(features, is_second):
            classifier = _make_classifier(n_per_class, seed)
            classifier.fit(features[train_idx], is_second[train_idx])
            scores = classifier.predict_proba(features[test_idx])[:, 1]
            aucs.append(roc_auc_score(is_second[test_idx], scores))
    return float(np.mean(aucs))
