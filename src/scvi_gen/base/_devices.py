"""Turn a user's ``device`` argument into a :class:`torch.device`, with a clear error."""

from __future__ import annotations

import logging
import re

import torch

logger = logging.getLogger(__name__)

_FORMS = "use 'cpu', 'cuda', 'cuda:0', 'mps' or 'auto'"
#: Device names accepted as strings; torch knows more (e.g. "meta"), which hold no weights.
_NAME = re.compile(r"^(cpu|mps|cuda(:\d+)?)$")


def resolve_device(device: str | torch.device | int | None) -> torch.device:
    """The device a model should be moved to.

    Parameters
    ----------
    device
        ``"auto"`` or ``None`` (CUDA if available, else MPS if available, else CPU),
        ``"cpu"``, ``"cuda"``, ``"cuda:<index>"``, ``"mps"``, an integer CUDA index or a
        :class:`torch.device`. Lightning's ``"gpu"`` is not a torch device and is refused
        (torch's own error lists dozens of backends).

    Returns
    -------
    The :class:`torch.device`.

    Examples
    --------
    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if isinstance(device, torch.device):
        return device
    if device is None or (isinstance(device, str) and device.strip().lower() == "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if isinstance(device, int) and not isinstance(device, bool):
        if device < 0:
            raise ValueError(f"unknown device {device!r}; {_FORMS}.")
        return torch.device("cuda", device)
    if not isinstance(device, str):
        raise TypeError(f"`device` must be a string or torch.device, got {device!r}; {_FORMS}.")
    name = device.strip().lower()
    if not _NAME.match(name):
        raise ValueError(f"unknown device {device!r}; {_FORMS}.")
    return torch.device(name)
