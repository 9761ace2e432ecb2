"""Label-aware metrics: k-NN label accuracy and differential-expression recovery."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.neighbors import KNeighborsClassifier

from ._utils import as_2d_float_array, check_same_n_features, label_strings, pearson

logger = logging.getLogger(__name__)

LabelsLike = np.ndarray | Sequence[object] | pd.Series


def _drop_missing(
    values: np.ndarray, labels: LabelsLike, name: str
) -> tuple[np.ndarray, np.ndarray]:
    """Remove rows whose label is missing; labels are returned as strings."""
    labels = np.asarray(labels, dtype=object)
    if labels.shape[0] != values.shape[0]:
        raise ValueError(
            f"`{name}` has {labels.shape[0]} labels for {values.shape[0]} cells; they must match."
        )
    strings = label_strings(labels)
    keep = np.array([v is not None for v in strings], dtype=bool)
    return values[keep], strings[keep].astype(str)


def knn_label_accuracy(
    real_pcs: np.ndarray,
    real_labels: LabelsLike,
    fake_pcs: np.ndarray,
    fake_labels: LabelsLike,
    k: int = 15,
) -> float:
    """Accuracy of a real-data k-NN classifier at predicting the synthetic cells' labels.

    A :class:`~sklearn.neighbors.KNeighborsClassifier` (``k`` neighbours, uniform weights) is
    fitted on the real cells (in :func:`evaluate`, the real **training** cells, the largest
    real reference) and predicts the label of each synthetic cell; the fraction equal to
    the label the synthetic cell was conditioned on is returned. Cells with missing labels
    (NaN/None) are dropped from both sets. Labels are compared as strings.

    Parameters
    ----------
    real_pcs
        Real cell embeddings, shape ``(n, d)``.
    real_labels
        Real labels, length ``n``.
    fake_pcs
        Synthetic cell embeddings in the same space, shape ``(m, d)``.
    fake_labels
        Labels the synthetic cells were generated for, length ``m``.
    k
        Number of neighbours (reduced to the number of real cells when larger).

    Returns
    -------
    float
        Accuracy in [0, 1]; NaN when no labelled cell is left in a set.

    Examples
    --------
    >>> import numpy as np
    >>> real = np.array([[0.0], [0.1], [10.0], [10.1]])
    >>> knn_label_accuracy(real, ["a", "a", "b", "b"], np.array([[0.05], [9.9]]), ["a", "b"], k=1)
    1.0
    """
    real_pcs = as_2d_float_array(real_pcs, "real_pcs")
    fake_pcs = as_2d_float_array(fake_pcs, "fake_pcs")
    check_same_n_features(real_pcs, fake_pcs)
    real_pcs, real_labels = _drop_missing(real_pcs, real_labels, "real_labels")
    fake_pcs, fake_labels = _drop_missing(fake_pcs, fake_labels, "fake_labels")
    if real_pcs.shape[0] == 0 or fake_pcs.shape[0] == 0:
        return float("nan")
    classifier = KNeighborsClassifier(n_neighbors=min(k, real_pcs.shape[0]))
    classifier.fit(real_pcs, real_labels)
    return float(np.mean(classifier.predict(fake_pcs) == fake_labels))


def _log_fold_changes(expression: np.ndarray, labels: np.ndarray, label: str) -> np.ndarray:
    """Difference of mean log-expression between cells of ``label`` and all other cells."""
    in_label = labels == label
    return expression[in_label].mean(axis=0) - expression[~in_label].mean(axis=0)


def _eligible_de_labels(
    real_labels: np.ndarray, fake_labels: np.ndarray, min_cells: int
) -> list[str]:
    """Labels with at least ``min_cells`` cells inside and outside the label in both sets."""
    eligible = []
    for label in np.intersect1d(np.unique(real_labels), np.unique(fake_labels)):
        n_inside = min((real_labels == label).sum(), (fake_labels == label).sum())
        n_outside = min((real_labels != label).sum(), (fake_labels != label).sum())
        if n_inside >= min_cells and n_outside >= min_cells:
            eligible.append(str(label))
    return eligible


def de_logfc_recovery(
    real_expression: np.ndarray,
    real_labels: LabelsLike,
    fake_expression: np.ndarray,
    fake_labels: LabelsLike,
    *,
    min_cells: int = 5,
) -> float:
    """Agreement of one-vs-rest log-fold-changes between real and synthetic data.

    For each label present in both sets with at least ``min_cells`` cells in the label and
    in the rest (in both sets), the log-fold-change of every gene is the mean
    log1p(CP10k) expression in the label minus the mean in all other cells. The Pearson
    correlation between the real and the synthetic log-fold-change vectors is averaged over
    labels (labels with an undefined correlation are skipped). Cells with missing labels
    are dropped.

    Parameters
    ----------
    real_expression
        Real log-expression (cells x genes).
    real_labels
        Real labels.
    fake_expression
        Synthetic log-expression over the same genes.
    fake_labels
        Synthetic labels.
    min_cells
        Minimum number of cells in a label and in its complement, in both sets.

    Returns
    -------
    float
        Mean correlation over eligible labels; NaN when no label is eligible.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([[0.0, 1.0], [0.0, 2.0], [3.0, 0.0], [4.0, 0.0]])
    >>> de_logfc_recovery(x, ["a", "a", "b", "b"], x, ["a", "a", "b", "b"], min_cells=1)
    1.0
    """
    real_expression = as_2d_float_array(real_expression, "real_expression")
    fake_expression = as_2d_float_array(fake_expression, "fake_expression")
    check_same_n_features(real_expression, fake_expression)
    real_expression, real_labels = _drop_missing(real_expression, real_labels, "real_labels")
    fake_expression, fake_labels = _drop_missing(fake_expression, fake_labels, "fake_labels")
    correlations = [
        pearson(
            _log_fold_changes(real_expression, real_labels, label),
            _log_fold_changes(fake_expression, fake_labels, label),
        )
        for label in _eligible_de_labels(real_labels, fake_labels, min_cells)
    ]
    correlations = [c for c in correlations if np.isfinite(c)]
    if not correlations:
        logger.info("DE log-fold-change recovery: no eligible label.")
        return float("nan")
    return float(np.mean(correlations))
