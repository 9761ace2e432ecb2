from __future__ import annotations

import time
from typing import Any

import numpy as np

from scvi_gen.benchmark import EpochTimer, peak_rss_mib, timed_train


def test_epoch_timer_records_one_duration_per_epoch():
    timer = EpochTimer()
    for _ in range(3):
        timer.on_train_epoch_start(None, None)
        time.sleep(0.01)
        timer.on_train_epoch_end(None, None)
    assert len(timer.seconds) == 3
    assert min(timer.seconds) >= 0.01


def test_peak_memory_grows_with_a_large_allocation():
    before = peak_rss_mib()
    block = np.ones(64 * 2**20 // 8)  # 64 MiB, touched so it is resident
    assert peak_rss_mib() >= before
    assert peak_rss_mib() > block.nbytes / 2**20


class _TwoEpochModel:
    """Stands in for a scvi-tools model: runs the callbacks' epoch hooks twice."""

    def __init__(self) -> None:
        self.kwargs: dict[str, Any] = {}

    def train(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        for _ in range(2):
            for callback in kwargs["callbacks"]:
                callback.on_train_epoch_start(None, None)
                callback.on_train_epoch_end(None, None)


def test_timed_train_times_every_epoch_and_keeps_the_callers_arguments():
    model, own = _TwoEpochModel(), EpochTimer()
    wall, cpu = timed_train(model, max_epochs=2, callbacks=[own])
    assert wall.shape == (2,) and (wall >= 0).all() and cpu >= 0
    assert model.kwargs["max_epochs"] == 2
    assert model.kwargs["callbacks"][0] is own and len(own.seconds) == 2
