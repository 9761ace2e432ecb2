"""Absorbing-state discrete diffusion over binned gene expression (the scvi-tools module)."""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from scvi import REGISTRY_KEYS
from scvi.module.base import BaseModuleClass, LossOutput, auto_move_data

from scvi_gen.model.discrete_diffusion._network import (
    AttentionKind,
    GeneTokenDenoiser,
    resolve_architecture,
)
from scvi_gen.model.discrete_diffusion._schedule import (
    LogLinearSchedule,
    StepCallback,
    reverse_diffusion,
)
from scvi_gen.model.discrete_diffusion._tokenizer import BinningMethod, ExpressionTokenizer
from scvi_gen.nn._ema import ema_step
from scvi_gen.preprocessing import TARGET_SUM

logger = logging.getLogger(__name__)

ValueTransform = Literal["log1p_cp10k", "counts"]
LossEstimator = Literal["count", "time"]
#: Smallest time drawn by the ``"time"`` estimator (its weight ``1/t`` is unbounded at 0).
_T_MIN = 1e-4


class DiscreteDiffusionModule(BaseModuleClass):
    """Absorbing (masking) diffusion over expression tokens with a gene-token transformer.

    Forward process: every gene's token is independently replaced by MASK, with probability
    ``1 - alpha(t)`` at time ``t`` (:class:`LogLinearSchedule`). The network predicts the clean
    token of each masked gene. The loss is the continuous-time negative ELBO, an upper bound on
    the negative log-likelihood of the cell's tokens, reported in nats per modelled gene:

    ``"time"``: SEDD/MDLM-style, ``t ~ U(0, 1)`` (stratified over the minibatch),
    ``loss = -alpha'(t) / (1 - alpha(t)) * sum_{masked} CE / n_genes``.

    ``"count"`` (default): the same bound with ``t`` integrated out analytically. Given ``k``
    masked genes the time weight integrates to ``1/k``, so ``NELBO / n_genes =
    E_{k ~ U{1..n_genes}} E_{|M| = k} [mean_{i in M} CE_i]``: exact, schedule-free and with a
    much smaller variance.

    Parameters
    ----------
    n_input
        Number of registered genes (the data loader's ``X`` width).
    n_genes
        Number of modelled genes (a subset of the registered ones, see ``gene_index``).
    n_labels, n_batch, n_cats_per_cov, n_continuous_cov
        Conditions (from the registry).
    num_bins
        Data tokens including the zero bin; MASK is index ``num_bins``.
    binning
        Bin-edge method of :class:`ExpressionTokenizer`.
    value_transform
        ``"log1p_cp10k"``: tokens bin log1p(CP10k) values (library = total counts over all
        registered genes); ``"counts"``: tokens bin raw counts.
    architecture
        Hyperparameters of :class:`GeneTokenDenoiser` (default: the ``"small"`` preset).
    attention
        ``"latent"`` (linear in genes) or ``"full"``.
    dropout
        Dropout in the network.
    loss_estimator
        ``"count"`` or ``"time"`` (see above).
    condition_dropout
        Probability of training a cell with the null condition (classifier-free guidance).
    ema_decay
        Decay of the exponential moving average of the weights used for sampling.
    schedule_eps
        ``eps`` of the log-linear schedule.
    """

    def __init__(
        self,
        n_input: int,
        n_genes: int,
        n_labels: int = 1,
        n_batch: int = 1,
        n_cats_per_cov: Sequence[int] | None = None,
        n_continuous_cov: int = 0,
        num_bins: int = 32,
        binning: BinningMethod = "quantile",
        value_transform: ValueTransform = "log1p_cp10k",
        architecture: dict[str, Any] | None = None,
        attention: AttentionKind = "latent",
        dropout: float = 0.0,
        loss_estimator: LossEstimator = "count",
        condition_dropout: float = 0.1,
        ema_decay: float = 0.999,
        schedule_eps: float = 0.0,
    ):
        super().__init__()
        if value_transform not in ("log1p_cp10k", "counts"):
            raise ValueError(
                f"`value_transform` must be 'log1p_cp10k' or 'counts', got {value_transform!r}."
            )
        if loss_estimator not in ("count", "time"):
            raise ValueError(
                f"`loss_estimator` must be 'count' or 'time', got {loss_estimator!r}."
            )
        if not 0.0 <= condition_dropout < 1.0:
            raise ValueError(f"`condition_dropout` must be in [0, 1), got {condition_dropout}.")
        self.n_input = n_input
        self.n_genes = n_genes
        self.value_transform = value_transform
        self.loss_estimator = loss_estimator
        self.condition_dropout = condition_dropout
        self.ema_decay = ema_decay
        self.schedule = LogLinearSchedule(schedule_eps)
        self.tokenizer = ExpressionTokenizer(num_bins, binning)
        self.register_buffer("gene_index", torch.arange(n_genes, dtype=torch.long))
        # log library statistics of the training cells: the network sees a standardised value
        self.register_buffer("log_library_loc", torch.tensor(0.0))
        self.register_buffer("log_library_scale", torch.tensor(1.0))
        self.register_buffer("ema_updates", torch.tensor(0, dtype=torch.long))
        architecture = architecture or resolve_architecture("small")
        self.network = GeneTokenDenoiser(
            n_genes,
            num_bins,
            n_categories=[n_labels, n_batch, *(n_cats_per_cov or [])],
            n_continuous=n_continuous_cov,
            attention=attention,
            dropout=dropout,
            **architecture,
        )
        # a second copy of the weights, averaged over training, used for sampling
        self.ema_network = copy.deepcopy(self.network).requires_grad_(False)

    # ------------------------------------------------------------------ data <-> tokens
    @property
    def mask_index(self) -> int:
        """Index of the MASK token."""
        return self.tokenizer.mask_index

    def values_from_counts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Expression values of the modelled genes and the library size of each cell.

        Parameters
        ----------
        x
            ``(n, n_input)`` raw counts over the registered genes.

        Returns
        -------
        ``(values (n, n_genes), library (n,))``; ``library`` is the total over all registered
        genes.
        """
        library = x.sum(dim=1)
        counts = x[:, self.gene_index]
        if self.value_transform == "counts":
            return counts, library
        scale = TARGET_SUM / library.clamp_min(1.0)
        return torch.log1p(counts * scale[:, None]), library

    def counts_from_values(
        self, values: torch.Tensor, library: torch.Tensor, tokens: torch.Tensor
    ) -> torch.Tensor:
        """Integer counts from values (inverse of :meth:`values_from_counts`).

        A non-zero token always gives at least one count, so the zero pattern of the tokens
        is kept exactly.

        Parameters
        ----------
        values
            ``(n, n_genes)`` values on the tokenised scale.
        library
            ``(n,)`` library sizes (total counts over all registered genes).
        tokens
            ``(n, n_genes)`` the data tokens the values came from.

        Returns
        -------
        ``(n, n_genes)`` integer-valued float counts.
        """
        counts = self.expected_counts(values, library)
        counts = torch.round(counts)
        return torch.where(tokens > 0, counts.clamp_min(1.0), torch.zeros_like(counts))

    def expected_counts(self, values: torch.Tensor, library: torch.Tensor) -> torch.Tensor:
        """Count-scale values (not rounded) from tokenised-scale values."""
        if self.value_transform == "counts":
            return values
        return torch.expm1(values) * (library[:, None] / TARGET_SUM)

    def tokens_from_counts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens ``(n, n_genes)`` and standardised log library ``(n,)`` of raw counts."""
        values, library = self.values_from_counts(x)
        return self.tokenizer.tokenize(values), self.standardise_library(library)

    def standardise_library(self, library: torch.Tensor) -> torch.Tensor:
        """Standardised log library size, the network's library input."""
        log_library = torch.log(library.clamp_min(1.0))
        return (log_library - self.log_library_loc) / self.log_library_scale

    # ---------------------------------------------------------------- scvi-tools hooks
    def _get_inference_input(self, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
        return {"x": tensors[REGISTRY_KEYS.X_KEY]}

    @auto_move_data
    def inference(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Tokenise the cells and draw the forward (masking) noise."""
        tokens, log_library = self.tokens_from_counts(x)
        mask, weight = self.draw_mask(tokens.shape, tokens.device)
        noisy = torch.where(mask, torch.full_like(tokens, self.mask_index), tokens)
        return {
            "tokens": tokens,
            "noisy": noisy,
            "mask": mask,
            "weight": weight,
            "log_library": log_library,
        }

    def _get_generative_input(
        self, tensors: dict[str, torch.Tensor], inference_outputs: dict[str, torch.Tensor]
    ) -> dict[str, Any]:
        return {
            "noisy": inference_outputs["noisy"],
            "log_library": inference_outputs["log_library"],
            "conditions": conditions_from_tensors(tensors),
        }

    @auto_move_data
    def generative(
        self,
        noisy: torch.Tensor,
        log_library: torch.Tensor,
        conditions: dict[str, torch.Tensor | None],
    ) -> dict[str, torch.Tensor]:
        """Logits of the clean tokens, with condition dropout while training."""
        n = noisy.shape[0]
        if self.training and self.condition_dropout > 0:
            drop = torch.rand(n, device=noisy.device) < self.condition_dropout
        else:
            drop = torch.zeros(n, dtype=torch.bool, device=noisy.device)
        masked = noisy == self.mask_index
        fraction = masked.float().mean(dim=1)
        logits = self.network(noisy, fraction, log_library, conditions, drop, positions=masked)
        return {"logits": logits}

    def loss(
        self,
        tensors: dict[str, torch.Tensor],
        inference_outputs: dict[str, torch.Tensor],
        generative_outputs: dict[str, torch.Tensor],
    ) -> LossOutput:
        """Weighted masked cross-entropy: a per-cell bound on -log p(tokens), nats per gene."""
        per_cell = self.nelbo_per_cell(
            generative_outputs["logits"],
            inference_outputs["tokens"],
            inference_outputs["mask"],
            inference_outputs["weight"],
        )
        return LossOutput(loss=per_cell.mean(), reconstruction_loss=per_cell)

    # ------------------------------------------------------------------------- diffusion
    def draw_mask(
        self, shape: torch.Size, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw which genes are masked and the per-cell weight of their cross-entropy sum.

        Returns
        -------
        ``(mask (n, genes) bool, weight (n,))`` such that ``weight * sum_{masked} CE`` is an
        unbiased estimate of the cell's negative ELBO in nats per gene.
        """
        n, n_genes = shape
        scores = torch.rand(n, n_genes, device=device)
        if self.loss_estimator == "count":
            k = torch.randint(1, n_genes + 1, (n, 1), device=device)
            threshold = scores.sort(dim=1).values.gather(1, k - 1)
            mask = scores <= threshold
            return mask, 1.0 / k.squeeze(1).float()
        # stratified times cover [0, 1] evenly within each minibatch (lower variance)
        u = (torch.rand(1, device=device) + torch.arange(n, device=device) / n) % 1.0
        t = _T_MIN + (1.0 - _T_MIN) * u
        mask = scores < (1.0 - self.schedule.alpha(t))[:, None]
        return mask, self.schedule.loss_weight(t) / n_genes

    @staticmethod
    def nelbo_per_cell(
        logits: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor
    ) -> torch.Tensor:
        """``weight * sum_{masked} -log p(token)`` per cell.

        ``logits`` are those of the masked positions, ``(mask.sum(), num_bins)`` in the
        row-major order of ``mask.nonzero()``.
        """
        cells, genes = mask.nonzero(as_tuple=True)
        ce = F.cross_entropy(logits, tokens[cells, genes], reduction="none")
        return weight * torch.zeros_like(weight).index_add_(0, cells, ce)

    @torch.inference_mode()
    def nelbo(
        self,
        x: torch.Tensor,
        conditions: dict[str, torch.Tensor | None],
        use_ema: bool = True,
    ) -> torch.Tensor:
        """One Monte Carlo estimate of each cell's bound (nats per gene), no condition dropout.

        Parameters
        ----------
        x
            ``(n, n_input)`` raw counts.
        conditions
            Condition tensors of the cells.
        use_ema
            Evaluate the averaged weights.

        Returns
        -------
        ``(n,)`` per-cell estimates.
        """
        tokens, log_library = self.tokens_from_counts(x)
        mask, weight = self.draw_mask(tokens.shape, tokens.device)
        noisy = torch.where(mask, torch.full_like(tokens, self.mask_index), tokens)
        fraction = mask.float().mean(dim=1)
        drop = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        network = self.sampling_network(use_ema)
        logits = network(noisy, fraction, log_library, conditions, drop, positions=mask)
        return self.nelbo_per_cell(logits, tokens, mask, weight)

    @torch.no_grad()
    def update_ema(self) -> None:
        """Move the averaged weights towards the current ones (with a warm-up of the decay)."""
        self.ema_updates += 1
        ema_step(self.ema_network, self.network, int(self.ema_updates), self.ema_decay)

    def sampling_network(self, use_ema: bool = True) -> GeneTokenDenoiser:
        """The network used for sampling: the averaged weights once training has updated them."""
        return self.ema_network if use_ema and int(self.ema_updates) > 0 else self.network

    @torch.inference_mode()
    def denoising_probabilities(
        self,
        tokens: torch.Tensor,
        log_library: torch.Tensor,
        conditions: dict[str, torch.Tensor | None],
        guidance: float = 0.0,
        use_ema: bool = True,
        exclude_zero: bool = False,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``p(x_0 | x_t)`` over the data tokens, with optional classifier-free guidance.

        Guidance ``w`` combines the conditional and unconditional predictions as
        ``log p = (1 + w) log p(x_0 | x_t, c) - w log p(x_0 | x_t)`` (renormalised).

        Parameters
        ----------
        tokens, log_library, conditions
            Current tokens ``(n, genes)`` and the cells' library and conditions.
        guidance
            Guidance weight ``w`` (0: conditional model only).
        use_ema
            Use the averaged weights.
        exclude_zero
            Give the zero token probability 0.
        positions
            Optional ``(n, genes)`` boolean mask of the pairs to predict.

        Returns
        -------
        ``(n, genes, num_bins)`` probabilities, or ``(positions.sum(), num_bins)``.
        """
        network = self.sampling_network(use_ema)
        n = tokens.shape[0]
        fraction = (tokens == self.mask_index).float().mean(dim=1)
        if guidance:
            drop = torch.cat([torch.zeros(n, dtype=torch.bool), torch.ones(n, dtype=torch.bool)])
            both = network(
                tokens.repeat(2, 1),
                fraction.repeat(2),
                log_library.repeat(2),
                {k: None if v is None else v.repeat(2, 1) for k, v in conditions.items()},
                drop.to(tokens.device),
                positions=None if positions is None else positions.repeat(2, 1),
            ).log_softmax(dim=-1)
            half = len(both) // 2
            log_p = (1.0 + guidance) * both[:half] - guidance * both[half:]
        else:
            drop = torch.zeros(n, dtype=torch.bool, device=tokens.device)
            log_p = network(tokens, fraction, log_library, conditions, drop, positions=positions)
        if exclude_zero:
            log_p = log_p.clone()
            log_p[..., 0] = float("-inf")
        return torch.softmax(log_p.float(), dim=-1)

    @torch.inference_mode()
    def sample_tokens(
        self,
        tokens: torch.Tensor,
        log_library: torch.Tensor,
        conditions: dict[str, torch.Tensor | None],
        n_steps: int,
        guidance: float = 0.0,
        use_ema: bool = True,
        exclude_zero: bool = False,
        keep_probs: bool = False,
        on_step: StepCallback | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Fill the MASK tokens of ``tokens`` by reverse diffusion; other tokens stay fixed.

        Parameters
        ----------
        tokens
            ``(n, genes)`` tokens with MASK where values are to be sampled (all MASK to
            generate new cells).
        log_library
            ``(n,)`` standardised log library sizes.
        conditions
            ``labels``/``batch``/``cat_covs``/``cont_covs`` tensors for the ``n`` cells.
        n_steps
            Reverse steps.
        guidance
            Classifier-free guidance weight (0: conditional model only).
        use_ema
            Sample with the averaged weights.
        exclude_zero
            Never draw the zero token (the hidden values are known to be non-zero).
        keep_probs
            Also return the probabilities each position was drawn from.
        on_step
            Callback of :func:`reverse_diffusion`.

        Returns
        -------
        ``(tokens, probs)`` as in :func:`reverse_diffusion`.
        """

        def denoise(
            current: torch.Tensor, rows: torch.Tensor, chosen: torch.Tensor
        ) -> torch.Tensor:
            sub = {k: None if v is None else v[rows] for k, v in conditions.items()}
            return self.denoising_probabilities(
                current, log_library[rows], sub, guidance, use_ema, exclude_zero, chosen
            )

        return reverse_diffusion(
            denoise,
            tokens,
            self.mask_index,
            n_steps,
            self.schedule,
            keep_probs=keep_probs,
            on_step=on_step,
        )


def conditions_from_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor | None]:
    """The condition tensors the network takes, from a data-loader or ``generate`` batch."""
    return {
        "labels": tensors[REGISTRY_KEYS.LABELS_KEY],
        "batch": tensors[REGISTRY_KEYS.BATCH_KEY],
        "cat_covs": tensors.get(REGISTRY_KEYS.CAT_COVS_KEY),
        "cont_covs": tensors.get(REGISTRY_KEYS.CONT_COVS_KEY),
    }
