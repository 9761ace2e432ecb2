"""Absorbing-state noise schedule, the diffusion loss weights and the exact reverse sampler."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

logger = logging.getLogger(__name__)

#: ``denoise(tokens, rows, chosen) -> probabilities`` over the data tokens of the positions
#: ``chosen`` (boolean, ``(len(rows), genes)``), shape ``(chosen.sum(), bins)``.
DenoiseFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
#: ``on_step(step, t, s, masked_before, unmasked_now)``, for monitoring and tests.
StepCallback = Callable[[int, float, float, torch.Tensor, torch.Tensor], None]


@dataclass(frozen=True)
class LogLinearSchedule:
    """Log-linear noise schedule of an absorbing (masking) diffusion.

    The total noise is ``sigma(t) = -log(1 - (1 - eps) t)``, so a token is still unmasked at
    time ``t`` with probability ``alpha(t) = exp(-sigma(t)) = 1 - (1 - eps) t``: masking grows
    linearly in time, from nothing at ``t = 0`` to (almost) everything at ``t = 1``. With the
    default ``eps = 0`` every token is masked at ``t = 1``, which makes the prior term of the
    bound exactly zero (the reverse process starts from the all-MASK sequence).

    Parameters
    ----------
    eps
        Fraction of tokens left unmasked at ``t = 1``.

    Examples
    --------
    >>> schedule = LogLinearSchedule()
    >>> float(schedule.alpha(torch.tensor(0.25)))
    0.75
    >>> float(schedule.unmask_probability(torch.tensor(0.5), torch.tensor(1.0)))
    0.5
    """

    eps: float = 0.0

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        """Probability that a token is not yet masked at time ``t``."""
        return 1.0 - (1.0 - self.eps) * t

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """Total noise ``-log alpha(t)``."""
        return -torch.log(self.alpha(t))

    def dalpha(self, t: torch.Tensor) -> torch.Tensor:
        """Time derivative of :meth:`alpha`."""
        return torch.full_like(t, -(1.0 - self.eps))

    def loss_weight(self, t: torch.Tensor) -> torch.Tensor:
        """Weight ``-alpha'(t) / (1 - alpha(t))`` of the masked cross-entropy at time ``t``.

        The continuous-time negative ELBO of absorbing diffusion is
        ``E_t E_{x_t} [ w(t) * sum_{masked i} -log p(x_0^i | x_t) ]`` with this weight (``1/t``
        for the log-linear schedule).
        """
        return -self.dalpha(t) / (1.0 - self.alpha(t))

    def unmask_probability(self, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Probability that a token masked at ``t`` is unmasked at ``s < t`` (exact reverse)."""
        return (self.alpha(s) - self.alpha(t)) / (1.0 - self.alpha(t))


def reverse_diffusion(
    denoise: DenoiseFn,
    tokens: torch.Tensor,
    mask_index: int,
    n_steps: int,
    schedule: LogLinearSchedule | None = None,
    *,
    keep_probs: bool = False,
    on_step: StepCallback | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run the exact reverse process of absorbing diffusion from ``t = 1`` to ``t = 0``.

    On a uniform time grid ``1 = t_0 > t_1 > ... > t_n = 0`` each still-masked token is
    unmasked between ``t`` and ``s`` with probability ``(alpha(s) - alpha(t)) / (1 - alpha(t))``
    and then drawn from the network's ``p(x_0 | x_t)``. Tokens that are not MASK on entry
    (observed genes during imputation) are never changed, and the last step (``s = 0``, where
    the probability is 1) fills every remaining MASK, so the output contains no MASK. The
    network is only evaluated for cells with at least one token to unmask in a step.

    Parameters
    ----------
    denoise
        ``denoise(tokens, rows, chosen)``: probabilities over the data tokens (MASK excluded)
        of the positions ``chosen`` (boolean ``(len(rows), genes)``) of the cells ``rows``
        whose current tokens are ``tokens``; shape ``(chosen.sum(), bins)``, in the row-major
        order of ``chosen.nonzero()``. Only the genes being unmasked need a prediction.
    tokens
        ``(cells, genes)`` long tensor; MASK (``mask_index``) where a value is to be generated.
    mask_index
        Index of the MASK token.
    n_steps
        Number of reverse steps (>= 1).
    schedule
        The noise schedule (default :class:`LogLinearSchedule`).
    keep_probs
        Also return, for each position, the probability vector it was drawn from (zeros for
        positions that were never masked).
    on_step
        Optional callback ``on_step(step, t, s, masked_before, unmasked_now)``.

    Returns
    -------
    ``(tokens, probs)``: the completed tokens and, with ``keep_probs``, a
    ``(cells, genes, bins)`` tensor (else ``None``).
    """
    if n_steps < 1:
        raise ValueError(f"`n_steps` must be at least 1, got {n_steps}.")
    schedule = schedule or LogLinearSchedule()
    tokens = tokens.clone()
    times = torch.linspace(1.0, 0.0, n_steps + 1, dtype=torch.float64)
    kept = None
    for step in range(n_steps):
        t, s = times[step], times[step + 1]
        masked = tokens == mask_index
        if not bool(masked.any()):
            break
        p_unmask = float(schedule.unmask_probability(s, t))
        unmask = masked & (torch.rand(masked.shape, device=tokens.device) < p_unmask)
        rows = unmask.any(dim=1).nonzero().squeeze(1)
        if rows.numel():
            chosen = unmask[rows]
            picked = denoise(tokens[rows], rows, chosen)
            draws = torch.multinomial(picked.clamp_min(0).float(), 1).squeeze(1)
            block = tokens[rows]
            block[chosen] = draws
            tokens[rows] = block
            if keep_probs:
                if kept is None:
                    kept = picked.new_zeros(*tokens.shape, picked.shape[-1])
                sub = kept[rows]
                sub[chosen] = picked
                kept[rows] = sub
        if on_step is not None:
            on_step(step, float(t), float(s), masked, unmask)
    return tokens, kept
