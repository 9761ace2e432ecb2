"""Lightning callback that keeps the exponential moving average of the module's weights."""

from __future__ import annotations

import logging
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

logger = logging.getLogger(__name__)


class EMACallback(Callback):
    """Call ``pl_module.module.update_ema()`` after every optimiser step.

    The averaged weights live in the module (``ema_network``), so they are saved and loaded
    with its state dict and used by sampling.

    Examples
    --------
    >>> model.train(callbacks=[EMACallback()])  # added automatically by DiscreteDiffusion
    """

    def on_train_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """Update the averaged weights."""
        pl_module.module.update_ema()
