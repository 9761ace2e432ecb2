"""MuData support of CFGen: ``setup_mudata``, multimodal generation and cross-modal prediction."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Literal

import mudata as md
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from anndata import AnnData
from mudata import MuData
from scvi import REGISTRY_KEYS
from scvi.data import AnnDataManager, fields

from scvi_gen._constants import MDATA_FILE, UNS_KEY
from scvi_gen._matrix import get_matrix, iter_row_chunks
from scvi_gen.base._conditions import labels_field, observed_conditions
from scvi_gen.base._generative_mixin import (
    _check_var_names,
    _seeded_torch,
    check_known_categories,
)
from scvi_gen.base._library_size import per_cell_sizes
from scvi_gen.base._validation import (
    check_categorical_complete,
    check_continuous_finite,
    check_new_values,
    check_not_empty,
    check_values,
)
from scvi_gen.model.cfgen._library import JointLibrarySizeModel
from scvi_gen.model.cfgen._multimodal_module import (
    ModalitySpec,
    MultimodalCFGenModule,
)
from scvi_gen.model.cfgen._sampling import sample_nb_csr

logger = logging.getLogger(__name__)

AtacLikelihood = Literal["bernoulli", "poisson"]

#: Modality kinds in registration order; the first present one is registered as ``X``.
KINDS: tuple[str, ...] = ("rna", "protein", "atac")
LAYER_ARGS: dict[str, str] = {"rna": "rna_layer", "protein": "protein_layer", "atac": "atac_layer"}
#: Registry key of ATAC counts (RNA uses ``X``, proteins scvi-tools' ``proteins``).
ATAC_KEY = "atac"
_CONDITION_ARGS = (
    "labels_key",
    "batch_key",
    "categorical_covariate_keys",
    "continuous_covariate_keys",
)
_OUTPUT = {"nb": "counts", "poisson": "counts", "bernoulli": "binary"}
_DEFAULT_PREDICT_BATCH = 1024


def registry_keys(kinds: Sequence[str]) -> dict[str, str]:
    """Registry key of each present modality kind: the first is ``X``."""
    keys = {}
    for i, kind in enumerate(kinds):
        if i == 0:
            keys[kind] = REGISTRY_KEYS.X_KEY
        elif kind == "protein":
            keys[kind] = REGISTRY_KEYS.PROTEIN_EXP_KEY
        else:
            keys[kind] = ATAC_KEY
    return keys


def modality_specs(registry: Mapping[str, Any], atac_likelihood: str) -> list[ModalitySpec]:
    """The modalities a ``setup_mudata`` registry describes, in registration order.

    Parameters
    ----------
    registry
        A model registry made by :meth:`CFGen.setup_mudata`.
    atac_likelihood
        ``"bernoulli"`` or ``"poisson"``.

    Returns
    -------
    One :class:`ModalitySpec` per registered modality.
    """
    names = registry["setup_args"]["modalities"]
    kinds = [k for k in KINDS if names.get(LAYER_ARGS[k]) is not None]
    keys = registry_keys(kinds)
    specs = []
    for kind in kinds:
        state = registry["field_registries"][keys[kind]]["state_registry"]
        likelihood = atac_likelihood if kind == "atac" else "nb"
        specs.append(
            ModalitySpec(
                kind, names[LAYER_ARGS[kind]], keys[kind], len(state["column_names"]), likelihood
            )
        )
    return specs


def validate_mudata_input(
    mdata: MuData,
    layers: Mapping[str, tuple[str, str | None]],
    *,
    labels_key: str | None,
    batch_key: str | None,
    categorical_covariate_keys: Sequence[str] | None,
    continuous_covariate_keys: Sequence[str] | None,
    new_data: bool = False,
) -> None:
    """Check a MuData before registration; turn every problem into a clear error.

    Parameters
    ----------
    mdata
        The user's MuData (never modified).
    layers
        ``{kind: (modality name, layer or None)}`` of the modalities to register.
    labels_key, batch_key, categorical_covariate_keys, continuous_covariate_keys
        Condition columns, read from ``mdata.obs``.
    new_data
        ``mdata`` is given to a trained model, whose layers are fixed: errors point at putting
        the counts where the model reads them, not at setup arguments.
    """
    if not isinstance(mdata, MuData):
        raise TypeError(
            f"setup_mudata needs a MuData, got {type(mdata).__name__}; use setup_anndata for "
            "an AnnData."
        )
    available = list(mdata.mod)
    for kind, (name, layer) in layers.items():
        if name not in mdata.mod:
            raise KeyError(
                f"modalities[{LAYER_ARGS[kind]!r}]={name!r} is not a modality of the MuData "
                f"(available: {available})."
            )
        mod = mdata.mod[name]
        check_not_empty(mod, f"Modality {name!r}")
        check_cells_aligned(mdata, name)
        if new_data:
            check_new_values(mod, layer, require_counts=True, owner=f"mdata[{name!r}]")
            continue
        where = f"mdata[{name!r}].X" if layer is None else f"mdata[{name!r}].layers[{layer!r}]"
        try:
            matrix = get_matrix(mod, layer)
        except KeyError as err:
            raise KeyError(f"{where}: {err.args[0]}") from None
        fix = f"Pass `{LAYER_ARGS[kind]}=` naming a layer of mdata[{name!r}] with raw integer counts."
        check_values(matrix, require_counts=True, where=where, fix=fix)
    categorical = [labels_key, batch_key, *(categorical_covariate_keys or [])]
    for key in [*categorical, *(continuous_covariate_keys or [])]:
        if key is not None and key not in mdata.obs:
            holders = [n for n, m in mdata.mod.items() if key in m.obs]
            hint = (
                f"; it is in mdata[{holders[0]!r}].obs: copy it with "
                f"mdata.obs[{key!r}] = mdata[{holders[0]!r}].obs[{key!r}]"
                if holders
                else ""
            )
            raise KeyError(
                f"{key!r} is not a column of mdata.obs (columns: {list(mdata.obs.columns)}){hint}."
            )
    check_categorical_complete(mdata, categorical, new_data=new_data)
    check_continuous_finite(mdata, continuous_covariate_keys)


def check_cells_aligned(mdata: MuData, name: str) -> None:
    """Raise unless modality ``name`` holds exactly the MuData's cells, in the same order."""
    mod = mdata.mod[name]
    if mod.n_obs == mdata.n_obs and mod.obs_names.equals(mdata.obs_names):
        return
    other = next((k for k in mdata.mod if k != name), name)
    raise ValueError(
        f"Modality {name!r} does not hold the MuData's cells in the same order "
        f"({mod.n_obs} of {mdata.n_obs} cells). Keep the cells measured in every modality, in "
        f"one order, e.g. cells = mdata[{other!r}].obs_names.intersection(mdata[{name!r}]"
        ".obs_names), then mudata.MuData({k: a[cells].copy() for k, a in mdata.mod.items()})."
    )


