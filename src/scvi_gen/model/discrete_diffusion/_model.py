"""DiscreteDiffusion: SEDD/MDLM-style absorbing diffusion over binned expression tokens."""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from anndata import AnnData
from scvi import REGISTRY_KEYS
from scvi.model.base import BaseModelClass, UnsupervisedTrainingMixin

from scvi_gen._constants import LOGNORM_LAYER, UNS_KEY
from scvi_gen._matrix import get_matrix, iter_row_chunks
from scvi_gen.base import GenerativeMixin
from scvi_gen.base._generative_mixin import _seeded_torch
from scvi_gen.metrics import select_hvgs
from scvi_gen.model.discrete_diffusion._module import (
    TARGET_SUM,
    DiscreteDiffusionModule,
    LossEstimator,
    ValueTransform,
    conditions_from_tensors,
)
from scvi_gen.model.discrete_diffusion._network import AttentionKind, resolve_architecture
from scvi_gen.model.discrete_diffusion._tokenizer import BinningMethod
from scvi_gen.nn._ema import EMACallback

logger = logging.getLogger(__name__)

ImputeDecode = Literal["expected", "sample", "centre"]
#: Column of ``obs`` of generated data holding the library size each cell was generated with.
LIBRARY_KEY = "library_size"
#: Layer of :meth:`DiscreteDiffusion.denoise` output flagging the re-sampled entries.
RESAMPLED_LAYER = "resampled"
#: Non-zero values used at most to place the bin edges (a random subset beyond that).
_MAX_FIT_VALUES = 2_000_000


