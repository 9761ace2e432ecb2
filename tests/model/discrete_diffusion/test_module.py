from __future__ import annotations

import math

import pytest
import torch
from torch.overrides import TorchFunctionMode

from scvi_gen.model.discrete_diffusion import DiscreteDiffusionModule
from scvi_gen.model.discrete_diffusion._network import resolve_architecture

from .conftest import TINY

N_BINS = 8


def _module(n_genes: int = 20, **kwargs) -> DiscreteDiffusionModule:
    torch.manual_seed(0)
    arch = resolve_architecture("small", **{**TINY, **kwargs.pop("arch", {})})
    module = DiscreteDiffusionModule(
        n_input=n_genes, n_genes=n_genes, n_labels=2, num_bins=N_BINS, architecture=arch, **kwargs
    )
    module.tokenizer.edges.copy_(torch.linspace(0.5, 4.0, N_BINS))
    return module


def _batch(n_cells: int = 64, n_genes: int = 20) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.poisson(torch.rand(n_cells, n_genes, generator=g) * 4, generator=g)
    labels = (torch.arange(n_cells) % 2).float().unsqueeze(1)
    return {"X": x, "labels": labels, "batch": torch.zeros(n_cells, 1)}


def _randomise_head(module: DiscreteDiffusionModule) -> None:
    # leave the zero-initialised start so that predictions depend on the masked input
    g = torch.Generator().manual_seed(1)
    for p in module.network.parameters():
        p.data.add_(0.3 * torch.randn(p.shape, generator=g))


def _mean_loss(module: DiscreteDiffusionModule, batch, n_draws: int) -> float:
    torch.manual_seed(2)
    with torch.no_grad():
        return sum(float(module(batch)[2].loss) for _ in range(n_draws)) / n_draws


@pytest.mark.parametrize("estimator", ["count", "time"])
def test_loss_is_log_num_bins_per_gene_for_a_uniform_model(estimator):
    # a zero-initialised head predicts uniform tokens: the bound is exactly log(num_bins)
    # per gene; a loss without the diffusion weight would give about half of it
    module = _module(loss_estimator=estimator).eval()
    loss = _mean_loss(module, _batch(), n_draws=40 if estimator == "time" else 1)
    assert loss == pytest.approx(math.log(N_BINS), rel=0.03 if estimator == "time" else 1e-5)


def test_count_and_time_estimators_estimate_the_same_bound():
    count = _module(loss_estimator="count").eval()
    _randomise_head(count)
    time = _module(loss_estimator="time").eval()
    time.load_state_dict(count.state_dict())
    batch = _batch(n_cells=128)
    assert _mean_loss(time, batch, 60) == pytest.approx(_mean_loss(count, batch, 20), rel=0.03)


def test_loss_output_has_a_per_cell_reconstruction_loss():
    module = _module()
    _, _, loss = module(_batch(n_cells=10))
    assert loss.reconstruction_loss["reconstruction_loss"].shape == (10,)
    assert loss.loss.ndim == 0


def test_ema_copy_is_not_trained_and_follows_the_weights():
    module = _module()
    trainable = {id(p) for p in module.parameters() if p.requires_grad}
    assert all(id(p) not in trainable for p in module.ema_network.parameters())
    assert any(k.startswith("ema_network.") for k in module.state_dict())
    for p in module.network.parameters():
        p.data.add_(1.0)
    before = module.ema_network.gene_bias.clone()
    module.update_ema()
    after = module.ema_network.gene_bias
    assert torch.all(after > before) and torch.all(after < module.network.gene_bias)
    assert int(module.ema_updates) == 1


