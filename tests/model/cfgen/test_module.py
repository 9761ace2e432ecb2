from __future__ import annotations

import pytest
import torch

from scvi_gen.model.cfgen._module import AttributeSlot, CFGenModule


def toy_module() -> CFGenModule:
    return CFGenModule(
        n_input=10,
        n_categories=[2],
        attribute_slots=[AttributeSlot("labels", 0)],
        n_latent=2,
        encoder_hidden=(8,),
        decoder_hidden=(8,),
        flow_hidden=32,
        flow_blocks=2,
        flow_context=16,
        condition_on_library=False,
    )


def test_flow_matching_loss_decreases_on_a_toy_problem():
    torch.manual_seed(0)
    module = toy_module()
    module.set_stage("flow")
    module.train()
    codes = torch.randint(0, 2, (128, 1))
    centers = torch.tensor([[-2.0, 0.0], [2.0, 1.0]])
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=3e-3)
    losses = []
    for _ in range(100):
        z = centers[codes[:, 0]] + 0.1 * torch.randn(128, 2)
        loss = module.flow_matching_loss(z, codes, None).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) / 10 < 0.6 * sum(losses[:10]) / 10


def test_set_stage_freezes_the_other_stage_and_keeps_autoencoder_in_eval():
    module = toy_module()
    module.set_stage("flow")
    module.train()
    assert not module.encoder.training and not module.decoder.training
    assert module.velocity_net.training
    assert not any(p.requires_grad for p in module.encoder.parameters())
    assert not module.log_theta.requires_grad
    assert all(p.requires_grad for p in module.velocity_net.parameters())
    module.set_stage("autoencoder")
    module.train()
    assert module.encoder.training
    assert not any(p.requires_grad for p in module.velocity_net.parameters())


def test_validation_flow_loss_is_deterministic():
    module = toy_module()
    module.set_stage("flow")
    module.eval()
    z, codes = torch.randn(16, 2), torch.randint(0, 2, (16, 1))
    assert torch.equal(
        module.flow_matching_loss(z, codes, None), module.flow_matching_loss(z, codes, None)
    )


def test_zero_library_cells_have_finite_reconstruction_loss():
    module = toy_module()
    x = torch.zeros(3, 10)
    x[0, 2] = 5
    tensors = {"X": x, "labels": torch.zeros(3, 1), "batch": torch.zeros(3, 1)}
    _, _, loss = module(tensors)
    assert torch.isfinite(loss.loss)
    assert torch.isfinite(loss.reconstruction_loss["reconstruction_loss"]).all()


def _shift_flow_weights(module: CFGenModule, amount: float) -> None:
    with torch.no_grad():
        for p in torch.nn.ModuleList(module.flow_modules).parameters():
            p.add_(amount)


def test_first_ema_update_mixes_weights_with_the_ramped_decay():
    module = toy_module()
    module.set_stage("flow")
    module.reset_ema()
    start = [p.clone() for p in module.ema_flow.parameters()]
    _shift_flow_weights(module, 1.0)
    module.update_ema()
    decay = 2.0 / 11.0  # (1 + n) / (10 + n) at n = 1, below the cap
    for before, averaged in zip(start, module.ema_flow.parameters()):
        assert torch.allclose(averaged, before + (1.0 - decay), atol=1e-6)


def test_flow_runs_on_the_average_only_in_eval_mode_after_an_update():
    module = toy_module()
    module.set_stage("flow")
    module.reset_ema()
    module.eval()
    assert module.flow_networks()[2] is module.velocity_net  # no update yet
    module.update_ema()
    assert module.flow_networks()[2] is module.ema_flow[2]
    module.train()
    assert module.flow_networks()[2] is module.velocity_net
    assert not module.ema_flow.training


def test_ema_is_not_updated_in_the_autoencoder_stage_or_when_off():
    module = toy_module()
    module.update_ema()
    assert int(module.ema_updates) == 0
    off = CFGenModule(
        n_input=10, n_categories=[2], attribute_slots=[AttributeSlot("labels", 0)], ema_decay=0.0
    )
    off.set_stage("flow")
    off.update_ema()
    assert int(off.ema_updates) == 0


def test_state_without_an_average_loads_and_uses_the_trained_flow():
    module = toy_module()
    module.set_stage("flow")
    module.reset_ema()
    _shift_flow_weights(module, 1.0)
    module.update_ema()
    old_format = {
        k: v for k, v in module.state_dict().items() if not k.startswith(("ema_flow.", "ema_"))
    }
    fresh = toy_module()
    fresh.load_state_dict(old_format)
    fresh.eval()
    assert int(fresh.ema_updates) == 0
    assert fresh.flow_networks()[2] is fresh.velocity_net
    for loaded, trained in zip(fresh.velocity_net.parameters(), module.velocity_net.parameters()):
        assert torch.equal(loaded, trained)


def test_ema_decay_outside_zero_one_is_rejected():
    with pytest.raises(ValueError, match="ema_decay"):
        CFGenModule(n_input=10, n_categories=[], attribute_slots=[], ema_decay=1.0)


def test_loading_through_a_wrapper_restores_the_update_count():
    # Lightning loads the training plan, not the module: the count must follow the buffer.
    module = toy_module()
    module.set_stage("flow")
    module.reset_ema()
    module.update_ema()
    module.update_ema()
    wrapper = torch.nn.Module()
    wrapper.module = toy_module()
    wrapper.load_state_dict({f"module.{k}": v for k, v in module.state_dict().items()})
    wrapper.module.eval()
    assert wrapper.module.uses_ema()
    assert wrapper.module.flow_networks()[2] is wrapper.module.ema_flow[2]