class DiscreteDiffusion(GenerativeMixin, UnsupervisedTrainingMixin, BaseModelClass):
    """Absorbing-state discrete diffusion over binned expression (SEDD / MDLM for RNA-seq).

    Raw counts of a chosen gene set (2,000 seurat_v3 HVGs by default) are normalised to
    log1p(CP10k) and binned into ``num_bins`` tokens (token 0 = exact zero; the bin edges are
    stored with the model). The forward process replaces tokens by an absorbing MASK token
    (index ``num_bins``, never a data value) on a log-linear schedule; a transformer over gene
    tokens (gene-identity embeddings, no positional encoding; adaptive layer norm on the noise
    level, the library size and the conditions; attention linear in the number of genes)
    predicts the clean tokens. Training minimises the diffusion negative ELBO, an upper bound
    on the negative log-likelihood of the tokens in nats per gene. Sampling runs the exact
    reverse process (each masked gene unmasks between ``t`` and ``s`` with probability
    ``(alpha(s) - alpha(t)) / (1 - alpha(t))``, all remaining ones at the last step) with the
    exponential moving average of the weights and optional classifier-free guidance.

    Generated data (:meth:`generate`) covers the **modelled genes only** (``gene_names_``):
    ``.X`` holds integer counts ``round(expm1(v) * library / 1e4)`` (at least 1 for a non-zero
    token), where ``v`` is drawn uniformly within the sampled bin and ``library`` (total counts
    over all training genes, drawn from the per-condition library-size model) is stored in
    ``obs["library_size"]``. ``layers["log1p_norm"]`` holds log1p(CP10k) of those counts over
    that library: evaluate the synthetic cells on this layer (``synthetic_kind="lognorm"``),
    because re-normalising the counts of a gene subset by their own total would inflate them.

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata` (raw counts). ``None`` with ``registry``
        when loading.
    registry
        Registry of a saved model (used by :meth:`load`).
    gene_set
        ``"hvg"`` (seurat_v3 on the training counts), ``"all"`` or a list of gene names.
    n_top_genes
        Number of HVGs for ``gene_set="hvg"`` (all genes if there are fewer).
    num_bins
        Data tokens including the zero bin.
    binning
        ``"quantile"`` (equal mass per non-zero bin), ``"log_uniform"`` or ``"uniform"``.
    value_transform
        ``"log1p_cp10k"`` (default) or ``"counts"`` (bin raw counts; generated counts are then
        the bin values, with the library size only a network input).
    size
        Architecture preset: ``"small"``, ``"medium"`` or ``"large"``.
    attention
        ``"latent"`` (genes exchange information through ``n_latents`` latent tokens: linear in
        the number of genes) or ``"full"`` (gene-gene attention, for GPUs).
    gene_dim, dim, n_heads, n_latents, n_layers
        Override single architecture hyperparameters of the preset (``gene_dim``: width of
        the gene tokens; ``dim``: width of the latents; ``n_layers``: transformer blocks).
    dropout
        Dropout in the network.
    loss_estimator
        ``"count"`` (exact in the noise level, low variance) or ``"time"`` (SEDD-style Monte
        Carlo over ``t``); both estimate the same bound.
    condition_dropout
        Probability of dropping all conditions of a training cell (classifier-free guidance).
    ema_decay
        Decay of the weight average used for sampling.
    n_sampling_steps
        Reverse-diffusion steps of :meth:`generate` (and default of :meth:`impute`).

    Examples
    --------
    >>> scvi_gen.DiscreteDiffusion.setup_anndata(adata, labels_key="cell_type")
    >>> model = scvi_gen.DiscreteDiffusion(adata, n_top_genes=2000)
    >>> model.train(max_epochs=30)
    >>> syn = model.generate(labels={"B": 100}, seed=0)
    >>> filled = model.impute(adata)  # dropout imputation of the zeros
    """

    _module_cls = DiscreteDiffusionModule
    _requires_counts = True
    _output_kind = "counts"

    def __init__(
        self,
        adata: AnnData | None = None,
        registry: dict | None = None,
        gene_set: Literal["hvg", "all"] | Sequence[str] = "hvg",
        n_top_genes: int = 2000,
        num_bins: int = 32,
        binning: BinningMethod = "quantile",
        value_transform: ValueTransform = "log1p_cp10k",
        size: Literal["small", "medium", "large"] = "small",
        attention: AttentionKind = "latent",
        gene_dim: int | None = None,
        dim: int | None = None,
        n_heads: int | None = None,
        n_latents: int | None = None,
        n_layers: int | None = None,
        dropout: float = 0.0,
        loss_estimator: LossEstimator = "count",
        condition_dropout: float = 0.1,
        ema_decay: float = 0.999,
        n_sampling_steps: int = 32,
    ):
        super().__init__(adata, registry=registry)
        if n_sampling_steps < 1:
            raise ValueError(f"`n_sampling_steps` must be positive, got {n_sampling_steps}.")
        self.n_sampling_steps = int(n_sampling_steps)
        var_names = self._registered_var_names()
        n_genes = _n_modelled_genes(gene_set, n_top_genes, var_names)
        architecture = resolve_architecture(
            size,
            gene_dim=gene_dim,
            dim=dim,
            n_heads=n_heads,
            n_latents=n_latents,
            n_layers=n_layers,
        )
        self.module = self._module_cls(
            n_input=self.summary_stats.n_vars,
            n_genes=n_genes,
            n_labels=self.summary_stats.n_labels,
            n_batch=self.summary_stats.n_batch,
            n_cats_per_cov=self._n_cats_per_cov(),
            n_continuous_cov=self.summary_stats.get("n_extra_continuous_covs", 0),
            num_bins=num_bins,
            binning=binning,
            value_transform=value_transform,
            architecture=architecture,
            attention=attention,
            dropout=dropout,
            loss_estimator=loss_estimator,
            condition_dropout=condition_dropout,
            ema_decay=ema_decay,
        )
        if adata is not None:
            self._fit_data_state(gene_set, n_top_genes, var_names)
        self._model_summary_string = (
            f"DiscreteDiffusion: {n_genes} genes, {num_bins} bins ({binning}), "
            f"{size} {attention}-attention network, {loss_estimator} NELBO estimator"
        )
        self._init_generative_state(adata)
        self.init_params_ = self._get_init_params(locals())

    # ------------------------------------------------------------------ fitted state
    def _registered_var_names(self) -> pd.Index:
        state = self.registry_["field_registries"][REGISTRY_KEYS.X_KEY]["state_registry"]
        return pd.Index([str(v) for v in state["column_names"]])

    def _n_cats_per_cov(self) -> list[int] | None:
        state = self.registry_["field_registries"].get(REGISTRY_KEYS.CAT_COVS_KEY, {})
        n_cats = state.get("state_registry", {}).get("n_cats_per_key")
        return [int(n) for n in n_cats] if n_cats else None

    def _fit_data_state(
        self, gene_set: str | Sequence[str], n_top_genes: int, var_names: pd.Index
    ) -> None:
        """Choose the genes, fit the bin edges, the library statistics and the gene biases."""
        matrix = self.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)
        index = _select_genes(matrix, var_names, gene_set, n_top_genes)
        self.gene_names_ = [str(v) for v in var_names[index]]
        module = self.module
        module.gene_index.copy_(torch.as_tensor(index, dtype=torch.long))
        values, library = _modelled_values(matrix, index, module.value_transform)
        module.tokenizer.fit(_subsample(values.data, _MAX_FIT_VALUES))
        log_library = np.log(library[library > 0])
        module.log_library_loc.fill_(float(log_library.mean()))
        module.log_library_scale.fill_(float(max(log_library.std(), 1e-3)))
        frequencies = _token_frequencies(values, module.tokenizer)
        self.marginal_entropy_ = _mean_entropy(frequencies)
        smoothed = (frequencies * values.shape[0] + 0.5) / (
            values.shape[0] + 0.5 * module.tokenizer.num_bins
        )
        bias = torch.as_tensor(np.log(smoothed), dtype=torch.float32)
        for network in (module.network, module.ema_network):
            network.gene_bias.data.copy_(bias)

    def _generated_var_names(self) -> pd.Index:
        """The modelled genes: generated data covers only these."""
        return pd.Index(self.gene_names_)

    # -------------------------------------------------------------------------- train
    def train(
        self,
        max_epochs: int | None = None,
        batch_size: int = 64,
        early_stopping: bool = True,
        plan_kwargs: dict | None = None,
        **kwargs: Any,
    ) -> None:
        """Train with scvi-tools (Lightning), early stopping on the validation bound.

        The exponential moving average of the weights is updated after every step (an
        :class:`EMACallback` is added to ``callbacks``), gradients are clipped at norm 1 unless
        ``gradient_clip_val`` is given, and the optimiser defaults to AdamW (lr 3e-3,
        eps 1e-8, weight decay 1e-4). On PBMC3K (2,000 HVGs, ~2,000 cells) 10 epochs take
        about 2-3 CPU-minutes with one thread and already generate well.

        Parameters
        ----------
        max_epochs
            Epochs (default: scvi-tools' heuristic from the number of cells, at most 400;
            early stopping usually ends training well before).
        batch_size
            Cells per minibatch.
        early_stopping
            Stop when ``validation_loss`` (the NELBO in nats per gene) has not improved for
            ``early_stopping_patience`` (default 5) epochs.
        plan_kwargs
            Keyword arguments of :class:`scvi.train.TrainingPlan` (``lr``, ``weight_decay``,
            ``optimizer``, ...).
        **kwargs
            Passed to :meth:`scvi.model.base.UnsupervisedTrainingMixin.train` (``train_size``,
            ``early_stopping_patience``, ``accelerator``, Lightning trainer arguments, ...).

        Examples
        --------
        >>> model.train(max_epochs=30, early_stopping_patience=5)
        """
        # scvi-tools' TrainingPlan defaults to Adam with eps=0.01, which stalls this model
        defaults = {"lr": 3e-3, "optimizer": "AdamW", "eps": 1e-8, "weight_decay": 1e-4}
        plan_kwargs = {**defaults, **(plan_kwargs or {})}
        callbacks = [*(kwargs.pop("callbacks", None) or []), EMACallback()]
        kwargs.setdefault("gradient_clip_val", 1.0)
        if early_stopping:
            kwargs.setdefault("early_stopping_monitor", "validation_loss")
            kwargs.setdefault("early_stopping_patience", 5)
        return super().train(
            max_epochs=max_epochs,
            batch_size=batch_size,
            early_stopping=early_stopping,
            plan_kwargs=plan_kwargs,
            callbacks=callbacks,
            **kwargs,
        )

    # ----------------------------------------------------------------------- generate
    def _guidance_weight(self, guidance: float | Mapping[str, float] | None) -> float:
        if guidance is None:
            return 0.0
        if isinstance(guidance, Mapping):
            raise ValueError(
                "DiscreteDiffusion takes one classifier-free guidance weight for all conditions "
                "(a float >= 0), not per-attribute weights."
            )
        weight = float(guidance)
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(f"`guidance` must be a finite number >= 0, got {guidance}.")
        return weight

    def _plan_library_sizes(
        self,
        plan: pd.DataFrame,
        library_size: float | Sequence[float] | np.ndarray | None,
        rng: np.random.Generator,
    ) -> torch.Tensor | None:
        library = super()._plan_library_sizes(plan, library_size, rng)
        # kept for _assemble_output: the log1p(CP10k) layer needs the full library
        self._generation_library = library
        return library

    def _generate_chunk(
        self,
        conditions: dict[str, torch.Tensor],
        library: torch.Tensor | None,
        guidance: Any,
    ) -> torch.Tensor:
        weight = self._guidance_weight(guidance)
        module = self.module
        library = library.reshape(-1)
        tokens = torch.full(
            (library.shape[0], module.n_genes), module.mask_index, device=library.device
        )
        tokens, _ = module.sample_tokens(
            tokens,
            module.standardise_library(library),
            conditions_from_tensors(conditions),
            n_steps=self.n_sampling_steps,
            guidance=weight,
        )
        values = module.tokenizer.detokenize(tokens, mode="sample")
        return module.counts_from_values(values, library, tokens)

    def _assemble_output(self, X: sp.csr_matrix, plan: pd.DataFrame, *args: Any) -> AnnData:
        adata = super()._assemble_output(X, plan, *args)
        library = self._generation_library.numpy().astype(np.float64).ravel()
        del self._generation_library
        adata.obs[LIBRARY_KEY] = library
        adata.layers[LOGNORM_LAYER] = _log1p_cp10k(adata.X, library)
        adata.uns[UNS_KEY]["library_key"] = LIBRARY_KEY
        adata.uns[UNS_KEY]["lognorm_layer"] = LOGNORM_LAYER
        return adata

    # ------------------------------------------------------------ impute / denoise
    @torch.inference_mode()
    def impute(
        self,
        adata: AnnData | None = None,
        mask: np.ndarray | sp.spmatrix | None = None,
        *,
        n_steps: int | None = None,
        guidance: float | None = None,
        decode: ImputeDecode = "expected",
        exclude_zero: bool = False,
        use_ema: bool = True,
        batch_size: int = 256,
        seed: int = 0,
    ) -> AnnData:
        """Fill masked entries by reverse diffusion, clamping the observed ones at every step.

        Parameters
        ----------
        adata
            Cells with raw counts over the training genes (default: the training data); the
            registered condition columns are used. Never modified.
        mask
            Boolean ``(n_obs, n_vars)`` array or sparse matrix, True where a value is unknown
            and must be imputed. Default: the zero entries of the modelled genes (dropout
            imputation). Entries of genes outside the model are left unchanged (with a
            warning). Values under the mask are ignored, except that they count towards the
            cell's library size: zero them if they are not to be used at all.
        n_steps
            Reverse steps (default ``n_sampling_steps``).
        guidance
            Classifier-free guidance weight.
        decode
            ``"expected"``: the posterior mean of the value (over the bins, at the step the
            gene was unmasked); ``"sample"``: a value drawn within the sampled bin (one
            posterior sample); ``"centre"``: the sampled bin's centre.
        exclude_zero
            The masked values are known to be non-zero (e.g. hidden measurements): never
            impute a zero.
        use_ema
            Use the averaged weights.
        batch_size
            Cells per batch.
        seed
            Random seed (same seed, same result).

        Returns
        -------
        A new AnnData with the input's obs and var: ``.X`` the counts with imputed entries
        replaced by count-scale values (not rounded), ``layers["log1p_norm"]`` log1p(CP10k) of
        ``.X`` normalised by each input cell's total counts.

        Examples
        --------
        >>> filled = model.impute(adata)  # fill the zeros of the modelled genes
        >>> filled = model.impute(test, mask=hidden, exclude_zero=True)
        """
        adata = self._registered_view(adata)
        gene_mask = None if mask is None else self._modelled_mask(adata, mask)

        def select(tokens: torch.Tensor, start: int, **_: Any) -> torch.Tensor:
            if gene_mask is None:
                return tokens == 0
            rows = gene_mask[start : start + tokens.shape[0]].toarray()
            return torch.as_tensor(rows, device=tokens.device)

        out, _ = self._complete(
            adata, select, n_steps, guidance, decode, exclude_zero, use_ema, batch_size, seed
        )
        return out

    @torch.inference_mode()
    def denoise(
        self,
        adata: AnnData | None = None,
        fraction: float = 0.05,
        *,
        n_score_groups: int = 10,
        n_steps: int | None = None,
        guidance: float | None = None,
        decode: ImputeDecode = "expected",
        use_ema: bool = True,
        batch_size: int = 256,
        seed: int = 0,
    ) -> AnnData:
        """Re-sample the least plausible entries of each cell given the rest of the cell.

        Each modelled gene is scored by the model's probability of its observed token when it
        is masked (genes are masked in ``n_score_groups`` random groups, one network pass per
        group). The ``fraction`` of genes with the lowest probability in each cell are then
        masked and re-sampled by reverse diffusion with all other genes clamped.

        Parameters
        ----------
        adata
            Cells with raw counts (default: the training data). Never modified.
        fraction
            Fraction of the modelled genes re-sampled per cell.
        n_score_groups
            Number of masking groups for scoring (more: less context removed per pass).
        n_steps, guidance, decode, use_ema, batch_size, seed
            As in :meth:`impute`.

        Returns
        -------
        A new AnnData as from :meth:`impute`, plus ``layers["resampled"]`` (1 where an entry
        was re-sampled).

        Examples
        --------
        >>> cleaned = model.denoise(adata, fraction=0.05)
        """
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"`fraction` must be in (0, 1], got {fraction}.")
        if n_score_groups < 1:
            raise ValueError(f"`n_score_groups` must be positive, got {n_score_groups}.")
        adata = self._registered_view(adata)
        n_pick = max(1, int(round(fraction * self.module.n_genes)))

        def select(
            tokens: torch.Tensor,
            log_library: torch.Tensor,
            conditions: dict[str, torch.Tensor | None],
            **_: Any,
        ) -> torch.Tensor:
            log_p = self._observed_log_probs(tokens, log_library, conditions, n_score_groups)
            lowest = log_p.topk(n_pick, dim=1, largest=False).indices
            return torch.zeros_like(tokens, dtype=torch.bool).scatter_(1, lowest, True)

        out, masks = self._complete(
            adata, select, n_steps, guidance, decode, False, use_ema, batch_size, seed
        )
        out.layers[RESAMPLED_LAYER] = masks
        return out

    def _observed_log_probs(
        self,
        tokens: torch.Tensor,
        log_library: torch.Tensor,
        conditions: dict[str, torch.Tensor | None],
        n_groups: int,
    ) -> torch.Tensor:
        """``log p(observed token)`` of every gene when its group of genes is masked."""
        module = self.module
        groups = torch.randperm(module.n_genes, device=tokens.device) % n_groups
        log_p = torch.zeros(tokens.shape, device=tokens.device)
        for group in range(min(n_groups, module.n_genes)):
            hidden = (groups == group).expand_as(tokens)
            masked = torch.where(hidden, torch.full_like(tokens, module.mask_index), tokens)
            probs = module.denoising_probabilities(
                masked, log_library, conditions, positions=hidden
            )
            observed = probs.gather(1, tokens[hidden].unsqueeze(1)).squeeze(1)
            log_p[hidden] = observed.clamp_min(1e-12).log()
        return log_p

    def _complete(
        self,
        adata: AnnData,
        select: Callable[..., torch.Tensor],
        n_steps: int | None,
        guidance: float | None,
        decode: ImputeDecode,
        exclude_zero: bool,
        use_ema: bool,
        batch_size: int,
        seed: int,
    ) -> tuple[AnnData, sp.csr_matrix]:
        """Mask the entries ``select`` picks in each batch, re-sample them, build the output."""
        if decode not in ("expected", "sample", "centre"):
            raise ValueError(f"`decode` must be 'expected', 'sample' or 'centre', got {decode!r}.")
        weight = self._guidance_weight(guidance)
        n_steps = int(n_steps or self.n_sampling_steps)
        module = self.module
        module.eval()
        manager = self.get_anndata_manager(adata, required=True)
        matrix = manager.get_from_registry(REGISTRY_KEYS.X_KEY)
        loader = self._make_data_loader(adata=adata, batch_size=batch_size, shuffle=False)
        seeds = np.random.SeedSequence(seed).generate_state(max(1, len(loader)))
        blocks, masks, libraries, start = [], [], [], 0
        for tensors, batch_seed in zip(loader, seeds):
            x = tensors[REGISTRY_KEYS.X_KEY].to(self.device)
            conditions = {
                k: None if v is None else v.to(self.device)
                for k, v in conditions_from_tensors(tensors).items()
            }
            with _seeded_torch(int(batch_seed), self.device):
                new_counts, chosen = self._complete_batch(
                    module, x, conditions, select, start, n_steps, weight, decode,
                    exclude_zero, use_ema,
                )  # fmt: skip
            block = sp.csr_matrix(matrix[start : start + x.shape[0]], dtype=np.float64)
            libraries.append(np.asarray(block.sum(axis=1)).ravel())
            blocks.append(_replace_columns(block, module.gene_index.cpu().numpy(), new_counts))
            masks.append(sp.csr_matrix(chosen.cpu().numpy().astype(np.float32)))
            start += x.shape[0]
        X = sp.vstack(blocks, format="csr")
        library = np.concatenate(libraries)
        obs = adata.obs.loc[:, ~adata.obs.columns.str.startswith("_scvi")].copy()
        out = AnnData(X=X, obs=obs, var=adata.var.copy())
        out.layers[LOGNORM_LAYER] = _log1p_cp10k(X, library)
        chosen = sp.vstack(masks, format="csr")
        full = sp.csr_matrix(
            (chosen.data, module.gene_index.cpu().numpy()[chosen.indices], chosen.indptr),
            shape=X.shape,
        )
        return out, full

    def _complete_batch(
        self,
        module: DiscreteDiffusionModule,
        x: torch.Tensor,
        conditions: dict[str, torch.Tensor | None],
        select: Callable[..., torch.Tensor],
        start: int,
        n_steps: int,
        guidance: float,
        decode: ImputeDecode,
        exclude_zero: bool,
        use_ema: bool,
    ) -> tuple[np.ndarray, torch.Tensor]:
        tokens, log_library = module.tokens_from_counts(x)
        library = x.sum(dim=1)
        chosen = select(tokens, start=start, log_library=log_library, conditions=conditions)
        masked = torch.where(chosen, torch.full_like(tokens, module.mask_index), tokens)
        filled, probs = module.sample_tokens(
            masked,
            log_library,
            conditions,
            n_steps=n_steps,
            guidance=guidance,
            use_ema=use_ema,
            exclude_zero=exclude_zero,
            keep_probs=decode == "expected",
        )
        if decode == "expected":
            values = probs @ module.tokenizer.means() if probs is not None else None
        else:
            values = module.tokenizer.detokenize(filled, mode=decode)
        observed = x[:, module.gene_index].double()
        if values is None:  # nothing was masked
            return observed.cpu().numpy(), chosen
        imputed = module.expected_counts(values, library).double()
        return torch.where(chosen, imputed, observed).cpu().numpy(), chosen

    def _registered_view(self, adata: AnnData | None) -> AnnData:
        """Register ``adata`` through a shell that shares its matrix, so it is never modified.

        scvi-tools' registration writes into ``obs`` and ``uns``; the shell takes those writes.
        """
        if adata is None:
            return self._validate_anndata(None)
        layer = self.registry_["setup_args"].get("layer")
        matrix = get_matrix(adata, layer)
        # views of a subset hold their own (subset-sized) values; plain types for the loader
        matrix = sp.csr_matrix(matrix) if sp.issparse(matrix) else np.asarray(matrix)
        shell = AnnData(
            X=matrix if layer is None else None,
            obs=adata.obs.copy(),
            var=adata.var.copy(),
            layers=None if layer is None else {layer: matrix},
        )
        return self._validate_anndata(shell)

    def _modelled_mask(self, adata: AnnData, mask: np.ndarray | sp.spmatrix) -> sp.csr_matrix:
        """The user's mask restricted to the modelled genes (columns in model order)."""
        if not sp.issparse(mask):
            mask = np.asarray(mask, dtype=bool)
        if mask.shape != (adata.n_obs, adata.n_vars):
            raise ValueError(
                f"`mask` must have shape (n_obs, n_vars) = {(adata.n_obs, adata.n_vars)}, got "
                f"{mask.shape}."
            )
        full = sp.csr_matrix(mask, dtype=bool)
        index = self.module.gene_index.cpu().numpy()
        modelled = full[:, index]
        outside = int(full.sum()) - int(modelled.sum())
        if outside:
            warnings.warn(
                f"{outside} masked entries belong to genes the model does not cover; they are "
                "left unchanged.",
                UserWarning,
                stacklevel=3,
            )
        return modelled

    # --------------------------------------------------------------------- evaluation
    @torch.inference_mode()
    def get_nll_bound(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        n_samples: int = 4,
        batch_size: int = 256,
        use_ema: bool = True,
        seed: int = 0,
    ) -> float:
        """Diffusion upper bound on -log p(tokens) of the cells, in nats per modelled gene.

        Compare with ``marginal_entropy_``, the same quantity for independent genes (the
        entropy of each gene's token distribution on the training cells).

        Parameters
        ----------
        adata
            Cells with raw counts (default: the training data).
        indices
            Cells of ``adata`` to use (default: all).
        n_samples
            Monte Carlo draws of the noise per cell.
        batch_size
            Cells per batch.
        use_ema
            Evaluate the averaged weights (those used for sampling).
        seed
            Random seed of the noise.

        Returns
        -------
        Mean over cells of the bound, nats per gene.

        Examples
        --------
        >>> model.get_nll_bound(test_adata), model.marginal_entropy_
        """
        adata = self._registered_view(adata)
        module = self.module
        module.eval()
        loader = self._make_data_loader(adata=adata, indices=indices, batch_size=batch_size)
        total, n_cells = 0.0, 0
        with _seeded_torch(seed, self.device):
            for tensors in loader:
                x = tensors[REGISTRY_KEYS.X_KEY].to(self.device)
                conditions = {
                    k: None if v is None else v.to(self.device)
                    for k, v in conditions_from_tensors(tensors).items()
                }
                for _ in range(n_samples):
                    total += float(module.nelbo(x, conditions, use_ema=use_ema).sum()) / n_samples
                n_cells += x.shape[0]
        if n_cells == 0:
            raise ValueError("No cells to score: `indices` selects none.")
        return total / n_cells


