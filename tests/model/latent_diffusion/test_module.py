from __future__ import annotations

import pytest
import torch

from scvi_gen.model.cfgen._module import AttributeSlot
from scvi_gen.model.latent_diffusion import LatentDiffusionModule

N_GENES = 30


def _module(**kwargs) -> LatentDiffusionModule:
    torch.manual_seed(0)
    defaults = {
        "n_tokens": 4,
        "latent_dim": 3,
        "token_dim": 16,
        "pool_dim": 8,
        "n_heads": 2,
        "decoder_dim": 16,
        "prior_dim": 16,
        "prior_heads": 2,
    }
    return LatentDiffusionModule(
        N_GENES,
        [3, 2],
        [AttributeSlot("labels", 0), AttributeSlot("batch", 0)],
        **{**defaults, **kwargs},
    ).eval()


def _counts(n: int = 8) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.poisson(torch.rand(n, N_GENES, generator=generator) * 3, generator=generator)


def test_latent_is_flat_tokens_and_invariant_to_gene_order():
    module = _module()
    x = _counts()
    perm = torch.randperm(N_GENES, generator=torch.Generator().manual_seed(2))
    z = module.encode(x)
    assert z.shape == (8, 4 * 3)
    assert torch.allclose(module.encode(x[:, perm], gene_ids=perm), z, atol=1e-5)


def test_decoded_means_follow_a_permuted_or_partial_gene_panel():
    module = _module()
    z, library = torch.randn(8, 12), torch.full((8, 1), 100.0)
    codes = torch.zeros(8, 2, dtype=torch.long)
    mu, _ = module.decode(z, library, codes)
    assert torch.allclose(mu.sum(1), library.squeeze(1), rtol=1e-4)
    perm = torch.randperm(N_GENES, generator=torch.Generator().manual_seed(3))
    mu_perm, theta_perm = module.decode(z, library, codes, gene_ids=perm)
    assert torch.allclose(mu_perm, mu[:, perm], atol=1e-5)
    subset, _ = module.decode(z, library, codes, gene_ids=perm[:5])
    assert torch.allclose(subset, mu[:, perm[:5]], atol=1e-5)
    panel, theta = module.decode(z, library, codes, gene_ids=perm[:5], renormalize=True)
    assert torch.allclose(panel.sum(1), library.squeeze(1), rtol=1e-4)
    assert theta.shape == (1, 5)


def test_ema_follows_the_prior_only_in_the_prior_stage_and_is_used_in_eval_mode():
    module = _module()
    module.update_ema()
    assert int(module.ema_updates) == 0  # autoencoder stage: nothing to average
    module.set_stage("flow")
    module.train()
    assert module.prior_network() is module.prior
    with torch.no_grad():
        for p in module.prior.parameters():
            p.add_(1.0)
    module.update_ema()
    assert int(module.ema_updates) == 1
    module.eval()
    assert module.prior_network() is module.ema_prior
    live = dict(module.prior.named_parameters())
    moved = [n for n, p in module.ema_prior.named_parameters() if torch.allclose(p, live[n])]
    assert not moved  # averaged, not copied
    assert all(not p.requires_grad for p in module.ema_prior.parameters())


def test_frozen_autoencoder_stays_in_eval_mode_in_the_prior_stage():
    module = _module()
    module.set_stage("flow")
    module.train()
    assert not module.encoder.training and not module.decoder.training
    assert module.prior.training and not module.ema_prior.training
    assert not any(p.requires_grad for p in module.encoder.parameters())
    assert all(p.requires_grad for p in module.prior.parameters())


def test_latent_cache_returns_the_encoder_latents_and_misses_unknown_cells():
    module = _module()
    x = _counts(10)
    module.set_stage("flow")
    module.set_latent_cache([x[:6], x[6:]], n_cells=10)
    shuffled = x[[3, 9, 0]]
    assert torch.allclose(module.inference(shuffled)["z"], module.encode(shuffled))
    assert module._cached_latents(shuffled) is not None
    assert module._cached_latents(x[:2] + 1) is None
    module.clear_latent_cache()
    assert module._latent_cache is None


def test_guided_velocity_has_the_latent_shape():
    module = _module()
    codes = torch.tensor([[0, 1], [2, 0]])
    continuous = torch.zeros(2, 1)
    field = module.guided_velocity(codes, continuous, [2.0, 0.5])
    v = field(torch.tensor(0.3), torch.randn(2, 12))
    assert v.shape == (2, 12) and torch.isfinite(v).all()


def _decoded_means(module: LatentDiffusionModule, z: torch.Tensor) -> torch.Tensor:
    library = torch.full((z.shape[0], 1), 100.0)
    codes = torch.zeros(z.shape[0], 2, dtype=torch.long)
    return module.generative(z, library, codes)["mu"]


def test_latent_noise_perturbs_the_decoder_input_only_while_the_autoencoder_trains():
    module = _module(latent_noise=0.5)
    z = torch.randn(8, 12)
    exact = _decoded_means(module, z)
    assert torch.equal(_decoded_means(module, z), exact)  # eval mode: deterministic
    module.train()
    assert not torch.allclose(_decoded_means(module, z), exact)
    module.eval()
    assert torch.equal(_decoded_means(module, z), exact)


def test_latent_noise_zero_keeps_training_decoding_exact():
    module = _module(latent_noise=0.0)
    z = torch.randn(8, 12)
    exact = _decoded_means(module, z)
    module.train()
    assert torch.allclose(_decoded_means(module, z), exact, atol=1e-6)


def test_negative_latent_noise_is_rejected():
    with pytest.raises(ValueError, match="latent_noise"):
        _module(latent_noise=-0.1)


def test_state_without_the_prior_average_loads_with_it_unused():
    module = _module()
    module.set_stage("flow")
    module.reset_ema()
    module.update_ema()
    old_format = {
        k: v for k, v in module.state_dict().items() if not k.startswith(("ema_prior.", "ema_"))
    }
    fresh = _module()
    fresh.load_state_dict(old_format)
    fresh.eval()
    assert int(fresh.ema_updates) == 0
    assert fresh.prior_network() is fresh.prior


def test_latent_cache_refuses_a_wrong_cell_count():
    module = _module()
    x = _counts(10)
    with pytest.raises(RuntimeError, match="expected 12 cells, got 10"):
        module.set_latent_cache([x], n_cells=12)
