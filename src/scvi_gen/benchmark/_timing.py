"""Wall-time and memory probes shared by the speed benchmarks."""

from __future__ import annotations

import resource
import time
from typing import Any

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
