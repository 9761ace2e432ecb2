from __future__ import annotations

import pytest
import torch

from scvi_gen.base._devices import resolve_device


@pytest.mark.parametrize(
    ("device", "expected"),
    [
        ("cpu", torch.device("cpu")),
        ("CUDA", torch.device("cuda")),
        ("cuda:1", torch.device("cuda", 1)),
        ("mps", torch.device("mps")),
        (0, torch.device("cuda", 0)),
        (torch.device("cpu"), torch.device("cpu")),
    ],
)
def test_known_devices_resolve(device: object, expected: torch.device) -> None:
    assert resolve_device(device) == expected


@pytest.mark.parametrize("device", [None, "auto"])
def test_auto_picks_an_available_device(device: object) -> None:
    resolved = resolve_device(device)
    expected = "cuda" if torch.cuda.is_available() else None
    assert resolved.type in ("cpu", "cuda", "mps")
    if expected:
        assert resolved.type == expected


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "meta", "", -1])
def test_unknown_devices_are_refused_listing_the_forms(device: object) -> None:
    match = r"unknown device .*; use 'cpu', 'cuda', 'cuda:0', 'mps' or 'auto'"
    with pytest.raises(ValueError, match=match):
        resolve_device(device)


def test_a_device_of_the_wrong_type_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="`device` must be a string or torch.device"):
        resolve_device(1.5)
