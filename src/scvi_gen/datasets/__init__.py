"""Real single-cell data sets (local file, cache or download, checksum-verified) and splits."""

from __future__ import annotations

from ._loaders import (
    PBMC68K_RTOL,
    citeseq_pbmc,
    citeseq_pbmc5k,
    kang_ifnb,
    multiome_pbmc,
    pancreas,
    pbmc3k,
    pbmc68k_reduced,
)
from ._paths import (
    DATA_DIR_ENV,
    DATA_URL_ENV,
    dataset_path,
    download_url,
    get_data_dir,
    sha256sum,
    verify_file,
)
from ._registry import DATASETS, DatasetInfo, get_dataset_info
from ._splits import (
    kfold_splits,
    matched_generation_plan,
    q3_generation_plan,
    train_test_indices,
    train_test_split,
)
from ._upstream import (
    PBMC68K_ANNOTATION_URL,
    PBMC68K_MATRIX_URL,
    hca_bm10k,
    pbmc3k_scanpy,
    pbmc68k,
)

__all__ = [
    "DATASETS",
    "DATA_DIR_ENV",
    "DATA_URL_ENV",
    "PBMC68K_ANNOTATION_URL",
    "PBMC68K_MATRIX_URL",
    "PBMC68K_RTOL",
    "DatasetInfo",
    "citeseq_pbmc",
    "citeseq_pbmc5k",
    "dataset_path",
    "download_url",
    "get_data_dir",
    "get_dataset_info",
    "hca_bm10k",
    "kang_ifnb",
    "kfold_splits",
    "multiome_pbmc",
    "pancreas",
    "pbmc3k",
    "pbmc3k_scanpy",
    "pbmc68k",
    "pbmc68k_reduced",
    "q3_generation_plan",
    "sha256sum",
    "matched_generation_plan",
    "train_test_indices",
    "train_test_split",
    "verify_file",
]
