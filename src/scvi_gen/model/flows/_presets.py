"""Training presets of the flows: settings that converge, and the published study's settings."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal

logger = logging.getLogger(__name__)

PresetName = Literal["default", "paper"]


@dataclass(frozen=True)
class FlowPreset:
    """Architecture sizes and ``train()`` defaults of a flow.

    Attributes
    ----------
    name
        ``"default"`` or ``"paper"``.
    hidden_features
        Hidden sizes of every MADE network.
    n_transforms
        MAF layers (:class:`~scvi_gen.MAFFlow`).
    n_blocks
        Coupling + MAF blocks (:class:`~scvi_gen.MOEFlow`).
    marginal_bins
        Bins of the per-gene conditional spline layer (0: none, as published).
    train
        Defaults of ``train()`` (any can be overridden there).
    plan
        Defaults of the training plan (optimizer, learning rate...).
    """

    name: str
    hidden_features: tuple[int, ...]
    n_transforms: int
    n_blocks: int
    marginal_bins: int
    train: dict[str, Any] = field(default_factory=dict)
    plan: dict[str, Any] = field(default_factory=dict)


PRESETS: dict[str, FlowPreset] = {
    # Converges: AdamW at 1e-3 with clipping and LR decay on plateaus, early stopping on the
    # validation NLL (the best epoch's weights are restored).
    "default": FlowPreset(
        name="default",
        hidden_features=(256, 256),
        n_transforms=4,
        n_blocks=2,
        marginal_bins=8,
        train={
            "max_epochs": 300,
            "batch_size": 128,
            "early_stopping": True,
            "early_stopping_patience": 6,
            "gradient_clip_val": 5.0,
        },
        plan={
            "optimizer": "AdamW",
            "lr": 1e-3,
            "weight_decay": 1e-4,
            "eps": 1e-8,
            "reduce_lr_on_plateau": True,
            "lr_patience": 3,
            "lr_factor": 0.5,
            "lr_scheduler_metric": "reconstruction_loss_validation",
        },
    ),
    # The flow study's MAF-FB / MOE-FB recipe: one layer (block) with 1,024 hidden units,
    # plain Adam at lr 1e-6, batch 128, 100 epochs, no early stopping. Kept for comparison: it
    # is still essentially untrained after 100 epochs.
    "paper": FlowPreset(
        name="paper",
        hidden_features=(1024, 1024),
        n_transforms=1,
        n_blocks=1,
        marginal_bins=0,
        train={"max_epochs": 100, "batch_size": 128, "early_stopping": False},
        plan={
            "optimizer": "Adam",
            "lr": 1e-6,
            "weight_decay": 0.0,
            "eps": 1e-8,
            "reduce_lr_on_plateau": False,
        },
    ),
}


def get_preset(name: str) -> FlowPreset:
    """Look up a preset by name, with a clear error for an unknown one.

    Parameters
    ----------
    name
        ``"default"`` or ``"paper"``.

    Returns
    -------
    The preset.
    """
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}; choose one of {sorted(PRESETS)}.")
    return PRESETS[name]
