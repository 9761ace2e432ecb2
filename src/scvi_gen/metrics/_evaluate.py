"""End-to-end evaluation of synthetic cells against held-out real cells, with a real floor.

Protocol
--------
1. A :class:`CommonSpace` is fitted on the real training counts (seurat_v3 HVGs,
   log1p(CP10k), PCA).
2. The real test set is split into two halves A and B, stratified by label (cells with a
   missing label form their own stratum; without labels the split is a plain random one).
3. B is the real *reference*. The **floor** comparison scores A against B: it is what a
   perfect generator, producing fresh real cells, would get at this sample size. The
   **synthetic** comparison scores a subsample of the synthetic cells against the same B;
   the subsample matches A's size and label composition (per label, as many synthetic cells
   of that label as A has, fewer when not available; the remaining quota, including A's
   unlabelled cells, is filled uniformly from the other synthetic cells). Both comparisons
   therefore use the same reference, sample sizes, bandwidths and genes.
4. Distribution metrics are computed on all cells ("global") and, with labels, within every
   label having at least ``min_cells_per_label`` cells in B, A and the synthetic subsample,
   then averaged over those labels ("per_label_mean"). k-NN label accuracy (classifier
   fitted on the real training cells) and DE log-fold-change recovery (against B) are
   global only.
5. MMD uses the biased (V-statistic) estimator with bandwidths from the real cells A ∪ B
   (median heuristic times 0.5, 1, 2, 4), so both comparisons share the kernels and the
   ratio to the floor is well defined; energy distance is also a V-statistic.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from scvi_gen._matrix import get_matrix, iter_row_chunks
from scvi_gen.base._validation import check_values

from ._classifier import classifier_two_sample_auc
from ._common_space import (
    CommonSpace,
    DataKindOrAuto,
    TransformedData,
    is_count_matrix,
    resolve_data_kind,
)
from ._distances import energy_distance, mmd_bandwidths, mmd_rbf, wasserstein
from ._gene_stats import (
    gene_correlation_error,
    gene_mean_correlation,
    gene_variance_correlation,
    gene_zero_fraction_correlation,
    library_size_distance,
)
from ._labels import de_logfc_recovery, knn_label_accuracy
from ._prdc import precision_recall_density_coverage
from ._utils import is_missing_label, label_strings

logger = logging.getLogger(__name__)

#: Metrics computed on the whole sample and within each label.
DISTRIBUTION_METRICS: tuple[str, ...] = (
    "wasserstein_1",
    "wasserstein_2",
    "mmd_rbf",
    "energy_distance",
    "c2st_auc",
    "prdc",
    "gene_mean_corr",
    "gene_var_corr",
    "gene_zero_frac_corr",
    "gene_corr_error",
    "library_size_w1",
)
#: Metrics that need ``labels_key`` and are computed globally only.
LABEL_METRICS: tuple[str, ...] = ("knn_label_accuracy", "de_logfc_corr")
#: Names accepted by the ``metrics`` argument of :func:`evaluate`.
AVAILABLE_METRICS: tuple[str, ...] = DISTRIBUTION_METRICS + LABEL_METRICS

#: Direction of every metric name that can appear in the output.
HIGHER_IS_BETTER: dict[str, bool] = {
    "wasserstein_1": False,
    "wasserstein_2": False,
    "mmd_rbf": False,
    "energy_distance": False,
    "c2st_auc": False,
    "prdc_precision": True,
    "prdc_recall": True,
    "prdc_density": True,
    "prdc_coverage": True,
    "gene_mean_corr": True,
    "gene_var_corr": True,
    "gene_zero_frac_corr": True,
    "gene_corr_error": False,
    "library_size_w1": False,
    "knn_label_accuracy": True,
    "de_logfc_corr": True,
}

COMPARISONS: tuple[str, ...] = ("synthetic", "floor")
RESULT_COLUMNS: list[str] = ["comparison", "metric", "scope", "value"]
PRDC_K = 5
KNN_K = 15
_PRDC_NAMES = ("precision", "recall", "density", "coverage")
_MISSING_STRATUM = "__missing_label__"

FLOOR_DEFINITION = (
    "Test set split in two label-stratified halves A/B (seeded). floor = A vs B; "
    "synthetic = synthetic subsample matched to A's size and label composition vs B."
)


@dataclass(frozen=True)
class _Cells:
    """Cells in the common space with their (string or None) labels."""

    expression: np.ndarray
    pcs: np.ndarray
    library_size: np.ndarray | None
    labels: np.ndarray | None

    @classmethod
    def from_transformed(cls, data: TransformedData, labels: np.ndarray | None) -> _Cells:
        return cls(data.expression, data.pcs, data.library_size, labels)

    def __len__(self) -> int:
        return self.pcs.shape[0]

    def take(self, idx: np.ndarray) -> _Cells:
        return _Cells(
            self.expression[idx],
            self.pcs[idx],
            None if self.library_size is None else self.library_size[idx],
            None if self.labels is None else self.labels[idx],
        )

    def with_label(self, label: str) -> _Cells:
        assert self.labels is not None
        return self.take(np.flatnonzero(self.labels == label))


@dataclass(frozen=True)
class _ScoringContext:
    """Settings shared by the two comparisons of one scope."""

    bandwidths: np.ndarray
    seed: int
    max_cells: int | None


Scorer = Callable[[_Cells, _Cells, _ScoringContext], dict[str, float]]


def _score_wasserstein_1(ref: _Cells, smp: _Cells, ctx: _ScoringContext) -> dict[str, float]:
    return {
        "wasserstein_1": wasserstein(ref.pcs, smp.pcs, 1, max_cells=ctx.max_cells, seed=ctx.seed)
    }


def _score_wasserstein_2(ref: _Cells, smp: _Cells, ctx: _ScoringContext) -> dict[str, float]:
    return {
        "wasserstein_2": wasserstein(ref.pcs, smp.pcs, 2, max_cells=ctx.max_cells, seed=ctx.seed)
    }


def _score_mmd(ref: _Cells, smp: _Cells, ctx: _ScoringContext) -> dict[str, float]:
    # The biased (V-statistic) estimator is always >= 0 and its floor is the finite-sample
    # bias, so synthetic / floor stays interpretable; the unbiased one hovers around 0.
    value = mmd_rbf(
        ref.pcs, smp.pcs, ctx.bandwidths, biased=True, max_cells=ctx.max_cells, seed=ctx.seed
    )
    return {"mmd_rbf": value}


def _score_energy(ref: _Cells, smp: _Cells, ctx: _ScoringContext) -> dict[str, float]:
    value = energy_distance(ref.pcs, smp.pcs, max_cells=ctx.max_cells, seed=ctx.seed)
    return {"energy_distance": value}


def _score_c2st(ref: _Cells, smp: _Cells, ctx: _ScoringContext) -> dict[str, float]:
    value = classifier_two_sample_auc(ref.pcs, smp.pcs, ctx.seed, max_cells=ctx.max_cells)
    return {"c2st_auc": value}


def _score_prdc(ref: _Cells, smp: _Cells, ctx: _ScoringContext) -> dict[str, float]:
    if min(len(ref), len(smp)) <= PRDC_K:
        # k-NN radii are undefined with k or fewer points.
        return {f"prdc_{name}": float("nan") for name in _PRDC_NAMES}
    values = precision_recall_density_coverage(
        ref.pcs, smp.pcs, k=PRDC_K, max_cells=ctx.max_cells, seed=ctx.seed
    )
    return {f"prdc_{name}": values[name] for name in _PRDC_NAMES}


def _score_gene_mean(ref: _Cells, smp: _Cells, ctx: _ScoringContext) -> dict[str, float]:
    return {"gene_mean_corr": gene_mean_correlation(ref.expression, smp.expression)}


def _score_gene_var(ref: _Cells, smp: _Cells, ctx: _ScoringContext) -> dict[str, float]:
    return {"gene_var_corr": gene_variance_correlation(ref.expression, smp.expression)}


def _score_gene_zero(ref: _Cells, smp: _Cells, ctx: _ScoringContext) -> dict[str, float]:
    return {"gene_zero_frac_corr": gene_zero_fraction_correlation(ref.expression, smp.expression)}


def _score_gene_corr(ref: _Cells, smp: _Cells, ctx: _ScoringContext) -> dict[str, float]:
    return {"gene_corr_error": gene_correlation_error(ref.expression, smp.expression)}


def _score_library(ref: _Cells, smp: _Cells, ctx: _ScoringContext) -> dict[str, float]:
    if ref.library_size is None or smp.library_size is None:
        # Log-normalised synthetic data carry no library size.
        return {"library_size_w1": float("nan")}
    return {"library_size_w1": library_size_distance(ref.library_size, smp.library_size)}


_DISTRIBUTION_SCORERS: dict[str, Scorer] = {
    "wasserstein_1": _score_wasserstein_1,
    "wasserstein_2": _score_wasserstein_2,
    "mmd_rbf": _score_mmd,
    "energy_distance": _score_energy,
    "c2st_auc": _score_c2st,
    "prdc": _score_prdc,
    "gene_mean_corr": _score_gene_mean,
    "gene_var_corr": _score_gene_var,
    "gene_zero_frac_corr": _score_gene_zero,
    "gene_corr_error": _score_gene_corr,
    "library_size_w1": _score_library,
}


def _score_distributions(
    reference: _Cells, sample: _Cells, selected: Sequence[str], ctx: _ScoringContext
) -> dict[str, float]:
    """All selected distribution metrics of ``sample`` against ``reference``."""
    scores: dict[str, float] = {}
    for name in selected:
        if name in _DISTRIBUTION_SCORERS:
            scores.update(_DISTRIBUTION_SCORERS[name](reference, sample, ctx))
    return scores


def _select_metrics(metrics: Sequence[str] | None, labels_key: str | None) -> list[str]:
    """Validate the requested metric names; drop label metrics when there are no labels."""
    if metrics is None:
        return list(DISTRIBUTION_METRICS if labels_key is None else AVAILABLE_METRICS)
    if isinstance(metrics, str):
        metrics = [metrics]
    unknown = sorted(set(metrics) - set(AVAILABLE_METRICS))
    if unknown:
        raise ValueError(f"Unknown metrics {unknown}; available: {list(AVAILABLE_METRICS)}.")
    needs_labels = [m for m in metrics if m in LABEL_METRICS]
    if needs_labels and labels_key is None:
        raise ValueError(f"Metrics {needs_labels} need `labels_key`.")
    return [m for m in AVAILABLE_METRICS if m in metrics]


def _labels_of(adata: ad.AnnData, labels_key: str | None, name: str) -> np.ndarray | None:
    """Labels as strings (None where missing), or None without ``labels_key``."""
    if labels_key is None:
        return None
    if labels_key not in adata.obs:
        raise KeyError(f"`labels_key` {labels_key!r} not found in {name}.obs.")
    return label_strings(adata.obs[labels_key].to_numpy(dtype=object))


def _strata(labels: np.ndarray | None, n: int) -> np.ndarray:
    """Stratum of every cell: its label, a shared stratum for missing labels, or one stratum."""
    if labels is None:
        return np.zeros(n, dtype=object)
    return np.where(is_missing_label(labels), _MISSING_STRATUM, labels).astype(object)


def _stratified_halves(
    labels: np.ndarray | None, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``n`` cells in two halves A/B within every stratum (odd cells go to B)."""
    strata = _strata(labels, n)
    half_a, half_b = [], []
    for stratum in sorted(set(strata.tolist()), key=str):
        members = rng.permutation(np.flatnonzero(strata == stratum))
        half_a.append(members[: len(members) // 2])
        half_b.append(members[len(members) // 2 :])
    return np.sort(np.concatenate(half_a)), np.sort(np.concatenate(half_b))


def _match_label_composition(
    target_labels: np.ndarray | None,
    n_target: int,
    pool_labels: np.ndarray | None,
    n_pool: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Indices of ``n_target`` pool cells with the target's label counts where possible."""
    if target_labels is None or pool_labels is None:
        return np.sort(rng.choice(n_pool, size=min(n_target, n_pool), replace=False))
    chosen: list[np.ndarray] = []
    short: dict[str, int] = {}
    target_counts = pd.Series(target_labels[~is_missing_label(target_labels)]).value_counts()
    for label in sorted(target_counts.index):
        candidates = np.flatnonzero(pool_labels == label)
        take = min(int(target_counts[label]), candidates.size)
        if take < target_counts[label]:
            short[label] = int(target_counts[label]) - take
        chosen.append(rng.choice(candidates, size=take, replace=False))
    taken = np.concatenate(chosen) if chosen else np.array([], dtype=int)
    if short:
        warnings.warn(
            f"Synthetic data have too few cells for labels {short} (missing counts); the "
            "quota is filled with synthetic cells of other labels.",
            UserWarning,
            stacklevel=3,
        )
    # A's unlabelled cells and any shortfall are filled uniformly from the unused cells.
    leftover = np.setdiff1d(np.arange(n_pool), taken)
    n_fill = min(n_target - taken.size, leftover.size)
    fill = rng.choice(leftover, size=n_fill, replace=False)
    return np.sort(np.concatenate([taken, fill]).astype(int))


def _per_label_groups(
    reference: _Cells, samples: Mapping[str, _Cells], min_cells: int
) -> list[str]:
    """Labels with at least ``min_cells`` cells in the reference and in every sample."""
    assert reference.labels is not None
    present = reference.labels[~is_missing_label(reference.labels)]
    counts = {name: pd.Series(s.labels).value_counts() for name, s in samples.items()}
    eligible, skipped = [], []
    for label, n_ref in pd.Series(present).value_counts().sort_index().items():
        if n_ref < min_cells or counts["floor"].get(label, 0) < min_cells:
            continue
        if counts["synthetic"].get(label, 0) < min_cells:
            skipped.append(label)
            continue
        eligible.append(str(label))
    if skipped:
        warnings.warn(
            f"Labels {skipped} have too few synthetic cells and are left out of the "
            "per-label means (of both comparisons).",
            UserWarning,
            stacklevel=3,
        )
    return eligible


def _global_rows(
    reference: _Cells,
    samples: Mapping[str, _Cells],
    selected: Sequence[str],
    ctx: _ScoringContext,
) -> list[dict[str, object]]:
    """Distribution metrics of every comparison on all cells."""
    rows = []
    for comparison, sample in samples.items():
        scores = _score_distributions(reference, sample, selected, ctx)
        rows += [_row(comparison, metric, value) for metric, value in scores.items()]
    return rows


def _per_label_rows(
    reference: _Cells,
    samples: Mapping[str, _Cells],
    selected: Sequence[str],
    labels: Sequence[str],
    seed: int,
    max_cells: int | None,
) -> tuple[list[dict[str, object]], dict[str, list[float]]]:
    """Per-label means of the distribution metrics, and the bandwidths used per label."""
    per_comparison: dict[str, list[dict[str, float]]] = {c: [] for c in samples}
    bandwidths_per_label: dict[str, list[float]] = {}
    for label in labels:
        ref_label = reference.with_label(label)
        floor_label = samples["floor"].with_label(label)
        # Bandwidths come from real cells only, so both comparisons use the same kernels.
        bandwidths = mmd_bandwidths(floor_label.pcs, ref_label.pcs, seed=seed)
        bandwidths_per_label[label] = bandwidths.tolist()
        ctx = _ScoringContext(bandwidths, seed, max_cells)
        for comparison, sample in samples.items():
            scores = _score_distributions(ref_label, sample.with_label(label), selected, ctx)
            per_comparison[comparison].append(scores)
    return _shared_label_means(per_comparison), bandwidths_per_label


def _shared_label_means(
    per_comparison: Mapping[str, Sequence[Mapping[str, float]]],
) -> list[dict[str, object]]:
    """Per-label means over the labels where every comparison has a value for the metric.

    A label undefined for one comparison only (e.g. a variance correlation of a label the
    generator collapsed onto one cell) is left out of all of them, so that the synthetic and
    floor means are taken over the same labels.
    """
    comparisons = [c for c, scores in per_comparison.items() if scores]
    if not comparisons:
        return []
    rows = []
    for metric in per_comparison[comparisons[0]][0]:
        table = np.array([[s[metric] for s in per_comparison[c]] for c in comparisons], float)
        shared = np.all(np.isfinite(table), axis=0)
        for comparison, values in zip(comparisons, table):
            value = float(values[shared].mean()) if shared.any() else float("nan")
            rows.append(_row(comparison, metric, value, scope="per_label_mean"))
    return rows


def _label_metric_rows(
    train_cells: _Cells | None,
    reference: _Cells,
    samples: Mapping[str, _Cells],
    selected: Sequence[str],
    min_cells: int,
) -> list[dict[str, object]]:
    """k-NN label accuracy (vs the training cells) and DE recovery (vs the reference)."""
    rows = []
    for comparison, sample in samples.items():
        if "knn_label_accuracy" in selected:
            assert train_cells is not None
            value = knn_label_accuracy(
                train_cells.pcs, train_cells.labels, sample.pcs, sample.labels, k=KNN_K
            )
            rows.append(_row(comparison, "knn_label_accuracy", value))
        if "de_logfc_corr" in selected:
            value = de_logfc_recovery(
                reference.expression,
                reference.labels,
                sample.expression,
                sample.labels,
                min_cells=min_cells,
            )
            rows.append(_row(comparison, "de_logfc_corr", value))
    return rows


def _row(comparison: str, metric: str, value: float, scope: str = "global") -> dict[str, object]:
    """One record of the long result table."""
    return {"comparison": comparison, "metric": metric, "scope": scope, "value": float(value)}


#: Largest log1p(CP10k) value: a cell with all its counts in one gene.
_MAX_LOG1P_CP10K = float(np.log1p(1e4)) + 1e-4


def _check_synthetic_values(adata: ad.AnnData, layer: str | None, kind: str) -> None:
    """Finite values that can be what ``kind`` says: non-negative counts, or log1p(CP10k)."""
    matrix = get_matrix(adata, layer)
    where = "synthetic.X" if layer is None else f"synthetic.layers[{layer!r}]"
    check_values(matrix, require_counts=False, where=where)
    low, high = _value_range(matrix)
    if low < 0:
        raise ValueError(
            f"{where} has negative values ({low:.3g}); neither counts nor log1p(CP10k) are "
            "negative."
        )
    if kind == "lognorm" and high > _MAX_LOG1P_CP10K:
        # A warning, not an error: an unbounded generator (a flow) can overshoot a little.
        warnings.warn(
            f"{where} is read as log1p(CP10k) values, but reaches {high:.3g}, above "
            f"log1p(1e4) = {_MAX_LOG1P_CP10K:.3f}, which no such value can. If these are "
            "expected (non-integer) counts, pass synthetic_kind='counts'.",
            UserWarning,
            stacklevel=3,
        )


def _value_range(matrix: Any) -> tuple[float, float]:
    """Smallest and largest value (a sparse block's implicit zeros included), by row blocks."""
    low, high = np.inf, -np.inf
    for block in iter_row_chunks(matrix):
        values = block.data if sp.issparse(block) else np.asarray(block)
        has_zeros = sp.issparse(block) and block.nnz < block.shape[0] * block.shape[1]
        if values.size:
            low, high = min(low, float(values.min())), max(high, float(values.max()))
        if has_zeros:
            low, high = min(low, 0.0), max(high, 0.0)
    return low, high


def _warn_if_not_counts(adata: ad.AnnData, layer: str | None, name: str) -> None:
    """Real data are always normalised as counts; say so when they do not look like counts."""
    matrix = get_matrix(adata, layer)
    check_values(matrix, require_counts=False, where=f"{name} data")
    if not is_count_matrix(matrix):
        warnings.warn(
            f"{name} does not hold non-negative integer counts; it is normalised as counts "
            "anyway.",
            UserWarning,
            stacklevel=3,
        )


def _sort_rows(rows: list[dict[str, object]]) -> pd.DataFrame:
    """Rows ordered by comparison, scope (global first) and metric registry order."""
    df = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    metric_order = {m: i for i, m in enumerate(HIGHER_IS_BETTER)}
    keys = pd.DataFrame(
        {
            "c": df["comparison"].map(COMPARISONS.index),
            "s": (df["scope"] != "global").astype(int),
            "m": df["metric"].map(metric_order),
        }
    )
    order = keys.sort_values(["c", "s", "m"], kind="stable").index
    df = df.loc[order].reset_index(drop=True)
    df["value"] = df["value"].astype(np.float64)
    return df


def evaluate(
    train: ad.AnnData,
    test: ad.AnnData,
    synthetic: ad.AnnData,
    labels_key: str | None = None,
    *,
    n_hvg: int = 2000,
    n_pcs: int = 30,
    layer: str | None = None,
    synthetic_layer: str | None = None,
    synthetic_kind: DataKindOrAuto = "auto",
    seed: int = 0,
    per_label: bool = True,
    metrics: Sequence[str] | None = None,
    min_cells_per_label: int = 5,
    max_cells: int | None = 2000,
    common_space: CommonSpace | None = None,
) -> pd.DataFrame:
    """Score synthetic cells against real held-out cells, next to a real-data floor.

    The test set is split into label-stratified halves A and B (seeded). The ``"floor"``
    comparison scores A against B: what a perfect generator would get at this sample size.
    The ``"synthetic"`` comparison scores a synthetic subsample with A's size and label
    composition against the same B. Distribution metrics run on the ``n_pcs`` PCs (Wasserstein,
    MMD, energy, C2ST, PRDC) or on the log1p(CP10k) HVG expression (gene statistics) of the
    :class:`CommonSpace` fitted on ``train``; see the module docstring for details.

    Parameters
    ----------
    train
        Real training cells, raw counts in ``.X`` or ``layers[layer]``.
    test
        Real held-out cells, raw counts (same ``layer``).
    synthetic
        Generated cells: counts or log1p(CP10k) values (see ``synthetic_kind``).
    labels_key
        ``obs`` column with cell labels (the labels synthetic cells were conditioned on).
        Enables per-label means, k-NN label accuracy and DE recovery. Cells with a missing
        label are kept for global metrics but dropped from label-aware ones.
    n_hvg
        Number of seurat_v3 HVGs selected on ``train``.
    n_pcs
        Number of principal components.
    layer
        Layer of ``train`` and ``test`` holding counts; None means ``.X``.
    synthetic_layer
        Layer of ``synthetic``; None means ``.X``.
    synthetic_kind
        ``"counts"``, ``"lognorm"`` (already log1p(CP10k); not re-normalised) or ``"auto"``
        (counts when every value is a non-negative integer).
    seed
        Seed of the split, subsampling, classifiers and PCA; same seed, same numbers.
    per_label
        Also report per-label means of the distribution metrics (needs ``labels_key``).
    metrics
        Subset of :data:`AVAILABLE_METRICS`; None computes all that apply.
    min_cells_per_label
        Minimum cells per label in B, A and the synthetic subsample for per-label metrics
        (also the per-label minimum of DE recovery).
    max_cells
        Maximum cells per sample for each metric (seeded subsample).
    common_space
        Already fitted :class:`CommonSpace` to reuse (``n_hvg``, ``n_pcs`` and ``layer`` are
        then taken from it); None fits one on ``train``.

    Returns
    -------
    pandas.DataFrame
        Long table with columns ``comparison`` (``"synthetic"``/``"floor"``), ``metric``,
        ``scope`` (``"global"``/``"per_label_mean"``) and ``value``. ``df.attrs`` records
        ``mmd_bandwidths`` (global), ``mmd_bandwidths_per_label``, ``mmd_estimator``
        (``"biased"``), ``per_label_labels``,
        ``synthetic_kind``, ``n_cells``, ``n_hvg``, ``n_pcs``, ``seed`` and
        ``floor_definition``.

    Examples
    --------
    >>> import anndata as ad, numpy as np
    >>> rng = np.random.default_rng(0)
    >>> gene_means = rng.gamma(1.0, 3.0, size=30)
    >>> def sample(n):
    ...     return ad.AnnData(rng.poisson(gene_means, size=(n, 30)).astype(np.float32))
    >>> df = evaluate(sample(120), sample(80), sample(80), n_hvg=20, n_pcs=5)
    >>> sorted(df["comparison"].unique())
    ['floor', 'synthetic']
    """
    selected = _select_metrics(metrics, labels_key)
    # Checked first, so that an empty input is named instead of failing inside a transform.
    _check_enough_cells(test, "test", "to be split")
    _check_enough_cells(synthetic, "synthetic", "to be compared with the test set")
    needs_train_cells = "knn_label_accuracy" in selected
    if common_space is None:
        _check_enough_cells(train, "train", "to fit the common space (HVGs and PCA)")
        common_space = CommonSpace(n_hvg, n_pcs, layer=layer, seed=seed)
        train_data = common_space.fit_transform(train)
    elif not common_space.is_fitted:
        raise ValueError("`common_space` must be fitted; call `common_space.fit(train)`.")
    else:
        layer = common_space.layer
        train_data = common_space.transform(train, "counts", layer) if needs_train_cells else None
    _warn_if_not_counts(train, layer, "train")
    _warn_if_not_counts(test, layer, "test")

    kind = resolve_data_kind(synthetic, synthetic_kind, synthetic_layer)
    _check_synthetic_values(synthetic, synthetic_layer, kind)
    test_cells = _Cells.from_transformed(
        _transform(common_space, test, "test", "counts", layer),
        _labels_of(test, labels_key, "test"),
    )
    synthetic_cells = _Cells.from_transformed(
        _transform(common_space, synthetic, "synthetic", kind, synthetic_layer),
        _labels_of(synthetic, labels_key, "synthetic"),
    )
    train_cells = (
        _Cells.from_transformed(train_data, _labels_of(train, labels_key, "train"))
        if needs_train_cells
        else None
    )

    rng = np.random.default_rng(seed)
    idx_a, idx_b = _stratified_halves(test_cells.labels, len(test_cells), rng)
    floor_sample, reference = test_cells.take(idx_a), test_cells.take(idx_b)
    idx_synthetic = _match_label_composition(
        floor_sample.labels, len(floor_sample), synthetic_cells.labels, len(synthetic_cells), rng
    )
    samples = {"synthetic": synthetic_cells.take(idx_synthetic), "floor": floor_sample}

    # Bandwidths from real cells only (A ∪ B), shared by both comparisons.
    bandwidths = mmd_bandwidths(floor_sample.pcs, reference.pcs, seed=seed)
    ctx = _ScoringContext(bandwidths, seed, max_cells)
    rows = _global_rows(reference, samples, selected, ctx)
    rows += _label_metric_rows(train_cells, reference, samples, selected, min_cells_per_label)
    labels_used: list[str] = []
    bandwidths_per_label: dict[str, list[float]] = {}
    if per_label and labels_key is not None:
        labels_used = _per_label_groups(reference, samples, min_cells_per_label)
        label_rows, bandwidths_per_label = _per_label_rows(
            reference, samples, selected, labels_used, seed, max_cells
        )
        rows += label_rows

    df = _sort_rows(rows)
    df.attrs.update(
        {
            "mmd_bandwidths": bandwidths.tolist(),
            "mmd_bandwidths_per_label": bandwidths_per_label,
            "per_label_labels": labels_used,
            "mmd_estimator": "biased",
            "synthetic_kind": kind,
            "n_cells": {
                "reference": len(reference),
                "floor": len(floor_sample),
                "synthetic": len(samples["synthetic"]),
                "synthetic_total": len(synthetic_cells),
            },
            "n_hvg": int(common_space.hvg_names_.size),
            "n_pcs": int(common_space.pca_.n_components_),
            "seed": seed,
            "floor_definition": FLOOR_DEFINITION,
        }
    )
    return df


#: Fewest cells of the test set (split into two halves of >= 2 cells) and of the synthetic
#: set (scored against one half: a single cell would give global scores of one point).
MIN_EVALUATION_CELLS = 4


def _transform(
    space: CommonSpace, adata: ad.AnnData, name: str, kind: str, layer: str | None
) -> Any:
    """``space.transform``, with a gene mismatch said to be ``name``'s."""
    try:
        return space.transform(adata, kind, layer)
    except ValueError as err:
        if "missing from var_names" not in str(err):
            raise
        raise ValueError(
            f"`{name}` lacks genes of the common space fitted on `train`: {err} Pass cells "
            f"over the training genes, e.g. `{name}[:, train.var_names]`."
        ) from err


def _check_enough_cells(adata: Any, name: str, why: str) -> None:
    """Refuse an input with fewer than :data:`MIN_EVALUATION_CELLS` cells, naming it."""
    if adata.n_obs < MIN_EVALUATION_CELLS:
        raise ValueError(
            f"`{name}` needs at least {MIN_EVALUATION_CELLS} cells {why}, got {adata.n_obs}."
        )


def evaluate_table(df: pd.DataFrame) -> pd.DataFrame:
    """Wide summary of :func:`evaluate`: synthetic value, floor value and their ratio.

    Parameters
    ----------
    df
        Long output of :func:`evaluate`.

    Returns
    -------
    pandas.DataFrame
        One row per ``(metric, scope)`` with columns ``metric``, ``scope``, ``synthetic``,
        ``floor``, ``ratio_to_floor`` (``synthetic / floor``; inf or NaN when the floor is 0)
        and ``higher_is_better``.

    Examples
    --------
    >>> import pandas as pd
    >>> long = pd.DataFrame(
    ...     {
    ...         "comparison": ["synthetic", "floor"],
    ...         "metric": ["c2st_auc", "c2st_auc"],
    ...         "scope": ["global", "global"],
    ...         "value": [0.75, 0.5],
    ...     }
    ... )
    >>> float(evaluate_table(long)["ratio_to_floor"].iloc[0])
    1.5
    """
    missing = sorted(set(RESULT_COLUMNS) - set(df.columns))
    if missing:
        raise ValueError(f"`df` lacks columns {missing}; pass the output of `evaluate`.")
    keys = df[["metric", "scope"]].drop_duplicates()
    wide = df.set_index(["metric", "scope", "comparison"])["value"].unstack("comparison")
    wide = wide.reindex(pd.MultiIndex.from_frame(keys)).reindex(columns=list(COMPARISONS))
    with np.errstate(divide="ignore", invalid="ignore"):
        wide["ratio_to_floor"] = wide["synthetic"] / wide["floor"]
    table = wide.reset_index()
    table.columns.name = None
    table["higher_is_better"] = table["metric"].map(HIGHER_IS_BETTER)
    table.attrs = dict(df.attrs)
    return table
