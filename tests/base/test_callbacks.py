"""RestoreBestWeights: the weights of the best validation epoch come back at the end."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from scvi_gen.base import RestoreBestWeights


def _epoch(callback: RestoreBestWeights, trainer, plan, epoch: int, loss: float) -> None:
    """One epoch: the weights change, then validation reports ``loss``."""
    with torch.no_grad():
        plan.module.weight.fill_(float(epoch))
    trainer.current_epoch = epoch
    trainer.callback_metrics = {"validation_loss": torch.tensor(loss)}
    callback.on_validation_epoch_end(trainer, plan)


@pytest.fixture
def trainer_and_plan():
    trainer = SimpleNamespace(sanity_checking=False, current_epoch=0, callback_metrics={})
    plan = SimpleNamespace(module=torch.nn.Linear(2, 1, bias=False))
    return trainer, plan


def test_restores_the_weights_of_the_lowest_validation_loss(trainer_and_plan):
    trainer, plan = trainer_and_plan
    callback = RestoreBestWeights("validation_loss")
    for epoch, loss in enumerate([3.0, 1.0, 2.0, 1.5]):
        _epoch(callback, trainer, plan, epoch, loss)
    callback.on_train_end(trainer, plan)
    assert callback.best_epoch == 1
    assert callback.best == 1.0
    assert torch.equal(plan.module.weight, torch.full((1, 2), 1.0))


def test_ignores_sanity_checks_and_non_finite_losses(trainer_and_plan):
    trainer, plan = trainer_and_plan
    callback = RestoreBestWeights("validation_loss")
    trainer.sanity_checking = True
    _epoch(callback, trainer, plan, 0, 0.1)
    trainer.sanity_checking = False
    _epoch(callback, trainer, plan, 1, float("nan"))
    _epoch(callback, trainer, plan, 2, 5.0)
    _epoch(callback, trainer, plan, 3, 6.0)
    callback.on_train_end(trainer, plan)
    assert callback.best_epoch == 2
    assert torch.equal(plan.module.weight, torch.full((1, 2), 2.0))


def test_without_a_validation_metric_the_weights_stay(trainer_and_plan):
    trainer, plan = trainer_and_plan
    callback = RestoreBestWeights("validation_loss")
    with torch.no_grad():
        plan.module.weight.fill_(7.0)
    callback.on_validation_epoch_end(trainer, plan)
    callback.on_train_end(trainer, plan)
    assert callback.best_epoch is None
    assert torch.equal(plan.module.weight, torch.full((1, 2), 7.0))
