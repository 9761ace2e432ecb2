from __future__ import annotations

import pytest
import torch

from scvi_gen.base._guidance import (
    check_guidance,
    compositional_guidance,
    condition_dropout_mask,
    drop_conditions,
    resolve_guidance_weights,
)

NULL = torch.tensor([3, 2])
CODES = torch.tensor([[0, 1], [2, 0], [1, 1]])


def toy_field(codes: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A field whose value identifies the codes it was given."""
    return x + codes[:, :1].float() * 10 + codes[:, 1:].float() * 100


def guided(weights: list[float], x: torch.Tensor) -> torch.Tensor:
    plan = compositional_guidance(CODES, NULL, weights)
    return plan.combine(toy_field(plan.codes, plan.expand(x)))


def field_with(codes: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return toy_field(codes, x)


def only(i: int) -> torch.Tensor:
    codes = NULL.expand(3, 2).clone()
    codes[:, i] = CODES[:, i]
    return codes


def test_all_weights_zero_give_the_unconditional_field():
    x = torch.randn(3, 4)
    plan = compositional_guidance(CODES, NULL, [0.0, 0.0])
    assert plan.n_fields == 1
    assert torch.equal(guided([0.0, 0.0], x), field_with(NULL.expand(3, 2), x))


def test_guidance_combines_null_and_single_attribute_fields():
    x = torch.randn(3, 4)
    w = [2.0, 0.5]
    v_null = field_with(NULL.expand(3, 2), x)
    expected = v_null + w[0] * (field_with(only(0), x) - v_null)
    expected = expected + w[1] * (field_with(only(1), x) - v_null)
    assert torch.allclose(guided(w, x), expected)


def test_one_attribute_with_weight_one_is_one_plain_conditional_call():
    codes = torch.tensor([[1], [0]])
    plan = compositional_guidance(codes, torch.tensor([2]), [1.0])
    assert plan.n_fields == 1
    assert torch.equal(plan.codes, codes)


def test_no_attributes_evaluates_the_field_once():
    plan = compositional_guidance(torch.zeros(4, 0, dtype=torch.long), torch.zeros(0), [])
    assert plan.n_fields == 1 and plan.codes.shape == (4, 0)


def test_resolve_guidance_weights_accepts_none_numbers_dicts_and_aliases():
    names = ["cell_type", "batch"]
    assert resolve_guidance_weights(None, names) == [1.0, 1.0]
    assert resolve_guidance_weights(3, names) == [3.0, 3.0]
    assert resolve_guidance_weights({"batch": 0.0}, names) == [1.0, 0.0]
    assert resolve_guidance_weights({"labels": 2.0}, names, aliases={"labels": "cell_type"}) == [
        2.0,
        1.0,
    ]


def test_resolve_guidance_weights_takes_per_attribute_defaults():
    names = ["cell_type", "batch"]
    assert resolve_guidance_weights(None, names, default=[2.0, 0.5]) == [2.0, 0.5]
    assert resolve_guidance_weights({"batch": 1.0}, names, default=[2.0, 0.5]) == [2.0, 1.0]
    with pytest.raises(ValueError, match="default weights"):
        resolve_guidance_weights(None, names, default=[1.0])


def test_resolve_guidance_weights_rejects_unknown_attributes_and_nan():
    with pytest.raises(ValueError, match="unknown attributes"):
        resolve_guidance_weights({"species": 1.0}, ["cell_type"])
    with pytest.raises(ValueError, match="finite"):
        resolve_guidance_weights(float("nan"), ["cell_type"])


def test_condition_dropout_mask_drops_each_attribute_at_its_rate():
    generator = torch.Generator().manual_seed(0)
    keep = condition_dropout_mask(20_000, 2, [0.1, 0.6], generator=generator)
    rates = 1 - keep.float().mean(0)
    assert torch.allclose(rates, torch.tensor([0.1, 0.6]), atol=0.02)


def test_condition_dropout_mask_rejects_bad_probabilities():
    with pytest.raises(ValueError, match="lie in"):
        condition_dropout_mask(3, 1, 1.5)


def test_drop_conditions_uses_the_null_index():
    keep = torch.tensor([[True, False], [False, True], [True, True]])
    out = drop_conditions(CODES, keep, NULL)
    assert out.tolist() == [[0, 2], [3, 0], [1, 1]]


@pytest.mark.parametrize(
    ("guidance", "error", "match"),
    [
        (-2.0, ValueError, r"`guidance` must be a finite number >= 0"),
        (float("nan"), ValueError, r"`guidance` must be a finite number >= 0"),
        ("high", TypeError, r"`guidance` must be a finite number >= 0 or a dict"),
        (True, TypeError, r"`guidance` must be a finite number"),
        ({"cell_type": -1.0}, ValueError, r"guidance\['cell_type'\] must be a finite number"),
        ({"cell_type": "x"}, TypeError, r"guidance\['cell_type'\] must be"),
        (
            {"tissue": 1.0},
            ValueError,
            r"unknown attributes \['tissue'\].*\['cell_type', 'batch'\]",
        ),
    ],
)
def test_bad_guidance_is_refused_with_the_rule(guidance, error, match) -> None:
    with pytest.raises(error, match=match):
        check_guidance(guidance, ["cell_type", "batch"], model="CFGen")
    with pytest.raises(error, match=match):
        resolve_guidance_weights(guidance, ["cell_type", "batch"])


def test_guidance_is_checked_and_aliases_resolved() -> None:
    assert check_guidance(None, ["cell_type"], model="M") is None
    assert check_guidance(2, ["cell_type"], model="M") == 2.0
    assert check_guidance(
        {"labels": 0}, ["cell_type"], model="M", aliases={"labels": "cell_type"}
    ) == {"cell_type": 0.0}


def test_a_model_without_guidance_accepts_only_none() -> None:
    assert check_guidance(None, [], model="MAFFlow") is None
    with pytest.raises(
        ValueError, match=r"MAFFlow has no classifier-free guidance.*guidance=None"
    ):
        check_guidance(1.0, [], model="MAFFlow")


def test_a_single_weight_model_refuses_a_dict() -> None:
    with pytest.raises(ValueError, match="one classifier-free guidance weight"):
        check_guidance({"cell_type": 1.0}, ["cell_type"], model="D", per_attribute=False)
