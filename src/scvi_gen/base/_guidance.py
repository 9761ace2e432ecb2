"""Compositional classifier-free guidance over several categorical attributes.

A conditional network sees one code per attribute; the code ``null_index[i]`` (one past the
last category) means "attribute ``i`` not given". Training drops every attribute
independently (:func:`condition_dropout_mask`), so the network learns the unconditional field
``v_null`` (all attributes null) and each single-attribute field ``v_i`` (only attribute ``i``
given). Sampling combines them as

``v = v_null + sum_i w_i (v_i - v_null)``

with one weight per attribute: ``w_i = 0`` ignores attribute ``i``, ``w_i = 1`` with a single
attribute is the plain conditional field, ``w_i > 1`` sharpens. :func:`compositional_guidance`
builds all the needed fields as one batch (one network call per solver step) and drops those
with a zero coefficient.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

GuidanceArg = float | Mapping[str, float] | None


def check_guidance(
    guidance: Any,
    names: Sequence[str],
    *,
    model: str,
    aliases: Mapping[str, str] | None = None,
    per_attribute: bool = True,
) -> float | dict[str, float] | None:
    """Check a ``guidance`` argument against the one rule every generator follows.

    ``guidance`` is ``None``, a finite number >= 0, or ``{obs_key: finite number >= 0}`` over
    the registered categorical conditions the model is guided on. A model without
    classifier-free guidance (``names`` empty) accepts only ``None``.

    Parameters
    ----------
    guidance
        The user's argument.
    names
        Guided attributes (registered categorical ``obs`` keys) in the network's order; empty
        for a model without guidance.
    model
        Model name for error messages.
    aliases
        Other accepted dict keys, ``{alias: name}`` (e.g. ``{"labels": "cell_type"}``).
    per_attribute
        Whether the model takes one weight per attribute (a dict); ``False`` for a model
        with a single guidance weight.

    Returns
    -------
    ``None``, the weight as a float, or ``{name: weight}`` with aliases resolved.

    Examples
    --------
    >>> check_guidance({"cell_type": 2}, ["cell_type"], model="CFGen")
    {'cell_type': 2.0}
    """
    if guidance is None:
        return None
    names = list(names)
    if not names:
        # Ignoring the argument would let a user believe a guided sample was drawn.
        raise ValueError(
            f"{model} has no classifier-free guidance, got `guidance`={guidance!r}; pass "
            "guidance=None (guided models: CFGen, LatentDiffusion, DiscreteDiffusion)."
        )
    form = (
        f"a finite number >= 0 or a dict {{obs_key: number >= 0}} over {names}"
        if per_attribute
        else "one finite number >= 0 (for all conditions)"
    )
    if isinstance(guidance, Mapping):
        if not per_attribute:
            raise ValueError(
                f"{model} takes one classifier-free guidance weight for all conditions: "
                f"`guidance` must be {form}, not per-attribute weights {dict(guidance)}."
            )
        lookup = {**dict(aliases or {}), **{name: name for name in names}}
        unknown = sorted(str(k) for k in guidance if k not in lookup)
        if unknown:
            raise ValueError(
                f"`guidance` names unknown attributes {unknown}; {model} is guided on "
                f"{names}: use those keys."
            )
        return {lookup[k]: _weight(v, f"guidance[{k!r}]", form) for k, v in guidance.items()}
    return _weight(guidance, "`guidance`", form)


def _weight(value: Any, name: str, form: str) -> float:
    """One guidance weight: a finite real number >= 0 (``True`` is not a weight)."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"{name} must be {form}, got {value!r}.")
    weight = float(value)
    if not math.isfinite(weight) or weight < 0:
        raise ValueError(f"{name} must be {form}, got {value!r}.")
    return weight


def resolve_guidance_weights(
    guidance: GuidanceArg,
    names: Sequence[str],
    default: float | Sequence[float] = 1.0,
    aliases: Mapping[str, str] | None = None,
    model: str = "This model",
) -> list[float]:
    """Turn the user's ``guidance`` argument into one weight per attribute.

    Parameters
    ----------
    guidance
        ``None`` (``default`` for every attribute), one number for all attributes, or
        ``{attribute: weight}`` (unlisted attributes get ``default``); checked by
        :func:`check_guidance`.
    names
        Attribute names in the network's order.
    default
        Weight of an attribute the user did not set (one value, or one per attribute).
    aliases
        Other accepted names, ``{alias: name}`` (e.g. ``{"labels": "cell_type"}``).
    model
        Model name for error messages.

    Returns
    -------
    One float per attribute.

    Examples
    --------
    >>> resolve_guidance_weights({"cell_type": 2.0}, ["cell_type", "batch"])
    [2.0, 1.0]
    >>> resolve_guidance_weights(0.0, ["cell_type", "batch"])
    [0.0, 0.0]
    """
    names = list(names)
    defaults = (
        [float(default)] * len(names) if np.ndim(default) == 0 else [float(d) for d in default]
    )
    if len(defaults) != len(names):
        raise ValueError(f"Got {len(defaults)} default weights for {len(names)} attributes.")
    if not names:
        # No categorical condition to guide on: only None is meaningful.
        check_guidance(guidance, names, model=model, aliases=aliases)
        return []
    checked = check_guidance(guidance, names, model=model, aliases=aliases)
    if checked is None:
        weights = defaults
    elif isinstance(checked, dict):
        weights = [checked.get(name, d) for name, d in zip(names, defaults)]
    else:
        weights = [checked] * len(names)
    if not all(math.isfinite(w) for w in weights):
        raise ValueError(f"Guidance weights must be finite, got {weights}.")
    return weights


