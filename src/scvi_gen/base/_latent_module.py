"""The shared module of two-stage latent generators: an autoencoder and a latent flow prior.

CFGen (MLP autoencoder, residual-MLP velocity field) and LatentDiffusion (set-attention
autoencoder, DiT prior) are siblings on :class:`LatentGeneratorModule`: it holds the stages
(the frozen autoencoder kept in eval mode in stage 2), the NB reconstruction and
flow-matching losses, the exponential moving average of the prior's weights, the data
statistics in buffers, guidance, ODE solving and counterfactual transport. A subclass builds
its networks and supplies ``encode``, ``decode``, ``condition_bias``, ``velocity``,
``autoencoder_modules``, ``flow_modules`` and ``ema_average``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from scvi import REGISTRY_KEYS
from scvi.distributions import NegativeBinomial
from scvi.module.base import BaseModuleClass, LossOutput, auto_move_data

from scvi_gen.base._guidance import (
    compositional_guidance,
    condition_dropout_mask,
    drop_conditions,
)
from scvi_gen.base._ode import ODEMethod, solve_ode
from scvi_gen.base._sampling import sample_nb_dense
from scvi_gen.nn._ema import ema_step

logger = logging.getLogger(__name__)

Stage = Literal["autoencoder", "flow"]
Dispersion = Literal["gene", "gene-label", "gene-batch"]

#: Seed of the fixed noise used for validation losses of the flow (comparable across epochs).
_VALIDATION_SEED = 0


def _check_ema_decay(decay: float) -> None:
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"`ema_decay` must be in [0, 1) (0 turns the average off), got {decay}.")


@dataclass(frozen=True)
class AttributeSlot:
    """Where a categorical attribute lives in scvi-tools' tensors.

    Attributes
    ----------
    registry_key
        ``"labels"``, ``"batch"`` or ``"extra_categorical_covs"``.
    column
        Column inside that tensor.
    """

    registry_key: str
    column: int


@dataclass(frozen=True)
class ODEOptions:
    """Solver settings of the flow (see :func:`scvi_gen.base._ode.solve_ode`)."""

    method: ODEMethod = "midpoint"
    n_steps: int = 20
    rtol: float = 1e-5
    atol: float = 1e-5


class LatentGeneratorModule(BaseModuleClass):
    """Two stages over a latent space: an NB count autoencoder, then a flow-matching prior.

    Stage 1 (``stage="autoencoder"``) trains encoder, decoder and dispersion on the NB
    likelihood: the decoder gives NB means ``softmax(logits(z)) * library``. Stage 2
    (``stage="flow"``) freezes the autoencoder, keeps it in eval mode (even when Lightning
    calls ``train()``) and fits the velocity field on standardised latents with the
    conditional-OT path ``x_t = (1 - (1 - sigma_min) t) x_0 + t x_1`` and per-attribute
    condition dropout. Subclasses build the networks (see the module docstring).

    Parameters
    ----------
    n_input
        Number of genes.
    attribute_slots
        Where each categorical attribute the prior conditions on sits in the data-loader
        tensors.
    n_continuous_cov
        Number of continuous covariates (always given to the prior, never dropped).
    dispersion
        ``"gene"`` (one inverse dispersion per gene), ``"gene-label"`` or ``"gene-batch"`` (one
        per gene and label/batch category).
    dispersion_attribute
        Index (into the attributes) of the dispersion's category for ``gene-label/batch``.
    condition_dropout
        Probability of dropping each attribute during prior training.
    condition_on_library
        Give the prior the (standardised) log library size of each cell.
    sigma_min
        Width of the conditional-OT path at ``t = 1``.
    ema_decay
        Largest decay of the exponential moving average of the prior's weights, which
        validation and sampling use once it has been updated; 0 turns it off.
    """

    #: Host copy of the ``ema_updates`` buffer: reading the buffer on every ODE step or
    #: optimiser step would synchronise with the GPU.
    _n_ema_updates: int = 0
    #: Attribute holding the averaged networks (their keys in saved states).
    _ema_attribute: str = "ema_flow"

    def __init__(
        self,
        n_input: int,
        attribute_slots: Sequence[AttributeSlot],
        n_continuous_cov: int = 0,
        dispersion: Dispersion = "gene",
        dispersion_attribute: int | None = None,
        condition_dropout: float = 0.2,
        condition_on_library: bool = True,
        sigma_min: float = 1e-4,
        ema_decay: float = 0.999,
    ):
        super().__init__()
        _check_ema_decay(ema_decay)
        self.n_input = n_input
        self.attribute_slots = list(attribute_slots)
        self.n_continuous_cov = n_continuous_cov
        self.dispersion = dispersion
        self.dispersion_attribute = dispersion_attribute
        self.condition_dropout = condition_dropout
        self.condition_on_library = condition_on_library
        self.sigma_min = sigma_min
        self.ema_decay = ema_decay
        self.stage: Stage = "autoencoder"

    def _init_dispersion(self, n_categories: Sequence[int]) -> None:
        """The NB inverse dispersion: per gene, or per gene and dispersion category."""
        n_dispersion = 1 if self.dispersion == "gene" else n_categories[self.dispersion_attribute]
        self.log_theta = torch.nn.Parameter(torch.zeros(n_dispersion, self.n_input))

    def _init_statistics(self, n_latent: int, n_library: int = 1) -> None:
        """Buffers of the training data's statistics, restored from the state dict on load."""
        self.register_buffer("ema_updates", torch.tensor(0, dtype=torch.long))
        self.register_buffer("latent_mean", torch.zeros(n_latent))
        self.register_buffer("latent_std", torch.ones(n_latent))
        self.register_buffer("log_library_mean", torch.zeros(n_library))
        self.register_buffer("log_library_std", torch.ones(n_library))
        self.register_buffer("continuous_mean", torch.zeros(self.n_continuous_cov))
        self.register_buffer("continuous_std", torch.ones(self.n_continuous_cov))

    # ------------------------------------------------------------------ stages
    @property
    def autoencoder_modules(self) -> list[torch.nn.Module]:
        """Encoder and decoder (the dispersion is a parameter of the module itself)."""
        return [self.encoder, self.decoder]

    @property
    def flow_modules(self) -> list[torch.nn.Module]:
        """The networks of the prior (trained in stage 2)."""
        raise NotImplementedError

    @property
    def ema_average(self) -> torch.nn.Module:
        """The moving average of :attr:`flow_modules` (same parameter order)."""
        raise NotImplementedError

    @property
    def dispersion_parameters(self) -> list[torch.nn.Parameter]:
        """Parameters trained with the faster dispersion learning rate."""
        return [self.log_theta]

    def set_stage(self, stage: Stage) -> None:
        """Select the trained stage: only its parameters require gradients.

        Parameters
        ----------
        stage
            ``"autoencoder"`` or ``"flow"``.
        """
        if stage not in ("autoencoder", "flow"):
            raise ValueError(f"Unknown stage {stage!r}; use 'autoencoder' or 'flow'.")
        self.stage = stage
        train_ae = stage == "autoencoder"
        for module in self.autoencoder_modules:
            module.requires_grad_(train_ae)
        self.log_theta.requires_grad_(train_ae)
        for module in self.flow_modules:
            module.requires_grad_(not train_ae)
        self.train(self.training)

    def train(self, mode: bool = True) -> LatentGeneratorModule:
        """Set train/eval mode; the frozen autoencoder (stage 2) and the EMA stay in eval mode."""
        super().train(mode)
        self.ema_average.eval()
        if self.stage == "flow":
            # Lightning calls train() on the whole module at every epoch; without this the
            # frozen encoder's dropout/batch-norm would run in train mode (published CFGen bug).
            for module in self.autoencoder_modules:
                module.eval()
        return self

    # -------------------------------------------------------------- the EMA
    def reset_ema(self) -> None:
        """Restart the moving average from the current flow weights."""
        self.ema_average.load_state_dict(torch.nn.ModuleList(self.flow_modules).state_dict())
        self.ema_updates.zero_()
        self._n_ema_updates = 0

    @torch.no_grad()
    def update_ema(self) -> None:
        """One moving-average step of the flow's weights (called after every optimiser step).

        The decay ramps up as ``(1 + n) / (10 + n)`` (capped at ``ema_decay``), so the average
        spans roughly the last tenth of training, however long that is.
        """
        if self.stage != "flow" or self.ema_decay == 0:
            return
        self._n_ema_updates += 1
        self.ema_updates.fill_(self._n_ema_updates)
        live = torch.nn.ModuleList(self.flow_modules)
        ema_step(self.ema_average, live, self._n_ema_updates, self.ema_decay)

    def uses_ema(self) -> bool:
        """Whether the flow runs on its moving average: in eval mode, once it was updated."""
        return not self.training and self._n_ema_updates > 0

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        """Load this module's own tensors; also runs when a wrapper (Lightning) is loaded.

        A state saved before the moving average existed gets the current (never used) average
        and zero updates; the host copy of the update count follows the loaded buffer.
        """
        if f"{prefix}ema_updates" not in state_dict:
            average = getattr(self, self._ema_attribute)
            for key, value in average.state_dict().items():
                state_dict.setdefault(f"{prefix}{self._ema_attribute}.{key}", value)
            state_dict[f"{prefix}ema_updates"] = torch.zeros_like(self.ema_updates)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._n_ema_updates = int(self.ema_updates)

    # ------------------------------------------------------------- conditions
    def attribute_codes(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        """``(n, n_attributes)`` category codes gathered from data-loader tensors."""
        labels = tensors[REGISTRY_KEYS.LABELS_KEY]
        if not self.attribute_slots:
            return torch.zeros(labels.shape[0], 0, dtype=torch.long, device=labels.device)
        columns = [
            tensors[slot.registry_key][:, slot.column].long() for slot in self.attribute_slots
        ]
        return torch.stack(columns, dim=1)

    def continuous_inputs(
        self, tensors: dict[str, torch.Tensor], library: torch.Tensor
    ) -> torch.Tensor | None:
        """Standardised log library size and continuous covariates given to the flow."""
        parts = []
        if self.condition_on_library:
            log_library = torch.log(library.clamp(min=1.0))
            parts.append((log_library - self.log_library_mean) / self.log_library_std)
        if self.n_continuous_cov:
            cont = tensors[REGISTRY_KEYS.CONT_COVS_KEY].float()
            parts.append((cont - self.continuous_mean) / self.continuous_std)
        return torch.cat(parts, dim=1) if parts else None

    # ------------------------------------------------------- autoencoder parts
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latent ``(n, n_latent)`` of raw counts ``x`` (unstandardised)."""
        raise NotImplementedError

    def decode(
        self, z: torch.Tensor, library: torch.Tensor, codes: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """NB mean ``(n, genes)`` and inverse dispersion of latents ``z`` (unstandardised)."""
        raise NotImplementedError

    def encode_tensors(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        """Latent ``(n, n_latent)`` of the cells in data-loader ``tensors`` (unstandardised)."""
        return self.encode(tensors[REGISTRY_KEYS.X_KEY])

    def library_of_tensors(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        """Library sizes ``(n, n_library)`` of the cells in data-loader ``tensors``."""
        return tensors[REGISTRY_KEYS.X_KEY].sum(dim=1, keepdim=True)

    def standardize(self, z: torch.Tensor) -> torch.Tensor:
        """Map encoder latents to the flow's standardised space."""
        return (z - self.latent_mean) / self.latent_std

    def unstandardize(self, z: torch.Tensor) -> torch.Tensor:
        """Map flow samples back to the encoder's latent space."""
        return z * self.latent_std + self.latent_mean

    def theta(self, codes: torch.Tensor) -> torch.Tensor:
        """Inverse dispersion: ``(1, g)`` per gene or ``(n, g)`` per gene and category."""
        if self.dispersion == "gene":
            return self.log_theta.exp()
        return self.log_theta[codes[:, self.dispersion_attribute]].exp()

    # -------------------------------------------------- scvi-tools module API
    def _get_inference_input(self, tensors: dict[str, torch.Tensor], **kwargs: Any) -> dict:
        return {"x": tensors[REGISTRY_KEYS.X_KEY]}

    @auto_move_data
    def inference(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Encode counts: ``z`` and the library size."""
        return {"z": self.encode(x), "library": x.sum(dim=1, keepdim=True)}

    def _get_generative_input(
        self, tensors: dict[str, torch.Tensor], inference_outputs: dict, **kwargs: Any
    ) -> dict:
        return {
            "z": inference_outputs["z"],
            "library": inference_outputs["library"],
            "codes": self.attribute_codes(tensors),
        }

    @auto_move_data
    def generative(
        self, z: torch.Tensor, library: torch.Tensor, codes: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Decode latents (skipped in the flow stage, which does not need the decoder)."""
        if self.stage == "flow":
            return {}
        mu, theta = self.decode(z, library, codes)
        return {"mu": mu, "theta": theta}

    def loss(
        self,
        tensors: dict[str, torch.Tensor],
        inference_outputs: dict[str, torch.Tensor],
        generative_outputs: dict[str, torch.Tensor],
    ) -> LossOutput:
        """NB reconstruction loss (stage 1) or flow-matching loss (stage 2), per cell."""
        if self.stage == "flow":
            per_cell = self.flow_matching_loss(
                inference_outputs["z"].detach(),
                self.attribute_codes(tensors),
                self.continuous_inputs(tensors, inference_outputs["library"]),
            )
        else:
            x = tensors[REGISTRY_KEYS.X_KEY]
            nb = NegativeBinomial(mu=generative_outputs["mu"], theta=generative_outputs["theta"])
            per_cell = -nb.log_prob(x).sum(dim=-1)
        return LossOutput(loss=per_cell.mean(), reconstruction_loss=per_cell)

    # -------------------------------------------------------------- the flow
    def condition_bias(self, codes: torch.Tensor, continuous: torch.Tensor | None) -> torch.Tensor:
        """Condition input of the velocity network (constant along an ODE solve)."""
        raise NotImplementedError

    def velocity(self, x: torch.Tensor, t: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """Velocity at states ``x`` and times ``t`` (scalar or ``(n,)``) given conditions."""
        raise NotImplementedError

    def flow_matching_loss(
        self, z: torch.Tensor, codes: torch.Tensor, continuous: torch.Tensor | None
    ) -> torch.Tensor:
        """Conditional flow-matching loss per cell on encoder latents ``z``.

        In eval mode (validation) the noise, times and dropped conditions come from a fixed
        seed, so validation losses of different epochs are comparable.
        """
        x1 = self.standardize(z)
        generator = None
        if not self.training:
            generator = torch.Generator(device=x1.device).manual_seed(_VALIDATION_SEED)
        n = x1.shape[0]
        x0 = torch.randn(x1.shape, generator=generator, device=x1.device)
        t = torch.rand(n, 1, generator=generator, device=x1.device)
        keep = condition_dropout_mask(
            n,
            codes.shape[1],
            self.condition_dropout,
            generator=generator,
            device=x1.device,
        )
        codes = drop_conditions(codes, keep, self.condition_embedding.null_index)
        xt = (1 - (1 - self.sigma_min) * t) * x0 + t * x1
        target = x1 - (1 - self.sigma_min) * x0
        prediction = self.velocity(xt, t, self.condition_bias(codes, continuous))
        return (prediction - target).pow(2).mean(dim=-1)

    def guided_velocity(
        self,
        codes: torch.Tensor,
        continuous: torch.Tensor | None,
        weights: Sequence[float],
    ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """Velocity ``(t, x) -> v`` with compositional classifier-free guidance.

        ``v = v_null + sum_i w_i (v_i - v_null)``; all needed fields are evaluated in one
        batched network call per step.

        Parameters
        ----------
        codes
            ``(n, n_attributes)`` conditions of the cells.
        continuous
            ``(n, c)`` continuous inputs (:meth:`continuous_inputs`) or ``None``.
        weights
            One guidance weight per attribute.

        Returns
        -------
        The velocity function for :func:`~scvi_gen.base._ode.solve_ode`.
        """
        plan = compositional_guidance(codes, self.condition_embedding.null_index, weights)
        expanded = None if continuous is None else plan.expand(continuous)
        bias = self.condition_bias(plan.codes, expanded)

        def field(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            return plan.combine(self.velocity(plan.expand(x), t, bias))

        return field

    def sample_latent(
        self,
        codes: torch.Tensor,
        continuous: torch.Tensor | None,
        weights: Sequence[float],
        ode: ODEOptions,
    ) -> torch.Tensor:
        """Integrate noise to standardised latents under guidance; ``(n, n_latent)``."""
        x0 = torch.randn(codes.shape[0], self.n_latent, device=codes.device)
        return self._solve(self.guided_velocity(codes, continuous, weights), x0, 0.0, 1.0, ode)

    def transport(
        self,
        x1: torch.Tensor,
        source: tuple[torch.Tensor, torch.Tensor | None],
        target: tuple[torch.Tensor, torch.Tensor | None],
        weights: Sequence[float],
        ode: ODEOptions,
    ) -> torch.Tensor:
        """Counterfactual latents: integrate back to noise under ``source``, forward under ``target``.

        Parameters
        ----------
        x1
            Standardised latents of the cells.
        source, target
            ``(codes, continuous)`` of the observed and the counterfactual conditions.
        weights
            Guidance weights per attribute.
        ode
            Solver settings.

        Returns
        -------
        Standardised counterfactual latents.
        """
        x0 = self._solve(self.guided_velocity(*source, weights), x1, 1.0, 0.0, ode)
        return self._solve(self.guided_velocity(*target, weights), x0, 0.0, 1.0, ode)

    @staticmethod
    def _solve(
        field: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        x: torch.Tensor,
        t0: float,
        t1: float,
        ode: ODEOptions,
    ) -> torch.Tensor:
        return solve_ode(
            field,
            x,
            t0,
            t1,
            method=ode.method,
            n_steps=ode.n_steps,
            rtol=ode.rtol,
            atol=ode.atol,
        )

    # ------------------------------------------------------------- sampling
    @torch.inference_mode()
    def sample(
        self, tensors: dict[str, torch.Tensor], n_samples: int = 1, **kwargs: Any
    ) -> torch.Tensor:
        """Posterior predictive counts of the cells in ``tensors`` (encode, decode, sample NB).

        Parameters
        ----------
        tensors
            Data-loader tensors.
        n_samples
            Draws per cell.
        **kwargs
            Ignored (scvi-tools passes ``generative_kwargs``).

        Returns
        -------
        ``(n, g)`` counts if ``n_samples == 1``, else ``(n, g, n_samples)``, on the CPU.
        """
        x = tensors[REGISTRY_KEYS.X_KEY].to(self.latent_mean.device)
        outputs = self.inference(x)
        mu, theta = self.decode(
            outputs["z"], outputs["library"], self.attribute_codes(tensors).to(x.device)
        )
        draws = [sample_nb_dense(mu, theta).cpu() for _ in range(n_samples)]
        return draws[0] if n_samples == 1 else torch.stack(draws, dim=-1)
