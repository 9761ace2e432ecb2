"""CFGen: count-aware flow matching with multi-attribute classifier-free guidance."""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from anndata import AnnData
from scvi import REGISTRY_KEYS
from scvi.model.base import BaseModelClass, UnsupervisedTrainingMixin

from scvi_gen._constants import UNS_KEY
from scvi_gen.base import ConditionField, GenerativeMixin, RestoreBestWeights
from scvi_gen.base._generative_mixin import _seeded_torch
from scvi_gen.base._guidance import GuidanceArg, resolve_guidance_weights
from scvi_gen.base._ode import ODE_METHODS, ODEMethod
from scvi_gen.base._serialization import to_jsonable
from scvi_gen.base._validation import iter_row_chunks
from scvi_gen.model.cfgen._module import (
    AttributeSlot,
    CFGenModule,
    Dispersion,
    ODEOptions,
    Stage,
)
from scvi_gen.model.cfgen._multimodal import AtacLikelihood, MultimodalMixin
from scvi_gen.model.cfgen._sampling import sample_nb_csr, sample_nb_dense
from scvi_gen.nn._ema import EMACallback
from scvi_gen.nn._mlp import Norm

logger = logging.getLogger(__name__)

_DEFAULT_MAX_EPOCHS_AUTOENCODER = 200
_DEFAULT_MAX_EPOCHS_FLOW = 600
_PLAN_DEFAULTS: dict[Stage, dict[str, Any]] = {
    "autoencoder": {"lr": 1e-3, "eps": 1e-8, "weight_decay": 1e-6},
    "flow": {"lr": 1e-3, "eps": 1e-8, "weight_decay": 0.0},
}
#: The NB dispersion learns this much faster than the networks: at the networks' rate it
#: barely leaves its initial value before early stopping ends stage 1.
_DISPERSION_LR_FACTOR = 30.0
_PATIENCE: dict[Stage, int] = {"autoencoder": 20, "flow": 50}
_IMPUTE_ITERATIONS = 3


