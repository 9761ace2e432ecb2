from __future__ import annotations

import pytest
import torch

from scvi_gen.nn._mlp import MLP, ResNetMLP


@pytest.mark.parametrize("norm", ["layer", "batch", None])
def test_mlp_maps_input_to_output_width(norm):
    net = MLP(10, 3, n_hidden=(16, 8), norm=norm, dropout=0.1)
    assert net(torch.randn(5, 10)).shape == (5, 3)


def test_mlp_without_hidden_layers_is_linear():
    net = MLP(4, 2, n_hidden=())
    x, y = torch.randn(3, 4), torch.randn(3, 4)
    assert torch.allclose(net(x + y) - net(y), net(x) - net(torch.zeros(3, 4)), atol=1e-5)


def test_unknown_norm_and_activation_are_errors():
    with pytest.raises(ValueError, match="Unknown norm"):
        MLP(3, 3, norm="group")
    with pytest.raises(ValueError, match="Unknown activation"):
        MLP(3, 3, activation="tanhh")


def test_resnet_mlp_context_bias_is_linear_in_the_context():
    net = ResNetMLP(6, 6, n_hidden=16, n_blocks=2, n_context=8)
    a, b = torch.randn(4, 8), torch.randn(4, 8)
    assert torch.allclose(
        net.context_bias(a + b), net.context_bias(a) + net.context_bias(b), atol=1e-5
    )


def test_resnet_mlp_accepts_a_precomputed_bias_and_broadcasts_it():
    net = ResNetMLP(6, 6, n_hidden=16, n_blocks=2, n_context=8)
    x, c = torch.randn(4, 6), torch.randn(1, 8)
    expected = net(x, context=c.expand(4, -1))
    assert torch.allclose(net(x, bias=net.context_bias(c)), expected, atol=1e-6)


def test_resnet_mlp_output_depends_on_the_context_after_training_step():
    torch.manual_seed(0)
    net = ResNetMLP(2, 2, n_hidden=16, n_blocks=2, n_context=4)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    x, c = torch.randn(64, 2), torch.randn(64, 4)
    target = c[:, :2]
    for _ in range(50):
        opt.zero_grad()
        loss = (net(x, context=c) - target).pow(2).mean()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5


def test_resnet_mlp_without_context_rejects_context_bias():
    net = ResNetMLP(3, 3, n_hidden=8, n_blocks=1)
    assert net(torch.randn(2, 3)).shape == (2, 3)
    with pytest.raises(ValueError, match="without a context"):
        net.context_bias(torch.randn(2, 4))
