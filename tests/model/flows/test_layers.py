from __future__ import annotations

import pytest
import torch

from scvi_gen.model.flows import (
    ActNorm,
    MixtureOfExpertsConditioner,
    MoECoupling,
    coupling_mask,
    maf_layer,
    marginal_spline_layer,
    moe_transforms,
)

D, C = 6, 3


def _small_coupling(seed: int = 0) -> MoECoupling:
    torch.manual_seed(seed)
    layer = MoECoupling(coupling_mask(D, 0), C, n_groups=3, token_dim=20, n_heads=10)
    # The head starts at zero (identity coupling); randomise it so the tests see a real map.
    with torch.no_grad():
        layer.conditioner.head.weight.normal_(0, 0.3)
        layer.conditioner.head.bias.normal_(0, 0.3)
    return layer.eval()


def _small_actnorm() -> ActNorm:
    layer = ActNorm(D)
    layer.initialize(torch.randn(50, D) * 2 + 1)
    return layer


def _small_maf(passes: int | None) -> torch.nn.Module:
    torch.manual_seed(0)
    layer = maf_layer(D, C, torch.randperm(D), (16, 16), passes)
    with torch.no_grad():  # starts as the identity: randomise the output layer
        layer.hyper[-1].weight.normal_(0, 0.3)
        layer.hyper[-1].bias.normal_(0, 0.3)
    return layer


def _small_spline() -> torch.nn.Module:
    torch.manual_seed(0)
    layer = marginal_spline_layer(D, C, bins=4, bound=3.0)
    with torch.no_grad():  # starts as the identity: randomise it
        for p in layer.parameters():
            p.normal_(0, 0.5)
    return layer


LAYERS = {
    "marginal_spline": _small_spline,
    "moe_coupling": _small_coupling,
    "actnorm": _small_actnorm,
    "maf_full": lambda: _small_maf(None),
    "maf_blocks": lambda: _small_maf(2),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_is_invertible(name):
    layer = LAYERS[name]()
    torch.manual_seed(1)
    x, c = torch.randn(32, D), torch.randn(32, C)
    t = layer(c)
    with torch.no_grad():
        z = t(x)
        assert not torch.allclose(z, x, atol=1e-3)
        assert torch.allclose(t.inv(z), x, atol=1e-4)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_log_det_matches_autograd_jacobian(name):
    layer = LAYERS[name]()
    torch.manual_seed(2)
    x, c = torch.randn(4, D), torch.randn(4, C)
    _, ladj = layer(c).call_and_ladj(x)
    for i in range(len(x)):
        t = layer(c[i : i + 1])
        jac = torch.autograd.functional.jacobian(lambda v, t=t: t(v.unsqueeze(0))[0], x[i])
        expected = torch.linalg.slogdet(jac).logabsdet
        assert torch.allclose(ladj[i], expected, atol=1e-4)


def test_maf_layer_starts_as_identity():
    layer = maf_layer(D, C, torch.arange(D), (16,), None)
    x = torch.randn(5, D)
    assert torch.allclose(layer(torch.randn(5, C))(x), x)


def test_stacked_moe_flow_is_invertible():
    torch.manual_seed(0)
    layers = moe_transforms(
        D, C, n_blocks=2, hidden_features=(16,), act_norm=True, n_groups=3, token_dim=20, passes=3
    )
    x, c = torch.randn(16, D), torch.randn(16, C)
    with torch.no_grad():
        z = x
        for layer in layers:
            z = layer(c)(z)
        for layer in reversed(layers):
            z = layer(c).inv(z)
    assert torch.allclose(z, x, atol=1e-4)


def test_gate_is_a_distribution_over_experts():
    torch.manual_seed(0)
    cond = MixtureOfExpertsConditioner(5, 4, context=C, n_groups=5, token_dim=20, n_experts=4)
    weights = cond.gate(torch.randn(64, 5), torch.randn(64, C))
    assert weights.shape == (64, 4)
    assert torch.all(weights >= 0)
    assert torch.allclose(weights.sum(-1), torch.ones(64), atol=1e-6)
    assert weights.std(0).max() > 0  # depends on the cell


def test_attention_runs_over_gene_group_tokens_not_one_token():
    cond = MixtureOfExpertsConditioner(1000, 1000, context=0, n_groups=32, token_dim=80)
    tokens = cond.tokens(torch.randn(3, 1000), None)
    assert tokens.shape == (3, 32, 80)


def test_feature_mask_acts_on_conditioner_input_only():
    layer = _small_coupling()
    with torch.no_grad():
        layer.conditioner.mask_logits.fill_(-1e4)  # mask ~ 0: the conditioner sees nothing
    x = torch.randn(8, D)
    c = torch.zeros(8, C)
    z = layer(c)(x)
    a = coupling_mask(D, 0)
    assert torch.equal(z[:, a], x[:, a])  # conditioning half untouched by the mask
    # with the input masked out, the map of x_b no longer depends on x_a
    x2 = x.clone()
    x2[:, a] = torch.randn(8, int(a.sum()))
    assert torch.allclose(layer(c)(x2)[:, ~a], z[:, ~a], atol=1e-5)


def test_actnorm_initialises_to_zero_mean_unit_variance():
    layer = ActNorm(D)
    x = torch.randn(200, D) * torch.arange(1.0, D + 1) + 5
    layer.initialize(x)
    y = layer()(x)
    assert bool(layer.initialized)
    assert torch.allclose(y.mean(0), torch.zeros(D), atol=1e-4)
    assert torch.allclose(y.var(0, unbiased=False), torch.ones(D), atol=1e-4)
