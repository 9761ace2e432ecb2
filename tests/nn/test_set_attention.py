from __future__ import annotations

import torch
import torch.nn.functional as F

from scvi_gen.nn._set_attention import (
    GeneQueryDecoder,
    SetAttentionPool,
    SetPoolingEncoder,
    expressed_entries,
)


def _counts(n: int = 6, g: int = 40, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    x = torch.poisson(torch.rand(n, g, generator=generator) * 2, generator=generator)
    x[0] = 0.0  # a cell without counts
    return x


def test_expressed_entries_returns_only_the_non_zero_entries():
    x = _counts()
    cells, ids, values = expressed_entries(x, gene_ids=torch.arange(40) + 100)
    assert len(values) == int((x > 0).sum())
    assert torch.all(values > 0)
    assert torch.equal(values, x[cells, ids - 100])


def test_set_attention_pool_matches_dense_attention_per_set():
    torch.manual_seed(0)
    pool = SetAttentionPool(8, n_queries=3, n_heads=2)
    tokens = torch.randn(9, 8)
    sets = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 1])
    out = pool(tokens, sets, n_sets=2)
    heads, head_dim = 2, 4
    q = pool.to_q(pool.queries).view(3, heads, head_dim).transpose(0, 1)
    for s in range(2):
        key, value = pool.to_kv(pool.norm(tokens[sets == s])).chunk(2, dim=-1)
        key = key.view(-1, heads, head_dim).transpose(0, 1)
        value = value.view(-1, heads, head_dim).transpose(0, 1)
        attended = F.scaled_dot_product_attention(q, key, value).transpose(0, 1).reshape(3, 8)
        expected = pool.queries + pool.to_out(attended)
        assert torch.allclose(out[s], expected, atol=1e-5)


def test_set_attention_pool_queries_attend_differently_at_initialisation():
    # Distinct queries break the symmetry between latent tokens from the first step.
    torch.manual_seed(0)
    dim, heads = 64, 4
    pool = SetAttentionPool(dim, n_queries=8, n_heads=heads)
    tokens = torch.randn(200, dim)
    head_dim = dim // heads
    with torch.no_grad():
        q = pool.to_q(pool.queries).view(8, heads, head_dim).transpose(0, 1)
        key = pool.to_kv(pool.norm(tokens))[:, :dim].view(-1, heads, head_dim).transpose(0, 1)
        attention = torch.softmax(q @ key.transpose(1, 2) * head_dim**-0.5, dim=-1)
    # total-variation distance between the attention of every pair of queries, per head
    tv = 0.5 * (attention[:, :, None] - attention[:, None]).abs().sum(-1)
    off_diagonal = tv[:, ~torch.eye(8, dtype=torch.bool)]
    assert off_diagonal.min() > 0.05  # tiny (0.02-scale) queries give ~0.002


def test_encoder_latent_is_invariant_to_gene_order():
    torch.manual_seed(0)
    encoder = SetPoolingEncoder(n_genes=40, n_tokens=4, latent_dim=3, dim=16, n_heads=2)
    x = _counts()
    perm = torch.randperm(40)
    z = encoder(x)
    z_perm = encoder(x[:, perm], gene_ids=perm)
    assert torch.allclose(z, z_perm, atol=1e-5)
    assert torch.isfinite(z[0]).all()  # the empty cell


def test_encoder_latent_shape_does_not_depend_on_the_number_of_genes():
    encoder = SetPoolingEncoder(n_genes=40, n_tokens=4, latent_dim=3, dim=16, n_heads=2)
    x = _counts()
    assert encoder(x).shape == encoder(x[:, :7], gene_ids=torch.arange(7)).shape == (6, 4, 3)


def test_encoder_ignores_unexpressed_genes():
    encoder = SetPoolingEncoder(n_genes=40, n_tokens=4, latent_dim=3, dim=16, n_heads=2)
    x = _counts()
    expressed = torch.nonzero(x.sum(0) > 0).squeeze(1)
    z = encoder(x[:, expressed], gene_ids=expressed)
    assert torch.allclose(encoder(x), z, atol=1e-5)


def test_decoder_is_equivariant_to_gene_order_and_decodes_subsets():
    torch.manual_seed(0)
    decoder = GeneQueryDecoder(n_genes=40, n_tokens=4, latent_dim=3, dim=16, n_heads=2)
    z = torch.randn(5, 4, 3)
    full = decoder(z)
    perm = torch.randperm(40)
    assert torch.allclose(decoder(z, gene_ids=perm), full[:, perm], atol=1e-5)
    assert torch.allclose(decoder(z, gene_ids=perm[:6]), full[:, perm[:6]], atol=1e-5)


def test_decoder_matches_cross_attention_with_a_per_gene_readout():
    torch.manual_seed(0)
    decoder = GeneQueryDecoder(n_genes=10, n_tokens=4, latent_dim=3, dim=8, n_heads=2)
    z = torch.randn(3, 4, 3)
    key, value = decoder.latent_keys(z)  # (n, heads, tokens, head_dim)
    q = decoder.to_q(decoder.gene_query.weight).view(10, 2, 4).transpose(0, 1)
    attended = F.scaled_dot_product_attention(q.expand(3, -1, -1, -1), key, value)
    attended = attended.transpose(1, 2).reshape(3, 10, 8)
    expected = (attended * decoder.gene_readout).sum(-1) + decoder.gene_bias
    assert torch.allclose(decoder(z), expected, atol=1e-5)


def test_decoder_chunks_genes_without_gradients(monkeypatch):
    import scvi_gen.nn._set_attention as module

    decoder = GeneQueryDecoder(n_genes=40, n_tokens=4, latent_dim=3, dim=16, n_heads=2)
    z = torch.randn(5, 4, 3)
    full = decoder(z).detach()
    monkeypatch.setattr(module, "_INFERENCE_GENE_CHUNK", 7)
    with torch.no_grad():
        assert torch.allclose(decoder(z), full, atol=1e-6)


def test_token_dropout_hides_genes_in_training_only():
    torch.manual_seed(0)
    encoder = SetPoolingEncoder(40, n_tokens=4, latent_dim=3, dim=16, n_heads=2, token_dropout=0.5)
    for p in encoder.parameters():  # leave the zero-initialised gates: make blocks non-trivial
        torch.nn.init.normal_(p, std=0.3)
    x = _counts()
    encoder.train()
    assert not torch.allclose(encoder(x), encoder(x))
    encoder.eval()
    assert torch.equal(encoder(x), encoder(x))
