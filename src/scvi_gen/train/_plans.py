"""The training plan of scvi-gen generators: optimiser groups, EMA steps and stages."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from scvi.train import TrainingPlan

logger = logging.getLogger(__name__)

#: Key of scvi-gen's own entries in a Lightning checkpoint.
CHECKPOINT_KEY = "scvi_gen"


class DistributedMetricsTrainingPlan(TrainingPlan):
    """scvi-tools' :class:`~scvi.train.TrainingPlan` whose metrics also sync on CPU processes.

    scvi-tools logs its ELBO metrics under ``torch.inference_mode()``. Across several
    processes Lightning then averages them after the validation loop; the gloo backend (CPU)
    has no averaging collective, so Lightning sums and divides in place, which an inference
    tensor refuses ("Inplace update to inference tensor outside InferenceMode"). Logging the
    same values under ``torch.no_grad()`` keeps them ordinary tensors; one process is
    unaffected.

    Parameters
    ----------
    module
        The scvi-tools module.
    **kwargs
        :class:`~scvi.train.TrainingPlan` arguments.

    Examples
    --------
    >>> plan = DistributedMetricsTrainingPlan(model.module, lr=1e-3)
    """

    def compute_and_log_metrics(self, loss_output: Any, metrics: Any, mode: str) -> None:
        """scvi-tools' metric logging, under ``no_grad`` instead of ``inference_mode``."""
        log = TrainingPlan.compute_and_log_metrics
        with torch.no_grad():
            getattr(log, "__wrapped__", log)(self, loss_output, metrics, mode)


class GeneratorTrainingPlan(DistributedMetricsTrainingPlan):
    """scvi-tools' :class:`~scvi.train.TrainingPlan` with what the generators need on top.

    - **Optimiser**: Adam/AdamW built here (a bound method, so the plan pickles under
      ``ddp_spawn``; a local closure as ``optimizer_creator`` does not), optionally with
      fused single-kernel updates (the flows have millions of weights and little compute per
      weight) and with a faster learning rate for the module's ``dispersion_parameters``
      (the NB dispersion barely leaves its initial value at the networks' rate).
    - **EMA**: ``module.update_ema()`` after every optimiser step (not every batch, so
      gradient accumulation and skipped steps are right), when the module has one.
    - **Stage**: two-stage modules are put in ``stage`` (``module.set_stage``) and the stage
      is written into every Lightning checkpoint, so ``ckpt_path`` resumes the right stage.

    Parameters
    ----------
    module
        The scvi-tools module.
    stage
        Training stage of a two-stage module (``None`` for one-stage modules).
    fused
        Fused Adam/AdamW kernels (on CPU and CUDA parameters).
    dispersion_lr_factor
        Learning-rate factor of ``module.dispersion_parameters`` (1: no separate group).
    optimizer
        ``"Adam"``, ``"AdamW"`` (built here) or anything scvi-tools' plan takes.
    **kwargs
        Further :class:`~scvi.train.TrainingPlan` arguments (``lr``, ``weight_decay``,
        ``eps``, ``reduce_lr_on_plateau`` ...).

    Examples
    --------
    >>> plan = GeneratorTrainingPlan(model.module, stage="flow", optimizer="AdamW", lr=1e-3)
    """

    def __init__(
        self,
        module: Any,
        *,
        stage: str | None = None,
        fused: bool = False,
        dispersion_lr_factor: float = 1.0,
        optimizer: str = "AdamW",
        **kwargs: Any,
    ) -> None:
        self._optimizer_cls = {"Adam": torch.optim.Adam, "AdamW": torch.optim.AdamW}.get(optimizer)
        if self._optimizer_cls is not None:
            kwargs["optimizer_creator"] = self._create_optimizer
            optimizer = "Custom"
        super().__init__(module, optimizer=optimizer, **kwargs)
        self.stage = stage
        self.fused = bool(fused)
        self.dispersion_lr_factor = float(dispersion_lr_factor)
        if stage is not None:
            module.set_stage(stage)

    def _create_optimizer(self, params: Any) -> torch.optim.Optimizer:
        params = list(params)
        fast = list(getattr(self.module, "dispersion_parameters", []))
        is_fast = [any(p is d for d in fast) for p in params]
        groups = [{"params": [p for p, f in zip(params, is_fast) if not f]}]
        if self.dispersion_lr_factor != 1.0 and any(is_fast):
            groups.append(
                {
                    "params": [p for p, f in zip(params, is_fast) if f],
                    "lr": self.lr * self.dispersion_lr_factor,
                    "weight_decay": 0.0,
                }
            )
        fused = self.fused and all(p.device.type in ("cpu", "cuda") for p in params)
        return self._optimizer_cls(
            groups, lr=self.lr, eps=self.eps, weight_decay=self.weight_decay, fused=fused or None
        )

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """Step the optimiser, then the module's moving average of weights."""
        super().optimizer_step(*args, **kwargs)
        update_ema = getattr(self.module, "update_ema", None)
        if update_ema is not None:
            update_ema()

    def on_train_start(self) -> None:
        """Put the module in this plan's stage (a resumed checkpoint may have changed it)."""
        if self.stage is not None:
            self.module.set_stage(self.stage)
            self.module.train()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record the stage in the checkpoint."""
        checkpoint[CHECKPOINT_KEY] = {"stage": self.stage}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse a checkpoint of another stage (its optimiser state would not fit)."""
        stage = checkpoint.get(CHECKPOINT_KEY, {}).get("stage")
        if stage != self.stage:
            raise ValueError(
                f"The checkpoint was saved in training stage {stage!r}, not {self.stage!r}."
            )


def checkpoint_stage(ckpt_path: str | Path) -> str | None:
    """The training stage recorded in a Lightning checkpoint written by a generator.

    Parameters
    ----------
    ckpt_path
        Path of the checkpoint file.

    Returns
    -------
    The stage name, or ``None`` for a one-stage model's checkpoint.

    Examples
    --------
    >>> checkpoint_stage("checkpoints/last.ckpt")
    'flow'
    """
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {path}.")
    # weights_only: reading the stage must not execute code from the file.
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    return checkpoint.get(CHECKPOINT_KEY, {}).get("stage")
