"""Baseline generators: scVI prior sampling (and SDV synthesizers, optional extra)."""

from .scvi_generator import LabelPriorVAE, SCVIGenerator

__all__ = ["LabelPriorVAE", "SCVIGenerator"]
