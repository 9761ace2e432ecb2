"""MuData plumbing of the multimodal CFGen: registry keys, input checks and output assembly."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from typing import Any, Literal

import mudata as md
import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from mudata import MuData
from scvi import REGISTRY_KEYS

from scvi_gen._constants import UNS_KEY
from scvi_gen._matrix import get_matrix
from scvi_gen.base._validation import (
    check_categorical_complete,
    check_continuous_finite,
    check_new_values,
    check_not_empty,
    check_values,
)
from scvi_gen.model.cfgen._multimodal_module import (
    ModalitySpec,
)

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
    check_categorical_complete(mdata, categorical, new_data=new_data, owner="mdata")
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
