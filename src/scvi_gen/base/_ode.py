"""Small ODE solvers in torch for flow-matching and probability-flow samplers.

Every solver integrates ``dx/dt = velocity(t, x)`` from ``t0`` to ``t1`` (``t1 < t0``
integrates backwards) for a batch ``x`` of any shape. ``velocity`` receives ``t`` as a 0-d
tensor on ``x``'s device and dtype. Fixed-step methods (``euler``, ``midpoint``, ``heun``,
``rk4``) take ``n_steps`` equal steps; ``dopri5`` is the adaptive Dormand-Prince 5(4) pair with
error control over the whole batch (one step size for all cells, as in torchdiffeq).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

logger = logging.getLogger(__name__)

VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
ODEMethod = Literal["euler", "midpoint", "heun", "rk4", "dopri5"]

#: Fixed-step methods and their number of velocity evaluations per step.
FIXED_STEP_METHODS: dict[str, int] = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}
ADAPTIVE_METHODS: tuple[str, ...] = ("dopri5",)
ODE_METHODS: tuple[str, ...] = (*FIXED_STEP_METHODS, *ADAPTIVE_METHODS)

# Dormand-Prince 5(4) Butcher tableau.
_DP_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_DP_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
_DP_B5 = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
_DP_B4 = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)
_DP_ERR = tuple(b5 - b4 for b5, b4 in zip(_DP_B5, _DP_B4))
_SAFETY, _MIN_FACTOR, _MAX_FACTOR = 0.9, 0.2, 10.0


@dataclass
class ODEStats:
    """Cost of one solve.

    Attributes
    ----------
    nfe
        Number of velocity evaluations.
    n_steps
        Accepted steps.
    n_rejected
        Rejected steps (adaptive solver only).
    """

    nfe: int = 0
    n_steps: int = 0
    n_rejected: int = 0


def solve_ode(
    velocity: VelocityFn,
    x0: torch.Tensor,
    t0: float = 0.0,
    t1: float = 1.0,
    *,
    method: ODEMethod = "midpoint",
    n_steps: int = 20,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    max_steps: int = 10_000,
    return_stats: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, ODEStats]:
    """Integrate ``dx/dt = velocity(t, x)`` from ``t0`` to ``t1``.

    Parameters
    ----------
    velocity
        Callable ``(t, x) -> dx/dt`` with ``t`` a 0-d tensor.
    x0
        State at ``t0`` (any shape; the batch is solved jointly).
    t0, t1
        Start and end time; ``t1 < t0`` integrates backwards.
    method
        ``"euler"``, ``"midpoint"``, ``"heun"``, ``"rk4"`` (fixed steps) or ``"dopri5"``
        (adaptive).
    n_steps
        Number of steps of a fixed-step method.
    rtol, atol
        Relative and absolute tolerances of ``dopri5``.
    max_steps
        Maximum number of (accepted + rejected) ``dopri5`` steps before giving up.
    return_stats
        Also return an :class:`ODEStats`.

    Returns
    -------
    The state at ``t1`` (and the solve's statistics when ``return_stats``).

    Examples
    --------
    >>> x1 = solve_ode(lambda t, x: -x, torch.ones(3), 0.0, 1.0, method="rk4", n_steps=10)
    >>> torch.allclose(x1, torch.full((3,), 0.3679), atol=1e-4)
    True
    """
    stats = ODEStats()

    def counted(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        stats.nfe += 1
        return velocity(t, x)

    if method in FIXED_STEP_METHODS:
        x = _fixed_step(counted, x0, t0, t1, method, n_steps, stats)
    elif method == "dopri5":
        x = _dopri5(counted, x0, t0, t1, rtol, atol, max_steps, stats)
    else:
        raise ValueError(f"Unknown ODE method {method!r}; choose one of {list(ODE_METHODS)}.")
    logger.debug("ODE solve (%s): %s", method, stats)
    return (x, stats) if return_stats else x


def _time(t: float, x: torch.Tensor) -> torch.Tensor:
    return torch.tensor(t, device=x.device, dtype=x.dtype)


def _fixed_step(
    f: VelocityFn,
    x: torch.Tensor,
    t0: float,
    t1: float,
    method: str,
    n_steps: int,
    stats: ODEStats,
) -> torch.Tensor:
    if n_steps < 1:
        raise ValueError(f"`n_steps` must be at least 1, got {n_steps}.")
    h = (t1 - t0) / n_steps
    for i in range(n_steps):
        t = t0 + i * h
        if method == "euler":
            x = x + h * f(_time(t, x), x)
        elif method == "midpoint":
            k1 = f(_time(t, x), x)
            x = x + h * f(_time(t + h / 2, x), x + (h / 2) * k1)
        elif method == "heun":
            k1 = f(_time(t, x), x)
            k2 = f(_time(t + h, x), x + h * k1)
            x = x + (h / 2) * (k1 + k2)
        else:  # rk4
            k1 = f(_time(t, x), x)
            k2 = f(_time(t + h / 2, x), x + (h / 2) * k1)
            k3 = f(_time(t + h / 2, x), x + (h / 2) * k2)
            k4 = f(_time(t + h, x), x + h * k3)
            x = x + (h / 6) * (k1 + 2 * k2 + 2 * k3 + k4)
        stats.n_steps += 1
    return x


def _rms(x: torch.Tensor) -> float:
    return float(x.pow(2).mean().sqrt())


def _initial_step(
    f: VelocityFn,
    t0: float,
    x0: torch.Tensor,
    f0: torch.Tensor,
    direction: float,
    rtol: float,
    atol: float,
) -> float:
    """Hairer, Norsett & Wanner's starting step size for a 5th-order method."""
    scale = atol + rtol * x0.abs()
    d0, d1 = _rms(x0 / scale), _rms(f0 / scale)
    h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
    x1 = x0 + direction * h0 * f0
    f1 = f(_time(t0 + direction * h0, x0), x1)
    d2 = _rms((f1 - f0) / scale) / h0
    h1 = max(1e-6, h0 * 1e-3) if max(d1, d2) <= 1e-15 else (0.01 / max(d1, d2)) ** (1 / 5)
    return min(100 * h0, h1)


def _dopri5(
    f: VelocityFn,
    x: torch.Tensor,
    t0: float,
    t1: float,
    rtol: float,
    atol: float,
    max_steps: int,
    stats: ODEStats,
) -> torch.Tensor:
    if t0 == t1:
        return x
    direction = 1.0 if t1 > t0 else -1.0
    span = abs(t1 - t0)
    t = t0
    k_first = f(_time(t, x), x)
    h = min(_initial_step(f, t, x, k_first, direction, rtol, atol), span)
    while direction * (t1 - t) > 1e-12 * span:
        if stats.n_steps + stats.n_rejected >= max_steps:
            raise RuntimeError(
                f"dopri5 did not reach t={t1} in {max_steps} steps (at t={t:.4g}); loosen "
                "rtol/atol or use a fixed-step method."
            )
        h = min(h, abs(t1 - t))
        dt = direction * h
        ks = [k_first]
        for i in range(1, 7):
            increment = sum(a * k for a, k in zip(_DP_A[i], ks) if a != 0.0)
            ks.append(f(_time(t + _DP_C[i] * dt, x), x + dt * increment))
        # The 7th stage is the 5th-order solution's slope (first-same-as-last).
        x_new = x + dt * sum(b * k for b, k in zip(_DP_B5, ks) if b != 0.0)
        error = dt * sum(e * k for e, k in zip(_DP_ERR, ks) if e != 0.0)
        scale = atol + rtol * torch.maximum(x.abs(), x_new.abs())
        norm = _rms(error / scale)
        if norm <= 1.0:
            t, x, k_first = t + dt, x_new, ks[6]
            stats.n_steps += 1
            factor = _MAX_FACTOR if norm == 0 else _SAFETY * norm ** (-1 / 5)
            h = h * min(_MAX_FACTOR, max(_MIN_FACTOR, factor))
        else:
            stats.n_rejected += 1
            h = h * max(_MIN_FACTOR, _SAFETY * norm ** (-1 / 5))
    return x
