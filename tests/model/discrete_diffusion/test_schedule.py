from __future__ import annotations

import pytest
import torch

from scvi_gen.model.discrete_diffusion import LogLinearSchedule, reverse_diffusion

MASK = 5
N_BINS = 5


def _uniform_denoiser(
    tokens: torch.Tensor, rows: torch.Tensor, chosen: torch.Tensor
) -> torch.Tensor:
    return torch.full((int(chosen.sum()), N_BINS), 1.0 / N_BINS)


def test_schedule_masks_linearly_and_weights_by_one_over_t():
    schedule = LogLinearSchedule()
    t = torch.tensor([0.1, 0.5, 1.0])
    assert torch.allclose(1 - schedule.alpha(t), t)
    assert torch.allclose(schedule.loss_weight(t), 1 / t)
    assert torch.allclose(schedule.sigma(torch.tensor(0.5)), torch.log(torch.tensor(2.0)))


def test_fraction_unmasked_per_step_matches_the_schedule():
    torch.manual_seed(0)
    n_steps, schedule = 10, LogLinearSchedule()
    tokens = torch.full((400, 250), MASK)
    record = []

    def on_step(step, t, s, masked, unmasked):
        record.append((t, s, int(masked.sum()), int(unmasked.sum())))

    out, _ = reverse_diffusion(_uniform_denoiser, tokens, MASK, n_steps, on_step=on_step)
    assert len(record) == n_steps
    for t, s, n_masked, n_unmasked in record[:-1]:
        expected = float(schedule.unmask_probability(torch.tensor(s), torch.tensor(t)))
        assert n_unmasked / n_masked == pytest.approx(expected, abs=0.01)
    # the first step reveals ~1/n_steps of the genes, not almost all of them
    assert record[0][3] / tokens.numel() == pytest.approx(1 / n_steps, abs=0.01)
    # the final denoising step (t -> 0) fills every remaining mask
    assert record[-1][3] == record[-1][2]
    assert not bool((out == MASK).any())


def test_mask_is_never_emitted_even_if_the_network_favours_the_last_token():
    def skewed(tokens, rows, chosen):
        probs = torch.full((int(chosen.sum()), N_BINS), 1e-6)
        probs[..., -1] = 1.0
        return probs

    out, _ = reverse_diffusion(skewed, torch.full((50, 40), MASK), MASK, 8)
    assert out.max() < MASK
    assert torch.all(out == N_BINS - 1)


def test_observed_tokens_are_clamped_and_only_changed_cells_are_evaluated():
    torch.manual_seed(1)
    tokens = torch.randint(0, N_BINS, (30, 20))
    hidden = torch.rand(30, 20) < 0.3
    hidden[0] = False  # a fully observed cell never reaches the network
    seen_rows = []

    def denoiser(current, rows, chosen):
        seen_rows.append(rows.clone())
        assert not bool((current[chosen] != MASK).any())  # only masked genes are predicted
        return _uniform_denoiser(current, rows, chosen)

    start = torch.where(hidden, torch.full_like(tokens, MASK), tokens)
    out, probs = reverse_diffusion(denoiser, start, MASK, 6, keep_probs=True)
    assert torch.equal(out[~hidden], tokens[~hidden])
    assert not bool((out == MASK).any())
    assert all(0 not in rows.tolist() for rows in seen_rows)
    assert torch.allclose(probs[hidden].sum(-1), torch.ones(int(hidden.sum())))
    assert torch.all(probs[~hidden] == 0)


def test_reverse_diffusion_needs_a_step():
    with pytest.raises(ValueError, match="n_steps"):
        reverse_diffusion(_uniform_denoiser, torch.full((2, 3), MASK), MASK, 0)