def _quiet_mudata() -> Any:
    """Options that silence mudata 0.3's ``pull_on_update`` warning (0.4 has no option)."""
    try:
        return md.set_options(pull_on_update=False)
    except ValueError:
        return nullcontext()


def build_mudata(parts: Mapping[str, AnnData], obs: pd.DataFrame, uns: Mapping) -> MuData:
    """A MuData of modalities sharing ``obs`` (also kept in every modality)."""
    with _quiet_mudata():
        mdata = MuData(dict(parts))
    for column in obs.columns:
        mdata.obs[column] = obs[column].array
    mdata.uns[UNS_KEY] = dict(uns)
    return mdata


def _library_block(block: Any, likelihood: str) -> np.ndarray:
    values = (block > 0) if likelihood == "bernoulli" else block
    return np.asarray(values.sum(axis=1), dtype=np.float64).ravel()


def _dense(block: Any) -> np.ndarray:
    return np.asarray(block.toarray() if sp.issparse(block) else block, dtype=np.float32)


class MultimodalMixin:
    """MuData support for CFGen (mixed in before :class:`~scvi_gen.base.GenerativeMixin`).

    Provides :meth:`setup_mudata`, :meth:`predict_modality`, the multimodal parts of
    ``generate`` (joint library sizes, one AnnData per modality in a MuData) and MuData-aware
    ``save``/``load``. The model's methods check :attr:`is_multimodal`.
    """

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

    @property
    def is_multimodal(self) -> bool:
        """Whether the model was set up with :meth:`setup_mudata`."""
        return self.registry_.get("setup_method_name") == "setup_mudata"

    @property
    def modality_names(self) -> list[str]:
        """Names of the modelled modalities in the training MuData (empty if unimodal)."""
        return [s.name for s in self.module.modalities] if self.is_multimodal else []

    def _build_multimodal_module(
        self, atac_likelihood: str, modality_dropout: float, **kwargs: Any
    ) -> MultimodalCFGenModule:
        if atac_likelihood not in ("bernoulli", "poisson"):
            raise ValueError(
                f"Unknown atac_likelihood {atac_likelihood!r}; use 'bernoulli' or 'poisson'."
            )
        specs = modality_specs(self.registry_, atac_likelihood)
        return MultimodalCFGenModule(specs, modality_dropout=modality_dropout, **kwargs)

    def _modality(self, key: str) -> ModalitySpec:
        """A modality by its MuData name or its kind (``"rna"``, ``"protein"``, ``"atac"``)."""
        self._require_multimodal()
        for spec in self.module.modalities:
            if key in (spec.name, spec.kind):
                return spec
        raise KeyError(
            f"Unknown modality {key!r}; the model has {self.modality_names} "
            f"(kinds {[s.kind for s in self.module.modalities]})."
        )

    def _require_multimodal(self) -> None:
        if not self.is_multimodal:
            raise ValueError("This needs a model set up with setup_mudata (a multimodal model).")

    def _feature_names(self, spec: ModalitySpec) -> pd.Index:
        state = self.registry_["field_registries"][spec.registry_key]["state_registry"]
        return pd.Index([str(v) for v in state["column_names"]])

    # ------------------------------------------------------------ statistics
    def _training_libraries(self) -> np.ndarray:
        """``(n_cells, n_modalities)`` size factors of the registered cells."""
        columns = []
        for spec in self.module.modalities:
            matrix = self.adata_manager.get_from_registry(spec.registry_key)
            blocks = [_library_block(b, spec.likelihood) for b in iter_row_chunks(matrix)]
            columns.append(np.concatenate(blocks))
        return np.stack(columns, axis=1)

    def _fit_multimodal_statistics(self) -> np.ndarray:
        """Fit the joint library-size model; return the log libraries for the buffers."""
        libraries = self._training_libraries()
        fields_ = self.condition_fields
        label = labels_field(fields_)
        conditions = observed_conditions(self.adata, fields_)
        self.library_joint_model_ = JointLibrarySizeModel.fit(
            libraries, conditions, None if label is None else label.obs_key
        ).to_dict()
        return np.log(np.maximum(libraries, 1.0))

    # ------------------------------------------------------------ generation
    def _plan_library_sizes(
        self,
        plan: pd.DataFrame,
        library_size: Any,
        rng: np.random.Generator,
    ) -> torch.Tensor | None:
        if not self.is_multimodal:
            return super()._plan_library_sizes(plan, library_size, rng)
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
        if not self.is_multimodal:
            return super()._generated_var_names()
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
        plan: pd.DataFrame,
        var_names: pd.Index,
        seed: int,
        labels: Any,
        covariates: Mapping[str, Any] | None,
        guidance: Any,
    ) -> AnnData | MuData:
        if not self.is_multimodal:
            return super()._assemble_output(X, plan, var_names, seed, labels, covariates, guidance)
        parts = {}
        for spec, block in zip(self.module.modalities, self._split_columns(X)):
            part = super()._assemble_output(
                block, plan, self._feature_names(spec), seed, labels, covariates, guidance
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

    def _sample_modalities(
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

    def _modalities_to_mudata(self, X: sp.csr_matrix, obs: pd.DataFrame, uns: dict) -> MuData:
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
        progress_bar: bool = True,
    ) -> AnnData | MuData:
        """Generate synthetic cells: an AnnData, or a MuData for a multimodal model.

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
            Cells per chunk.
        seed
            Random seed; same seed and ``batch_size``, same cells.
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
        self._require_multimodal()
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
        seed = int(np.random.SeedSequence().entropy % 2**31) if seed is None else int(seed)
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
        """Save the model (tensors weights-only, the rest JSON); a MuData goes to ``.h5mu``.

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
        if not (self.is_multimodal and save_anndata):
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
        if not isinstance(adata, MuData):
            return super().load(dir_path, adata=adata, device=device, prefix=prefix)
        model = super().load(dir_path, adata=None, device=device, prefix=prefix)
        if not model.is_multimodal:
            raise ValueError("The saved model was set up with setup_anndata: pass an AnnData.")
        # Checks the MuData (_check_new_data), sets it up with the saved registry and
        # attaches it to the model.
        model._validate_anndata(adata)
        return model

    def _check_new_data(self, adata: Any) -> None:
        """A MuData with the training modalities, features, cells in one order and counts."""
        if not self.is_multimodal:
            super()._check_new_data(adata)
            return
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


def _training_features(part: AnnData, wanted: pd.Index, name: str) -> AnnData:
    """``part`` with the training features in training order; clear error if any is missing."""
    names = pd.Index(part.var_names.astype(str))
    if names.equals(wanted):
        return part
    missing = wanted.difference(names)
    if len(missing):
        raise ValueError(
            f"Modality {name!r} lacks {len(missing)} of the {len(wanted)} training features "
            f"(e.g. {list(missing[:5])}); pass the features the model was trained on."
        )
    return part[:, wanted]


def _check_modalities_arg(modalities: Mapping[str, str] | None) -> dict[str, str]:
    """Validate ``modalities`` of setup_mudata; return ``{layer argument: modality name}``."""
    example = "{'rna_layer': 'rna', 'protein_layer': 'prot', 'atac_layer': 'atac'}"
    if not modalities:
        raise ValueError(f"Pass `modalities` naming the modalities to model, e.g. {example}.")
    allowed = set(LAYER_ARGS.values())
    unknown = sorted(set(modalities) - allowed - set(_CONDITION_ARGS))
    if unknown:
        raise ValueError(
            f"Unknown keys {unknown} in `modalities`; use {sorted(allowed)}, e.g. {example}."
        )
    per_modality = sorted(set(modalities) & set(_CONDITION_ARGS))
    if per_modality:
        raise ValueError(
            f"CFGen reads conditions from mdata.obs; drop {per_modality} from `modalities` "
            "and put those columns in mdata.obs."
        )
    names = {k: v for k, v in modalities.items() if v is not None}
    if not names:
        raise ValueError(f"`modalities` names no modality; e.g. {example}.")
    repeated = sorted({v for v in names.values() if list(names.values()).count(v) > 1})
    if repeated:
        raise ValueError(
            f"`modalities` names {repeated} for more than one layer argument; every modality "
            f"is modelled once, with one likelihood: e.g. {example}."
        )
    return dict(names)
