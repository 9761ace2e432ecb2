"""Shared base of the conditional normalizing flows (MAFFlow, MOEFlow)."""

from ._base_model import FlowModelBase, RestoreBestWeights
from ._conditioning import CategoricalSlot, ConditionEncoder, categorical_slots
from ._maf import gene_orders, maf_layer, maf_transforms, marginal_spline_layer
from ._module import ConditionalFlowModule
from ._moe import MixtureOfExpertsConditioner, MoECoupling, coupling_mask, moe_transforms
from ._presets import PRESETS, FlowPreset, get_preset
from ._representation import (
    ZERO_WIDTH,
    LogNormRepresentation,
    cp10k_scale,
    dequantise,
    n_modelled_genes,
    select_genes,
)

__all__ = [
    "PRESETS",
    "ZERO_WIDTH",
    "CategoricalSlot",
    "ConditionEncoder",
    "ConditionalFlowModule",
    "FlowModelBase",
    "FlowPreset",
    "LogNormRepresentation",
    "MixtureOfExpertsConditioner",
    "MoECoupling",
    "RestoreBestWeights",
    "categorical_slots",
    "coupling_mask",
    "cp10k_scale",
    "dequantise",
    "gene_orders",
    "get_preset",
    "maf_layer",
    "maf_transforms",
    "marginal_spline_layer",
    "moe_transforms",
    "n_modelled_genes",
    "select_genes",
]
