"""Lightning callback that keeps the exponential moving average of the module's weights."""

from __future__ import annotations

import logging
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

logger = logging.getLogger(__name__)


@torch.no_grad()
def ema_step(
    average: torch.nn.Module, live: torch.nn.Module, n_updates: int, max_decay: float
) -> None:
    """Move ``average``'s parameters one exponential-moving-average step towards ``live``'s.

    The decay ramps up as ``(1 + n) / (10 + n)`` (capped at ``max_decay``) so that early
    averages follow the weights instead of the random initialisation.

    Parameters
    ----------
    average
        Network holding the averaged weights (updated in place).
    live
        Network being trained, same architecture.
    n_updates
        Number of this update, counting from 1.
    max_decay
        Largest decay.

    Examples
    --------
    >>> ema_step(module.ema_network, module.network, n_updates=1, max_decay=0.999)
    """
    decay = min(max_decay, (1.0 + n_updates) / (10.0 + n_updates))
    for ema, weight in zip(average.parameters(), live.parameters()):
        ema.lerp_(weight.detach(), 1.0 - decay)


class EMACallback(Callback):
    """Call ``pl_module.module.update_ema()`` after every optimiser step.

    The averaged weights live in the module (``ema_network``), so they are saved and loaded
    with its state dict and used by sampling.

    Examples
    --------
    >>> model.train(callbacks=[EMACallback()])  # DiscreteDiffusion and CFGen add it
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