def condition_dropout_mask(
    n: int,
    n_attributes: int,
    p_drop: float | Sequence[float],
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Draw which attributes each cell keeps during training (independent dropout).

    Parameters
    ----------
    n
        Number of cells.
    n_attributes
        Number of attributes.
    p_drop
        Probability of dropping each attribute (one value or one per attribute).
    generator
        Random generator (``None``: torch's global one).
    device
        Device of the mask.

    Returns
    -------
    ``(n, n_attributes)`` boolean mask, ``True`` where the attribute is kept.

    Examples
    --------
    >>> keep = condition_dropout_mask(1000, 2, 0.5, generator=torch.Generator().manual_seed(0))
    >>> keep.shape
    torch.Size([1000, 2])
    """
    p = torch.as_tensor(p_drop, dtype=torch.float32, device=device).expand(n_attributes)
    if torch.any((p < 0) | (p > 1)):
        raise ValueError(f"Dropout probabilities must lie in [0, 1], got {p.tolist()}.")
    u = torch.rand(n, n_attributes, generator=generator, device=device)
    return u >= p


def drop_conditions(
    codes: torch.Tensor, keep: torch.Tensor, null_index: torch.Tensor
) -> torch.Tensor:
    """Replace the codes of dropped attributes by their null index.

    Parameters
    ----------
    codes
        ``(n, n_attributes)`` category codes.
    keep
        ``(n, n_attributes)`` mask (or broadcastable), ``True`` to keep a code.
    null_index
        ``(n_attributes,)`` null code of each attribute.

    Returns
    -------
    The masked codes.
    """
    return torch.where(keep, codes, null_index.to(codes).expand_as(codes))


@dataclass
class GuidancePlan:
    """The fields one guided evaluation needs, stacked as one batch.

    Attributes
    ----------
    codes
        ``(m * n, n_attributes)`` codes: ``m`` blocks of the ``n`` cells, one block per field.
    coefficients
        Weight of each block in the combination (they sum to 1).
    n
        Number of cells.
    """

    codes: torch.Tensor
    coefficients: list[float]
    n: int

    @property
    def n_fields(self) -> int:
        """Number of fields evaluated per call (``m``)."""
        return len(self.coefficients)

    def expand(self, x: torch.Tensor) -> torch.Tensor:
        """Repeat ``(n, ...)`` states once per field: ``(m * n, ...)``."""
        if self.n_fields == 1:
            return x
        return x.repeat(self.n_fields, *([1] * (x.dim() - 1)))

    def combine(self, values: torch.Tensor) -> torch.Tensor:
        """Weighted sum of the ``m`` blocks of ``(m * n, ...)`` field values: ``(n, ...)``."""
        if self.n_fields == 1:
            return values * self.coefficients[0] if self.coefficients[0] != 1.0 else values
        blocks = values.view(self.n_fields, self.n, *values.shape[1:])
        out = blocks[0] * self.coefficients[0]
        for coefficient, block in zip(self.coefficients[1:], blocks[1:]):
            out = out + coefficient * block
        return out


def compositional_guidance(
    codes: torch.Tensor,
    null_index: torch.Tensor,
    weights: Sequence[float],
) -> GuidancePlan:
    """Plan ``v = v_null + sum_i w_i (v_i - v_null)`` as one batched network call.

    ``v_i`` is the field with only attribute ``i`` given. Fields with a zero coefficient are
    left out: with one attribute and ``w = 1`` only the conditional field is evaluated; with
    all weights 0 only the unconditional one.

    Parameters
    ----------
    codes
        ``(n, n_attributes)`` codes of the cells' conditions.
    null_index
        ``(n_attributes,)`` null code of each attribute.
    weights
        One guidance weight per attribute.

    Returns
    -------
    The :class:`GuidancePlan`.

    Examples
    --------
    >>> plan = compositional_guidance(torch.tensor([[0, 1]]), torch.tensor([3, 2]), [2.0, 0.0])
    >>> plan.codes.tolist(), plan.coefficients
    ([[3, 2], [0, 2]], [-1.0, 2.0])
    """
    n, k = codes.shape
    if len(weights) != k:
        raise ValueError(f"Got {len(weights)} guidance weights for {k} attributes.")
    null = null_index.to(codes).expand(n, k)
    blocks, coefficients = [], []
    null_coefficient = 1.0 - float(sum(weights))
    if null_coefficient != 0.0:
        blocks.append(null)
        coefficients.append(null_coefficient)
    for i, weight in enumerate(weights):
        if weight == 0.0:
            continue
        only_i = null.clone()
        only_i[:, i] = codes[:, i]
        blocks.append(only_i)
        coefficients.append(float(weight))
    return GuidancePlan(torch.cat(blocks, dim=0), coefficients, n)
