"""The generator contract shared by every scvi-gen model: setup, generate, save and load."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from anndata import AnnData
from scvi import REGISTRY_KEYS
from scvi.data import AnnDataManager
from tqdm.auto import tqdm

from scvi_gen._constants import (
    ADATA_FILE,
    DEFAULT_GENERATION_CHUNK,
    LOGNORM_LAYER,
    META_FILE,
    UNS_KEY,
)
from scvi_gen._matrix import stack_csr_rows
from scvi_gen._memory import release_freed_memory
from scvi_gen.base._conditions import (
    ConditionField,
    LabelsArg,
    build_condition_plan,
    condition_fields,
    counts_per_label,
    labels_field,
    plan_to_tensors,
)
from scvi_gen.base._data_state import (
    BatchSource,
    ReservoirSample,
    batch_conditions,
    loader_source,
    manager_source,
    row_sums,
)
from scvi_gen.base._devices import resolve_device
from scvi_gen.base._guidance import check_guidance
from scvi_gen.base._library_size import LibrarySizeFitter, LibrarySizeModel, per_cell_sizes
from scvi_gen.base._model_files import (
    check_registry,
    check_var_names,
    init_kwargs,
    legacy_weights_path,
    load_weights,
    locate_model_files,
    model_attrs,
    read_meta,
    read_weights,
    weights_path,
    write_weights,
)
from scvi_gen.base._ranks import writes_files
from scvi_gen.base._serialization import dumps, to_jsonable
from scvi_gen.base._setup import generator_fields
from scvi_gen.base._validation import check_mapping_arg, require_anndata, validate_setup_input
from scvi_gen.train._plans import DistributedMetricsTrainingPlan
from scvi_gen.train._runner import GeneratorTrainRunner

logger = logging.getLogger(__name__)

#: Training conditions kept with the model to draw unspecified covariates from.
_MAX_STORED_CONDITIONS = 50_000
_META_FORMAT = 1
#: Cells per unit of randomness in ``generate``: block ``k`` (cells ``256 k`` to
#: ``256 (k + 1)``) draws from a stream seeded by ``(seed, k)``, so chunk size, device count
#: and resume point never change the cells.
SEED_BLOCK = 256
_STATE = "state_registry"


class GenerativeMixin:
    """Shared API of scvi-gen generators.

    A model mixes this class in before scvi-tools' training mixins and
    :class:`~scvi.model.base.BaseModelClass`, calls :meth:`_init_generative_state` from its
    ``__init__`` and implements :meth:`_generate_chunk`. It then gets ``setup_anndata`` with
    input validation, ``generate`` (labels, covariates, guidance, seed, chunks), a
    per-condition :class:`~scvi_gen.base.LibrarySizeModel`, and ``save``/``load`` that never
    unpickle anything.

    Class attributes
    ----------------
    _requires_counts
        Whether the model reads raw integer counts (count models) or continuous values.
    _output_kind
        ``"counts"`` (integer counts in ``.X``) or ``"lognorm"`` (log1p(CP10k) values).
    _fitted_state
        ``{name: kind}`` of the data state a model fits under names a freshly built model
        does not have (e.g. the flows' ``genes_``); ``load`` accepts saved attributes of a
        fresh model, the shared data state and these names only, each of its kind.
    """

    _requires_counts: ClassVar[bool] = True
    _output_kind: ClassVar[Literal["counts", "lognorm"]] = "counts"
    _fitted_state: ClassVar[Mapping[str, str]] = {}
    #: Registry keys of the count matrices a data pass reads.
    _matrix_keys: ClassVar[tuple[str, ...]] = (REGISTRY_KEYS.X_KEY,)
    #: Cells per generation chunk when ``generate(batch_size=None)``.
    _generation_chunk: ClassVar[int] = DEFAULT_GENERATION_CHUNK
    #: Lightning training goes through one runner: quiet banners, stage-labelled stderr bars.
    _train_runner_cls: ClassVar[type] = GeneratorTrainRunner
    #: scvi-tools' plan, with metrics that also sync across CPU processes (DDP on gloo).
    _training_plan_cls: ClassVar[type] = DistributedMetricsTrainingPlan

    # ------------------------------------------------------------------ setup
    @classmethod
    def setup_anndata(
        cls,
        adata: AnnData,
        layer: str | None = None,
        labels_key: str | None = None,
        batch_key: str | None = None,
        categorical_covariate_keys: list[str] | None = None,
        continuous_covariate_keys: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        """Register an AnnData with the model class.

        Parameters
        ----------
        adata
            Cells x genes data; count models need raw integer counts in ``layer`` (or ``.X``).
        layer
            Layer with the expression values; ``None`` uses ``.X``.
        labels_key
            ``.obs`` column with cell labels (e.g. cell type) to condition generation on.
        batch_key
            ``.obs`` column with batches.
        categorical_covariate_keys
            Further categorical ``.obs`` columns to condition on.
        continuous_covariate_keys
            Continuous ``.obs`` columns to condition on.
        **kwargs
            Passed to :meth:`scvi.data.AnnDataManager.register_fields`.

        Examples
        --------
        >>> scvi_gen.SCVIGenerator.setup_anndata(adata, labels_key="cell_type")
        """
        setup_method_args = cls._get_setup_method_args(**locals())
        validate_setup_input(
            adata,
            layer=layer,
            labels_key=labels_key,
            batch_key=batch_key,
            categorical_covariate_keys=categorical_covariate_keys,
            continuous_covariate_keys=continuous_covariate_keys,
            require_counts=cls._requires_counts,
        )
        fields = generator_fields(
            layer=layer,
            labels_key=labels_key,
            batch_key=batch_key,
            categorical_covariate_keys=categorical_covariate_keys,
            continuous_covariate_keys=continuous_covariate_keys,
            is_count_data=cls._requires_counts,
        )
        adata_manager = AnnDataManager(fields=fields, setup_method_args=setup_method_args)
        adata_manager.register_fields(adata, **kwargs)
        cls.register_manager(adata_manager)

    @classmethod
    def setup_mudata(cls, mdata: Any, *args: Any, **kwargs: Any) -> None:
        """Refused: this generator models one modality (an AnnData).

        Parameters
        ----------
        mdata
            A MuData.
        *args, **kwargs
            Ignored.
        """
        raise TypeError(
            f"{cls.__name__} models one modality: set up an AnnData with "
            f"{cls.__name__}.setup_anndata(mdata['rna'], ...), or use CFGen.setup_mudata for "
            "several modalities."
        )

    # ------------------------------------------------------ state from training data
    def _init_generative_state(self, adata: AnnData | None) -> None:
        """Fit the data state from ``adata`` (call last in ``__init__``).

        With ``adata=None`` (a model built from ``registry=``, or loading) nothing is fitted
        here: :meth:`load` restores the saved state, and ``train(datamodule=...)`` fits it
        from the data module's training loader first (:meth:`fit_data_state`).
        """
        self.data_state_fitted_ = False
        if adata is not None:
            self.fit_data_state(manager_source(self.adata_manager, matrix_keys=self._matrix_keys))

    def fit_data_state(self, source: BatchSource) -> None:
        """Fit everything the model needs from data in streaming passes over ``source``.

        The training-condition pool (category names of up to 50,000 cells, a uniform sample
        beyond that), the per-condition library-size model (count models), then the model's
        own state (:meth:`_fit_model_state`: gene sets, scalers, bins, statistics). Memory
        does not grow with the number of cells beyond the pool.

        Parameters
        ----------
        source
            A :data:`~scvi_gen.base.BatchSource`: :func:`~scvi_gen.base.manager_source` of a
            registered AnnData or :func:`~scvi_gen.base.loader_source` of a data loader.

        Examples
        --------
        >>> from scvi_gen.base import loader_source
        >>> model.fit_data_state(loader_source(datamodule.train_dataloader))
        """
        fields = self.condition_fields
        keys = [f.obs_key for f in fields if f.is_categorical]
        library = LibrarySizeFitter(keys) if self._requires_counts else None
        pool = ReservoirSample(_MAX_STORED_CONDITIONS, seed=0)
        n_cells = 0
        for batch in source():
            conditions = batch_conditions(batch, fields)
            n_cells += len(conditions)
            if library is not None:
                library.update(row_sums(batch), conditions)
            pool.update(conditions)
        if n_cells == 0:
            raise ValueError("The training data has no cells.")
        self.library_size_model_ = None if library is None else library.result().to_dict()
        self.training_conditions_ = pool.result()
        self._fit_model_state(source)
        self.data_state_fitted_ = True

    def _fit_model_state(self, source: BatchSource) -> None:
        """Fit the model's own data state (module buffers) from ``source``; none by default."""

    def _ensure_data_state(self, datamodule: Any) -> None:
        """Fit the data state from a data module's training loader when it was not fitted."""
        if getattr(self, "data_state_fitted_", False):
            return
        if datamodule is None:
            raise ValueError(
                f"This {type(self).__name__} was built without data (registry=...): pass "
                "train(datamodule=...) so that it can fit its data state from the loader."
            )
        logger.info("%s: fitting the data state from the data module.", type(self).__name__)
        # Lightning sets a data module up only inside fit(); its loaders are needed first.
        datamodule.setup("fit")
        self.fit_data_state(loader_source(datamodule.train_dataloader, self._matrix_keys))

    def _check_training_cells(
        self,
        datamodule: Any,
        *,
        train_size: float | None = None,
        validation_size: float | None = None,
        batch_size: int | None = 128,
        needs_validation: bool = False,
        min_train: int = 1,
        why: str = "",
        no_validation: str = "early_stopping=False",
    ) -> None:
        """Refuse to train on too few cells, before torch/Lightning fail obscurely.

        The split is computed as scvi-tools' :class:`~scvi.dataloaders.DataSplitter` does it
        (it also moves a last minibatch of 1-2 cells out of the training set when
        ``train_size`` is not given), so the check matches what training will see.

        Parameters
        ----------
        datamodule
            The ``datamodule`` argument of ``train``: the check is skipped with one (its
            loaders decide the split).
        train_size, validation_size, batch_size
            The split arguments passed to the data splitter (``None``: scvi-tools' defaults).
        needs_validation
            Whether training monitors validation cells (early stopping, best weights).
        min_train
            Fewest training cells the model can fit on.
        why
            Why the model needs ``min_train`` cells, for the message.
        no_validation
            The ``train`` arguments that turn validation off, for the message.
        """
        adata = getattr(self, "adata", None)
        if datamodule is not None or adata is None:
            return

        def split(n: int) -> tuple[int, int]:
            from scvi.dataloaders._data_splitting import validate_data_split

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # scvi-tools warns about small last batches
                return validate_data_split(
                    n,
                    0.9 if not train_size else float(train_size),
                    validation_size,
                    batch_size,
                    False,
                    not bool(train_size),
                )

        def enough(n: int) -> bool:
            n_train, n_val = split(n)
            return n_train >= min_train and (n_val >= 1 or not needs_validation)

        n_obs = int(adata.n_obs)
        if n_obs > 0 and enough(n_obs):
            return
        # Fewest cells that give a usable split with these arguments (small: <= ~30).
        needed = next((n for n in range(max(n_obs, 1), 1_000) if enough(n)), None)
        parts = ["a training split"]
        if needs_validation:
            parts.append(
                "a validation split (early stopping / restoring the best weights monitor "
                "the validation loss)"
            )
        at_least = f"at least {needed} cells" if needed else "validation cells"
        fix = "more cells" if needed else "train_size < 1 (or validation_size > 0)"
        raise ValueError(
            f"Cannot train {type(self).__name__} on {n_obs} cell(s): it needs {at_least} with "
            f"train_size={train_size}, validation_size={validation_size}, "
            f"batch_size={batch_size}, for {' and '.join(parts)}{why}. Pass {fix}"
            + (f", or {no_validation}" if needs_validation else "")
            + "."
        )

    @property
    def condition_fields(self) -> list[ConditionField]:
        """Conditions the model was set up with (labels, batch, covariates)."""
        return condition_fields(self.registry_)

    @property
    def library_size_model(self) -> LibrarySizeModel | None:
        """The per-condition library-size model fitted on the training cells."""
        state = getattr(self, "library_size_model_", None)
        return None if state is None else LibrarySizeModel.from_dict(state)

    # ------------------------------------------------------------ registry
    def _field_state(self, registry_key: str) -> dict[str, Any]:
        """The state registry of one registered field (empty when it is not registered)."""
        return dict(self.registry_["field_registries"].get(registry_key, {}).get(_STATE, {}))

    def _training_var_names(self) -> pd.Index:
        """Names of the registered genes, in the training order."""
        column_names = self._field_state(REGISTRY_KEYS.X_KEY)["column_names"]
        return pd.Index([str(v) for v in column_names])

    def _n_cats_per_cov(self) -> list[int]:
        """Number of categories of every registered categorical covariate."""
        n_cats = self._field_state(REGISTRY_KEYS.CAT_COVS_KEY).get("n_cats_per_key")
        return [int(n) for n in n_cats] if n_cats else []

    def _generated_var_names(self) -> pd.Index:
        """Names of the features the model generates (the training genes by default)."""
        return self._training_var_names()

    # ------------------------------------------------------------------ new data
    def _validate_anndata(self, adata: Any = None, copy_if_view: bool = True) -> Any:
        """scvi-tools' registration of ``adata``, after :meth:`_check_new_data` for new data.

        scvi-tools transfers the training setup to data a model has not seen without looking
        at its genes or values: genes in another order would silently be read as the training
        genes, and NaN or normalised values would reach the networks.
        """
        if adata is not None and adata is not self.adata:
            self._check_new_data(adata)
        return super()._validate_anndata(adata, copy_if_view=copy_if_view)

    def _check_new_data(self, adata: AnnData) -> None:
        """Training genes in the training order, condition columns and values as at setup."""
        require_anndata(adata)
        _check_var_names(adata, self._training_var_names().to_numpy(), "the model's genes")
        args = self.registry_["setup_args"]
        validate_setup_input(
            adata,
            layer=args.get("layer"),
            labels_key=args.get("labels_key"),
            batch_key=args.get("batch_key"),
            categorical_covariate_keys=args.get("categorical_covariate_keys"),
            continuous_covariate_keys=args.get("continuous_covariate_keys"),
            require_counts=self._requires_counts,
            new_data=True,
        )
        check_known_categories(adata.obs, self.condition_fields)

    # --------------------------------------------------------------- generation
    def _generate_chunk(
        self,
        conditions: dict[str, torch.Tensor],
        library: torch.Tensor | None,
        guidance: Any,
    ) -> torch.Tensor:
        """Generate one chunk of cells (implemented by every model).

        Parameters
        ----------
        conditions
            ``{registry_key: tensor}`` as built by :func:`~scvi_gen.base.plan_to_tensors`,
            on the model's device.
        library
            ``(n, 1)`` library sizes for count models, else ``None``.
        guidance
            The ``guidance`` argument of :meth:`generate`, passed through.

        Returns
        -------
        ``(n, n_genes)`` dense tensor: counts or log1p(CP10k) values.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement generation.")

    def _guidance_spec(self) -> tuple[list[str], dict[str, str], bool]:
        """Guided attributes, their aliases and whether each gets its own weight.

        No attribute (the default) means the model has no classifier-free guidance.
        """
        return [], {}, True

    def _check_guidance(self, guidance: Any) -> None:
        """Refuse a bad ``guidance`` before any work, with the rule shared by all models."""
        names, aliases, per_attribute = self._guidance_spec()
        check_guidance(
            guidance,
            names,
            model=type(self).__name__,
            aliases=aliases,
            per_attribute=per_attribute,
        )

    @torch.inference_mode()
    def generate(
        self,
        n_cells: int | None = None,
        *,
        labels: LabelsArg = None,
        covariates: Mapping[str, Any] | None = None,
        guidance: float | Mapping[str, float] | None = None,
        library_size: float | Sequence[float] | np.ndarray | None = None,
        batch_size: int | None = None,
        seed: int | None = None,
        out: str | Path | None = None,
        resume: bool = False,
        progress_bar: bool = True,
        accelerator: str | None = None,
        devices: Any = None,
        num_nodes: int | None = None,
        strategy: Any = None,
    ) -> AnnData:
        """Generate synthetic cells, in memory or streamed to an ``.h5ad`` / ``.zarr`` store.

        Parameters
        ----------
        n_cells
            Number of cells. Optional when ``labels`` is a dict or a list.
        labels
            One category (``n_cells`` cells of it), a list of categories (``n_cells`` spread
            evenly over them, or one cell per entry when ``n_cells`` is None), or
            ``{category: n}``. ``None`` draws labels with their training frequencies.
        covariates
            ``{obs_key: value}`` or ``{obs_key: values per cell}`` for registered batch and
            covariates. Unspecified ones are copied from random training cells of the same label.
        guidance
            Classifier-free guidance weight(s), one rule for every model: ``None`` (the
            model's default), a finite number >= 0 for all attributes, or
            ``{obs_key: number >= 0}`` over the registered categorical conditions (an unknown
            key is an error naming the known ones; DiscreteDiffusion takes one number only).
            A model without guidance (SCVIGenerator, the flows, the SDV baselines) accepts only
            ``None`` and refuses any other value.
        library_size
            Total counts per cell (one number or one per cell) instead of drawing them from the
            per-condition library-size model. Count models only.
        batch_size
            Cells per chunk (memory is bounded by one chunk), rounded up to a multiple of
            :data:`SEED_BLOCK` (256) cells; ``None`` uses the model's default (1,024 cells;
            256 for the flows, whose sampling keeps every layer's parameters).
        seed
            Random seed. Every block of 256 consecutive cells draws from its own stream
            derived from ``(seed, block)``, so the same seed gives the same cells whatever
            ``batch_size`` or resume point. ``None`` draws a seed, recorded in
            ``uns["scvi_gen"]["seed"]``.
        out
            Path of an ``.h5ad`` or ``.zarr`` store: every chunk is written as it is made
            (memory is one chunk plus the model, whatever the number of cells) and the store,
            marked complete at the end, is returned (``.h5ad`` opened backed). In a script
            Lightning runs on several devices, only global rank 0 writes it (the other ranks
            get ``None``); pass ``devices`` to generate on all of them.
        resume
            With ``out``: continue an interrupted run of the same call (same model, arguments
            and seed) from its last complete chunk; the finished store equals an
            uninterrupted one.
        progress_bar
            Show a progress bar over chunks.
        accelerator, devices, num_nodes, strategy
            Generate through Lightning's predict loop on these devices (as for
            :class:`lightning.pytorch.Trainer`; ``strategy`` defaults to ``"ddp"``, which
            relaunches the calling script once per extra device, as in training). Each
            process generates a contiguous run of chunks into its own shard; the shards are
            then merged into ``out`` (required). The cells equal a single-process run of the
            same call. Leave all four ``None`` to generate in this process.

        Returns
        -------
        A new AnnData with the training ``var_names``, the conditions in ``.obs``, counts (count
        models) or log1p(CP10k) values (continuous models, also in
        ``layers["log1p_norm"]``) in sparse ``.X``, and provenance in ``uns["scvi_gen"]``.

        Examples
        --------
        >>> syn = model.generate(labels={"B": 500, "NK": 200}, seed=0)
        >>> atlas = model.generate(1_000_000, seed=0, out="synthetic_atlas.h5ad")
        """
        self._check_if_trained(warn=True)
        chunk = _chunk_size(self._generation_chunk if batch_size is None else batch_size)
        seed = resolve_seed(seed)
        self._check_guidance(guidance)
        rng = np.random.default_rng(seed)
        plan = self._condition_plan(n_cells, labels, covariates, rng)
        n = len(plan)
        library = self._plan_library_sizes(plan, library_size, rng)
        tensors = plan_to_tensors(plan, self.condition_fields, n)
        var_names = self._generated_var_names()
        args = (plan, var_names, seed, labels, covariates, guidance)
        block_seeds = np.random.SeedSequence(seed).generate_state(max(1, -(-n // SEED_BLOCK)))
        job = self._generation_job(chunk, tensors, library, block_seeds, args)
        if any(v is not None for v in (accelerator, devices, num_nodes, strategy)):
            from scvi_gen.base._distributed_generation import generate_on_devices

            return generate_on_devices(
                self,
                job,
                out,
                resume=resume,
                accelerator=accelerator,
                devices=devices,
                num_nodes=num_nodes,
                strategy=strategy,
                progress_bar=progress_bar,
            )
        if out is not None and not writes_files(f"the generated store {out}"):
            return None  # in a script run on several devices, rank 0 writes the store
        sink = _MemorySink() if out is None else self._writer(out, resume, job)
        self.module.eval()
        starts = range(sink.n_written, n, chunk)
        # The store is closed however the run ends (a killed run resumes from its chunks).
        with sink:
            for start in tqdm(
                starts,
                total=len(starts),
                desc=f"Generating {n} cells",
                unit="chunk",
                disable=not progress_bar or len(starts) < 2,
            ):
                end = min(start + chunk, n)
                X = self._generate_cells(tensors, library, start, end, block_seeds, guidance)
                part = None if library is None else library[start:end]
                sink.append(X, self._output_layers(X, part))
                release_freed_memory()
            if out is not None:
                sink.finish()
        if out is not None:
            from scvi_gen.base._streaming import read_generated

            return read_generated(out)
        return self._assemble_output(*sink.result(len(var_names)), *args, library=library)

    def _generate_cells(
        self,
        tensors: Mapping[str, torch.Tensor],
        library: torch.Tensor | None,
        start: int,
        end: int,
        block_seeds: np.ndarray,
        guidance: Any,
    ) -> sp.csr_matrix:
        """Cells ``start:end`` (block-aligned ``start``), each seed block on its own stream."""
        blocks = []
        for block_start in range(start, end, SEED_BLOCK):
            block_end = min(block_start + SEED_BLOCK, end)
            conditions = {k: v[block_start:block_end].to(self.device) for k, v in tensors.items()}
            lib = None if library is None else library[block_start:block_end].to(self.device)
            with _seeded_torch(int(block_seeds[block_start // SEED_BLOCK]), self.device):
                values = self._generate_chunk(conditions, lib, guidance)
            blocks.append(self._to_output_block(values))
            del values
        return stack_csr_rows(blocks, blocks[0].shape[1])

    def _generation_job(
        self,
        chunk: int,
        tensors: Mapping[str, torch.Tensor],
        library: torch.Tensor | None,
        block_seeds: np.ndarray,
        args: tuple[Any, ...],
    ) -> Any:
        """The call as a :class:`~scvi_gen.base._distributed_generation.GenerationJob`."""
        from scvi_gen.base._distributed_generation import GenerationJob

        plan, var_names, seed, labels, covariates, guidance = args
        uns = {UNS_KEY: self._provenance(seed, labels, covariates, guidance)}
        return GenerationJob(
            n_cells=len(plan),
            chunk=chunk,
            tensors=tensors,
            library=library,
            block_seeds=block_seeds,
            guidance=guidance,
            obs=self._output_obs(plan, library),
            var=pd.DataFrame(index=var_names),
            uns=uns,
            layers=list(self._output_layers(sp.csr_matrix((0, len(var_names))), None)),
            key=_generation_key(self.module, uns[UNS_KEY], len(plan)),
        )

    def _writer(self, out: str | Path, resume: bool, job: Any) -> Any:
        """A :class:`~scvi_gen.base.GenerationWriter` for this call, keyed by its inputs."""
        from scvi_gen.base._streaming import GenerationWriter

        return GenerationWriter(
            out,
            obs=job.obs,
            var=job.var,
            uns=job.uns,
            layers=job.layers,
            resume=resume,
            key=job.key,
        )

    def _condition_plan(
        self,
        n_cells: int | None,
        labels: LabelsArg,
        covariates: Mapping[str, Any] | None,
        rng: np.random.Generator,
    ) -> pd.DataFrame:
        check_mapping_arg(covariates, "covariates", "{'batch': 'b1'}")
        fields = self.condition_fields
        label = labels_field(fields)
        training = self.training_conditions_
        weights = None
        if label is not None:
            weights = self._default_label_weights(training[label.obs_key], label.categories)
        per_cell = counts_per_label(n_cells, labels, label, weights, rng)
        return build_condition_plan(fields, training, per_cell, covariates, rng)

    def _default_label_weights(self, labels: pd.Series, categories: Sequence[Any]) -> np.ndarray:
        """Label mix of ``generate`` without ``labels``: the training frequencies."""
        freq = labels.value_counts()
        weights = np.asarray([freq.get(c, 0) for c in categories], dtype=float)
        return weights / weights.sum()

    def _plan_library_sizes(
        self,
        plan: pd.DataFrame,
        library_size: float | Sequence[float] | np.ndarray | None,
        rng: np.random.Generator,
    ) -> torch.Tensor | None:
        if self._output_kind != "counts" and library_size is None:
            return None
        if library_size is not None:
            sizes = per_cell_sizes(library_size, len(plan), "library_size")
        else:
            sizes = self.library_size_model.sample(plan, rng)
        return torch.as_tensor(np.array(sizes), dtype=torch.float32).unsqueeze(1)

    def _to_output_block(self, values: torch.Tensor | np.ndarray | sp.spmatrix) -> sp.csr_matrix:
        if sp.issparse(values):  # counts from the sparse NB sampler: integer already
            return sp.csr_matrix(values, dtype=np.float32)
        values = values.detach().cpu().numpy() if torch.is_tensor(values) else np.asarray(values)
        if self._output_kind == "counts":
            values = np.rint(values)
        return sp.csr_matrix(np.clip(values, 0, None).astype(np.float32))

    def _assemble_output(
        self,
        X: sp.csr_matrix,
        layers: Mapping[str, sp.csr_matrix],
        plan: pd.DataFrame,
        var_names: pd.Index,
        seed: int,
        labels: LabelsArg,
        covariates: Mapping[str, Any] | None,
        guidance: Any,
        library: torch.Tensor | None = None,
    ) -> AnnData:
        """The generated cells as an AnnData (in memory)."""
        adata = AnnData(
            X=X,
            obs=self._output_obs(plan, library),
            var=pd.DataFrame(index=var_names),
            layers=dict(layers),
        )
        adata.uns[UNS_KEY] = self._provenance(seed, labels, covariates, guidance)
        return adata

    def _output_obs(self, plan: pd.DataFrame, library: torch.Tensor | None) -> pd.DataFrame:
        """``obs`` of the generated cells: their conditions, named ``gen_0``, ``gen_1`` ..."""
        obs = plan.copy()
        obs.index = pd.Index([f"gen_{i}" for i in range(len(plan))])
        return obs

    def _output_layers(
        self, X: sp.csr_matrix, library: torch.Tensor | None
    ) -> dict[str, sp.csr_matrix]:
        """Layers of a chunk of generated cells (log1p values of continuous models)."""
        return {LOGNORM_LAYER: X.copy()} if self._output_kind == "lognorm" else {}

    def _provenance(
        self, seed: int, labels: LabelsArg, covariates: Mapping[str, Any] | None, guidance: Any
    ) -> dict[str, Any]:
        """``uns["scvi_gen"]`` of generated cells."""
        return {
            "model": type(self).__name__,
            "output": "counts" if self._output_kind == "counts" else "log1p_cp10k",
            "seed": seed,
            "seed_block": SEED_BLOCK,
            "params": json.dumps(to_jsonable(self.init_params_), default=str),
            "generate_args": json.dumps(
                to_jsonable({"labels": labels, "covariates": covariates, "guidance": guidance}),
                default=str,
            ),
        }

    # ------------------------------------------------------------- save / load
    def save(
        self,
        dir_path: str | Path,
        prefix: str | None = None,
        overwrite: bool = False,
        save_anndata: bool = False,
        **anndata_write_kwargs: Any,
    ) -> None:
        """Save the model: tensors as safetensors (no code), everything else as JSON.

        Parameters
        ----------
        dir_path
            Directory to write into.
        prefix
            Prefix of the file names.
        overwrite
            Overwrite an existing directory.
        save_anndata
            Also write the registered AnnData.
        **anndata_write_kwargs
            Passed to :meth:`anndata.AnnData.write_h5ad`.

        In a script that Lightning runs on several devices (``strategy="ddp"``), only global
        rank 0 writes; the other ranks' calls return without writing.

        Examples
        --------
        >>> model.save("my_model/")
        >>> model = scvi_gen.SCVIGenerator.load("my_model/")
        """
        if not writes_files(f"the model directory {dir_path}"):
            return
        path = Path(dir_path)
        if path.exists() and not overwrite:
            raise ValueError(f"{path} already exists; pass overwrite=True or another directory.")
        path.mkdir(parents=True, exist_ok=True)
        prefix = prefix or ""
        write_weights(self.module.state_dict(), weights_path(path, prefix))
        # load prefers the safetensors file; a stale older save next to it would only confuse.
        legacy_weights_path(path, prefix).unlink(missing_ok=True)
        # Public fitted state only: load refuses private names (see model_attrs).
        attrs = {
            k: v
            for k, v in self._get_user_attributes()
            if k.endswith("_") and not k.startswith("_")
        }
        meta = {
            "format": _META_FORMAT,
            "model": type(self).__name__,
            "var_names": np.asarray(self._field_state(REGISTRY_KEYS.X_KEY)["column_names"]),
            "attrs": attrs,
        }
        (path / f"{prefix}{META_FILE}").write_text(dumps(meta))
        if save_anndata:
            self.adata.write_h5ad(path / f"{prefix}{ADATA_FILE}", **anndata_write_kwargs)

    @classmethod
    def load(
        cls,
        dir_path: str | Path,
        adata: AnnData | None = None,
        device: str | torch.device = "cpu",
        prefix: str | None = None,
    ) -> GenerativeMixin:
        """Load a model saved with :meth:`save` without executing code from the files.

        The files are not trusted: the metadata is checked against a schema (format
        version, keys, registry, genes, constructor arguments, the type of every attribute)
        and the weights against the module the metadata builds (keys and shapes) before
        anything is set; weights are read from safetensors, or from an older save's
        ``model_state.pt`` with ``torch.load(weights_only=True)``.

        Parameters
        ----------
        dir_path
            Directory written by :meth:`save`.
        adata
            Optional data to attach; it is validated against the saved genes and setup.
        device
            Torch device to load onto (``"auto"``: GPU when available).
        prefix
            Prefix of the file names.

        Returns
        -------
        The model, in eval mode.

        Raises
        ------
        FileNotFoundError
            When ``dir_path`` holds no saved model.
        ValueError
            When a file is truncated, edited or does not match the model (the message names
            the file and the key); ``TypeError`` for a value of the wrong type.
        """
        prefix = prefix or ""
        # A bad device fails before any file is read.
        target = resolve_device(device)
        files = locate_model_files(dir_path, prefix)
        meta = read_meta(files.meta, _META_FORMAT)
        saved_class = _subclass_named(cls, meta["model"])
        if saved_class is not None and saved_class is not cls:
            # e.g. CFGen.load of a multimodal CFGen: the saved subclass loads itself.
            return saved_class.load(dir_path, adata=adata, device=device, prefix=prefix)
        if meta["model"] != cls.__name__:
            raise ValueError(
                f"{files.meta} holds a {meta['model']} model; load it with that class, "
                f"not {cls.__name__}."
            )
        attrs = dict(meta["attrs"])
        registry = check_registry(attrs.pop("registry_", None), files.meta)
        check_var_names(meta["var_names"], registry, files.meta)
        kwargs = init_kwargs(attrs.pop("init_params_", None), cls, files.meta)
        if adata is not None:
            _check_var_names(adata, meta["var_names"])
            # Before scvi-tools' transfer, whose error mentions an option load does not have.
            check_known_categories(adata.obs, condition_fields(registry))
            method = getattr(cls, registry["setup_method_name"])
            method(adata, source_registry=registry, **registry["setup_args"])
        try:
            model = cls(adata, registry=registry, **kwargs)
        except (TypeError, ValueError) as err:
            # Argument values are checked by the constructor; say which file they came from.
            raise type(err)(
                f"{files.meta}: building a {cls.__name__} from 'attrs.init_params_' failed "
                f"({err}); re-save the model."
            ) from err
        for name, value in model_attrs(attrs, model, files.meta).items():
            setattr(model, name, value)
        load_weights(model.module, read_weights(files.weights), files.weights)
        # Saved models hold their fitted data state (attributes and module buffers).
        model.data_state_fitted_ = True
        model.to_device(target)
        model.module.eval()
        return model


class _MemorySink:
    """Chunks of generated cells kept in memory (``generate`` without ``out``)."""

    n_written = 0

    def __enter__(self) -> _MemorySink:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def __init__(self) -> None:
        self._X: list[sp.csr_matrix] = []
        self._layers: dict[str, list[sp.csr_matrix]] = {}

    def append(self, X: sp.csr_matrix, layers: Mapping[str, sp.csr_matrix]) -> None:
        self._X.append(X)
        for name, block in layers.items():
            self._layers.setdefault(name, []).append(block)

    def result(self, n_features: int) -> tuple[sp.csr_matrix, dict[str, sp.csr_matrix]]:
        X = stack_csr_rows(self._X, n_features)
        layers = {k: stack_csr_rows(v, n_features) for k, v in self._layers.items()}
        return X, layers


def _chunk_size(batch_size: Any) -> int:
    """Cells per generation chunk: ``batch_size`` rounded up to whole seed blocks."""
    batch_size = _whole_number(batch_size, "batch_size", "a positive integer (or None)")
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer (or None), got {batch_size}.")
    return -(-batch_size // SEED_BLOCK) * SEED_BLOCK


def _whole_number(value: Any, name: str, form: str) -> int:
    """``value`` as an int: a real number with no fractional part (2.0 yes, 2.7 and True no).

    A string or ``True`` is a type error rather than being parsed or truncated, so that a
    mistyped argument never silently changes the cells drawn.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"`{name}` must be {form}, got {value!r} ({type(value).__name__}).")
    if not np.isfinite(value) or value != int(value):
        raise ValueError(f"`{name}` must be {form}, got {value!r}.")
    return int(value)