class CFGen(MultimodalMixin, GenerativeMixin, UnsupervisedTrainingMixin, BaseModelClass):
    """CFGen: an NB count autoencoder with conditional flow matching in its latent space.

    Stage 1 trains an autoencoder on raw counts (encoder on ``log1p`` counts, decoder giving
    NB means ``softmax(logits) * library size``, learned inverse dispersion). Stage 2 freezes
    it (in eval mode) and fits a velocity field in its standardised latent space along the
    conditional-OT path, conditioned on every registered categorical attribute (labels, batch,
    categorical covariates; each with a "null" category learned through condition dropout),
    on continuous covariates and, by default, on the cell's log library size. Generation
    integrates the guided field
    ``v = v_null + sum_i w_i (v_i - v_null)`` from noise, decodes, takes library sizes from the
    per-condition library-size model and samples NB counts.

    Multimodal data (RNA, protein and/or ATAC counts in a MuData) go through
    :meth:`setup_mudata`: every modality gets its own encoder into the shared latent, its own
    decoder, likelihood (NB for RNA and protein, Bernoulli or Poisson for ATAC) and size factor;
    the flow and its guidance work in the shared latent exactly as for one modality.
    :meth:`generate` and :meth:`transfer` then return a MuData, and :meth:`predict_modality`
    predicts one modality from others.

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata` or MuData registered with
        :meth:`setup_mudata` (raw counts). ``None`` with ``registry`` when loading.
    registry
        Registry of a saved model (used by :meth:`load`).
    n_latent
        Latent dimension of the autoencoder (the flow's state dimension).
    encoder_hidden
        Hidden widths of the encoder.
    decoder_hidden
        Hidden widths of the decoder.
    dropout_rate
        Dropout in the encoder (stage 1 only).
    norm
        ``"layer"``, ``"batch"`` or ``None`` normalisation in encoder and decoder.
    dispersion
        ``"gene"``, ``"gene-label"`` or ``"gene-batch"``: one NB inverse dispersion per gene,
        or per gene and label/batch category.
    flow_hidden
        Width of the velocity network (a residual MLP).
    flow_blocks
        Residual blocks of the velocity network.
    flow_context
        Width of the time and condition embeddings.
    condition_dropout
        Probability of dropping each attribute while training the flow (``None``: 0.2 with
        one attribute, 0.5 with several, so that every single-attribute field is learned).
    condition_on_library
        Condition the flow on the log library size (the decoder multiplies by it).
    sigma_min
        Width of the conditional-OT path at the data end.
    ema_decay
        Largest decay of the exponential moving average of the flow's weights, which
        validation, early stopping and generation use (0 turns it off). The average spans
        about the last tenth of the flow's training steps, capped at ``1 / (1 - ema_decay)``.
    ode_method
        Default solver of :meth:`generate` and :meth:`transfer`: ``"euler"``, ``"midpoint"``,
        ``"heun"``, ``"rk4"`` or the adaptive ``"dopri5"``. Change it later with
        :meth:`set_ode_solver`.
    ode_steps
        Steps of a fixed-step solver.
    default_guidance
        Guidance weight(s) used when :meth:`generate` gets ``guidance=None`` (and for
        attributes a ``guidance`` dict leaves out): one number for all attributes or
        ``{obs_key: weight}``. 1.0 is the plain conditional field for one attribute; 1.5-2
        sharpens labels (recommended for label-conditional benchmarks).
    atac_likelihood
        MuData only: ``"bernoulli"`` (binarised peaks, binary output) or ``"poisson"`` (peak
        counts) for the ATAC modality.
    modality_dropout
        MuData only: probability that a training cell of the autoencoder is encoded from one
        random modality only, so that each encoder alone maps into the shared latent (used by
        :meth:`predict_modality`).

    Examples
    --------
    >>> scvi_gen.CFGen.setup_anndata(adata, labels_key="cell_type", batch_key="batch")
    >>> model = scvi_gen.CFGen(adata)
    >>> model.train(max_epochs_autoencoder=100, max_epochs_flow=300)
    >>> syn = model.generate(labels={"B": 500}, guidance={"cell_type": 2.0}, seed=0)
    >>> moved = model.transfer(adata[:100], to={"batch": "b2"}, seed=0)
    >>> scvi_gen.CFGen.setup_mudata(
    ...     mdata, modalities={"rna_layer": "rna", "protein_layer": "prot"}
    ... )
    >>> mm = scvi_gen.CFGen(mdata)
    >>> mm.train()
    >>> syn = mm.generate(200, seed=0)  # MuData with "rna" and "prot"
    >>> proteins = mm.predict_modality(mdata, from_="rna", to="prot")
    """

    _module_cls = CFGenModule

    def __init__(
        self,
        adata: AnnData | None = None,
        registry: dict | None = None,
        n_latent: int = 32,
        encoder_hidden: Sequence[int] = (512, 256),
        decoder_hidden: Sequence[int] = (256, 512),
        dropout_rate: float = 0.1,
        norm: Norm = "layer",
        dispersion: Dispersion = "gene",
        flow_hidden: int = 256,
        flow_blocks: int = 3,
        flow_context: int = 128,
        condition_dropout: float | None = None,
        condition_on_library: bool = True,
        sigma_min: float = 1e-4,
        ema_decay: float = 0.999,
        ode_method: ODEMethod = "midpoint",
        ode_steps: int = 20,
        default_guidance: float | Mapping[str, float] = 1.0,
        atac_likelihood: AtacLikelihood = "bernoulli",
        modality_dropout: float = 0.3,
    ):
        super().__init__(adata, registry=registry)
        attributes = self.attribute_fields
        if condition_dropout is None:
            condition_dropout = 0.2 if len(attributes) <= 1 else 0.5
        module_kwargs = {
            "n_categories": [len(f.categories) for f in attributes],
            "attribute_slots": [AttributeSlot(f.registry_key, f.column) for f in attributes],
            "n_continuous_cov": self.summary_stats.get("n_extra_continuous_covs", 0),
            "n_latent": n_latent,
            "encoder_hidden": tuple(encoder_hidden),
            "decoder_hidden": tuple(decoder_hidden),
            "dropout_rate": dropout_rate,
            "norm": norm,
            "dispersion": dispersion,
            "dispersion_attribute": self._dispersion_attribute(dispersion),
            "flow_hidden": flow_hidden,
            "flow_blocks": flow_blocks,
            "flow_context": flow_context,
            "condition_dropout": condition_dropout,
            "condition_on_library": condition_on_library,
            "sigma_min": sigma_min,
            "ema_decay": ema_decay,
        }
        if self.is_multimodal:
            self.module = self._build_multimodal_module(
                atac_likelihood, modality_dropout, **module_kwargs
            )
        else:
            self.module = self._module_cls(n_input=self.summary_stats.n_vars, **module_kwargs)
        self.set_ode_solver(ode_method, ode_steps)
        self._default_guidance = default_guidance
        self._guidance_weights(None)  # validates default_guidance
        self.autoencoder_trained_ = False
        self.flow_trained_ = False
        if adata is not None:
            self._fit_data_statistics()
        self._model_summary_string = (
            f"CFGen: n_latent {n_latent}, dispersion {dispersion}, conditions "
            f"{[f.obs_key for f in attributes]}, solver {ode_method}"
        )
        if self.is_multimodal:
            self._model_summary_string += f", modalities {self.modality_names}"
        self._init_generative_state(adata)
        self.init_params_ = self._get_init_params(locals())

    # ------------------------------------------------------------ conditions
    @property
    def attribute_fields(self) -> list[ConditionField]:
        """The categorical conditions the flow is guided on (labels, batch, covariates)."""
        return [f for f in self.condition_fields if f.is_categorical]

    def _dispersion_attribute(self, dispersion: str) -> int | None:
        if dispersion == "gene":
            return None
        wanted = {"gene-label": REGISTRY_KEYS.LABELS_KEY, "gene-batch": REGISTRY_KEYS.BATCH_KEY}
        if dispersion not in wanted:
            raise ValueError(
                f"Unknown dispersion {dispersion!r}; use 'gene', 'gene-label' or 'gene-batch'."
            )
        for i, field in enumerate(self.attribute_fields):
            if field.registry_key == wanted[dispersion]:
                return i
        key = "labels_key" if dispersion == "gene-label" else "batch_key"
        raise ValueError(f"dispersion={dispersion!r} needs setup_anndata(..., {key}=...).")

    def _guidance_weights(self, guidance: GuidanceArg) -> list[float]:
        fields = self.attribute_fields
        names = [f.obs_key for f in fields]
        aliases = {
            f.registry_key: f.obs_key
            for f in fields
            if f.registry_key in (REGISTRY_KEYS.LABELS_KEY, REGISTRY_KEYS.BATCH_KEY)
            and f.registry_key not in names
        }
        defaults = resolve_guidance_weights(self._default_guidance, names, aliases=aliases)
        return resolve_guidance_weights(guidance, names, default=defaults, aliases=aliases)

    def set_ode_solver(
        self,
        method: ODEMethod = "midpoint",
        n_steps: int = 20,
        rtol: float = 1e-5,
        atol: float = 1e-5,
    ) -> None:
        """Choose the ODE solver used by generation, transfer and posterior sampling.

        Parameters
        ----------
        method
            ``"euler"``, ``"midpoint"``, ``"heun"``, ``"rk4"`` (fixed steps) or ``"dopri5"``
            (adaptive Dormand-Prince).
        n_steps
            Steps of a fixed-step method.
        rtol, atol
            Tolerances of ``"dopri5"``.

        Examples
        --------
        >>> model.set_ode_solver("dopri5", rtol=1e-4, atol=1e-4)
        """
        if method not in ODE_METHODS:
            raise ValueError(f"Unknown ODE method {method!r}; choose one of {list(ODE_METHODS)}.")
        if int(n_steps) < 1:
            raise ValueError(f"`n_steps` must be at least 1, got {n_steps}.")
        self.ode_options_ = {
            "method": method,
            "n_steps": int(n_steps),
            "rtol": float(rtol),
            "atol": float(atol),
        }

    def _ode(self) -> ODEOptions:
        return ODEOptions(**self.ode_options_)

    # ---------------------------------------------------------- statistics
    def _fit_data_statistics(self) -> None:
        """Store log-library and continuous-covariate statistics of the data in buffers."""
        module = self.module
        if self.is_multimodal:
            # One log library per modality (and the joint library-size model).
            log_library = self._fit_multimodal_statistics()
            module.log_library_mean.copy_(torch.as_tensor(log_library.mean(axis=0)))
            module.log_library_std.copy_(
                torch.as_tensor(np.maximum(log_library.std(axis=0), 1e-3))
            )
        else:
            matrix = self.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)
            library = np.concatenate(
                [np.asarray(block.sum(axis=1)).ravel() for block in iter_row_chunks(matrix)]
            )
            log_library = np.log(np.maximum(library, 1.0))
            module.log_library_mean.fill_(float(log_library.mean()))
            module.log_library_std.fill_(max(float(log_library.std()), 1e-3))
        if module.n_continuous_cov:
            cont = np.asarray(
                self.adata_manager.get_from_registry(REGISTRY_KEYS.CONT_COVS_KEY), dtype=float
            )
            std = cont.std(axis=0)
            module.continuous_mean.copy_(torch.as_tensor(cont.mean(axis=0)))
            module.continuous_std.copy_(torch.as_tensor(np.where(std > 0, std, 1.0)))

    def _fit_latent_statistics(self, indices: np.ndarray | None) -> None:
        """Standardise the flow's space with the latents of the training cells."""
        z = torch.as_tensor(self.get_latent_representation(indices=indices))
        self.module.latent_mean.copy_(z.mean(dim=0))
        self.module.latent_std.copy_(z.std(dim=0).clamp(min=1e-6) if len(z) > 1 else 1.0)

    # -------------------------------------------------------------- training
    def train(
        self,
        max_epochs: int | None = None,
        *,
        max_epochs_autoencoder: int | None = None,
        max_epochs_flow: int | None = None,
        accelerator: str = "auto",
        devices: int | list[int] | str = "auto",
        train_size: float | None = None,
        validation_size: float | None = None,
        shuffle_set_split: bool = True,
        batch_size: int = 256,
        early_stopping: bool = True,
        early_stopping_patience_autoencoder: int = _PATIENCE["autoencoder"],
        early_stopping_patience_flow: int = _PATIENCE["flow"],
        restore_best: bool = True,
        plan_kwargs_autoencoder: dict[str, Any] | None = None,
        plan_kwargs_flow: dict[str, Any] | None = None,
        datasplitter_kwargs: dict[str, Any] | None = None,
        **trainer_kwargs: Any,
    ) -> None:
        """Train the autoencoder, then the flow, each through scvi-tools' training loop.

        Both stages use the same train/validation split, Lightning's progress bars and
        accelerators, and early stopping on the validation loss (NB negative log-likelihood,
        then flow-matching loss on fixed validation noise).

        Parameters
        ----------
        max_epochs
            Epochs of both stages unless set per stage.
        max_epochs_autoencoder
            Epochs of stage 1 (default 200; 0 skips it, e.g. to train the flow further).
        max_epochs_flow
            Epochs of stage 2 (default 600).
        accelerator
            Lightning accelerator (``"auto"``, ``"cpu"``, ``"gpu"`` ...).
        devices
            Lightning devices.
        train_size, validation_size
            Split fractions (scvi-tools' :class:`~scvi.dataloaders.DataSplitter`).
        shuffle_set_split
            Shuffle cells before splitting.
        batch_size
            Minibatch size of both stages.
        early_stopping
            Stop each stage when its validation loss stops improving.
        early_stopping_patience_autoencoder, early_stopping_patience_flow
            Patience (epochs) of each stage.
        restore_best
            End each stage with the weights of its epoch with the lowest validation loss
            (kept in memory; needs a validation set).
        plan_kwargs_autoencoder, plan_kwargs_flow
            Keyword arguments of each stage's :class:`~scvi.train.TrainingPlan` (``lr``,
            ``weight_decay``, ``reduce_lr_on_plateau`` ...); ``dispersion_lr_factor``
            (default 30) scales the learning rate of the NB dispersion in stage 1. Both stages
            use AdamW unless ``optimizer`` is given.
        datasplitter_kwargs
            Keyword arguments of the data splitter.
        **trainer_kwargs
            Passed to :class:`~scvi.train.Trainer` for both stages.

        Examples
        --------
        >>> model.train(max_epochs_autoencoder=100, max_epochs_flow=300)
        """
        epochs_ae = _first_not_none(
            max_epochs_autoencoder, max_epochs, _DEFAULT_MAX_EPOCHS_AUTOENCODER
        )
        epochs_flow = _first_not_none(max_epochs_flow, max_epochs, _DEFAULT_MAX_EPOCHS_FLOW)
        if epochs_ae == 0 and not self.autoencoder_trained_:
            raise ValueError("The autoencoder is untrained; max_epochs_autoencoder must be > 0.")
        datasplitter_kwargs = dict(datasplitter_kwargs or {})
        if "ddp" in str(trainer_kwargs.get("strategy", "")):
            datasplitter_kwargs.setdefault("distributed_sampler", True)
        splitter = self._data_splitter_cls(
            self.adata_manager,
            train_size=train_size,
            validation_size=validation_size,
            shuffle_set_split=shuffle_set_split,
            batch_size=batch_size,
            **datasplitter_kwargs,
        )
        common = {
            "accelerator": accelerator,
            "devices": devices,
            "early_stopping": early_stopping,
            **trainer_kwargs,
        }
        histories = dict(self.history_ or {}) if self.flow_trained_ else {}
        if epochs_ae > 0:
            histories = {k: v for k, v in histories.items() if not k.startswith("autoencoder_")}
            history = self._train_stage(
                "autoencoder",
                splitter,
                epochs_ae,
                early_stopping_patience_autoencoder,
                plan_kwargs_autoencoder,
                common,
                restore_best,
            )
            histories.update(history)
            self.autoencoder_trained_ = True
            self._fit_latent_statistics(splitter.train_idx)
            self.flow_trained_ = False
        if epochs_flow > 0:
            histories = {k: v for k, v in histories.items() if not k.startswith("flow_")}
            history = self._train_stage(
                "flow",
                splitter,
                epochs_flow,
                early_stopping_patience_flow,
                plan_kwargs_flow,
                common,
                restore_best,
            )
            histories.update(history)
            self.flow_trained_ = True
        self.history_ = histories
        self.is_trained_ = self.flow_trained_
        self.module.set_stage("autoencoder")
        self.module.eval()

    def _train_stage(
        self,
        stage: Stage,
        splitter: Any,
        max_epochs: int,
        patience: int,
        plan_kwargs: dict[str, Any] | None,
        common: dict[str, Any],
        restore_best: bool,
    ) -> dict[str, pd.DataFrame]:
        """Run one stage through TrainRunner; return its history with stage-prefixed keys."""
        logger.info("CFGen: training the %s for up to %d epochs.", stage, max_epochs)
        self.module.set_stage(stage)
        # Lightning keeps the modes it finds (TrainRunner leaves the module in eval mode after
        # a run): switch to train mode explicitly; the frozen autoencoder stays in eval mode.
        self.module.train()
        plan = self._training_plan_cls(self.module, **self._plan_kwargs(stage, plan_kwargs))
        trainer_kwargs = dict(common)
        if stage == "flow":
            self.module.reset_ema()
            trainer_kwargs["callbacks"] = [*trainer_kwargs.get("callbacks", []), EMACallback()]
        trainer_kwargs.setdefault("early_stopping_monitor", "validation_loss")
        trainer_kwargs.setdefault("early_stopping_patience", patience)
        if restore_best:
            trainer_kwargs["callbacks"] = [
                *trainer_kwargs.get("callbacks", []),
                RestoreBestWeights("validation_loss"),
            ]
            trainer_kwargs.setdefault("check_val_every_n_epoch", 1)
        # Each stage gets a fresh history (TrainRunner would append to the previous one).
        self.is_trained_ = False
        self.history_ = None
        runner = self._train_runner_cls(
            self,
            training_plan=plan,
            data_splitter=splitter,
            max_epochs=max_epochs,
            **trainer_kwargs,
        )
        with warnings.catch_warnings():
            # Intentional in stage 2: the frozen autoencoder is kept in eval mode.
            warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")
            runner()
        return {f"{stage}_{key}": value for key, value in (self.history_ or {}).items()}

    def _plan_kwargs(self, stage: Stage, plan_kwargs: dict[str, Any] | None) -> dict[str, Any]:
        """TrainingPlan arguments; stage 1 gets an AdamW with a faster dispersion group."""
        kwargs = {**_PLAN_DEFAULTS[stage], **(plan_kwargs or {})}
        factor = float(kwargs.pop("dispersion_lr_factor", _DISPERSION_LR_FACTOR))
        if "optimizer" in kwargs or "optimizer_creator" in kwargs:
            return kwargs
        lr, eps, weight_decay = kwargs["lr"], kwargs["eps"], kwargs["weight_decay"]
        dispersions = self.module.dispersion_parameters

        def create(params: Any) -> torch.optim.Optimizer:
            params = list(params)
            is_dispersion = [any(p is d for d in dispersions) for p in params]
            groups = [{"params": [p for p, d in zip(params, is_dispersion) if not d]}]
            if stage == "autoencoder" and any(is_dispersion):
                fast = [p for p, d in zip(params, is_dispersion) if d]
                groups.append({"params": fast, "lr": lr * factor, "weight_decay": 0.0})
            return torch.optim.AdamW(groups, lr=lr, eps=eps, weight_decay=weight_decay)

        return {**kwargs, "optimizer": "Custom", "optimizer_creator": create}

    # ----------------------------------------------------------- generation
    def _generate_chunk(
        self,
        conditions: dict[str, torch.Tensor],
        library: torch.Tensor | None,
        guidance: GuidanceArg,
    ) -> sp.csr_matrix:
        module = self.module
        codes = module.attribute_codes(conditions)
        continuous = module.continuous_inputs(conditions, library)
        z = module.sample_latent(codes, continuous, self._guidance_weights(guidance), self._ode())
        return self._decode_block(module.unstandardize(z), library, codes, return_mean=False)

    def _decode_block(
        self, z: torch.Tensor, library: torch.Tensor, codes: torch.Tensor, return_mean: bool
    ) -> sp.csr_matrix:
        """Decode latents and sample counts (or take NB means); modalities hstacked."""
        if self.is_multimodal:
            return self._sample_modalities(z, library, codes, return_mean)
        mu, theta = self.module.decode(z, library, codes)
        return sp.csr_matrix(mu.cpu().numpy()) if return_mean else sample_nb_csr(mu, theta)

    def _to_output_block(self, values: Any) -> sp.csr_matrix:
        # Counts come out of the NB sampler already sparse and integer.
        if sp.issparse(values):
            return sp.csr_matrix(values, dtype=np.float32)
        return super()._to_output_block(values)

    # ------------------------------------------------------------ data access
    def _batches(
        self,
        adata: AnnData | None,
        indices: Sequence[int] | None,
        batch_size: int | None,
    ) -> Iterator[dict[str, torch.Tensor]]:
        adata = self._validate_anndata(adata)
        loader = self._make_data_loader(
            adata=adata, indices=indices, batch_size=batch_size, shuffle=False
        )
        device = self.module.latent_mean.device
        for tensors in loader:
            yield {k: v.to(device) for k, v in tensors.items() if torch.is_tensor(v)}

    @torch.inference_mode()
    def get_latent_representation(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        batch_size: int | None = None,
        standardized: bool = False,
    ) -> np.ndarray:
        """Encoder latents of cells.

        Parameters
        ----------
        adata
            Data with the training genes (``None``: the training data).
        indices
            Cells to encode (``None``: all).
        batch_size
            Cells per minibatch.
        standardized
            Return latents in the flow's standardised space.

        Returns
        -------
        ``(n_cells, n_latent)`` array.

        Examples
        --------
        >>> adata.obsm["X_cfgen"] = model.get_latent_representation()
        """
        self.module.eval()
        out = []
        for tensors in self._batches(adata, indices, batch_size):
            z = self.module.encode_tensors(tensors)
            out.append((self.module.standardize(z) if standardized else z).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.module.n_latent), np.float32)

    # ------------------------------------------------------ counterfactuals
    def _target_codes(
        self, adata: AnnData, indices: np.ndarray, to: Mapping[str, Any]
    ) -> dict[int, np.ndarray]:
        """Codes per attribute index of the counterfactual conditions, one per cell."""
        fields = self.attribute_fields
        lookup = {f.obs_key: i for i, f in enumerate(fields)}
        lookup.update(
            {
                f.registry_key: i
                for i, f in enumerate(fields)
                if f.registry_key in (REGISTRY_KEYS.LABELS_KEY, REGISTRY_KEYS.BATCH_KEY)
                and f.registry_key not in lookup
            }
        )
        unknown = sorted(set(to) - set(lookup))
        if unknown:
            raise ValueError(
                f"Cannot transfer {unknown}: the model conditions on "
                f"{[f.obs_key for f in fields]} (categorical attributes only)."
            )
        codes = {}
        for key, value in to.items():
            i = lookup[key]
            values = _broadcast(value, len(indices), key)
            codes[i] = fields[i].encode(values)
        return codes

    def _prepare(
        self, adata: AnnData | None, indices: Sequence[int] | None
    ) -> tuple[AnnData, np.ndarray]:
        adata = self._validate_anndata(adata)
        indices = np.arange(adata.n_obs) if indices is None else np.asarray(indices)
        if indices.dtype == bool:
            indices = np.flatnonzero(indices)
        return adata, indices

    def _reject_multimodal(self, name: str, alternative: str) -> None:
        if self.is_multimodal:
            raise NotImplementedError(
                f"{name} is not available for a multimodal CFGen; use model.{alternative}."
            )

    def _check_trained(self) -> None:
        if not (self.autoencoder_trained_ and self.flow_trained_):
            raise RuntimeError("Train the model (both stages) first: model.train().")

    @torch.inference_mode()
    def transfer(
        self,
        adata: AnnData | None = None,
        to: Mapping[str, Any] | None = None,
        *,
        indices: Sequence[int] | None = None,
        guidance: GuidanceArg = None,
        batch_size: int | None = None,
        seed: int | None = None,
        return_mean: bool = False,
    ) -> AnnData:
        """Counterfactual cells: what each cell would look like under other conditions.

        Each cell is encoded, integrated backwards (data to noise) under its own conditions,
        then forwards under the target ones, and decoded with its own library size; counts
        are drawn from the NB (or its mean is returned).

        Parameters
        ----------
        adata
            Cells to transfer, with the training genes (``None``: the training data).
        to
            ``{obs_key: category}`` or ``{obs_key: one category per cell}`` for any
            categorical attribute (label, batch, covariate); unlisted ones are kept.
        indices
            Subset of cells of ``adata``.
        guidance
            Guidance weights (as in :meth:`generate`), used in both directions.
        batch_size
            Cells per minibatch.
        seed
            Seed of the NB draws.
        return_mean
            Return the NB means (floats) instead of sampled counts.

        Returns
        -------
        A new AnnData with the input's ``obs`` (the transferred columns set to the target,
        the original values in ``<key>_source``), counts in sparse ``.X``, and provenance in
        ``uns["scvi_gen"]``. For a multimodal model, a MuData with one such AnnData per
        modality (the cells' latent is encoded from all modalities).

        Examples
        --------
        >>> moved = model.transfer(adata, to={"batch": "b2"}, seed=0)
        """
        self._check_trained()
        to = dict(to or {})
        adata, indices = self._prepare(adata, indices)
        targets = self._target_codes(adata, indices, to)
        weights = self._guidance_weights(guidance)
        seed = _draw_seed(seed)
        module = self.module
        module.eval()
        blocks, start = [], 0
        with _seeded_torch(seed, module.latent_mean.device):
            for tensors in self._batches(adata, indices, batch_size):
                library = module.library_of_tensors(tensors)
                n = library.shape[0]
                codes = module.attribute_codes(tensors)
                target = codes.clone()
                for i, values in targets.items():
                    target[:, i] = torch.as_tensor(
                        values[start : start + n], device=library.device
                    )
                continuous = module.continuous_inputs(tensors, library)
                z = module.transport(
                    module.standardize(module.encode_tensors(tensors)),
                    (codes, continuous),
                    (target, continuous),
                    weights,
                    self._ode(),
                )
                blocks.append(
                    self._decode_block(module.unstandardize(z), library, target, return_mean)
                )
                start += n
        n_features = len(self._generated_var_names())
        X = sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix((0, n_features))
        obs = self._transferred_obs(adata, indices, to)
        uns = {
            "model": type(self).__name__,
            "operation": "transfer",
            "output": "nb_mean" if return_mean else "counts",
            "seed": seed,
            "transfer_args": json.dumps(
                to_jsonable({"to": to, "guidance": guidance}), default=str
            ),
        }
        if self.is_multimodal:
            return self._modalities_to_mudata(X.astype(np.float32), obs, uns)
        out = AnnData(X=X.astype(np.float32), obs=obs, var=pd.DataFrame(index=adata.var_names))
        out.uns[UNS_KEY] = uns
        return out

    def _transferred_obs(
        self, adata: AnnData, indices: np.ndarray, to: Mapping[str, Any]
    ) -> pd.DataFrame:
        obs = adata.obs.iloc[indices].copy()
        # Drop the bookkeeping columns scvi-tools writes into a registered AnnData.
        obs = obs.loc[:, [c for c in obs.columns if not str(c).startswith("_scvi")]]
        fields = {f.obs_key: f for f in self.attribute_fields}
        fields.update({f.registry_key: f for f in self.attribute_fields})
        for key, value in to.items():
            field = fields[key]
            obs[f"{field.obs_key}_source"] = obs[field.obs_key].astype(str).to_numpy()
            obs[field.obs_key] = pd.Categorical(
                [str(v) for v in _broadcast(value, len(indices), key)],
                categories=list(field.categories),
            )
        return obs

    # ------------------------------------------------- posterior predictive
    @torch.inference_mode()
    def posterior_predictive_sample(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        transform_batch: Sequence[Any] | Any | None = None,
        n_samples: int = 1,
        gene_list: Sequence[str] | None = None,
        batch_size: int | None = None,
        dataloader: Any = None,
        silent: bool = True,
        **data_loader_kwargs: Any,
    ) -> Any:
        """Counts drawn from ``p(x_hat | x)``: encode each cell, decode, sample the NB.

        Same signature and return type as scvi-tools' ``RNASeqMixin`` method, so
        :class:`scvi.criticism.PosteriorPredictiveCheck` works.

        Parameters
        ----------
        adata
            Cells (``None``: the training data).
        indices
            Subset of cells.
        transform_batch
            ``None`` (observed batch) or batch categories: each cell's latent is transported
            by the flow to that batch (averaged over several, as in scvi-tools).
        n_samples
            Draws per cell.
        gene_list
            Genes to return (``None``: all).
        batch_size
            Cells per minibatch.
        dataloader
            A data loader yielding scvi-tools tensors instead of ``adata``/``indices``.
        silent
            Unused (kept for signature compatibility).
        **data_loader_kwargs
            Unused (kept for signature compatibility).

        Returns
        -------
        :class:`sparse.GCXS` of shape ``(n_cells, n_genes)`` if ``n_samples == 1``, else
        ``(n_cells, n_genes, n_samples)``.

        Examples
        --------
        >>> from scvi.criticism import PosteriorPredictiveCheck
        >>> ppc = PosteriorPredictiveCheck(adata, {"cfgen": model}, n_samples=2)
        """
        import sparse

        self._check_trained()
        self._reject_multimodal("posterior_predictive_sample", "transfer(mdata)")
        self.module.eval()
        batches = self._transform_batch_codes(transform_batch)
        if dataloader is None:
            adata = self._validate_anndata(adata)
            loader = self._batches(adata, indices, batch_size)
            var_names = adata.var_names
        else:
            device = self.module.latent_mean.device
            loader = ({k: v.to(device) for k, v in t.items()} for t in dataloader)
            var_names = self._generated_var_names()
        gene_mask = slice(None)
        if gene_list is not None:
            gene_mask = torch.as_tensor(np.isin(np.asarray(var_names), list(gene_list)))
            if not gene_mask.any():
                raise ValueError("None of the genes in `gene_list` are in the data.")
        blocks, shape = [], None
        for tensors in loader:
            draws = [self._posterior_draws(tensors, code, n_samples) for code in batches]
            values = (draws[0] if len(draws) == 1 else torch.stack(draws).mean(0))[:, gene_mask]
            shape = values.shape[1:]
            blocks.append(sp.csr_matrix(values.reshape(values.shape[0], -1).numpy()))
        if not blocks:
            raise ValueError("No cells to sample.")
        # One GCXS built from a scipy CSR: sparse.concatenate of many GCXS blocks is far slower.
        # A 3-D GCXS compressed on axis 0 stores exactly this (cells, genes * samples) CSR.
        flat = sp.vstack(blocks, format="csr")
        flat.sort_indices()
        return sparse.GCXS(
            (flat.data, flat.indices, flat.indptr),
            shape=(flat.shape[0], *shape),
            compressed_axes=(0,),
        )

    def _transform_batch_codes(self, transform_batch: Any) -> list[int | None]:
        if transform_batch is None:
            return [None]
        field = next(
            (f for f in self.attribute_fields if f.registry_key == REGISTRY_KEYS.BATCH_KEY), None
        )
        if field is None:
            raise ValueError("`transform_batch` needs a model set up with `batch_key`.")
        values = [transform_batch] if np.ndim(transform_batch) == 0 else list(transform_batch)
        return [int(c) for c in field.encode([str(v) for v in values])]

    def _posterior_draws(
        self, tensors: dict[str, torch.Tensor], batch_code: int | None, n_samples: int
    ) -> torch.Tensor:
        module = self.module
        x = tensors[REGISTRY_KEYS.X_KEY]
        library = x.sum(dim=1, keepdim=True)
        codes = module.attribute_codes(tensors)
        z = module.encode(x)
        if batch_code is not None:
            i = next(
                i
                for i, f in enumerate(self.attribute_fields)
                if f.registry_key == REGISTRY_KEYS.BATCH_KEY
            )
            target = codes.clone()
            target[:, i] = batch_code
            continuous = module.continuous_inputs(tensors, library)
            weights = self._guidance_weights(None)
            z = module.unstandardize(
                module.transport(
                    module.standardize(z),
                    (codes, continuous),
                    (target, continuous),
                    weights,
                    self._ode(),
                )
            )
            codes = target
        mu, theta = module.decode(z, library, codes)
        draws = [sample_nb_dense(mu, theta).cpu() for _ in range(n_samples)]
        return draws[0] if n_samples == 1 else torch.stack(draws, dim=-1)

    # ------------------------------------------------------------ imputation
    @torch.inference_mode()
    def impute(
        self,
        adata: AnnData | None = None,
        mask: np.ndarray | sp.spmatrix | None = None,
        *,
        n_iterations: int = _IMPUTE_ITERATIONS,
        batch_size: int | None = None,
    ) -> AnnData:
        """Fill masked entries with the decoder's NB mean given the observed entries.

        Masked entries start at zero; each iteration encodes the completed cell, decodes gene
        proportions, scales them so that the observed genes keep their observed total, and
        refills the masked entries with the resulting means. Observed entries never change.

        Parameters
        ----------
        adata
            Cells with the training genes (``None``: the training data).
        mask
            ``(n_cells, n_genes)`` boolean array or sparse matrix, ``True`` where a value is
            missing.
        n_iterations
            Encode-decode rounds.
        batch_size
            Cells per minibatch.

        Returns
        -------
        A new AnnData (``obs``/``var`` of ``adata``) whose ``.X`` holds the observed counts
        and the imputed means (sparse float32).

        Examples
        --------
        >>> mask = np.random.default_rng(0).random(adata.shape) < 0.1
        >>> filled = model.impute(adata, mask)
        """
        if not self.autoencoder_trained_:
            raise RuntimeError("Train the model first: model.train().")
        self._reject_multimodal("impute", "predict_modality(...)")
        adata = self._validate_anndata(adata)
        if mask is None:
            raise ValueError("Pass `mask`, a boolean (n_cells, n_genes) array of missing entries.")
        if tuple(mask.shape) != tuple(adata.shape):
            raise ValueError(f"`mask` has shape {mask.shape}, the data {adata.shape}.")
        mask = sp.csr_matrix(mask, dtype=bool) if sp.issparse(mask) else np.asarray(mask, bool)
        self.module.eval()
        blocks, start = [], 0
        for tensors in self._batches(adata, None, batch_size):
            x = tensors[REGISTRY_KEYS.X_KEY]
            end = start + x.shape[0]
            block = mask[start:end]
            block = block.toarray() if sp.issparse(block) else block
            missing = torch.as_tensor(block, device=x.device)
            blocks.append(sp.csr_matrix(self._impute_block(x, missing, n_iterations)))
            start = end
        out = AnnData(
            X=sp.vstack(blocks, format="csr").astype(np.float32),
            obs=adata.obs.copy(),
            var=pd.DataFrame(index=adata.var_names),
        )
        out.uns[UNS_KEY] = {"model": type(self).__name__, "operation": "impute"}
        return out

    def _impute_block(
        self, x: torch.Tensor, missing: torch.Tensor, n_iterations: int
    ) -> np.ndarray:
        module = self.module
        observed = torch.where(missing, torch.zeros_like(x), x)
        observed_total = observed.sum(dim=1, keepdim=True)
        fallback = torch.exp(module.log_library_mean)
        filled = observed
        for _ in range(max(1, n_iterations)):
            proportions = torch.softmax(module.decoder(module.encode(filled)), dim=-1)
            observed_share = (proportions * ~missing).sum(dim=1, keepdim=True)
            # Library implied by the observed genes; a cell with nothing observed gets the
            # training mean library.
            library = torch.where(
                observed_share > 0, observed_total / observed_share.clamp(min=1e-12), fallback
            )
            filled = torch.where(missing, proportions * library, x)
        return filled.cpu().numpy()


def _first_not_none(*values: int | None) -> int:
    return int(next(v for v in values if v is not None))


def _draw_seed(seed: int | None) -> int:
    return int(np.random.SeedSequence().entropy % 2**31) if seed is None else int(seed)


def _broadcast(value: Any, n: int, key: str) -> np.ndarray:
    if isinstance(value, str) or np.ndim(value) == 0:
        return np.full(n, str(value), dtype=object)
    values = np.asarray([str(v) for v in value], dtype=object)
    if len(values) != n:
        raise ValueError(f"to[{key!r}] has {len(values)} values for {n} cells.")
    return values
