"""Sampling a zuko flow layer by layer: same cells, nothing left in reference cycles."""

from __future__ import annotations

import gc

import torch
import zuko
from torch.distributions import Transform

from scvi_gen.model.flows._sampling import sample_flow


def _flow() -> zuko.flows.Flow:
    torch.manual_seed(1)
    return zuko.flows.MAF(6, context=2, transforms=3, passes=3)


def _cyclic_garbage(*kinds: type) -> list[object]:
    """Objects of ``kinds`` only the cycle collector would free (left behind since the last)."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        # type(), not isinstance: the garbage holds weak proxies whose referent is gone,
        # and isinstance on those raises ReferenceError.
        return [o for o in gc.garbage if issubclass(type(o), kinds)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


def test_sample_flow_equals_zuko_sample() -> None:
    flow, context = _flow(), torch.randn(5, 2)
    torch.manual_seed(0)
    expected = flow(context).sample()
    torch.manual_seed(0)
    assert torch.equal(sample_flow(lambda: flow(context)), expected)


def test_sample_flow_leaves_no_transform_in_a_reference_cycle() -> None:
    flow, context = _flow(), torch.randn(5, 2)
    gc.collect()
    sample_flow(lambda: flow(context))
    assert _cyclic_garbage(Transform, torch.Tensor) == []


def test_zuko_sample_does_leave_cycles() -> None:
    """The reason for sample_flow: if zuko stops making cycles, it can be dropped."""
    flow, context = _flow(), torch.randn(5, 2)
    gc.collect()
    flow(context).sample()
    assert _cyclic_garbage(Transform)
