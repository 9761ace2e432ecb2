"""CFGen's multimodal module: per-modality encoders into one latent, per-modality likelihoods."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from scvi.distributions import NegativeBinomial
from scvi.module.base import LossOutput

from scvi_gen.model.cfgen._module import AttributeSlot, CFGenModule, Dispersion
from scvi_gen.nn._mlp import MLP, Norm

logger = logging.getLogger(__name__)

ModalityKind = Literal["rna", "protein", "atac"]
Likelihood = Literal["nb", "bernoulli", "poisson"]

#: Floor of Poisson rates and Bernoulli log-probabilities (a library of 0 gives a rate of 0).
_EPS = 1e-8
_LIBRARY_HEAD_HIDDEN = (64,)
_NEWTON_STEPS = 10


def bernoulli_rates(
    proportions: torch.Tensor, open_peaks: torch.Tensor, n_iterations: int = _NEWTON_STEPS
) -> torch.Tensor:
    """Rates ``c * proportions`` whose Bernoulli probabilities sum to the open-peak count.

    With ``p_j = 1 - exp(-c pi_j)``, ``c`` solves ``sum_j p_j = open_peaks`` (per cell), so the
    size factor of a Bernoulli modality is its expected number of open peaks, as a library
    size is the expected total of a count modality. ``sum_j p_j`` is increasing and concave
    in ``c``: Newton's method started at ``c = open_peaks`` (where the sum is at most the
    target) climbs monotonically to the root.

    Parameters
    ----------
    proportions
        ``(n, peaks)`` non-negative rows summing to 1.
    open_peaks
        ``(n, 1)`` target numbers of open peaks (capped just below the number of peaks).
    n_iterations
        Newton steps.

    Returns
    -------
    ``(n, peaks)`` rates.
    """
    target = open_peaks.clamp(min=0.0, max=proportions.shape[-1] - 0.5)
    scale = target
    for _ in range(n_iterations):
        decay = torch.exp(-scale * proportions)
        excess = (1.0 - decay).sum(dim=-1, keepdim=True) - target
        slope = (proportions * decay).sum(dim=-1, keepdim=True).clamp(min=_EPS)
        scale = (scale - excess / slope).clamp(min=0.0)
    return scale * proportions


@dataclass(frozen=True)
class ModalitySpec:
    """One modality of a multimodal CFGen.

    Attributes
    ----------
    kind
        ``"rna"``, ``"protein"`` or ``"atac"``.
    name
        Name of the modality in the user's MuData (``"rna"``, ``"prot"`` ...).
    registry_key
        scvi-tools registry key of its counts.
    n_features
        Number of genes, proteins or peaks.
    likelihood
        ``"nb"`` (counts), ``"bernoulli"`` (binarised peaks) or ``"poisson"`` (peak counts).
    """

    kind: ModalityKind
    name: str
    registry_key: str
    n_features: int
    likelihood: Likelihood


class MultimodalCFGenModule(CFGenModule):
    """CFGen for several modalities: one shared latent, flow matching and guidance as unimodal.

    Every modality has an encoder (``log1p`` counts, or binarised peaks for a Bernoulli ATAC
    modality) giving a latent; the cell's latent is the mean over its available modalities.
    While the autoencoder trains, each cell keeps only one random modality with probability
    ``modality_dropout`` (all modalities are still reconstructed), so that every encoder alone
    maps into the shared latent: this is what cross-modal prediction uses. Every modality has its
    own decoder and size factor (library): NB means ``softmax(logits) * library`` for RNA and
    protein, Poisson rates of the same form, or Bernoulli probabilities
    ``1 - exp(-c * softmax(logits))`` (the probability of a non-zero Poisson count) for ATAC,
    with ``c`` such that the probabilities sum to the cell's number of open peaks
    (:func:`bernoulli_rates`). A small head, trained on the detached latent, predicts each modality's log library
    from the latent (used when a modality has to be predicted from another one). The flow
    (inherited from :class:`CFGenModule`) is conditioned on the log library of every modality.

    The first modality uses the parent's ``encoder``/``decoder``/``log_theta``; the others live
    in ``extra_encoders``/``extra_decoders``/``extra_log_thetas`` keyed by their kind.

    Parameters
    ----------
    modalities
        The modalities, the one registered as ``X`` first.
    n_categories, attribute_slots, n_continuous_cov, n_latent, encoder_hidden, decoder_hidden, dropout_rate, norm, dispersion, dispersion_attribute
        As in :class:`CFGenModule` (the hidden widths are used by every modality).
    modality_dropout
        Probability that a training cell is encoded from one random modality only.
    **flow_kwargs
        ``flow_hidden``, ``flow_blocks``, ``flow_context``, ``condition_dropout``,
        ``condition_on_library`` and ``sigma_min`` of :class:`CFGenModule`.
    """

    def __init__(
        self,
        modalities: Sequence[ModalitySpec],
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
        modality_dropout: float = 0.3,
        **flow_kwargs: Any,
    ):
        specs = list(modalities)
        if not specs:
            raise ValueError("A multimodal module needs at least one modality.")
        if len({s.kind for s in specs}) != len(specs):
            raise ValueError(f"Each modality kind may appear once, got {[s.kind for s in specs]}.")
        if not 0.0 <= modality_dropout < 1.0:
            raise ValueError(f"`modality_dropout` must be in [0, 1), got {modality_dropout}.")
        primary = specs[0]
        super().__init__(
            n_input=primary.n_features,
            n_categories=n_categories,
            attribute_slots=attribute_slots,
            n_continuous_cov=n_continuous_cov,
            n_latent=n_latent,
            encoder_hidden=encoder_hidden,
            decoder_hidden=decoder_hidden,
            dropout_rate=dropout_rate,
            norm=norm,
            dispersion=dispersion,
            dispersion_attribute=dispersion_attribute,
            n_library=len(specs),
            **flow_kwargs,
        )
        self.modalities = specs
        self.modality_dropout = modality_dropout
        n_dispersion = self.log_theta.shape[0]
        others = specs[1:]
        self.extra_encoders = torch.nn.ModuleDict(
            {
                s.kind: MLP(
                    s.n_features, n_latent, encoder_hidden, norm=norm, dropout=dropout_rate
                )
                for s in others
            }
        )
        self.extra_decoders = torch.nn.ModuleDict(
            {s.kind: MLP(n_latent, s.n_features, decoder_hidden, norm=norm) for s in others}
        )
        self.extra_log_thetas = torch.nn.ParameterDict(
            {
                s.kind: torch.nn.Parameter(torch.zeros(n_dispersion, s.n_features))
                for s in others
                if s.likelihood == "nb"
            }
        )
        self.library_head = MLP(n_latent, len(specs), _LIBRARY_HEAD_HIDDEN, norm=None)

    # ------------------------------------------------------------------ parts
    def spec(self, kind: str) -> ModalitySpec:
        """The modality of a kind."""
        for spec in self.modalities:
            if spec.kind == kind:
                return spec
        raise KeyError(f"No {kind!r} modality; the model has {[s.kind for s in self.modalities]}.")

    def _is_primary(self, spec: ModalitySpec) -> bool:
        return spec.kind == self.modalities[0].kind

    def _encoder(self, spec: ModalitySpec) -> torch.nn.Module:
        return self.encoder if self._is_primary(spec) else self.extra_encoders[spec.kind]

    def _decoder(self, spec: ModalitySpec) -> torch.nn.Module:
        return self.decoder if self._is_primary(spec) else self.extra_decoders[spec.kind]

    def _log_theta(self, spec: ModalitySpec) -> torch.Tensor:
        return self.log_theta if self._is_primary(spec) else self.extra_log_thetas[spec.kind]

    @property
    def autoencoder_modules(self) -> list[torch.nn.Module]:
        """Encoders, decoders, extra dispersions and the library head (frozen in stage 2)."""
        return [
            self.encoder,
            self.decoder,
            self.extra_encoders,
            self.extra_decoders,
            self.extra_log_thetas,
            self.library_head,
        ]

    @property
    def dispersion_parameters(self) -> list[torch.nn.Parameter]:
        """The NB inverse dispersions of every NB modality."""
        return [self.log_theta, *self.extra_log_thetas.values()]

    # ------------------------------------------------------------ libraries
    @staticmethod
    def _prepared(spec: ModalitySpec, x: torch.Tensor) -> torch.Tensor:
        """The values a likelihood sees: peaks binarised for Bernoulli, counts otherwise."""
        return (x > 0).to(x.dtype) if spec.likelihood == "bernoulli" else x

    def library_of(self, xs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``(n, n_modalities)`` size factors: total counts (open peaks for Bernoulli ATAC)."""
        return torch.cat(
            [self._prepared(s, xs[s.kind]).sum(dim=1, keepdim=True) for s in self.modalities],
            dim=1,
        )

    def library_of_tensors(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        """Size factors of every modality of the cells in data-loader ``tensors``."""
        return self.library_of(self.modality_inputs(tensors))

    def modality_inputs(self, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``{kind: counts}`` of the registered modalities in data-loader ``tensors``."""
        device = self.latent_mean.device
        return {s.kind: tensors[s.registry_key].to(device) for s in self.modalities}

    def predict_log_library(self, z: torch.Tensor) -> torch.Tensor:
        """Log library of every modality predicted from (unstandardised) latents."""
        return self.library_head(z) * self.log_library_std + self.log_library_mean

    # -------------------------------------------------------------- encoding
    def encode_modalities(
        self, xs: Mapping[str, torch.Tensor], available: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Shared latent: mean of the latents of the given (and available) modalities.

        Parameters
        ----------
        xs
            ``{kind: counts}`` for any non-empty subset of the modalities.
        available
            Optional ``(n, len(xs))`` 0/1 mask (columns in the order of ``xs``) of the
            modalities to use per cell; every row needs at least one 1.

        Returns
        -------
        ``(n, n_latent)`` unstandardised latents.
        """
        if not xs:
            raise ValueError("Encoding needs at least one modality.")
        latents = []
        for kind, x in xs.items():
            spec = self.spec(kind)
            inputs = self._prepared(spec, x)
            latents.append(self._encoder(spec)(torch.log1p(inputs)))
        stacked = torch.stack(latents, dim=1)
        if available is None:
            return stacked.mean(dim=1)
        weights = available.to(stacked.dtype).unsqueeze(-1)
        return (stacked * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)

    def encode_tensors(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        """Latent of the cells in data-loader ``tensors`` from all their modalities."""
        return self.encode_modalities(self.modality_inputs(tensors))

    def _training_mask(self, n: int, device: torch.device) -> torch.Tensor | None:
        """Per cell: all modalities, or (with probability ``modality_dropout``) one at random."""
        n_mod = len(self.modalities)
        if n_mod < 2 or self.modality_dropout <= 0:
            return None
        single = torch.rand(n, device=device) < self.modality_dropout
        choice = torch.randint(n_mod, (n,), device=device)
        one_hot = torch.nn.functional.one_hot(choice, n_mod).bool()
        return torch.where(single.unsqueeze(1), one_hot, torch.ones_like(one_hot))

    # -------------------------------------------------------------- decoding
    def decode_modalities(
        self, z: torch.Tensor, library: torch.Tensor, codes: torch.Tensor
    ) -> dict[str, dict[str, torch.Tensor]]:
        """Likelihood parameters of every modality.

        Parameters
        ----------
        z
            ``(n, n_latent)`` unstandardised latents.
        library
            ``(n, n_modalities)`` size factors, in the order of ``modalities``.
        codes
            ``(n, n_attributes)`` condition codes (for per-category dispersions).

        Returns
        -------
        ``{kind: params}``: ``{"mu", "theta"}`` (NB), ``{"rate"}`` (Poisson) or
        ``{"rate", "probs"}`` (Bernoulli).
        """
        return {
            spec.kind: self.decode_modality(spec.kind, z, library[:, i : i + 1], codes)
            for i, spec in enumerate(self.modalities)
        }

    def decode_modality(
        self, kind: str, z: torch.Tensor, library: torch.Tensor, codes: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Likelihood parameters of one modality given its ``(n, 1)`` size factors."""
        spec = self.spec(kind)
        proportions = torch.softmax(self._decoder(spec)(z), dim=-1)
        if spec.likelihood == "nb":
            return {"mu": proportions * library, "theta": self._theta(spec, codes)}
        if spec.likelihood == "poisson":
            return {"rate": proportions * library}
        rate = bernoulli_rates(proportions, library)
        return {"rate": rate, "probs": -torch.expm1(-rate)}

    def _theta(self, spec: ModalitySpec, codes: torch.Tensor) -> torch.Tensor:
        log_theta = self._log_theta(spec)
        if self.dispersion == "gene":
            return log_theta.exp()
        return log_theta[codes[:, self.dispersion_attribute]].exp()

    @staticmethod
    def expected_values(spec: ModalitySpec, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Mean of the likelihood: NB/Poisson means or Bernoulli probabilities."""
        if spec.likelihood == "nb":
            return params["mu"]
        return params["rate"] if spec.likelihood == "poisson" else params["probs"]

    @staticmethod
    def log_likelihood(
        spec: ModalitySpec, x: torch.Tensor, params: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        """Per-cell log-likelihood of counts ``x`` of one modality."""
        if spec.likelihood == "nb":
            nb = NegativeBinomial(mu=params["mu"], theta=params["theta"])
            return nb.log_prob(x).sum(dim=-1)
        rate = params["rate"].clamp(min=_EPS)
        if spec.likelihood == "poisson":
            return torch.distributions.Poisson(rate).log_prob(x).sum(dim=-1)
        # Bernoulli with p = 1 - exp(-rate): log(1 - p) = -rate exactly, log p = log(-expm1(-rate)).
        opened = (x > 0).to(rate.dtype)
        log_p = torch.log(-torch.expm1(-rate))
        return (opened * log_p - (1 - opened) * rate).sum(dim=-1)

    # -------------------------------------------------- scvi-tools module API
    def _get_inference_input(self, tensors: dict[str, torch.Tensor], **kwargs: Any) -> dict:
        return {"xs": self.modality_inputs(tensors)}

    def inference(self, xs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Encode all modalities (one random modality for some cells while training stage 1)."""
        first = next(iter(xs.values()))
        available = None
        if self.training and self.stage == "autoencoder":
            available = self._training_mask(first.shape[0], first.device)
        return {"z": self.encode_modalities(xs, available), "library": self.library_of(xs)}

    def generative(
        self, z: torch.Tensor, library: torch.Tensor, codes: torch.Tensor
    ) -> dict[str, Any]:
        """Decode every modality (skipped in the flow stage)."""
        if self.stage == "flow":
            return {}
        return {"params": self.decode_modalities(z, library, codes)}

    def loss(
        self,
        tensors: dict[str, torch.Tensor],
        inference_outputs: dict[str, torch.Tensor],
        generative_outputs: dict[str, Any],
    ) -> LossOutput:
        """Sum of per-modality negative log-likelihoods (stage 1) or flow matching (stage 2)."""
        if self.stage == "flow":
            return super().loss(tensors, inference_outputs, generative_outputs)
        xs = self.modality_inputs(tensors)
        params = generative_outputs["params"]
        per_modality = {
            spec.kind: -self.log_likelihood(spec, xs[spec.kind], params[spec.kind])
            for spec in self.modalities
        }
        library = inference_outputs["library"]
        target = (torch.log(library.clamp(min=1.0)) - self.log_library_mean) / self.log_library_std
        # Detached: the library head must not shape the shared latent.
        library_error = (self.library_head(inference_outputs["z"].detach()) - target).pow(2)
        library_loss = library_error.sum(dim=-1)
        total = sum(per_modality.values()) + library_loss
        return LossOutput(
            loss=total.mean(),
            reconstruction_loss=per_modality,
            extra_metrics={"library_mse": library_error.mean().detach()},
        )

    @torch.inference_mode()
    def sample(
        self, tensors: dict[str, torch.Tensor], n_samples: int = 1, **kwargs: Any
    ) -> torch.Tensor:
        """Not available for several modalities (use the model's ``transfer`` or ``generate``)."""
        raise NotImplementedError(
            "Posterior predictive sampling of a multimodal CFGen is not implemented; use "
            "model.transfer(mdata) (same conditions) or model.predict_modality(...)."
        )
