from __future__ import annotations

import torch

from scvi_gen._threads import torch_threads_kept


def test_thread_count_changed_inside_is_restored() -> None:
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        with torch_threads_kept():
            torch.set_num_threads(2)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
