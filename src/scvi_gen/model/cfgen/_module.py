"""CFGen's module: an NB count autoencoder and a conditional flow-matching field in its latent."""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence

import torch

from scvi_gen.base._latent_module import (
    AttributeSlot,
    Dispersion,
    LatentGeneratorModule,
    ODEOptions,
    Stage,
)
from scvi_gen.nn._embeddings import ConditionEmbedding, TimeEmbedding
from scvi_gen.nn._mlp import MLP, Norm, ResNetMLP

logger = logging.getLogger(__name__)

__all__ = ["AttributeSlot", "CFGenModule", "Dispersion", "ODEOptions", "Stage"]


class CFGenModule(LatentGeneratorModule):
    """NB count autoencoder plus a conditional flow-matching velocity field in its latent space.

    Stage 1 (``stage="autoencoder"``) trains encoder, decoder and dispersion on the NB
    likelihood: the encoder maps ``log1p`` counts to a deterministic latent ``z``; the decoder
    gives NB means ``softmax(logits(z)) * library``. Stage 2 (``stage="flow"``) freezes the
    autoencoder, keeps it in eval mode (even when Lightning calls ``train()``) and fits the
    velocity field on standardised latents with the conditional-OT path
    ``x_t = (1 - (1 - sigma_min) t) x_0 + t x_1`` and per-attribute condition dropout.

    Parameters
    ----------
    n_input
        Number of genes.
    n_categories
        Number of categories of every categorical attribute the flow conditions on.
    attribute_slots
        Where each attribute sits in the data-loader tensors.
    n_continuous_cov
        Number of continuous covariates (always given to the flow, never dropped).
    n_latent
        Latent dimension.
    encoder_hidden, decoder_hidden
        Hidden widths of encoder and decoder.
    dropout_rate
        Dropout in the encoder.
    norm
        Normalisation in encoder and decoder (``"layer"``, ``"batch"`` or ``None``).
    dispersion
        ``"gene"`` (one inverse dispersion per gene), ``"gene-label"`` or ``"gene-batch"`` (one
        per gene and label/batch category).
    dispersion_attribute
        Index (into the attributes) of the dispersion's category for ``gene-label/batch``.
    flow_hidden, flow_blocks
        Width and number of residual blocks of the velocity network.
    flow_context
        Width of the time and condition embeddings.
    condition_dropout
        Probability of dropping each attribute during flow training.
    condition_on_library
        Give the flow the (standardised) log library size of each cell.
    sigma_min
        Width of the conditional-OT path at ``t = 1``.
    n_library
        Number of library sizes per cell (one per modality for multimodal data); the flow gets
        each of them when ``condition_on_library``.
    ema_decay
        Largest decay of the exponential moving average of the flow's weights (``ema_flow``),
        which validation and sampling use once it has been updated; 0 turns it off.
    """

    #: Host copy of the ``ema_updates`` buffer: reading the buffer on every ODE step or
    #: optimiser step would synchronise with the GPU.
    _n_ema_updates: int = 0
    #: Attribute holding the averaged networks (their keys in saved states).
    _ema_attribute: str = "ema_flow"

    def __init__(
        self,
        n_input: int,
        n_categories: Sequence[int],
        attribute_slots: Sequence[AttributeSlot],
        n_continuous_cov: int = 0,
        n_latent: int = 32,
        encoder_hidden: Sequence[int] = (512, 256),
        decoder_hidden: Sequence[int] = (256, 512),
        dropout_rate: float = 0.1,
        norm: Norm = "layer",
        dispersion: Dispersion = "gene",
        dispersion_attribute: int | None = None,
        flow_hidden: int = 256,
        flow_blocks: int = 3,
        flow_context: int = 128,
        condition_dropout: float = 0.2,
        condition_on_library: bool = True,
        sigma_min: float = 1e-4,
        n_library: int = 1,
        ema_decay: float = 0.999,
    ):
        super().__init__(
            n_input,
            attribute_slots,
            n_continuous_cov=n_continuous_cov,
            dispersion=dispersion,
            dispersion_attribute=dispersion_attribute,
            condition_dropout=condition_dropout,
            condition_on_library=condition_on_library,
            sigma_min=sigma_min,
            ema_decay=ema_decay,
        )
        self.n_latent = n_latent
        self.encoder = MLP(n_input, n_latent, encoder_hidden, norm=norm, dropout=dropout_rate)
        self.decoder = MLP(n_latent, n_input, decoder_hidden, norm=norm)
        self._init_dispersion(n_categories)

        n_continuous = n_continuous_cov + n_library * int(condition_on_library)
        self.time_embedding = TimeEmbedding(flow_context)
        self.condition_embedding = ConditionEmbedding(n_categories, flow_context, n_continuous)
        self.velocity_net = ResNetMLP(
            n_latent, n_latent, flow_hidden, flow_blocks, n_context=flow_context
        )
        self.ema_flow = copy.deepcopy(torch.nn.ModuleList(self.flow_modules)).requires_grad_(False)
        self._init_statistics(n_latent, n_library)

    # ------------------------------------------------------------------ networks
    @property
    def flow_modules(self) -> list[torch.nn.Module]:
        """Time embedding, condition embedding and velocity network."""
        return [self.time_embedding, self.condition_embedding, self.velocity_net]

    @property
    def ema_average(self) -> torch.nn.Module:
        """The moving average of :attr:`flow_modules` (same parameter order)."""
        return self.ema_flow

    def flow_networks(self) -> tuple[TimeEmbedding, ConditionEmbedding, ResNetMLP]:
        """Time embedding, condition embedding and velocity network (averaged when in use)."""
        networks = self.ema_average if self.uses_ema() else self.flow_modules
        time_embedding, condition_embedding, velocity_net = networks
        return time_embedding, condition_embedding, velocity_net

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latent ``(n, n_latent)`` of raw counts ``x`` (unstandardised)."""
        return self.encoder(torch.log1p(x))

    def decode(
        self, z: torch.Tensor, library: torch.Tensor, codes: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """NB mean ``softmax(logits) * library`` and inverse dispersion of latents ``z``.

        Inside :func:`~scvi_gen.nn.decoding_precision` (generation) the output layer runs in
        that dtype; training and the losses always decode in float32.
        """
        logits = self.decoder(z, output_dtype=getattr(self, "decode_dtype", None))
        proportions = torch.softmax(logits, dim=-1, dtype=torch.float32)
        return proportions * library, self.theta(codes)

    def condition_bias(self, codes: torch.Tensor, continuous: torch.Tensor | None) -> torch.Tensor:
        """Per-block biases of the conditions (constant along an ODE solve)."""
        _, condition_embedding, velocity_net = self.flow_networks()
        return velocity_net.context_bias(condition_embedding(codes, continuous))

    def velocity(self, x: torch.Tensor, t: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """Velocity at states ``x`` and times ``t`` (scalar or ``(n,)``) given condition biases."""
        time_embedding, _, velocity_net = self.flow_networks()
        time_bias = velocity_net.context_bias(time_embedding(t))
        return velocity_net(x, bias=bias + time_bias)