def test_guidance_zero_equals_the_conditional_model_and_positive_guidance_differs():
    module = _module().eval()
    _randomise_head(module)
    tokens = torch.full((6, 20), module.mask_index)
    tokens[:, :10] = 3
    conditions = {"labels": torch.ones(6, 1), "batch": torch.zeros(6, 1)}
    conditions |= {"cat_covs": None, "cont_covs": None}
    lib = torch.zeros(6)
    base = module.denoising_probabilities(tokens, lib, conditions, guidance=0.0)
    guided = module.denoising_probabilities(tokens, lib, conditions, guidance=2.0)
    assert torch.allclose(base.sum(-1), torch.ones(6, 20))
    assert torch.allclose(guided.sum(-1), torch.ones(6, 20), atol=1e-5)
    assert not torch.allclose(base, guided)
    no_zero = module.denoising_probabilities(tokens, lib, conditions, exclude_zero=True)
    assert torch.all(no_zero[..., 0] == 0)


def test_gene_order_carries_no_positional_information():
    module = _module(arch={"n_layers": 1}).eval()
    _randomise_head(module)
    net = module.network
    tokens = torch.randint(0, N_BINS + 1, (4, 20))
    args = (torch.full((4,), 0.3), torch.zeros(4))
    conditions = {"labels": torch.zeros(4, 1), "batch": torch.zeros(4, 1)}
    drop = torch.zeros(4, dtype=torch.bool)
    with torch.no_grad():
        out = net(tokens, *args, conditions, drop)
        perm = torch.randperm(20)
        for name in ("gene_embedding", "gene_query", "gene_output", "gene_bias"):
            getattr(net, name).data = getattr(net, name).data[perm]
        net.factor_head.data = net.factor_head.data[:, perm]
        table = net.cell_embedding.weight.data.view(20, N_BINS + 1, -1)
        net.cell_embedding.weight.data = table[perm].reshape(20 * (N_BINS + 1), -1)
        permuted = net(tokens[:, perm], *args, conditions, drop)
    assert torch.allclose(permuted, out[:, perm], atol=1e-5)


class _ShapeRecorder(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.shapes = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if isinstance(out, torch.Tensor):
            self.shapes.append(tuple(out.shape))
        return out


def test_latent_attention_never_builds_a_genes_by_genes_tensor_at_2000_genes():
    n_genes = 2000
    module = _module(n_genes=n_genes).eval()
    x = torch.poisson(torch.rand(2, n_genes))
    batch = {"X": x, "labels": torch.zeros(2, 1), "batch": torch.zeros(2, 1)}
    recorder = _ShapeRecorder()
    with torch.no_grad(), recorder:
        module(batch)
    assert recorder.shapes
    largest = max(math.prod(s) for s in recorder.shapes)
    assert largest < n_genes * n_genes
    assert not any(sum(d == n_genes for d in s) >= 2 for s in recorder.shapes)


def test_full_attention_variant_runs():
    module = _module(attention="full")
    _, _, loss = module(_batch(n_cells=8))
    assert torch.isfinite(loss.loss)


def test_invalid_options_raise():
    with pytest.raises(ValueError, match="value_transform"):
        _module(value_transform="log2")
    with pytest.raises(ValueError, match="loss_estimator"):
        _module(loss_estimator="plain")
    with pytest.raises(ValueError, match="attention"):
        _module(attention="linear")


@pytest.mark.parametrize("fraction", [0.05, 0.6])
def test_decoding_selected_pairs_matches_the_full_output(fraction):
    # few pairs take the per-pair path (reverse steps), many the full one (training)
    module = _module().eval()
    _randomise_head(module)
    g = torch.Generator().manual_seed(3)
    tokens = torch.randint(0, N_BINS + 1, (6, 20), generator=g)
    positions = torch.rand(6, 20, generator=g) < fraction
    args = (torch.full((6,), 0.4), torch.zeros(6))
    conditions = {"labels": torch.zeros(6, 1), "batch": torch.zeros(6, 1)}
    drop = torch.zeros(6, dtype=torch.bool)
    with torch.no_grad():
        full = module.network(tokens, *args, conditions, drop)
        picked = module.network(tokens, *args, conditions, drop, positions=positions)
    assert torch.allclose(picked, full[positions], atol=1e-5)
