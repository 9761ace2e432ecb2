"""The shared model of two-stage latent generators (CFGen, LatentDiffusion).

:class:`LatentGenerator` holds what the two share on the model side: the categorical
attributes and their guidance weights, the ODE solver, the data statistics fitted in
streaming passes, the two-stage training (each stage through scvi-tools' TrainRunner with
:class:`~scvi_gen.train.GeneratorTrainingPlan`), generation, latents, and through
:class:`~scvi_gen.base.LatentOperationsMixin` counterfactual transfer, posterior predictive
sampling and imputation. A subclass builds its module in ``__init__`` (calling
:meth:`LatentGenerator._finish_init`) and may override the decoding hooks.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from anndata import AnnData
from scvi import REGISTRY_KEYS
from scvi.model.base import BaseModelClass, UnsupervisedTrainingMixin

from scvi_gen.base._callbacks import RestoreBestWeights
from scvi_gen.base._conditions import ConditionField
from scvi_gen.base._data_state import Batch, BatchSource, RunningMoments, row_sums
from scvi_gen.base._generative_mixin import GenerativeMixin
from scvi_gen.base._guidance import GuidanceArg, resolve_guidance_weights
from scvi_gen.base._latent_module import AttributeSlot, ODEOptions, Stage
from scvi_gen.base._latent_ops import LatentOperationsMixin, broadcast_values
from scvi_gen.base._ode import ODE_METHODS, ODEMethod
from scvi_gen.base._sampling import sample_nb_csr
from scvi_gen.base._training_checks import warn_if_undertrained
from scvi_gen.nn import DecoderPrecision, decoding_precision, resolve_decoder_precision
from scvi_gen.train import GeneratorTrainingPlan, checkpoint_stage

logger = logging.getLogger(__name__)


class LatentGenerator(
    LatentOperationsMixin, GenerativeMixin, UnsupervisedTrainingMixin, BaseModelClass
):
    """Base of the two-stage latent generators: an autoencoder, then a flow-matching prior.

    Subclasses set :attr:`_module_cls` and :attr:`_train_defaults`, build their module in
    ``__init__`` from :meth:`_module_base_kwargs` and end it with :meth:`_finish_init`.
    """

    _training_plan_cls = GeneratorTrainingPlan
    #: Epochs, batch size, patience, plan and trainer defaults of :meth:`train`.
    _train_defaults: ClassVar[dict[str, Any]] = {}

    def _module_base_kwargs(
        self, dispersion: str, condition_dropout: float | None
    ) -> dict[str, Any]:
        """Module arguments every latent generator derives from its registry."""
        attributes = self.attribute_fields
        if condition_dropout is None:
            condition_dropout = 0.2 if len(attributes) <= 1 else 0.5
        return {
            "n_categories": [len(f.categories) for f in attributes],
            "attribute_slots": [AttributeSlot(f.registry_key, f.column) for f in attributes],
            "n_continuous_cov": self.summary_stats.get("n_extra_continuous_covs", 0),
            "dispersion": dispersion,
            "dispersion_attribute": self._dispersion_attribute(dispersion),
            "condition_dropout": condition_dropout,
        }

    def _finish_init(
        self,
        adata: Any,
        ode_method: ODEMethod,
        ode_steps: int,
        default_guidance: float | Mapping[str, float],
    ) -> None:
        """Solver, guidance and training flags, then the data state (end of ``__init__``)."""
        self.set_ode_solver(ode_method, ode_steps)
        self._default_guidance = default_guidance
        self._guidance_weights(None)  # validates default_guidance
        self.autoencoder_trained_ = False
        self.flow_trained_ = False
        self._init_generative_state(adata)

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

    def _guidance_spec(self) -> tuple[list[str], dict[str, str], bool]:
        """Guided on every categorical condition, one weight each.

        ``"labels"`` and ``"batch"`` also name the label and batch columns.
        """
        fields = self.attribute_fields
        names = [f.obs_key for f in fields]
        aliases = {
            f.registry_key: f.obs_key
            for f in fields
            if f.registry_key in (REGISTRY_KEYS.LABELS_KEY, REGISTRY_KEYS.BATCH_KEY)
            and f.registry_key not in names
        }
        return names, aliases, True

    def _guidance_weights(self, guidance: GuidanceArg) -> list[float]:
        names, aliases, _ = self._guidance_spec()
        if not names:
            # Nothing to guide on: the default is moot, a user's weight is refused.
            return resolve_guidance_weights(guidance, names, model=type(self).__name__)
        model = type(self).__name__
        defaults = resolve_guidance_weights(
            self._default_guidance, names, aliases=aliases, model=model
        )
        return resolve_guidance_weights(
            guidance, names, default=defaults, aliases=aliases, model=model
        )

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

    #: Compute dtype of the decoder's output layer when cells are generated, transferred
    #: or interpolated (see :meth:`set_decoder_precision`); a runtime setting, not saved.
    decoder_precision: DecoderPrecision = "auto"

    def set_decoder_precision(self, precision: DecoderPrecision = "auto") -> None:
        """Choose the precision of the decoder's output layer when cells are generated.

        The layer onto all genes is most of the cost of generating cells with many genes.
        ``"auto"`` computes it in bfloat16 (float32 accumulation, float32 result) where the
        hardware does so natively (CPUs with AVX512-BF16 or AMX, CUDA GPUs with bf16) and
        in float32 elsewhere. Training, losses and ``posterior_predictive_sample`` always
        decode in float32. Not saved with the model: a loaded model starts at ``"auto"``.

        Parameters
        ----------
        precision
            ``"auto"``, ``"float32"`` or ``"bfloat16"``.

        Examples
        --------
        >>> model.set_decoder_precision("float32")  # bitwise the same cells on any CPU
        """
        resolve_decoder_precision(precision, "cpu")  # validates the name
        self.decoder_precision = precision

    def _ode(self) -> ODEOptions:
        return ODEOptions(**self.ode_options_)

    # ---------------------------------------------------------- statistics
    def _fit_model_state(self, source: BatchSource) -> None:
        """Log-library and continuous-covariate statistics of the training cells (buffers)."""
        module = self.module
        log_library = RunningMoments()
        continuous = RunningMoments()
        for batch in source():
            log_library.update(self._log_libraries(batch))
            if module.n_continuous_cov:
                continuous.update(batch[REGISTRY_KEYS.CONT_COVS_KEY])
        dtype = module.log_library_mean.dtype
        module.log_library_mean.copy_(torch.as_tensor(log_library.mean, dtype=dtype))
        module.log_library_std.copy_(
            torch.as_tensor(np.maximum(log_library.std(), 1e-3), dtype=dtype)
        )
        if module.n_continuous_cov:
            std = continuous.std()
            module.continuous_mean.copy_(torch.as_tensor(continuous.mean, dtype=dtype))
            module.continuous_std.copy_(torch.as_tensor(np.where(std > 0, std, 1.0), dtype=dtype))

    def _log_libraries(self, batch: Batch) -> np.ndarray:
        """Log library size of every cell of a batch (one column per library)."""
        return np.log(np.maximum(row_sums(batch), 1.0))

    def _fit_latent_statistics(self, latents: Iterable[torch.Tensor]) -> None:
        """Standardise the prior's space with the encoder latents of the training cells."""
        moments = RunningMoments()
        for z in latents:
            moments.update(z.detach().cpu().double().numpy())
        dtype = self.module.latent_mean.dtype
        self.module.latent_mean.copy_(torch.as_tensor(moments.mean, dtype=dtype))
        std = moments.std(ddof=1) if moments.count > 1 else np.ones_like(moments.mean)
        self.module.latent_std.copy_(torch.as_tensor(np.maximum(std, 1e-6), dtype=dtype))

    def _training_latents(self, splitter: Any) -> Iterator[torch.Tensor]:
        """Encoder latents of the training split (of a data splitter or a data module)."""
        self.module.eval()
        with torch.inference_mode():
            if getattr(splitter, "train_idx", None) is not None and self.adata is not None:
                for tensors in self._batches(None, splitter.train_idx, None):
                    yield self.module.encode_tensors(tensors)
                return
            device = self.module.latent_mean.device
            for tensors in splitter.train_dataloader():
                tensors = {k: v.to(device) for k, v in tensors.items() if torch.is_tensor(v)}
                yield self.module.encode_tensors(tensors)

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
        batch_size: int | None = None,
        early_stopping: bool = True,
        early_stopping_patience_autoencoder: int | None = None,
        early_stopping_patience_flow: int | None = None,
        restore_best: bool = True,
        plan_kwargs_autoencoder: dict[str, Any] | None = None,
        plan_kwargs_flow: dict[str, Any] | None = None,
        datasplitter_kwargs: dict[str, Any] | None = None,
        datamodule: Any = None,
        ckpt_path: str | None = None,
        **trainer_kwargs: Any,
    ) -> None:
        """Train the autoencoder, then the prior, each through scvi-tools' training loop.

        Both stages use the same train/validation split (or ``datamodule``), Lightning's
        progress bars, accelerators and strategies, and early stopping on the validation loss
        (NB negative log-likelihood, then flow-matching loss on fixed validation noise). Each
        stage runs :class:`~scvi_gen.train.GeneratorTrainingPlan`, which records the stage in
        Lightning checkpoints and steps the EMA of the prior after every optimiser step.

        Parameters
        ----------
        max_epochs
            Epochs of both stages unless set per stage.
        max_epochs_autoencoder
            Epochs of stage 1 (0 skips it, e.g. to train the prior further).
        max_epochs_flow
            Epochs of stage 2.
        accelerator
            Lightning accelerator (``"auto"``, ``"cpu"``, ``"gpu"`` ...).
        devices
            Lightning devices.
        train_size, validation_size
            Split fractions (scvi-tools' :class:`~scvi.dataloaders.DataSplitter`).
        shuffle_set_split
            Shuffle cells before splitting.
        batch_size
            Minibatch size of both stages (``None``: the model's default).
        early_stopping
            Stop each stage when its validation loss stops improving.
        early_stopping_patience_autoencoder, early_stopping_patience_flow
            Patience (epochs) of each stage (``None``: the model's default).
        restore_best
            End each stage with the weights of its epoch with the lowest validation loss
            (kept in memory and in checkpoints; needs a validation set).
        plan_kwargs_autoencoder, plan_kwargs_flow
            Keyword arguments of each stage's training plan (``lr``, ``weight_decay``,
            ``reduce_lr_on_plateau`` ...); ``dispersion_lr_factor`` scales the learning rate
            of the NB dispersion in stage 1. Both stages use AdamW unless ``optimizer`` is
            given.
        datasplitter_kwargs
            Keyword arguments of the data splitter.
        datamodule
            A Lightning data module yielding scvi-tools tensors (e.g. over files too large
            for memory) instead of the registered AnnData; a model built with
            ``registry=`` fits its data state from its training loader first.
        ckpt_path
            A Lightning checkpoint of an interrupted run (``ModelCheckpoint`` in
            ``callbacks``): training resumes in the stage it was saved in, with its
            optimiser, EMA and best-weights state. Pass the same epochs as the first run.
        **trainer_kwargs
            Passed to :class:`~scvi.train.Trainer` for both stages.

        Examples
        --------
        >>> model.train(max_epochs_autoencoder=100, max_epochs_flow=300)
        """
        self._ensure_data_state(datamodule)
        defaults = self._train_defaults
        self._check_training_cells(
            datamodule,
            train_size=train_size,
            validation_size=validation_size,
            batch_size=batch_size or defaults["batch_size"],
            needs_validation=bool(early_stopping or restore_best),
            no_validation="early_stopping=False and restore_best=False",
        )
        epochs_ae = _first_not_none(
            max_epochs_autoencoder, max_epochs, defaults["max_epochs_autoencoder"]
        )
        epochs_flow = _first_not_none(max_epochs_flow, max_epochs, defaults["max_epochs_flow"])
        resume = None if ckpt_path is None else checkpoint_stage(ckpt_path)
        if resume == "flow":
            # The checkpoint holds the trained autoencoder and its latent statistics.
            epochs_ae = 0
            self.autoencoder_trained_ = True
        if epochs_ae == 0 and not self.autoencoder_trained_:
            raise ValueError("The autoencoder is untrained; max_epochs_autoencoder must be > 0.")
        for key, value in defaults["trainer"].items():
            trainer_kwargs.setdefault(key, value)
        splitter = datamodule
        if splitter is None:
            datasplitter_kwargs = dict(datasplitter_kwargs or {})
            if "ddp" in str(trainer_kwargs.get("strategy", "")):
                datasplitter_kwargs.setdefault("distributed_sampler", True)
            splitter = self._data_splitter_cls(
                self.adata_manager,
                train_size=train_size,
                validation_size=validation_size,
                shuffle_set_split=shuffle_set_split,
                batch_size=batch_size or defaults["batch_size"],
                **datasplitter_kwargs,
            )
        common = {
            "accelerator": accelerator,
            "devices": devices,
            "early_stopping": early_stopping,
            "restore_best": restore_best,
            **trainer_kwargs,
        }
        patience = {
            "autoencoder": _first_not_none(
                early_stopping_patience_autoencoder, defaults["patience"]["autoencoder"]
            ),
            "flow": _first_not_none(early_stopping_patience_flow, defaults["patience"]["flow"]),
        }
        histories = dict(self.history_ or {}) if self.flow_trained_ else {}
        if epochs_ae > 0:
            histories = {k: v for k, v in histories.items() if not k.startswith("autoencoder_")}
            histories.update(
                self._train_stage(
                    "autoencoder",
                    splitter,
                    epochs_ae,
                    patience["autoencoder"],
                    plan_kwargs_autoencoder,
                    common,
                    ckpt_path if resume == "autoencoder" else None,
                )
            )
            self.autoencoder_trained_ = True
            self._fit_latent_statistics(self._training_latents(splitter))
            self.flow_trained_ = False
        if epochs_flow > 0:
            histories = {k: v for k, v in histories.items() if not k.startswith("flow_")}
            histories.update(
                self._train_stage(
                    "flow",
                    splitter,
                    epochs_flow,
                    patience["flow"],
                    plan_kwargs_flow,
                    common,
                    ckpt_path if resume == "flow" else None,
                )
            )
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
        ckpt_path: str | None,
    ) -> dict[str, pd.DataFrame]:
        """Run one stage through TrainRunner; return its history with stage-prefixed keys."""
        logger.info(
            "%s: training the %s for up to %d epochs.", type(self).__name__, stage, max_epochs
        )
        trainer_kwargs = dict(common)
        restore_best = trainer_kwargs.pop("restore_best")
        plan = self._training_plan_cls(self.module, **self._plan_kwargs(stage, plan_kwargs))
        # Lightning keeps the modes it finds (TrainRunner leaves the module in eval mode after
        # a run): switch to train mode explicitly; the frozen autoencoder stays in eval mode.
        self.module.train()
        if stage == "flow":
            self.module.reset_ema()
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
            ckpt_path=ckpt_path,
            **trainer_kwargs,
        )
        with warnings.catch_warnings(), self._stage_context(stage):
            # Intentional in stage 2: the frozen autoencoder is kept in eval mode.
            warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")
            runner()
        warn_if_undertrained(
            self.history_,
            max_epochs,
            model=type(self).__name__,
            stage=stage,
            epochs_argument=f"max_epochs_{stage}",
        )
        return {f"{stage}_{key}": value for key, value in (self.history_ or {}).items()}

    def _stage_context(self, stage: Stage) -> contextlib.AbstractContextManager:
        """Set-up kept for the duration of a stage's run (none by default)."""
        return contextlib.nullcontext()

    def _plan_kwargs(self, stage: Stage, plan_kwargs: dict[str, Any] | None) -> dict[str, Any]:
        """Training-plan arguments of a stage; stage 1 gets a faster dispersion group."""
        defaults = self._train_defaults
        kwargs = {**defaults["plan"][stage], **(plan_kwargs or {})}
        factor = float(kwargs.pop("dispersion_lr_factor", defaults["dispersion_lr_factor"]))
        if "optimizer" not in kwargs and "optimizer_creator" not in kwargs:
            kwargs["optimizer"] = "AdamW"
            kwargs["dispersion_lr_factor"] = factor if stage == "autoencoder" else 1.0
        return {**kwargs, "stage": stage}

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
        return self._decode_generated(module.unstandardize(z), library, codes)

    def _decode_generated(
        self, z: torch.Tensor, library: torch.Tensor, codes: torch.Tensor
    ) -> sp.csr_matrix:
        """Counts of generated latents (the training genes by default)."""
        return self._decode_block(z, library, codes, return_mean=False)

    def _decode_block(
        self, z: torch.Tensor, library: torch.Tensor, codes: torch.Tensor, return_mean: bool
    ) -> sp.csr_matrix:
        """Decode latents and sample counts (or take NB means)."""
        dtype = resolve_decoder_precision(self.decoder_precision, z.device)
        with decoding_precision(self.module, dtype):
            mu, theta = self.module.decode(z, library, codes)
        return sp.csr_matrix(mu.cpu().numpy()) if return_mean else sample_nb_csr(mu, theta)

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
            values = broadcast_values(value, len(indices), key)
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

    def _check_trained(self) -> None:
        if not (self.autoencoder_trained_ and self.flow_trained_):
            raise RuntimeError("Train the model (both stages) first: model.train().")


def _first_not_none(*values: int | None) -> int:
    return int(next(v for v in values if v is not None))
