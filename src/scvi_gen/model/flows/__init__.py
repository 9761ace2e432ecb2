"""Conditional normalizing flows: :class:`MAFFlow`, :class:`MOEFlow` and their building blocks.

The models (``_maf_model``, ``_moe_model``) share a base (``_base_model``), a scvi-tools module
(``_module``), the count representation (``_representation``), the condition encoder
(``_conditioning``), the streaming fit of their data state (``_data_state``), zuko MAF layers
(``_maf``), mixture-of-experts couplings (``_moe``) and generic flow layers (``_layers``).
"""

from ._base_model import FlowModelBase, RestoreBestWeights
from ._conditioning import CategoricalSlot, ConditionEncoder, categorical_slots, log_library_sizes
from ._data_state import INIT_CELLS, fit_module_state, initialize_actnorm, sample_cells
from ._layers import ActNorm, AttentionExpert, ElementwiseAffineTransform, GroupedLinear
from ._maf import gene_orders, maf_layer, maf_transforms, marginal_spline_layer
from ._maf_model import MAFFlow
from ._module import ConditionalFlowModule
from ._moe import MixtureOfExpertsConditioner, MoECoupling, coupling_mask, moe_transforms
from ._moe_model import MOEFlow
from ._presets import PRESETS, FlowPreset, get_preset
from ._representation import (
    ZERO_WIDTH,
    LogNormRepresentation,
    RepresentationMoments,
    cp10k_scale,
    dequantise,
    explicit_gene_mask,
    gene_mask,
    matrix_source,
    n_modelled_genes,
    select_genes,
)

__all__ = [
    "INIT_CELLS",
    "PRESETS",
    "ZERO_WIDTH",
    "ActNorm",
    "AttentionExpert",
    "CategoricalSlot",
    "ConditionEncoder",
    "ConditionalFlowModule",
    "ElementwiseAffineTransform",
    "FlowModelBase",
    "FlowPreset",
    "GroupedLinear",
    "LogNormRepresentation",
    "MAFFlow",
    "MOEFlow",
    "MixtureOfExpertsConditioner",
    "MoECoupling",
    "RepresentationMoments",
    "RestoreBestWeights",
    "categorical_slots",
    "coupling_mask",
    "cp10k_scale",
    "dequantise",
    "explicit_gene_mask",
    "fit_module_state",
    "gene_mask",
    "gene_orders",
    "get_preset",
    "initialize_actnorm",
    "log_library_sizes",
    "maf_layer",
    "maf_transforms",
    "marginal_spline_layer",
    "matrix_source",
    "moe_transforms",
    "n_modelled_genes",
    "sample_cells",
    "select_genes",
]