# ---------------------------------------------------------------------------- helpers
def _n_modelled_genes(gene_set: str | Sequence[str], n_top_genes: int, var_names: pd.Index) -> int:
    """Number of modelled genes, known from the arguments alone (needed again at load)."""
    if isinstance(gene_set, str):
        if gene_set == "all":
            return len(var_names)
        if gene_set == "hvg":
            if n_top_genes < 1:
                raise ValueError(f"`n_top_genes` must be positive, got {n_top_genes}.")
            return min(int(n_top_genes), len(var_names))
        raise ValueError(f"`gene_set` must be 'hvg', 'all' or a list of genes, got {gene_set!r}.")
    genes = [str(g) for g in gene_set]
    missing = sorted(set(genes) - set(var_names))
    if missing:
        raise ValueError(f"{len(missing)} genes of `gene_set` are not in the data: {missing[:5]}.")
    if len(set(genes)) != len(genes) or not genes:
        raise ValueError("`gene_set` must be a non-empty list of distinct gene names.")
    return len(genes)


def _select_genes(
    matrix: Any, var_names: pd.Index, gene_set: str | Sequence[str], n_top_genes: int
) -> np.ndarray:
    """Positions of the modelled genes among the registered ones, in ``var`` order."""
    n_genes = _n_modelled_genes(gene_set, n_top_genes, var_names)
    if not isinstance(gene_set, str):
        return np.sort(var_names.get_indexer([str(g) for g in gene_set]))
    if n_genes == len(var_names):
        return np.arange(len(var_names))
    return np.flatnonzero(select_hvgs(matrix, var_names, n_genes, return_mask=True))


