from __future__ import annotations

import math

import pytest
import torch

from scvi_gen.base._ode import FIXED_STEP_METHODS, solve_ode


def decay(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return -x


def rotation(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.stack([-x[:, 1], x[:, 0]], dim=1) * (1 + t)


@pytest.mark.parametrize("method", list(FIXED_STEP_METHODS))
def test_fixed_step_methods_converge_to_the_exact_solution(method):
    x0 = torch.ones(4, dtype=torch.float64)
    coarse = (solve_ode(decay, x0, method=method, n_steps=10) - math.exp(-1)).abs().max()
    fine = (solve_ode(decay, x0, method=method, n_steps=40) - math.exp(-1)).abs().max()
    assert fine < coarse
    assert fine < 1e-2


def test_higher_order_methods_are_more_accurate_than_euler():
    x0 = torch.ones(3, dtype=torch.float64)
    errors = {
        m: float((solve_ode(decay, x0, method=m, n_steps=10) - math.exp(-1)).abs().max())
        for m in FIXED_STEP_METHODS
    }
    assert errors["rk4"] < errors["midpoint"] < errors["euler"]
    assert errors["heun"] < errors["euler"]


def test_dopri5_meets_its_tolerance_on_a_time_dependent_field():
    x0 = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    angle = 1.5  # integral of (1 + t) from 0 to 1
    rot = torch.tensor(
        [[math.cos(angle), math.sin(angle)], [-math.sin(angle), math.cos(angle)]],
        dtype=torch.float64,
    )
    x1 = solve_ode(rotation, x0, method="dopri5", rtol=1e-8, atol=1e-8)
    assert torch.allclose(x1, x0 @ rot, atol=1e-6)


def test_dopri5_adapts_its_number_of_evaluations_to_the_tolerance():
    x0 = torch.randn(5, 2, dtype=torch.float64)
    _, loose = solve_ode(rotation, x0, method="dopri5", rtol=1e-3, atol=1e-3, return_stats=True)
    _, tight = solve_ode(rotation, x0, method="dopri5", rtol=1e-9, atol=1e-9, return_stats=True)
    assert tight.nfe > loose.nfe > 0


@pytest.mark.parametrize("method", ["midpoint", "dopri5"])
def test_backward_integration_inverts_forward(method):
    x0 = torch.randn(6, 2, dtype=torch.float64)
    x1 = solve_ode(rotation, x0, 0.0, 1.0, method=method, n_steps=200)
    back = solve_ode(rotation, x1, 1.0, 0.0, method=method, n_steps=200)
    assert torch.allclose(back, x0, atol=1e-4)


@pytest.mark.parametrize(("method", "per_step"), list(FIXED_STEP_METHODS.items()))
def test_fixed_step_methods_count_their_evaluations(method, per_step):
    _, stats = solve_ode(decay, torch.ones(2), method=method, n_steps=7, return_stats=True)
    assert stats.nfe == 7 * per_step
    assert stats.n_steps == 7


def test_unknown_method_and_bad_steps_are_errors():
    with pytest.raises(ValueError, match="Unknown ODE method"):
        solve_ode(decay, torch.ones(2), method="rk45")
    with pytest.raises(ValueError, match="n_steps"):
        solve_ode(decay, torch.ones(2), method="euler", n_steps=0)


def test_dopri5_gives_up_after_max_steps():
    with pytest.raises(RuntimeError, match="did not reach"):
        solve_ode(
            rotation, torch.randn(3, 2), method="dopri5", rtol=1e-12, atol=1e-12, max_steps=3
        )
