"""The multimodal CFGen: one generator over several modalities of the same cells."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from anndata import AnnData
from mudata import MuData
from scvi import REGISTRY_KEYS
from scvi.data import AnnDataManager, fields

from scvi_gen._constants import MDATA_FILE, UNS_KEY
from scvi_gen.base._conditions import labels_field
from scvi_gen.base._data_state import Batch, BatchSource, batch_conditions
from scvi_gen.base._generative_mixin import (
    _check_var_names,
    _seeded_torch,
    check_known_categories,
    resolve_seed,
)
from scvi_gen.base._library_size import per_cell_sizes
from scvi_gen.base._model_files import meta_path
from scvi_gen.base._sampling import sample_nb_csr
from scvi_gen.base._validation import check_new_values
from scvi_gen.model.cfgen._library import JointLibrarySizeModel
from scvi_gen.model.cfgen._model import CFGen
from scvi_gen.model.cfgen._mudata import (
    _DEFAULT_PREDICT_BATCH,
    _OUTPUT,
    KINDS,
    LAYER_ARGS,
    _check_modalities_arg,
    _dense,
    _library_block,
    _training_features,
    build_mudata,
    check_cells_aligned,
    modality_specs,
    registry_keys,
    validate_mudata_input,
)
from scvi_gen.model.cfgen._multimodal_module import ModalitySpec, MultimodalCFGenModule

logger = logging.getLogger(__name__)


class MultimodalCFGen(CFGen):
    """CFGen on several modalities of the same cells (RNA, protein and/or ATAC in a MuData).

    Built by ``CFGen(mdata)`` for a MuData set up with :meth:`CFGen.setup_mudata`. Every
    modality gets its own encoder into the shared latent, its own decoder, likelihood (NB for
    RNA and protein, Bernoulli or Poisson for ATAC) and size factor; the flow and its guidance
    work in the shared latent exactly as for one modality. :meth:`generate` and
    :meth:`transfer` return a MuData, and :meth:`predict_modality` predicts one modality from
    others. Library sizes come from a joint (per-label) log-normal model over modalities.
    """

    # Fitted from the data (the joint library-size model): load accepts this saved name.
    _fitted_state = {"library_joint_model_": "mapping"}

    # ------------------------------------------------------------------ setup
    @classmethod
    def setup_mudata(
        cls,
        mdata: MuData,
        rna_layer: str | None = None,
        protein_layer: str | None = None,
        atac_layer: str | None = None,
        labels_key: str | None = None,
        batch_key: str | None = None,
        categorical_covariate_keys: list[str] | None = None,
        continuous_covariate_keys: list[str] | None = None,
        modalities: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        """Register a MuData (any subset of RNA, protein and ATAC counts) with the model class.

        Follows scvi-tools' MuData convention (as TOTALVI/MULTIVI): ``modalities`` maps the
        ``*_layer`` arguments to modality names; a layer argument of ``None`` means ``.X`` of
        that modality. The modalities named in ``modalities`` are the ones modelled.

        Parameters
        ----------
        mdata
            MuData whose modalities hold raw counts of the same cells, in the same order.
        rna_layer, protein_layer, atac_layer
            Layer of each modality with the counts (``None``: ``.X``).
        labels_key
            ``mdata.obs`` column with labels to condition on.
        batch_key
            ``mdata.obs`` column with batches.
        categorical_covariate_keys
            Further categorical ``mdata.obs`` columns to condition on.
        continuous_covariate_keys
            Continuous ``mdata.obs`` columns to condition on.
        modalities
            ``{"rna_layer": name, "protein_layer": name, "atac_layer": name}``, any non-empty
            subset.
        **kwargs
            Passed to :meth:`scvi.data.AnnDataManager.register_fields`.

        Examples
        --------
        >>> scvi_gen.CFGen.setup_mudata(
        ...     mdata, modalities={"rna_layer": "rna", "protein_layer": "prot"}
        ... )
        >>> model = scvi_gen.CFGen(mdata)
        """
        setup_method_args = cls._get_setup_method_args(**locals())
        names = _check_modalities_arg(modalities)
        given = {"rna": rna_layer, "protein": protein_layer, "atac": atac_layer}
        layers = {k: (names[LAYER_ARGS[k]], given[k]) for k in KINDS if LAYER_ARGS[k] in names}
        validate_mudata_input(
            mdata,
            layers,
            labels_key=labels_key,
            batch_key=batch_key,
            categorical_covariate_keys=categorical_covariate_keys,
            continuous_covariate_keys=continuous_covariate_keys,
        )
        keys = registry_keys(list(layers))
        mudata_fields = [
            fields.MuDataLayerField(
                keys[kind], layer, mod_key=name, is_count_data=True, mod_required=True
            )
            for kind, (name, layer) in layers.items()
        ]
        mudata_fields += [
            fields.MuDataCategoricalObsField(REGISTRY_KEYS.BATCH_KEY, batch_key, mod_key=None),
            fields.MuDataCategoricalObsField(REGISTRY_KEYS.LABELS_KEY, labels_key, mod_key=None),
            fields.MuDataCategoricalJointObsField(
                REGISTRY_KEYS.CAT_COVS_KEY, categorical_covariate_keys, mod_key=None
            ),
            fields.MuDataNumericalJointObsField(
                REGISTRY_KEYS.CONT_COVS_KEY, continuous_covariate_keys, mod_key=None
            ),
        ]
        adata_manager = AnnDataManager(fields=mudata_fields, setup_method_args=setup_method_args)
        adata_manager.register_fields(mdata, **kwargs)
        cls.register_manager(adata_manager)

    @classmethod
    def setup_anndata(cls, adata: AnnData, *args: Any, **kwargs: Any) -> None:
        """Refused: a multimodal CFGen is set up with :meth:`setup_mudata`."""
        raise TypeError(
            "MultimodalCFGen models a MuData: use CFGen.setup_mudata(mdata, modalities=...); "
            "for one modality use CFGen.setup_anndata(adata)."
        )

    @property
    def _matrix_keys(self) -> tuple[str, ...]:
        """Registry keys of every modality's counts (read by the data-state passes)."""
        return tuple(s.registry_key for s in self.module.modalities)

    @property
    def modality_names(self) -> list[str]:
        """Names of the modelled modalities in the training MuData (empty if unimodal)."""
        return [s.name for s in self.module.modalities]

    def _build_module(
        self, module_kwargs: dict[str, Any], atac_likelihood: str, modality_dropout: float
    ) -> MultimodalCFGenModule:
        if atac_likelihood not in ("bernoulli", "poisson"):
            raise ValueError(
                f"Unknown atac_likelihood {atac_likelihood!r}; use 'bernoulli' or 'poisson'."
            )
        specs = modality_specs(self.registry_, atac_likelihood)
        return MultimodalCFGenModule(specs, modality_dropout=modality_dropout, **module_kwargs)

    def _modality(self, key: str) -> ModalitySpec:
        """A modality by its MuData name or its kind (``"rna"``, ``"protein"``, ``"atac"``)."""
        for spec in self.module.modalities:
            if key in (spec.name, spec.kind):
                return spec
        raise KeyError(
            f"Unknown modality {key!r}; the model has {self.modality_names} "
            f"(kinds {[s.kind for s in self.module.modalities]})."
        )

    def _feature_names(self, spec: ModalitySpec) -> pd.Index:
        return pd.Index([str(v) for v in self._field_state(spec.registry_key)["column_names"]])

    # ------------------------------------------------------------ statistics
    def _log_libraries(self, batch: Batch) -> np.ndarray:
        """``(n, n_modalities)`` log size factors of a batch (the prior's library inputs)."""
        return np.log(np.maximum(self._libraries(batch), 1.0))

    def _libraries(self, batch: Batch) -> np.ndarray:
        return np.stack(
            [_library_block(batch[s.registry_key], s.likelihood) for s in self.module.modalities],
            axis=1,
        )

    def _fit_model_state(self, source: BatchSource) -> None:
        """The prior's library statistics, then the joint library-size model."""
        super()._fit_model_state(source)
        fields_ = self.condition_fields
        label = labels_field(fields_)
        # The joint model's per-label covariance needs each cell's size factors: they are
        # kept (n_cells x n_modalities numbers), not the counts.
        libraries, conditions = [], []
        for batch in source():
            libraries.append(self._libraries(batch))
            conditions.append(batch_conditions(batch, fields_))
        self.library_joint_model_ = JointLibrarySizeModel.fit(
            np.concatenate(libraries),
            pd.concat(conditions, ignore_index=True),
            None if label is None else label.obs_key,
        ).to_dict()

    # ------------------------------------------------------------ generation
    def _plan_library_sizes(
        self,
        plan: pd.DataFrame,
        library_size: Any,
        rng: np.random.Generator,
    ) -> torch.Tensor | None:
        fixed = self._fixed_libraries(library_size, len(plan))
        model = JointLibrarySizeModel.from_dict(self.library_joint_model_)
        sizes = model.sample(plan, rng, fixed)
        return torch.as_tensor(sizes, dtype=torch.float32)

    def _fixed_libraries(self, library_size: Any, n: int) -> dict[int, np.ndarray]:
        if library_size is None:
            return {}
        if not isinstance(library_size, Mapping):
            raise ValueError(
                "A multimodal model takes `library_size` as {modality: size(s)}, e.g. "
                f"{{{self.modality_names[0]!r}: 5000}}; the others are drawn given these."
            )
        order = [s.kind for s in self.module.modalities]
        fixed = {}
        for key, value in library_size.items():
            sizes = per_cell_sizes(value, n, f"library_size[{key!r}]")
            fixed[order.index(self._modality(key).kind)] = sizes
        return fixed

    def _generated_var_names(self) -> pd.Index:
        names = [self._feature_names(s) for s in self.module.modalities]
        return pd.Index(np.concatenate([n.to_numpy() for n in names]))

    def _split_columns(self, X: sp.csr_matrix) -> list[sp.csr_matrix]:
        """Columns of a hstacked multimodal matrix, one block per modality."""
        bounds = np.cumsum([0, *[s.n_features for s in self.module.modalities]])
        X = sp.csr_matrix(X)
        return [X[:, a:b] for a, b in zip(bounds[:-1], bounds[1:])]

    def _assemble_output(
        self,
        X: sp.csr_matrix,
        layers: Mapping[str, sp.csr_matrix],
        plan: pd.DataFrame,
        var_names: pd.Index,
        seed: int,
        labels: Any,
        covariates: Mapping[str, Any] | None,
        guidance: Any,
        library: torch.Tensor | None = None,
    ) -> MuData:
        parts = {}
        for spec, block in zip(self.module.modalities, self._split_columns(X)):
            part = super()._assemble_output(
                block, {}, plan, self._feature_names(spec), seed, labels, covariates, guidance
            )
            part.uns[UNS_KEY]["output"] = _OUTPUT[spec.likelihood]
            parts[spec.name] = part
        first = next(iter(parts.values()))
        uns = {
            **first.uns[UNS_KEY],
            "output": json.dumps({s.name: _OUTPUT[s.likelihood] for s in self.module.modalities}),
            "modalities": json.dumps({s.name: s.kind for s in self.module.modalities}),
        }
        return build_mudata(parts, first.obs, uns)

    def _decode_block(
        self,
        z: torch.Tensor,
        library: torch.Tensor,
        codes: torch.Tensor,
        return_mean: bool = False,
    ) -> sp.csr_matrix:
        """Decode latents into every modality and sample (or take the means); hstacked."""
        module = self.module
        params = module.decode_modalities(z, library, codes)
        blocks = []
        for spec in module.modalities:
            blocks.append(self._draw(spec, params[spec.kind], return_mean))
        return sp.hstack(blocks, format="csr")

    @staticmethod
    def _draw(
        spec: ModalitySpec, params: Mapping[str, torch.Tensor], return_mean: bool
    ) -> sp.csr_matrix:
        if return_mean:
            values = MultimodalCFGenModule.expected_values(spec, params)
            return sp.csr_matrix(values.cpu().numpy())
        if spec.likelihood == "nb":
            return sample_nb_csr(params["mu"], params["theta"])
        if spec.likelihood == "poisson":
            return sp.csr_matrix(torch.poisson(params["rate"]).cpu().numpy())
        return sp.csr_matrix(torch.bernoulli(params["probs"].clamp(0.0, 1.0)).cpu().numpy())

    def _transfer_output(
        self, X: sp.csr_matrix, obs: pd.DataFrame, uns: dict, var_names: pd.Index
    ) -> MuData:
        """The transferred cells as a MuData (the latent was encoded from all modalities)."""
        parts = {}
        for spec, block in zip(self.module.modalities, self._split_columns(X)):
            part = AnnData(
                X=block.astype(np.float32),
                obs=obs.copy(),
                var=pd.DataFrame(index=self._feature_names(spec)),
            )
            part.uns[UNS_KEY] = dict(uns)
            parts[spec.name] = part
        return build_mudata(parts, obs, uns)

    def generate(
        self,
        n_cells: int | None = None,
        *,
        labels: Any = None,
        covariates: Mapping[str, Any] | None = None,
        guidance: float | Mapping[str, float] | None = None,
        library_size: Any = None,
        batch_size: int | None = None,
        seed: int | None = None,
        out: Any = None,
        resume: bool = False,
        progress_bar: bool = True,
    ) -> MuData:
        """Generate synthetic cells of every modality as a MuData.

        Parameters
        ----------
        n_cells
            Number of cells. Optional when ``labels`` is a dict or a list.
        labels
            One category, a list of categories, or ``{category: n}``; ``None`` draws labels
            with their training frequencies.
        covariates
            ``{obs_key: value(s)}`` for registered batch and covariates.
        guidance
            Guidance weight(s): one number or ``{obs_key: weight}``.
        library_size
            Unimodal: total counts per cell (one number or one per cell). Multimodal:
            ``{modality: size(s)}`` (open peaks for a Bernoulli ATAC modality); modalities
            left out are drawn from the joint library-size model given the fixed ones.
        batch_size
            Cells per chunk (rounded up to whole seed blocks of 256 cells).
        seed
            Random seed; the same seed gives the same cells whatever ``batch_size``.
        out, resume
            Not available for several modalities (a clear error).
        progress_bar
            Show a progress bar over chunks.

        Returns
        -------
        Unimodal: AnnData of counts with the conditions in ``.obs``. Multimodal: MuData with
        one AnnData per modality (counts; binary peaks for Bernoulli ATAC), the same cells in
        the same order in every modality, the conditions in ``.obs`` of the MuData and of
        every modality, and provenance in ``uns["scvi_gen"]``.

        Examples
        --------
        >>> syn = model.generate(labels={"B": 500, "NK": 200}, seed=0)
        >>> syn["prot"]  # for a model set up with setup_mudata
        """
        if out is not None or resume:
            raise ValueError(
                "Streaming to disk (`out=`) is not available for several modalities yet: "
                "generate in memory and write with syn.write_h5mu(path), in parts for many cells."
            )
        return super().generate(
            n_cells,
            labels=labels,
            covariates=covariates,
            guidance=guidance,
            library_size=library_size,
            batch_size=batch_size,
            seed=seed,
            progress_bar=progress_bar,
        )

    # ------------------------------------------------------ cross-modal prediction
    @torch.inference_mode()
    def predict_modality(
        self,
        mdata: MuData | AnnData,
        from_: str | Sequence[str] = "rna",
        to: str = "prot",
        *,
        library_size: float | Sequence[float] | np.ndarray | None = None,
        return_mean: bool = True,
        batch_size: int | None = None,
        seed: int | None = None,
    ) -> AnnData:
        """Predict a modality of cells from other modalities (e.g. proteins from RNA).

        The source modalities are encoded into the shared latent (the encoders were trained
        to do this from any single modality) and the target's decoder is applied. The target's
        library size is predicted from the latent unless given.

        Parameters
        ----------
        mdata
            MuData holding the source modalities (under their training names), or an AnnData
            of the single source modality. Features must be the training features.
        from_
            Source modality name(s) or kind(s) (``"rna"``, ``"protein"``, ``"atac"``).
        to
            Target modality name or kind.
        library_size
            Target library size per cell (one number or one per cell); ``None`` predicts it.
        return_mean
            Return expected counts (NB/Poisson means, Bernoulli probabilities); ``False``
            draws counts (binary peaks for a Bernoulli ATAC model).
        batch_size
            Cells per minibatch.
        seed
            Seed of the draws.

        Returns
        -------
        AnnData with the input's ``obs``, the target's features in ``var`` and the
        predictions in sparse ``.X``; provenance in ``uns["scvi_gen"]``.

        Examples
        --------
        >>> proteins = model.predict_modality(mdata_rna_only, from_="rna", to="prot")
        """
        if not self.autoencoder_trained_:
            raise RuntimeError("Train the model first: model.train().")
        sources = [from_] if isinstance(from_, str) else list(from_)
        source_specs = [self._modality(s) for s in sources]
        target = self._modality(to)
        if target in source_specs:
            raise ValueError(f"Cannot predict {to!r} from itself.")
        matrices, obs = self._source_matrices(mdata, source_specs)
        n = len(obs)
        fixed = None if library_size is None else per_cell_sizes(library_size, n, "library_size")
        seed = resolve_seed(seed)
        position = [s.kind for s in self.module.modalities].index(target.kind)
        module = self.module
        module.eval()
        device = module.latent_mean.device
        step = int(batch_size or _DEFAULT_PREDICT_BATCH)
        codes = torch.zeros(n, len(self.attribute_fields), dtype=torch.long)
        codes = self._codes_from_obs(obs, codes)
        blocks = []
        with _seeded_torch(seed, device):
            for start in range(0, n, step):
                end = min(start + step, n)
                xs = {
                    spec.kind: torch.as_tensor(_dense(m[start:end]), device=device)
                    for spec, m in zip(source_specs, matrices)
                }
                z = module.encode_modalities(xs)
                if fixed is None:
                    library = torch.exp(module.predict_log_library(z)[:, position : position + 1])
                else:
                    library = torch.as_tensor(fixed[start:end, None], dtype=z.dtype, device=device)
                params = module.decode_modality(
                    target.kind, z, library, codes[start:end].to(device)
                )
                blocks.append(self._draw(target, params, return_mean))
        X = sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix((0, target.n_features))
        out = AnnData(
            X=X.astype(np.float32),
            obs=obs,
            var=pd.DataFrame(index=self._feature_names(target)),
        )
        out.uns[UNS_KEY] = {
            "model": type(self).__name__,
            "operation": "predict_modality",
            "from": json.dumps([s.name for s in source_specs]),
            "to": target.name,
            "output": "mean" if return_mean else _OUTPUT[target.likelihood],
            "seed": seed,
        }
        return out

    def _source_matrices(
        self, data: MuData | AnnData, specs: Sequence[ModalitySpec]
    ) -> tuple[list[Any], pd.DataFrame]:
        """Count matrices of the source modalities (training feature order) and the cells."""
        if isinstance(data, MuData):
            missing = [s.name for s in specs if s.name not in data.mod]
            if missing:
                raise KeyError(
                    f"Modalities {missing} are not in the MuData (available: {list(data.mod)})."
                )
            for spec in specs:
                check_cells_aligned(data, spec.name)
            parts = [data.mod[s.name] for s in specs]
            obs = data.obs
        elif isinstance(data, AnnData):
            if len(specs) != 1:
                raise ValueError("Pass a MuData to predict from several modalities.")
            parts, obs = [data], data.obs
        else:
            raise TypeError(f"Expected a MuData or AnnData, got {type(data).__name__}.")
        matrices = []
        for spec, part in zip(specs, parts):
            if part.n_obs != len(obs):
                raise ValueError(f"Modality {spec.name!r} has {part.n_obs} cells, not {len(obs)}.")
            part = _training_features(part, self._feature_names(spec), spec.name)
            layer = self.registry_["setup_args"].get(LAYER_ARGS[spec.kind])
            owner = f"mdata[{spec.name!r}]" if isinstance(data, MuData) else "adata"
            matrices.append(check_new_values(part, layer, require_counts=True, owner=owner))
        obs = obs.loc[:, [c for c in obs.columns if not str(c).startswith("_scvi")]].copy()
        return matrices, obs

    def _codes_from_obs(self, obs: pd.DataFrame, codes: torch.Tensor) -> torch.Tensor:
        """Condition codes where ``obs`` has the columns (only per-category dispersions use them)."""
        for i, field in enumerate(self.attribute_fields):
            if field.obs_key in obs:
                values = obs[field.obs_key].astype(str).to_numpy()
                known = np.isin(values, list(field.categories))
                encoded = np.zeros(len(values), dtype=np.int64)
                encoded[known] = field.encode(values[known])
                codes[:, i] = torch.as_tensor(encoded)
        return codes

    # ------------------------------------------------------------- save / load
    def save(
        self,
        dir_path: str | Path,
        prefix: str | None = None,
        overwrite: bool = False,
        save_anndata: bool = False,
        **anndata_write_kwargs: Any,
    ) -> None:
        """Save the model (tensors as safetensors, the rest JSON); a MuData goes to ``.h5mu``.

        Parameters
        ----------
        dir_path
            Directory to write into.
        prefix
            Prefix of the file names.
        overwrite
            Overwrite an existing directory.
        save_anndata
            Also write the registered AnnData (``.h5ad``) or MuData (``.h5mu``).
        **anndata_write_kwargs
            Passed to the writer.

        Examples
        --------
        >>> model.save("my_model/")
        """
        if not save_anndata:
            super().save(dir_path, prefix, overwrite, save_anndata, **anndata_write_kwargs)
            return
        super().save(dir_path, prefix, overwrite, save_anndata=False)
        self.adata.write_h5mu(Path(dir_path) / f"{prefix or ''}{MDATA_FILE}")

    @classmethod
    def load(
        cls,
        dir_path: str | Path,
        adata: AnnData | MuData | None = None,
        device: str | torch.device = "cpu",
        prefix: str | None = None,
    ) -> Any:
        """Load a saved model without executing code from the files; ``adata`` may be a MuData.

        Parameters
        ----------
        dir_path
            Directory written by :meth:`save`.
        adata
            Optional AnnData (unimodal model) or MuData (multimodal model) to attach; its
            modalities and features are checked against the saved ones.
        device
            Torch device to load onto.
        prefix
            Prefix of the file names.

        Returns
        -------
        The model, in eval mode.

        Examples
        --------
        >>> model = scvi_gen.CFGen.load("my_model/", adata=mdata)
        """
        if adata is not None and not isinstance(adata, MuData):
            raise TypeError(
                f"The saved model was set up with setup_mudata: pass a MuData, got "
                f"{type(adata).__name__}."
            )
        model = super().load(dir_path, adata=None, device=device, prefix=prefix)
        _check_joint_library(model, meta_path(dir_path, prefix or ""))
        if adata is None:
            return model
        # Checks the MuData (_check_new_data), sets it up with the saved registry and
        # attaches it to the model.
        model._validate_anndata(adata)
        return model

    def _check_new_data(self, adata: Any) -> None:
        """A MuData with the training modalities, features, cells in one order and counts."""
        if not isinstance(adata, MuData):
            raise TypeError(
                f"This CFGen was set up with setup_mudata: pass a MuData with the modalities "
                f"{self.modality_names}, got {type(adata).__name__}."
            )
        for spec in self.module.modalities:
            if spec.name not in adata.mod:
                raise KeyError(
                    f"The model needs modality {spec.name!r}; the MuData has {list(adata.mod)}."
                )
            _check_var_names(
                adata.mod[spec.name],
                self._feature_names(spec).to_numpy(),
                "the model's features",
                f"modality {spec.name!r}",
            )
        args = self.registry_["setup_args"]
        validate_mudata_input(
            adata,
            {s.kind: (s.name, args.get(LAYER_ARGS[s.kind])) for s in self.module.modalities},
            labels_key=args.get("labels_key"),
            batch_key=args.get("batch_key"),
            categorical_covariate_keys=args.get("categorical_covariate_keys"),
            continuous_covariate_keys=args.get("continuous_covariate_keys"),
            new_data=True,
        )
        check_known_categories(adata.obs, self.condition_fields)

    # ----------------------------------------------- unimodal-only operations
    def posterior_predictive_sample(self, *args: Any, **kwargs: Any) -> Any:
        """Not available for several modalities: use :meth:`transfer` on the MuData."""
        raise NotImplementedError(
            "posterior_predictive_sample is not available for a multimodal CFGen; use "
            "model.transfer(mdata)."
        )

    def impute(self, *args: Any, **kwargs: Any) -> Any:
        """Not available for several modalities: use :meth:`predict_modality`."""
        raise NotImplementedError(
            "impute is not available for a multimodal CFGen; use model.predict_modality(...)."
        )


def _check_joint_library(model: MultimodalCFGen, path: Path) -> None:
    """Refuse a saved multimodal model whose joint library-size model is missing or invalid."""
    state = getattr(model, "library_joint_model_", None)
    if not isinstance(state, Mapping):
        raise ValueError(
            f"{path}: 'attrs.library_joint_model_' is missing or not an object, but a "
            "multimodal CFGen needs it to generate; re-save the model or retrain it."
        )
    try:
        JointLibrarySizeModel.from_dict(state)
    except (TypeError, ValueError, KeyError) as err:
        raise ValueError(
            f"{path}: 'attrs.library_joint_model_' is not a joint library-size model ({err}); "
            "re-save the model or retrain it."
        ) from err
