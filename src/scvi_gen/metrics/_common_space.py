"""The common evaluation space: HVGs, log1p(CP10k) and PCA fitted on real training data.

Defined in :mod:`scvi_gen.preprocessing`, which models and baselines share without importing
the metrics; re-exported here for the metrics and their users.
"""

from __future__ import annotations

from scvi_gen.preprocessing import (
    TARGET_SUM,
    CommonSpace,
    DataKind,
    DataKindOrAuto,
    TransformedData,
    is_count_matrix,
    resolve_data_kind,
    select_hvgs,
)

__all__ = [
    "TARGET_SUM",
    "CommonSpace",
    "DataKind",
    "DataKindOrAuto",
    "TransformedData",
    "is_count_matrix",
    "resolve_data_kind",
    "select_hvgs",
]
