from __future__ import annotations

from typing import Any

from scvi_gen.benchmark import EpochTimer, timed_train


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
