"""Evaluation metrics for synthetic single-cell data (the project's yardstick).

All distribution metrics work on plain numpy arrays; :func:`evaluate` applies them in a
:class:`CommonSpace` (seurat_v3 HVGs, log1p(CP10k), PCA fitted on real training counts) and
reports a synthetic-vs-real comparison next to a real-vs-real floor.
:func:`evaluate_multimodal` does the same per modality of a MuData (RNA, protein in CLR or
log1p space, ATAC in TF-IDF + LSI space) and in their joint space.
"""

from __future__ import annotations

from ._classifier import classifier_two_sample_auc
from ._common_space import (
    CommonSpace,
    TransformedData,
    is_count_matrix,
    resolve_data_kind,
    select_hvgs,
)
from ._distances import (
    DEFAULT_BANDWIDTH_FACTORS,
    energy_distance,
    mmd_bandwidths,
    mmd_rbf,
    wasserstein,
)
from ._evaluate import (
    AVAILABLE_METRICS,
    HIGHER_IS_BETTER,
    evaluate,
    evaluate_table,
)
from ._gene_stats import (
    gene_correlation_error,
    gene_mean_correlation,
    gene_variance_correlation,
    gene_zero_fraction_correlation,
    library_size_distance,
)
from ._labels import de_logfc_recovery, knn_label_accuracy
from ._markers import cluster_label_ari, marker_overlap, top_markers
from ._memorization import closest_record_ratio
from ._multimodal import (
    DEFAULT_MARKER_PAIRS,
    MULTIMODAL_HIGHER_IS_BETTER,
    ModalitySpace,
    bootstrap_sign_stability,
    clr_transform,
    compare_marker_correlations,
    evaluate_multimodal,
    infer_modality_kinds,
    joint_sign_stability,
    marker_correlations,
    match_marker_pairs,
    multimodal_table,
    prediction_scores,
)
from ._perturbation import (
    deg_jaccard,
    jaccard,
    mean_expression_r2,
    mean_log_expression,
    perturbation_scores,
    relative_energy_distance,
    top_degs,
)
from ._prdc import precision_recall_density_coverage

__all__ = [
    "AVAILABLE_METRICS",
    "DEFAULT_BANDWIDTH_FACTORS",
    "DEFAULT_MARKER_PAIRS",
    "HIGHER_IS_BETTER",
    "MULTIMODAL_HIGHER_IS_BETTER",
    "CommonSpace",
    "ModalitySpace",
    "TransformedData",
    "bootstrap_sign_stability",
    "classifier_two_sample_auc",
    "closest_record_ratio",
    "cluster_label_ari",
    "clr_transform",
    "compare_marker_correlations",
    "de_logfc_recovery",
    "energy_distance",
    "evaluate",
    "evaluate_multimodal",
    "evaluate_table",
    "gene_correlation_error",
    "gene_mean_correlation",
    "gene_variance_correlation",
    "gene_zero_fraction_correlation",
    "infer_modality_kinds",
    "is_count_matrix",
    "joint_sign_stability",
    "knn_label_accuracy",
    "library_size_distance",
    "marker_correlations",
    "marker_overlap",
    "match_marker_pairs",
    "mmd_bandwidths",
    "mmd_rbf",
    "multimodal_table",
    "precision_recall_density_coverage",
    "deg_jaccard",
    "jaccard",
    "mean_expression_r2",
    "mean_log_expression",
    "perturbation_scores",
    "relative_energy_distance",
    "top_degs",
    "prediction_scores",
    "resolve_data_kind",
    "select_hvgs",
    "top_markers",
    "wasserstein",
]
