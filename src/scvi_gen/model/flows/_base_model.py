"""Model logic shared by :class:`~scvi_gen.MAFFlow` and :class:`~scvi_gen.MOEFlow`."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from scvi.model.base import BaseModelClass, UnsupervisedTrainingMixin

from scvi_gen.base import BatchSource, GenerativeMixin, RestoreBestWeights
from scvi_gen.base._training_checks import warn_if_undertrained
from scvi_gen.model.flows._conditioning import categorical_slots
from scvi_gen.model.flows._data_state import fit_module_state
from scvi_gen.model.flows._module import ConditionalFlowModule, TransformBuilder
from scvi_gen.model.flows._presets import FlowPreset, get_preset
from scvi_gen.model.flows._representation import explicit_gene_mask, gene_mask, n_modelled_genes
from scvi_gen.train import GeneratorTrainingPlan
from scvi_gen.train._runner import GeneratorTrainRunner

logger = logging.getLogger(__name__)

OutputKind = Literal["lognorm", "counts"]


class _TrainRunner(GeneratorTrainRunner):
    """scvi-tools' runner, also for a model without a registered AnnData.

    scvi-tools 1.4's early-stopping sanity check for a ``DataSplitter`` reads
    ``model.adata.n_obs``, which fails for a model built with ``registry=`` and trained on a
    data module: the split's own AnnData stands in for that check.
    """

    def __init__(self, model: Any, training_plan: Any, data_splitter: Any, **kwargs: Any) -> None:
        if model.adata is not None:
            super().__init__(model, training_plan, data_splitter, **kwargs)
            return
        manager = getattr(data_splitter, "adata_manager", None)
        stand_in = SimpleNamespace(adata=getattr(manager, "adata", None))
        super().__init__(stand_in, training_plan, data_splitter, **kwargs)
        self.model = model
        self.trainer._model = model


class FlowModelBase(GenerativeMixin, UnsupervisedTrainingMixin, BaseModelClass):
    """Shared base of the conditional flows (not used directly).

    Reads raw counts (``setup_anndata`` checks them), models dequantised, standardised
    log1p(CP10k) of a gene set (seurat_v3 HVGs by default) and generates log1p(CP10k) values
    (or counts, with ``output="counts"``) that are never negative. Subclasses call
    :meth:`_init_flow` from ``__init__``.

    The architecture depends on the registry and the init arguments only; the data state
    (genes, scalers, condition statistics, ActNorm initialisation) is fitted in streaming
    passes (:meth:`_fit_model_state`): at construction from a registered AnnData, or, for a
    model built with ``adata=None, registry=...``, from the training loader of
    ``train(datamodule=...)``.
    """

    _requires_counts = True
    _output_kind = "lognorm"
    # The modelled genes, fitted from the data: load accepts this name from a saved model.
    _fitted_state = {"genes_": "sequence"}
    # Sampling holds every layer's per-cell parameters of a chunk at once (~1.8 GB for 1,024
    # cells x 2,000 genes); 256 cells keep it under 0.5 GB at the same speed per cell.
    _generation_chunk = 256
    # A plan class, not a local optimizer closure: it pickles under ddp_spawn.
    _training_plan_cls = GeneratorTrainingPlan
    _train_runner_cls = _TrainRunner

    def _init_flow(
        self,
        adata: AnnData | None,
        *,
        preset: str,
        n_top_genes: int | None,
        genes: Sequence[str] | None,
        output: OutputKind,
        embedding_dim: int,
        build_transforms: TransformBuilder,
    ) -> None:
        """Build the module from the registry, then fit the data state when ``adata`` is given.

        Parameters
        ----------
        adata
            Registered AnnData, or ``None`` (loading, or a model trained with
            ``train(datamodule=...)``, which fits the data state from the loader).
        preset
            Name of the training preset.
        n_top_genes, genes
            The gene set (see :func:`~scvi_gen.model.flows.gene_mask`).
        output
            ``"lognorm"`` or ``"counts"``.
        embedding_dim
            Dimension of each categorical condition embedding.
        build_transforms
            Builds the flow layers from ``(n_genes, context_dim)``.
        """
        self._preset = get_preset(preset)
        if output not in ("lognorm", "counts"):
            raise ValueError(f"`output` must be 'lognorm' or 'counts', got {output!r}.")
        # Instance attribute read by GenerativeMixin (rounding, library sizes, output layer).
        self._output_kind = output
        if genes is not None:  # checked against the registered genes before any data is read
            explicit_gene_mask(self._training_var_names(), genes)
        self._n_top_genes = n_top_genes
        self._genes = None if genes is None else [str(g) for g in genes]
        n_genes = n_modelled_genes(self.summary_stats.n_vars, n_top_genes, genes)
        fields = self.condition_fields
        self.module = ConditionalFlowModule(
            n_genes,
            build_transforms,
            slots=categorical_slots(fields),
            n_continuous=sum(not f.is_categorical for f in fields),
            embedding_dim=embedding_dim,
        )
        self._init_generative_state(adata)

    def _fit_model_state(self, source: BatchSource) -> None:
        """Choose the genes and fit the module's data state in streaming passes.

        Two passes for seurat_v3 HVGs (none for an explicit gene list or all genes), one for
        the representation's per-gene statistics and the condition encoder's library and
        continuous-covariate statistics, and, with ActNorm layers, one that samples a fixed
        number of cells for their initialisation (see
        :func:`~scvi_gen.model.flows.fit_module_state`).

        Parameters
        ----------
        source
            Batches of the training cells (:data:`~scvi_gen.base.BatchSource`).
        """
        var_names = self._training_var_names()
        mask = gene_mask(source, var_names, n_top_genes=self._n_top_genes, genes=self._genes)
        positions = np.flatnonzero(mask)
        if len(positions) != self.module.n_genes:
            raise RuntimeError(
                f"Selected {len(positions)} genes but expected {self.module.n_genes} (repeated "
                "gene names in `genes`?)."
            )
        self.genes_ = [str(g) for g in var_names[mask]]
        fit_module_state(self.module, source, positions)
        logger.info("Modelling %d genes.", len(self.genes_))

    # ---------------------------------------------------------------- training
    @property
    def preset(self) -> FlowPreset:
        """The training preset this model was built with."""
        return self._preset

    def train(
        self,
        max_epochs: int | None = None,
        *,
        lr: float | None = None,
        weight_decay: float | None = None,
        batch_size: int | None = None,
        early_stopping: bool | None = None,
        early_stopping_patience: int | None = None,
        gradient_clip_val: float | None = None,
        restore_best_weights: bool | None = None,
        train_size: float | None = None,
        datamodule: Any | None = None,
        plan_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Train by maximum likelihood through scvi-tools (Lightning), with the preset's defaults.

        Every argument left as ``None`` takes the preset's value (``preset="default"``:
        AdamW, lr 1e-3, weight decay 1e-4, gradient clipping at 5, LR halving on plateaus,
        early stopping on the validation NLL with patience 6 and restoring the best epoch,
        at most 300 epochs; ``preset="paper"``: Adam, lr 1e-6, 100 epochs, batch 128, no early
        stopping). Adam/AdamW use fused single-kernel updates
        (:class:`~scvi_gen.train.GeneratorTrainingPlan`).

        Parameters
        ----------
        max_epochs
            Maximum number of epochs.
        lr
            Learning rate.
        weight_decay
            Weight decay.
        batch_size
            Minibatch size (not used with ``datamodule``).
        early_stopping
            Stop when ``validation_loss`` (the validation NLL) stops improving.
        early_stopping_patience
            Epochs without improvement before stopping.
        gradient_clip_val
            Clip the gradient norm (``0`` disables).
        restore_best_weights
            Reload the weights of the epoch with the lowest validation loss at the end
            (default: on when early stopping is on).
        train_size
            Fraction of cells used for training (the rest validates; not used with
            ``datamodule``).
        datamodule
            A Lightning data module yielding scvi-tools minibatches (e.g.
            :class:`~scvi.dataloaders.DataSplitter` over a backed AnnData) instead of the
            registered AnnData. A model built with ``adata=None, registry=...`` first fits its
            data state from the module's training loader.
        plan_kwargs
            Further :class:`~scvi_gen.train.GeneratorTrainingPlan` arguments (they override
            the preset).
        **kwargs
            Passed to :meth:`scvi.model.base.UnsupervisedTrainingMixin.train` and the
            Lightning trainer.

        Examples
        --------
        >>> model.train()  # the preset's settings
        >>> model.train(max_epochs=50, lr=5e-4)
        >>> model = scvi_gen.MAFFlow(None, registry=manager.registry)
        >>> model.train(max_epochs=20, datamodule=DataSplitter(manager, batch_size=128))
        """
        self._fit_data_state_for_training(datamodule)
        defaults = self._preset.train
        # fused: the flows have millions of weights and little compute per weight, so the
        # optimizer's per-tensor element-wise passes are a large share of a CPU step.
        plan = {"fused": True, **self._preset.plan, **(plan_kwargs or {})}
        if lr is not None:
            plan["lr"] = lr
        if weight_decay is not None:
            plan["weight_decay"] = weight_decay
        early_stopping = defaults["early_stopping"] if early_stopping is None else early_stopping
        if datamodule is None:
            has_validation = train_size is None or train_size < 1.0
        else:  # scvi-tools' DataSplitter knows its validation size; assume one otherwise
            has_validation = bool(getattr(datamodule, "n_val", 1))
        if not has_validation:
            early_stopping = False
            plan["reduce_lr_on_plateau"] = False
        restore = early_stopping if restore_best_weights is None else restore_best_weights
        self._check_training_cells(
            datamodule,
            train_size=train_size,
            validation_size=kwargs.get("validation_size"),
            batch_size=batch_size or defaults["batch_size"],
            needs_validation=bool(early_stopping or (restore and has_validation)),
            no_validation="early_stopping=False and restore_best_weights=False",
        )
        callbacks = list(kwargs.pop("callbacks", []))
        if restore and has_validation:
            callbacks.append(RestoreBestWeights("validation_loss"))
        if has_validation:
            # The validation NLL is cheap; log it every epoch whatever the preset.
            kwargs.setdefault("check_val_every_n_epoch", 1)
        clip = (
            defaults.get("gradient_clip_val") if gradient_clip_val is None else gradient_clip_val
        )
        if clip:
            kwargs.setdefault("gradient_clip_val", clip)
        if early_stopping:
            kwargs.setdefault("early_stopping_monitor", "validation_loss")
            kwargs.setdefault(
                "early_stopping_patience",
                early_stopping_patience or defaults.get("early_stopping_patience", 10),
            )
        super().train(
            max_epochs=max_epochs or defaults["max_epochs"],
            batch_size=batch_size or defaults["batch_size"],
            train_size=train_size,
            early_stopping=early_stopping,
            datamodule=datamodule,
            plan_kwargs=plan,
            callbacks=callbacks,
            **kwargs,
        )
        warn_if_undertrained(
            self.history_, max_epochs or defaults["max_epochs"], model=type(self).__name__
        )
        self.module.eval()

    def _fit_data_state_for_training(self, datamodule: Any | None) -> None:
        """Fit the data state from ``datamodule``'s training loader if it is not fitted yet."""
        if getattr(self, "data_state_fitted_", False):
            return
        if datamodule is not None and hasattr(datamodule, "setup"):
            # scvi-tools' DataSplitter draws its train indices in setup(), which Lightning only
            # calls inside fit; it draws them from scvi.settings.seed, so fit's call repeats it.
            datamodule.setup("fit")
        # The passes shuffle with torch's global generator: fork it so that training draws
        # the same numbers whether or not the state was fitted here.
        with torch.random.fork_rng(devices=[]):
            self._ensure_data_state(datamodule)

    # -------------------------------------------------------------- generation
    def _generated_var_names(self) -> pd.Index:
        return pd.Index(self.genes_)

    def _plan_library_sizes(
        self,
        plan: pd.DataFrame,
        library_size: float | Sequence[float] | np.ndarray | None,
        rng: np.random.Generator,
    ) -> torch.Tensor:
        # Log-normalised output needs library sizes too: they set each cell's count grid when
        # generated values are mapped back (see LogNormRepresentation.decode).
        if library_size is None:
            sizes = self.library_size_model.sample(plan, rng)
            return torch.as_tensor(np.array(sizes), dtype=torch.float32).unsqueeze(1)
        return super()._plan_library_sizes(plan, library_size, rng)

    def _generate_chunk(
        self,
        conditions: dict[str, torch.Tensor],
        library: torch.Tensor | None,
        guidance: Any,
    ) -> torch.Tensor:
        lognorm, counts = self.module.sample(conditions, library)
        return counts if self._output_kind == "counts" else lognorm

    # ------------------------------------------------------------ likelihood
    @torch.inference_mode()
    def log_prob(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        batch_size: int | None = None,
    ) -> np.ndarray:
        """Exact log-likelihood of each cell under the flow, for outlier / novelty scoring.

        The value is the log-density of the cell's log1p(CP10k) profile over the modelled genes
        given its registered conditions (zeros evaluated at the centre of their dequantisation
        interval). Cells unlike the training data of their label score low.

        Parameters
        ----------
        adata
            Data with the same genes as the training data (all of them: the library size is
            the total over all genes), set up like it. ``None`` uses the training data.
        indices
            Cells to score (default: all).
        batch_size
            Cells per minibatch.

        Returns
        -------
        ``(n_cells,)`` log-likelihoods (higher: more typical).

        Examples
        --------
        >>> scores = model.log_prob(new_adata)
        >>> outliers = new_adata.obs_names[scores < np.quantile(model.log_prob(), 0.01)]
        """
        self._check_if_trained(warn=True)
        adata = self._validate_anndata(adata)
        loader = self._make_data_loader(adata=adata, indices=indices, batch_size=batch_size)
        self.module.eval()
        scores = [self.module.log_prob(t).cpu().numpy() for t in loader]
        return np.concatenate(scores) if scores else np.zeros(0, dtype=np.float32)