def _modelled_values(
    matrix: Any, index: np.ndarray, transform: ValueTransform
) -> tuple[sp.csr_matrix, np.ndarray]:
    """Tokenised-scale values of the modelled genes (sparse) and library sizes, by row blocks."""
    blocks, libraries = [], []
    for block in iter_row_chunks(matrix):
        block = sp.csr_matrix(block, dtype=np.float64)
        library = np.asarray(block.sum(axis=1)).ravel()
        values = block[:, index]
        if transform == "log1p_cp10k":
            scale = TARGET_SUM / np.maximum(library, 1.0)
            values = sp.csr_matrix(sp.diags(scale) @ values)
            values.data = np.log1p(values.data)
        blocks.append(values)
        libraries.append(library)
    return sp.vstack(blocks, format="csr"), np.concatenate(libraries)


def _subsample(values: np.ndarray, n_max: int) -> np.ndarray:
    values = values[values > 0]
    if values.size <= n_max:
        return values
    return np.random.default_rng(0).choice(values, n_max, replace=False)


def _token_frequencies(values: sp.csr_matrix, tokenizer: Any) -> np.ndarray:
    """Per-gene frequency of every data token, ``(genes, num_bins)``."""
    n_bins = tokenizer.num_bins
    counts = np.zeros((values.shape[1], n_bins))
    for block in iter_row_chunks(values):
        tokens = tokenizer.tokenize(torch.as_tensor(block.toarray(), dtype=torch.float32))
        tokens = tokens.numpy()
        flat = (np.arange(values.shape[1])[None, :] * n_bins + tokens).ravel()
        counts += np.bincount(flat, minlength=counts.size).reshape(counts.shape)
    return counts / max(values.shape[0], 1)


