"""Preprocessing shared by models, baselines and metrics.

log1p(CP10k) normalisation (:data:`TARGET_SUM`, :func:`log1p_cp10k`), seurat_v3 highly
variable genes in memory (:func:`select_hvgs`) or streamed from a batch source in two passes
(:func:`select_hvgs_from_source`), and the HVG + log1p(CP10k) + PCA space fitted on training
counts (:class:`CommonSpace`, the evaluation space of :mod:`scvi_gen.metrics`).
"""

from __future__ import annotations

from ._genes import select_hvgs, select_hvgs_from_source
from ._normalize import TARGET_SUM, log1p_cp10k
from ._space import (
    CommonSpace,
    DataKind,
    DataKindOrAuto,
    TransformedData,
    is_count_matrix,
    resolve_data_kind,
)

__all__ = [
    "TARGET_SUM",
    "CommonSpace",
    "DataKind",
    "DataKindOrAuto",
    "TransformedData",
    "is_count_matrix",
    "log1p_cp10k",
    "resolve_data_kind",
    "select_hvgs",
    "select_hvgs_from_source",
]
