"""DiscreteDiffusion: SEDD/MDLM-style absorbing diffusion over binned expression tokens."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from anndata import AnnData
from scvi import REGISTRY_KEYS
from scvi.model.base import BaseModelClass, UnsupervisedTrainingMixin

from scvi_gen._constants import LOGNORM_LAYER
from scvi_gen.base import BatchSource, GenerativeMixin
from scvi_gen.base._generative_mixin import _seeded_torch
from scvi_gen.base._guidance import check_guidance
from scvi_gen.base._training_checks import warn_if_undertrained
from scvi_gen.model.discrete_diffusion._completion import (
    RESAMPLED_LAYER,
    CompletionMixin,
    ImputeDecode,
)
from scvi_gen.model.discrete_diffusion._module import (
    DiscreteDiffusionModule,
    LossEstimator,
    ValueTransform,
    conditions_from_tensors,
)
from scvi_gen.model.discrete_diffusion._network import AttentionKind, resolve_architecture
from scvi_gen.model.discrete_diffusion._state import (
    fit_token_state,
    n_modelled_genes,
    select_genes,
)
from scvi_gen.model.discrete_diffusion._tokenizer import BinningMethod
from scvi_gen.preprocessing import log1p_cp10k
from scvi_gen.train import GeneratorTrainingPlan

logger = logging.getLogger(__name__)

__all__ = ["LIBRARY_KEY", "RESAMPLED_LAYER", "DiscreteDiffusion", "ImputeDecode"]

#: Column of ``obs`` of generated data holding the library size each cell was generated with.
LIBRARY_KEY = "library_size"


class DiscreteDiffusion(
    CompletionMixin, GenerativeMixin, UnsupervisedTrainingMixin, BaseModelClass
):
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
        AnnData registered with :meth:`setup_anndata` (raw counts; in memory or backed). The
        data state (genes, bin edges, library sizes, gene biases) is fitted from it in
        streaming passes. ``None`` with ``registry``: when loading, or to train on a custom
        data module (``train(datamodule=...)`` fits the state from its training loader).
    registry
        An scvi-tools registry (``AnnDataManager.registry``; :meth:`load` passes the saved
        one): the module is built from it and the arguments below alone.
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
    _training_plan_cls = GeneratorTrainingPlan
    _requires_counts = True
    _output_kind = "counts"
    # Fitted from the data (modelled genes, token entropy): load accepts these saved names.
    _fitted_state = {"gene_names_": "sequence", "marginal_entropy_": "number"}

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
        # The architecture follows from the registry and these arguments alone, so a model
        # built from a registry (custom data loaders, loading) has its module before any data.
        n_genes = n_modelled_genes(gene_set, n_top_genes, self._training_var_names())
        self._gene_set = gene_set
        self._n_top_genes = int(n_top_genes)
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
        self._model_summary_string = (
            f"DiscreteDiffusion: {n_genes} genes, {num_bins} bins ({binning}), "
            f"{size} {attention}-attention network, {loss_estimator} NELBO estimator"
        )
        self._init_generative_state(adata)
        self.init_params_ = self._get_init_params(locals())

    # ------------------------------------------------------------------ fitted state
    def _fit_model_state(self, source: BatchSource) -> None:
        """Choose the genes, fit the bin edges, the library scale and the gene biases.

        Streaming passes over ``source`` (see :mod:`._state`): the HVG selection (two
        passes, ``gene_set="hvg"`` only), the values of the modelled genes (library moments
        and the bin edges, placed on the non-zero values of at most 20,000 cells), then the
        token frequencies under those edges.
        """
        var_names = self._training_var_names()
        index = select_genes(source, var_names, self._gene_set, self._n_top_genes)
        self.gene_names_ = [str(v) for v in var_names[index]]
        self.marginal_entropy_ = fit_token_state(self.module, source, index)

    def _generated_var_names(self) -> pd.Index:
        """The modelled genes: generated data covers only these."""
        return pd.Index(self.gene_names_)

    # -------------------------------------------------------------------------- train
    def train(
        self,
        max_epochs: int | None = None,
        batch_size: int = 64,
        early_stopping: bool | None = None,
        plan_kwargs: dict | None = None,
        datamodule: Any | None = None,
        **kwargs: Any,
    ) -> None:
        """Train with scvi-tools (Lightning), early stopping on the validation bound.

        The exponential moving average of the weights is updated after every optimiser step
        (:class:`~scvi_gen.train.GeneratorTrainingPlan`), gradients are clipped at norm 1
        unless ``gradient_clip_val`` is given, and the optimiser defaults to AdamW (lr 3e-3,
        eps 1e-8, weight decay 1e-4). On PBMC3K (2,000 HVGs, ~2,000 cells) 10 epochs take
        about 2-3 CPU-minutes with one thread and already generate well.

        Parameters
        ----------
        max_epochs
            Epochs (default: scvi-tools' heuristic from the number of cells, at most 400;
            early stopping usually ends training well before).
        batch_size
            Cells per minibatch (not used with ``datamodule``).
        early_stopping
            Stop when ``validation_loss`` (the NELBO in nats per gene) has not improved for
            ``early_stopping_patience`` (default 5) epochs. Default: on, except for a model
            built without an AnnData trained on a :class:`~scvi.dataloaders.DataSplitter`
            (scvi-tools' runner reads the model's AnnData to check early stopping there).
        plan_kwargs
            Keyword arguments of :class:`~scvi_gen.train.GeneratorTrainingPlan` (``lr``,
            ``weight_decay``, ``optimizer``, ...).
        datamodule
            A Lightning data module yielding scvi-tools minibatches (e.g. a
            :class:`~scvi.dataloaders.DataSplitter`, possibly over a backed AnnData), for a
            model built with ``adata=None, registry=...``. The data state (genes, bin edges,
            library sizes, conditions) is first fitted from its training loader if the model
            has none yet.
        **kwargs
            Passed to :meth:`scvi.model.base.UnsupervisedTrainingMixin.train` (``train_size``,
            ``early_stopping_patience``, ``accelerator``, Lightning trainer arguments, ...).

        Examples
        --------
        >>> model.train(max_epochs=30, early_stopping_patience=5)
        >>> model = DiscreteDiffusion(None, registry=manager.registry)
        >>> model.train(max_epochs=10, datamodule=DataSplitter(manager, batch_size=64))
        """
        if datamodule is not None and not self.data_state_fitted_:
            # Lightning sets a data module up only inside fit; the state needs its loader first.
            datamodule.setup("fit")
        self._ensure_data_state(datamodule)
        # scvi-tools' runner reads model.adata.n_obs to check early stopping on a DataSplitter
        # (by exact type name), which a model built from a registry does not have.
        runner_needs_adata = type(datamodule).__name__ == "DataSplitter" and self.adata is None
        if early_stopping is None:
            early_stopping = not runner_needs_adata
        elif early_stopping and runner_needs_adata:
            raise ValueError(
                "scvi-tools cannot early-stop a model built without an AnnData on a "
                "DataSplitter: pass early_stopping=False and choose max_epochs."
            )
        self._check_training_cells(
            datamodule,
            train_size=kwargs.get("train_size"),
            validation_size=kwargs.get("validation_size"),
            batch_size=batch_size,
            needs_validation=bool(early_stopping),
        )
        # scvi-tools' TrainingPlan defaults to Adam with eps=0.01, which stalls this model
        defaults = {"lr": 3e-3, "optimizer": "AdamW", "eps": 1e-8, "weight_decay": 1e-4}
        plan_kwargs = {**defaults, **(plan_kwargs or {})}
        kwargs.setdefault("gradient_clip_val", 1.0)
        if early_stopping:
            kwargs.setdefault("early_stopping_monitor", "validation_loss")
            kwargs.setdefault("early_stopping_patience", 5)
        result = super().train(
            max_epochs=max_epochs,
            batch_size=batch_size,
            early_stopping=early_stopping,
            plan_kwargs=plan_kwargs,
            datamodule=datamodule,
            **kwargs,
        )
        warn_if_undertrained(self.history_, max_epochs, model=type(self).__name__)
        return result

    # ----------------------------------------------------------------------- generate
    def _guidance_spec(self) -> tuple[list[str], dict[str, str], bool]:
        """One weight for all conditions (the network drops them all at once)."""
        return [f.obs_key for f in self.condition_fields], {}, False

    def _guidance_weight(self, guidance: float | Mapping[str, float] | None) -> float:
        names, aliases, per_attribute = self._guidance_spec()
        weight = check_guidance(
            guidance,
            names,
            model=type(self).__name__,
            aliases=aliases,
            per_attribute=per_attribute,
        )
        return 0.0 if weight is None else float(weight)

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

    def _output_obs(self, plan: pd.DataFrame, library: torch.Tensor | None) -> pd.DataFrame:
        """The conditions and each cell's full library size (not the modelled genes' sum)."""
        obs = super()._output_obs(plan, library)
        obs[LIBRARY_KEY] = _library_values(library, len(plan))
        return obs

    def _output_layers(
        self, X: sp.csr_matrix, library: torch.Tensor | None
    ) -> dict[str, sp.csr_matrix]:
        """log1p(CP10k) of a chunk's counts with each cell's full library."""
        return {LOGNORM_LAYER: log1p_cp10k(X, _library_values(library, X.shape[0]))}

    def _provenance(self, *args: Any) -> dict[str, Any]:
        return {
            **super()._provenance(*args),
            "library_key": LIBRARY_KEY,
            "lognorm_layer": LOGNORM_LAYER,
        }

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


def _library_values(library: torch.Tensor | None, n: int) -> np.ndarray:
    """Library sizes of generated cells as float64 (zeros when there are none)."""
    if library is None:
        return np.zeros(n)
    return library.detach().cpu().numpy().astype(np.float64).reshape(-1)
