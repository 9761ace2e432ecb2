"""Lightning callback keeping the best weights of a training run in memory."""

from __future__ import annotations

import copy
import logging
import math
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback

logger = logging.getLogger(__name__)


class RestoreBestWeights(Callback):
    """Restore the module's weights of the epoch with the best validation metric at the end.

    Unlike scvi-tools' ``SaveCheckpoint`` nothing is written to disk: the best state dict is
    kept in memory (CPU copies), which suits small modules trained many short epochs. Used by
    every generator whose ``train`` takes ``restore_best``.

    Parameters
    ----------
    monitor
        Logged metric to minimise.

    Examples
    --------
    >>> from scvi_gen.base import RestoreBestWeights
    >>> model.train(callbacks=[RestoreBestWeights("validation_loss")])
    """

    def __init__(self, monitor: str = "validation_loss"):
        super().__init__()
        self.monitor = monitor
        self.best = math.inf
        self.best_epoch: int | None = None
        self._state: dict[str, torch.Tensor] | None = None

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Keep a copy of the weights when the monitored metric improved."""
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None or not math.isfinite(float(value)) or float(value) >= self.best:
            return
        self.best = float(value)
        self.best_epoch = trainer.current_epoch
        module: Any = pl_module.module
        self._state = {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}

    def state_dict(self) -> dict[str, Any]:
        """The best value, epoch and weights so far (saved in Lightning checkpoints)."""
        return {"best": self.best, "best_epoch": self.best_epoch, "state": self._state}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume from a checkpoint's state."""
        self.best = float(state_dict["best"])
        self.best_epoch = state_dict["best_epoch"]
        self._state = state_dict["state"]

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Load the best weights back into the module."""
        if self._state is None:
            return
        pl_module.module.load_state_dict(copy.deepcopy(self._state))
        logger.info(
            "Restored the weights of epoch %s (%s %.4f).", self.best_epoch, self.monitor, self.best
        )
