"""Checks of a finished training run: say when a model stopped while it was still learning."""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

#: A run counts as still improving when its best epoch is in the last tenth of its epochs ...
_WINDOW_SHARE = 0.1
#: ... and the mean loss of that tenth is lower than that of the tenth before by this fraction.
_MIN_RELATIVE_GAIN = 1e-3


class UndertrainedWarning(UserWarning):
    """A training run ended at its epoch limit while its validation loss was still falling."""


def still_improving(losses: Any) -> tuple[bool, int]:
    """Whether a validation-loss curve was still falling when it ended.

    Parameters
    ----------
    losses
        Validation loss per epoch (NaN entries are ignored).

    Returns
    -------
    ``(improving, best_epoch)``: improving when the best epoch is in the last tenth of the
    epochs (at least the last two) and the mean loss of that tenth is more than 0.1% below
    that of the tenth before.

    Examples
    --------
    >>> still_improving([3.0, 2.0, 1.5, 1.2, 1.0])
    (True, 4)
    """
    values = np.asarray(losses, dtype=float).ravel()
    values = values[np.isfinite(values)]
    if len(values) < 5:
        return False, int(np.argmin(values)) if len(values) else -1
    best = int(np.argmin(values))
    # Windows, not single epochs: validation losses are noisy from epoch to epoch.
    window = max(2, math.ceil(_WINDOW_SHARE * len(values)))
    last, before = values[-window:].mean(), values[-2 * window : -window].mean()
    gain = (before - last) / max(abs(before), 1e-12)
    return bool(best >= len(values) - window and gain > _MIN_RELATIVE_GAIN), best


def warn_if_undertrained(
    history: Mapping[str, Any] | None,
    max_epochs: int | None,
    *,
    model: str,
    stage: str | None = None,
    monitor: str = "validation_loss",
    epochs_argument: str = "max_epochs",
) -> bool:
    """Warn (:class:`UndertrainedWarning`) when a run used all its epochs and was improving.

    Parameters
    ----------
    history
        The run's history (``model.history``): ``{metric: DataFrame or Series per epoch}``.
    max_epochs
        The run's epoch limit (``None``: judge the curve alone; early stopping never stops
        a run whose loss is still falling).
    model
        Model name for the message.
    stage
        Training stage for the message (two-stage models).
    monitor
        The validation metric.
    epochs_argument
        The ``train`` argument that sets the limit (named in the advice).

    Returns
    -------
    Whether it warned.

    Examples
    --------
    >>> warn_if_undertrained(model.history, 400, model="SCVIGenerator")
    False
    """
    if not history or monitor not in history:
        return False
    losses = np.asarray(history[monitor], dtype=float).ravel()
    if max_epochs is not None and len(losses) < max_epochs:
        return False  # stopped early: it had converged by the early-stopping rule
    max_epochs = len(losses) if max_epochs is None else max_epochs
    improving, best = still_improving(losses)
    if not improving:
        return False
    what = f"{model}'s {stage} stage" if stage else model
    warnings.warn(
        f"{what} stopped at its epoch limit ({max_epochs}) while its {monitor} was still "
        f"falling (best at epoch {best + 1}): the model is likely undertrained. Train longer "
        f"(raise `{epochs_argument}`) and look at model.history[{monitor!r}].",
        UndertrainedWarning,
        stacklevel=3,
    )
    return True
