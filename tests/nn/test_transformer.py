from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from scvi_gen.nn import _transformer
from scvi_gen.nn._transformer import AdaLNFinalLayer, AdaLNTransformerBlock, Attention, modulate


def _perturb(module: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(0)
    for p in module.parameters():
        p.data.add_(0.1 * torch.randn(p.shape, generator=g))


def test_modulate_broadcasts_a_per_cell_shift_and_scale_over_tokens():
    x = torch.randn(2, 5, 4)
    shift, scale = torch.randn(2, 4), torch.randn(2, 4)
    out = modulate(x, shift, scale)
    assert torch.allclose(out[:, 3], x[:, 3] * (1 + scale) + shift)


def test_block_starts_as_the_identity_adaln_zero():
    block = AdaLNTransformerBlock(16, n_heads=4, cond_dim=8, context_dim=6)
    x = torch.randn(3, 7, 16)
    out = block(x, torch.randn(3, 8), context=torch.randn(3, 11, 6))
    assert torch.equal(out, x)


def test_conditioning_changes_the_output_once_trained():
    block = AdaLNTransformerBlock(16, n_heads=4, cond_dim=8)
    _perturb(block)
    x = torch.randn(2, 5, 16)
    c = torch.randn(1, 8).expand(2, -1).clone()
    same = block(x, c)
    c[1] += 1.0
    other = block(x, c)
    assert torch.allclose(same[0], other[0])
    assert not torch.allclose(same[1], other[1])


def test_per_token_conditioning_is_accepted():
    block = AdaLNTransformerBlock(16, n_heads=2, cond_dim=8, mlp_ratio=0)
    _perturb(block)
    assert block(torch.randn(2, 5, 16), torch.randn(2, 5, 8)).shape == (2, 5, 16)


def test_self_attention_is_permutation_equivariant_over_tokens():
    block = AdaLNTransformerBlock(16, n_heads=4, cond_dim=8)
    _perturb(block)
    x, c = torch.randn(2, 9, 16), torch.randn(2, 8)
    perm = torch.randperm(9)
    assert torch.allclose(block(x, c)[:, perm], block(x[:, perm], c), atol=1e-5)


def test_cross_attention_reads_the_context_with_its_own_width():
    block = AdaLNTransformerBlock(
        32, n_heads=2, cond_dim=8, self_attention=False, context_dim=5, attn_dim=16
    )
    _perturb(block)
    x, c = torch.randn(2, 4, 32), torch.randn(2, 8)
    context = torch.randn(2, 300, 5)
    out = block(x, c, context=context)
    assert out.shape == (2, 4, 32)
    assert not torch.allclose(out, block(x, c, context=torch.randn(2, 300, 5)))
    with pytest.raises(ValueError, match="context"):
        block(x, c)


def test_key_padding_mask_hides_context_tokens():
    attn = Attention(8, n_heads=2, context_dim=8)
    x, context = torch.randn(1, 3, 8), torch.randn(1, 6, 8)
    keep = torch.tensor([[True, True, True, False, False, False]])
    masked = attn(x, context, key_padding_mask=keep)
    changed = context.clone()
    changed[:, 3:] = 100.0
    assert torch.allclose(masked, attn(x, changed, key_padding_mask=keep), atol=1e-6)


def test_attention_goes_through_scaled_dot_product_attention(monkeypatch):
    calls = []
    original = F.scaled_dot_product_attention

    def spy(q, k, v, **kwargs):
        calls.append((q.shape, k.shape))
        return original(q, k, v, **kwargs)

    monkeypatch.setattr(_transformer.F, "scaled_dot_product_attention", spy)
    Attention(8, n_heads=2)(torch.randn(2, 100, 8))
    assert calls == [(torch.Size([2, 2, 100, 4]), torch.Size([2, 2, 100, 4]))]


def test_heads_must_divide_the_width():
    with pytest.raises(ValueError, match="n_heads"):
        Attention(10, n_heads=3)
    with pytest.raises(ValueError, match="sub-layer"):
        AdaLNTransformerBlock(8, 2, 4, mlp_ratio=0, self_attention=False)


def test_final_layer_is_zero_at_initialisation_and_shapes_outputs():
    head = AdaLNFinalLayer(16, out_dim=7, cond_dim=8)
    out = head(torch.randn(2, 5, 16), torch.randn(2, 8))
    assert out.shape == (2, 5, 7)
    assert torch.all(out == 0)
