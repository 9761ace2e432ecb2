from __future__ import annotations

import torch

from scvi_gen.nn import ema_step


def _pair() -> tuple[torch.nn.Linear, torch.nn.Linear]:
    average, live = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    for p in average.parameters():
        p.data.fill_(0.0)
    for p in live.parameters():
        p.data.fill_(1.0)
    return average, live


def test_ema_step_uses_the_ramped_decay_early():
    average, live = _pair()
    ema_step(average, live, n_updates=1, max_decay=0.999)
    # decay (1 + 1) / (10 + 1) = 2/11: the average moves 9/11 of the way to the weights.
    assert torch.allclose(average.weight, torch.full((2, 3), 9 / 11))


def test_ema_step_caps_the_decay_at_max_decay():
    average, live = _pair()
    ema_step(average, live, n_updates=10_000, max_decay=0.9)
    assert torch.allclose(average.bias, torch.full((2,), 0.1))
    assert torch.equal(live.weight, torch.ones(2, 3))  # the live network is untouched