def _generation_key(module: torch.nn.Module, provenance: Mapping[str, Any], n: int) -> str:
    """A fingerprint of a generation call: the model's weights, its arguments and size."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    digest.update(json.dumps(dict(provenance), sort_keys=True, default=str).encode())
    digest.update(str(n).encode())
    return digest.hexdigest()


def _subclass_named(cls: type, name: Any) -> type | None:
    """``cls`` or its subclass called ``name`` (never imports anything named in a file)."""
    pending = [cls]
    while pending:
        candidate = pending.pop()
        if candidate.__name__ == name:
            return candidate
        pending.extend(candidate.__subclasses__())
    return None


def resolve_seed(seed: int | None) -> int:
    """The seed of a random operation: ``seed`` checked, or a fresh one when ``None``.

    Parameters
    ----------
    seed
        A non-negative integer or ``None``.

    Returns
    -------
    The seed to use (and record in the output's provenance).
    """
    if seed is None:
        return int(np.random.SeedSequence().entropy % 2**31)
    seed = _whole_number(seed, "seed", "a non-negative integer (or None)")
    if seed < 0:
        raise ValueError(f"`seed` must be a non-negative integer (or None), got {seed}.")
    return seed


def check_known_categories(obs: pd.DataFrame, fields: Sequence[ConditionField]) -> None:
    """Raise when a categorical condition column of new data has a category never trained on."""
    for field in fields:
        if not (field.is_categorical and field.obs_key in obs):
            continue
        known = {str(c) for c in field.categories}
        # Missing values get their own error from the setup checks.
        unknown = [v for v in obs[field.obs_key].dropna().unique() if not _spellings(v) & known]
        if unknown:
            field.encode([str(v) for v in unknown])  # raises, naming them


def _spellings(value: Any) -> set[str]:
    """How a category may have been written at setup: 0, 0.0 and "0" are one category."""
    names = {str(value)}
    if isinstance(value, int | float | np.integer | np.floating) and float(value).is_integer():
        names |= {str(int(value)), str(float(value))}
    return names


def _check_var_names(
    adata: AnnData, saved: np.ndarray, what: str = "the saved model", where: str = "this AnnData"
) -> None:
    """Raise unless ``adata`` has exactly the features ``saved``, in that order."""
    saved = pd.Index([str(v) for v in saved])
    given = pd.Index(adata.var_names.astype(str))
    if given.equals(saved):
        return
    missing = saved.difference(given)
    extra = given.difference(saved)
    if len(missing) == 0 and len(extra) == 0:
        problem = "the same genes in another order"
    else:
        problem = (
            f"{len(missing)} missing (e.g. {list(missing[:5])}), {len(extra)} extra "
            f"(e.g. {list(extra[:5])})"
        )
    hint = (
        "reorder/subset it with adata[:, model_genes].copy()"
        if len(missing) == 0
        else "the data lacks genes the model was trained on"
    )
    raise ValueError(
        f"The genes of {where} don't match {what} ({len(saved)} genes): {problem}; {hint}."
    )


@contextlib.contextmanager
def _seeded_torch(seed: int, device: torch.device | str) -> Iterator[None]:
    """Seed torch's global generators inside the block and restore them afterwards."""
    device = torch.device(device)
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