def _mean_entropy(frequencies: np.ndarray) -> float:
    """Mean over genes of the entropy (nats) of each gene's token distribution."""
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(frequencies > 0, -frequencies * np.log(frequencies), 0.0)
    return float(terms.sum(axis=1).mean())


def _log1p_cp10k(X: sp.spmatrix, library: np.ndarray) -> sp.csr_matrix:
    """log1p(X / library * 1e4) row-wise, sparse (rows with library 0 stay 0)."""
    scale = np.divide(TARGET_SUM, library, out=np.zeros_like(library), where=library > 0)
    out = sp.csr_matrix(sp.diags(scale) @ sp.csr_matrix(X, dtype=np.float64))
    out.data = np.log1p(out.data)
    return out.astype(np.float32)


def _replace_columns(block: sp.csr_matrix, index: np.ndarray, values: np.ndarray) -> sp.csr_matrix:
    """``block`` with columns ``index`` set to ``values``; other entries are left untouched."""
    old = block[:, index].toarray()
    delta = np.where(values != old, values - old, 0.0)
    selector = sp.csr_matrix(
        (np.ones(len(index)), (np.arange(len(index)), index)), shape=(len(index), block.shape[1])
    )
    out = sp.csr_matrix(block + sp.csr_matrix(delta) @ selector)
    out.eliminate_zeros()
    return out
