"""Shared building blocks of scvi-gen generators."""

from scvi_gen._matrix import get_matrix, iter_row_chunks

from ._callbacks import RestoreBestWeights
from ._collections import as_adapter, open_collection, read_backed
from ._conditions import (
    ConditionField,
    build_condition_plan,
    condition_fields,
    counts_per_label,
    plan_to_tensors,
)
from ._data_state import (
    BatchSource,
    ReservoirSample,
    RunningMoments,
    loader_source,
    manager_source,
)
from ._generative_mixin import GenerativeMixin, resolve_seed
from ._interpolation_embedding import embed_interpolation
from ._latent_model import LatentGenerator
from ._latent_module import LatentGeneratorModule
from ._latent_ops import LatentOperationsMixin
from ._library_size import LibrarySizeFitter, LibrarySizeModel
from ._serialization import dumps, loads
from ._setup import generator_fields
from ._streaming import GenerationWriter, is_complete, read_generated
from ._validation import validate_setup_input
from ._whatif import WhatIfMixin

__all__ = [
    "LatentGenerator",
    "LatentGeneratorModule",
    "LatentOperationsMixin",
    "BatchSource",
    "LibrarySizeFitter",
    "ReservoirSample",
    "RunningMoments",
    "loader_source",
    "manager_source",
    "resolve_seed",
    "ConditionField",
    "GenerativeMixin",
    "GenerationWriter",
    "LibrarySizeModel",
    "RestoreBestWeights",
    "as_adapter",
    "build_condition_plan",
    "condition_fields",
    "counts_per_label",
    "dumps",
    "embed_interpolation",
    "generator_fields",
    "get_matrix",
    "is_complete",
    "iter_row_chunks",
    "loads",
    "open_collection",
    "plan_to_tensors",
    "read_backed",
    "read_generated",
    "validate_setup_input",
    "WhatIfMixin",
]
