from __future__ import annotations

import time

import numpy as np

from scvi_gen.benchmark import EpochTimer, peak_rss_mib


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
