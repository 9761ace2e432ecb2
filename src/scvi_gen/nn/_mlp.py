"""Multi-layer perceptrons: a plain one (encoders/decoders) and a residual one with a context."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from ._precision import linear_in

logger = logging.getLogger(__name__)

Norm = Literal["layer", "batch"] | None

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "silu": nn.SiLU,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "elu": nn.ELU,
}


def _activation(name: str) -> nn.Module:
    if name not in _ACTIVATIONS:
        raise ValueError(f"Unknown activation {name!r}; choose one of {sorted(_ACTIVATIONS)}.")
    return _ACTIVATIONS[name]()


def _norm(kind: Norm, width: int) -> nn.Module:
    if kind is None:
        return nn.Identity()
    if kind == "layer":
        return nn.LayerNorm(width)
    if kind == "batch":
        return nn.BatchNorm1d(width)
    raise ValueError(f"Unknown norm {kind!r}; choose 'layer', 'batch' or None.")


class MLP(nn.Module):
    """Feed-forward network: ``[Linear -> norm -> activation -> dropout] * len(n_hidden) -> Linear``.

    Parameters
    ----------
    n_input
        Input width.
    n_output
        Output width.
    n_hidden
        Widths of the hidden layers (empty: a single linear map).
    norm
        ``"layer"``, ``"batch"`` or ``None`` after every hidden linear layer.
    activation
        ``"silu"``, ``"relu"``, ``"gelu"`` or ``"elu"``.
    dropout
        Dropout rate after every hidden layer.

    Examples
    --------
    >>> net = MLP(10, 3, n_hidden=(32, 16))
    >>> net(torch.randn(4, 10)).shape
    torch.Size([4, 3])
    """

    def __init__(
        self,
        n_input: int,
        n_output: int,
        n_hidden: Sequence[int] = (256,),
        norm: Norm = "layer",
        activation: str = "silu",
        dropout: float = 0.0,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        width = n_input
        for hidden in n_hidden:
            layers += [nn.Linear(width, hidden), _norm(norm, hidden), _activation(activation)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = hidden
        layers.append(nn.Linear(width, n_output))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, output_dtype: torch.dtype | None = None) -> torch.Tensor:
        """Map ``(n, n_input)`` to ``(n, n_output)``.

        ``output_dtype`` (e.g. ``torch.bfloat16``) computes the last linear layer in that
        dtype with a cached cast of its weights (:func:`~scvi_gen.nn.linear_in`) and returns
        its output in that dtype.
        """
        if output_dtype is None or output_dtype == torch.float32:
            return self.net(x)
        for layer in self.net[:-1]:
            x = layer(x)
        return linear_in(self.net[-1], x, output_dtype)


class ResidualBlock(nn.Module):
    """Pre-norm residual block ``h + W2 drop(act(W1 act(norm(h)) + c))`` with a context bias ``c``.

    The second linear layer starts at zero, so every block starts as the identity.

    Parameters
    ----------
    width
        Hidden width.
    norm
        ``"layer"``, ``"batch"`` or ``None``.
    activation
        Activation name.
    dropout
        Dropout rate inside the block.
    """

    def __init__(self, width: int, norm: Norm, activation: str, dropout: float):
        super().__init__()
        self.norm = _norm(norm, width)
        self.act = _activation(activation)
        self.linear1 = nn.Linear(width, width)
        self.linear2 = nn.Linear(width, width)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        nn.init.zeros_(self.linear2.weight)
        nn.init.zeros_(self.linear2.bias)

    def forward(self, h: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """Update ``(n, width)`` hidden states; ``bias`` is ``(n, width)`` or broadcastable."""
        z = self.linear1(self.act(self.norm(h)))
        if bias is not None:
            z = z + bias
        return h + self.linear2(self.dropout(self.act(z)))


class ResNetMLP(nn.Module):
    """Residual MLP whose blocks are steered by a context vector (e.g. time + condition).

    Every block adds ``context @ W_b`` (a linear map without bias) before its activation.
    Because the context enters linearly, the contribution of a sum of contexts is the sum of
    their contributions: an ODE solver can compute :meth:`context_bias` of the (constant)
    condition once per solve and only that of the time embedding at every step.

    Parameters
    ----------
    n_input
        Input width.
    n_output
        Output width.
    n_hidden
        Hidden width.
    n_blocks
        Number of residual blocks.
    n_context
        Context width (0: no context).
    norm
        ``"layer"`` (default), ``"batch"`` or ``None`` inside the blocks.
    activation
        Activation name.
    dropout
        Dropout rate inside the blocks.

    Examples
    --------
    >>> net = ResNetMLP(8, 8, n_hidden=32, n_blocks=2, n_context=16)
    >>> x, c = torch.randn(5, 8), torch.randn(5, 16)
    >>> net(x, context=c).shape
    torch.Size([5, 8])
    >>> torch.allclose(net(x, context=c), net(x, bias=net.context_bias(c)))
    True
    """

    def __init__(
        self,
        n_input: int,
        n_output: int,
        n_hidden: int = 256,
        n_blocks: int = 3,
        n_context: int = 0,
        norm: Norm = "layer",
        activation: str = "silu",
        dropout: float = 0.0,
    ):
        super().__init__()
        self.n_hidden = n_hidden
        self.n_blocks = n_blocks
        self.input = nn.Linear(n_input, n_hidden)
        self.blocks = nn.ModuleList(
            ResidualBlock(n_hidden, norm, activation, dropout) for _ in range(n_blocks)
        )
        self.context = nn.Linear(n_context, n_blocks * n_hidden, bias=False) if n_context else None
        self.output_norm = _norm(norm, n_hidden)
        self.output_act = _activation(activation)
        self.output = nn.Linear(n_hidden, n_output)

    def context_bias(self, context: torch.Tensor) -> torch.Tensor:
        """Per-block biases ``(n, n_blocks, n_hidden)`` of a context; linear in ``context``."""
        if self.context is None:
            raise ValueError("This ResNetMLP was built without a context (n_context=0).")
        return self.context(context).view(-1, self.n_blocks, self.n_hidden)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Map ``(n, n_input)`` to ``(n, n_output)``.

        Parameters
        ----------
        x
            Inputs.
        context
            ``(n, n_context)`` context (or ``(1, n_context)``, broadcast over cells).
        bias
            Precomputed :meth:`context_bias` (instead of ``context``).

        Returns
        -------
        Outputs.
        """
        if bias is None and context is not None:
            bias = self.context_bias(context)
        h = self.input(x)
        for i, block in enumerate(self.blocks):
            h = block(h, None if bias is None else bias[:, i])
        return self.output(self.output_act(self.output_norm(h)))
