"""Wall-time and memory probes shared by the speed benchmarks."""

from __future__ import annotations

import resource
import time
from typing import Any

import numpy as np
from lightning.pytorch.callbacks import Callback


class EpochTimer(Callback):
    """Lightning callback recording the wall time of every training epoch.

    Lightning runs an epoch's validation before ``on_train_epoch_end``, so each time includes
    validation.

    Attributes
    ----------
    seconds
        One entry per finished epoch.

    Examples
    --------
    >>> timer = EpochTimer()
    >>> model.train(max_epochs=5, callbacks=[timer])
    >>> timer.seconds
    """

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []
        self._start = 0.0

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        """Start the clock."""
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        """Record the epoch's seconds."""
        self.seconds.append(time.perf_counter() - self._start)


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB).

    Returns
    -------
    The peak resident set size in MiB.

    Examples
    --------
    >>> peak_rss_mib() > 0
    True
    """
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed_train(model: Any, **train_kwargs: Any) -> tuple[np.ndarray, float]:
    """Call ``model.train(**train_kwargs)`` and time each epoch.

    Parameters
    ----------
    model
        A scvi-tools model.
    **train_kwargs
        Arguments of ``model.train`` (an :class:`EpochTimer` is added to ``callbacks``).

    Returns
    -------
    Wall seconds of every epoch, and the process CPU seconds per epoch.

    Examples
    --------
    >>> wall, cpu = timed_train(model, max_epochs=2, enable_progress_bar=False)
    """
    timer = EpochTimer()
    train_kwargs["callbacks"] = [*train_kwargs.get("callbacks", []), timer]
    cpu = time.process_time()
    model.train(**train_kwargs)
    cpu_per_epoch = (time.process_time() - cpu) / max(len(timer.seconds), 1)
    return np.asarray(timer.seconds), cpu_per_epoch
