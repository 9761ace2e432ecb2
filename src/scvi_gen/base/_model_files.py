"""The files of a saved model and the schema that ``load`` checks them against.

A saved model is a directory with ``model_meta.json`` (JSON, written by
:func:`~scvi_gen.base.dumps`) and the weights: ``model.safetensors`` (a format that holds
tensors only) or, for models saved before it, ``model_state.pt`` (read with
``torch.load(weights_only=True)``). Nothing in these files is trusted: every helper here
checks one part of them and raises a ``ValueError`` (``TypeError`` for a value of the wrong
type) that names the file, the key and what to do, before any of it reaches the model.
"""

from __future__ import annotations

import inspect
import json
import numbers
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from scvi_gen._constants import META_FILE, STATE_FILE, WEIGHTS_FILE
from scvi_gen.base._serialization import loads

#: Top-level keys of ``model_meta.json``.
META_KEYS = frozenset({"format", "model", "var_names", "attrs"})
#: Setup methods a saved registry may name (``load`` calls it on new data).
SETUP_METHODS = ("setup_anndata", "setup_mudata")
#: Data state every generator fits before it can generate (``fit_data_state``), with the
#: kind of value it holds; count models also need their library-size model.
_DATA_STATE = {"training_conditions_": "frame", "library_size_model_": "mapping"}
#: scvi-tools' training record: ``None`` on a fresh model, this kind (or ``None``) once trained.
_TRAINING_RECORD = {
    "history_": "mapping",
    "train_indices_": "array",
    "validation_indices_": "array",
    "test_indices_": "array",
}
_UNSET = object()
_RESAVE = "re-save the model from its training session (model.save) or retrain it"


@dataclass(frozen=True)
class ModelFiles:
    """The files of one saved model.

    Attributes
    ----------
    meta
        ``model_meta.json``.
    weights
        The weights file found: ``model.safetensors`` or a legacy ``model_state.pt``.
    """

    meta: Path
    weights: Path


def weights_path(dir_path: str | Path, prefix: str = "") -> Path:
    """Where :meth:`~scvi_gen.base.GenerativeMixin.save` writes the weights."""
    return Path(dir_path) / f"{prefix}{WEIGHTS_FILE}"


def legacy_weights_path(dir_path: str | Path, prefix: str = "") -> Path:
    """Where models saved before safetensors hold their weights (``torch.save``)."""
    return Path(dir_path) / f"{prefix}{STATE_FILE}"


def meta_path(dir_path: str | Path, prefix: str = "") -> Path:
    """Where the JSON metadata of a saved model lives."""
    return Path(dir_path) / f"{prefix}{META_FILE}"


def locate_model_files(dir_path: str | Path, prefix: str = "") -> ModelFiles:
    """The metadata and weights files of a saved model (safetensors preferred).

    Raises
    ------
    FileNotFoundError
        When the metadata or both weights files are missing.
    """
    meta = meta_path(dir_path, prefix)
    candidates = (weights_path(dir_path, prefix), legacy_weights_path(dir_path, prefix))
    weights = next((p for p in candidates if p.exists()), None)
    if not meta.exists() or weights is None:
        raise FileNotFoundError(
            f"No saved scvi-gen model in {dir_path} (expected {meta.name} and "
            f"{candidates[0].name}, or {candidates[1].name} for older saves)."
        )
    return ModelFiles(meta, weights)


# ---------------------------------------------------------------- writing
def write_weights(state_dict: Mapping[str, Any], path: Path) -> None:
    """Write a module's state dict as safetensors (tensors only, no code).

    Parameters
    ----------
    state_dict
        ``module.state_dict()``.
    path
        The ``.safetensors`` file.

    Raises
    ------
    TypeError
        When the state dict holds something other than tensors (safetensors cannot keep it).
    """
    from safetensors.torch import save_file

    tensors = {}
    for key, value in state_dict.items():
        if not torch.is_tensor(value):
            raise TypeError(
                f"Cannot save {key!r} of the module's state dict ({type(value).__name__}): "
                "saved weights hold tensors only; keep other state in model attributes."
            )
        # A fresh contiguous copy: safetensors refuses views and tensors sharing storage
        # (tied or EMA weights), and the copy must not alias the live module.
        tensors[key] = value.detach().to("cpu", copy=True).contiguous()
    save_file(tensors, path, metadata={"format": "pt"})


# ---------------------------------------------------------------- reading
def read_meta(path: Path, expected_format: int) -> dict[str, Any]:
    """Parse ``model_meta.json`` and check its top level (format, keys, class name).

    Parameters
    ----------
    path
        The metadata file.
    expected_format
        The format version this version of scvi-gen writes and reads.

    Returns
    -------
    The decoded metadata.
    """
    try:
        meta = loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
        # Truncated or edited files: the JSON error alone ("line 1137 column 5") names no file.
        raise ValueError(
            f"{path} is not a valid saved scvi-gen model ({err}); {_RESAVE}."
        ) from err
    if not isinstance(meta, dict):
        raise ValueError(f"{path} is not a valid saved scvi-gen model (not a JSON object).")
    check_format(meta, path, expected_format)
    unknown = sorted(set(meta) - META_KEYS)
    missing = sorted(META_KEYS - set(meta))
    if unknown or missing:
        key = (unknown or missing)[0]
        problem = "unknown" if unknown else "missing"
        raise ValueError(
            f"{path}: {problem} key {key!r} (a saved model holds exactly "
            f"{sorted(META_KEYS)}); {_RESAVE}."
        )
    if not isinstance(meta["model"], str):
        raise TypeError(f"{path}: 'model' must name the model class, got {meta['model']!r}.")
    if not isinstance(meta["attrs"], dict):
        raise TypeError(f"{path}: 'attrs' must be a JSON object; {_RESAVE}.")
    return meta


def check_format(meta: Mapping[str, Any], path: Path, expected: int) -> None:
    """Refuse metadata of a format version this scvi-gen does not read."""
    found = meta.get("format")
    if isinstance(found, bool) or found != expected:
        raise ValueError(
            f"{path}: 'format' is {found!r}, this scvi-gen reads format {expected}; load it "
            "with the scvi-gen version that saved it, or re-save the model."
        )


def check_registry(registry: Any, path: Path) -> dict[str, Any]:
    """Check ``attrs.registry_``: a setup registry with a known setup method and fields."""
    if not isinstance(registry, dict):
        raise TypeError(
            f"{path}: 'attrs.registry_' must be a JSON object (the setup registry), got "
            f"{type(registry).__name__}; {_RESAVE}."
        )
    method = registry.get("setup_method_name")
    if method not in SETUP_METHODS:
        raise ValueError(
            f"{path}: 'attrs.registry_.setup_method_name' is {method!r}, expected one of "
            f"{list(SETUP_METHODS)}; {_RESAVE}."
        )
    for key in ("field_registries", "setup_args"):
        if not isinstance(registry.get(key), dict):
            raise TypeError(f"{path}: 'attrs.registry_.{key}' must be a JSON object; {_RESAVE}.")
    n_vars = registered_n_vars(registry, path)
    if not isinstance(n_vars, int) or isinstance(n_vars, bool) or n_vars < 1:
        raise ValueError(
            f"{path}: 'attrs.registry_.field_registries.X.state_registry.n_vars' must be a "
            f"positive integer, got {n_vars!r}; {_RESAVE}."
        )
    return registry


def registered_n_vars(registry: Mapping[str, Any], path: Path) -> Any:
    """The number of genes registered at setup (``X``'s ``n_vars``)."""
    try:
        return registry["field_registries"]["X"]["state_registry"]["n_vars"]
    except (KeyError, TypeError) as err:
        raise ValueError(
            f"{path}: 'attrs.registry_.field_registries.X.state_registry.n_vars' is missing "
            f"({err!r}); {_RESAVE}."
        ) from err


def check_var_names(var_names: Any, registry: Mapping[str, Any], path: Path) -> None:
    """Check ``var_names``: strings, one per registered gene, as registered at setup."""
    values = var_names.tolist() if isinstance(var_names, np.ndarray) else var_names
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise TypeError(f"{path}: 'var_names' must be a list of gene names; {_RESAVE}.")
    n_vars = registered_n_vars(registry, path)
    if len(values) != n_vars:
        raise ValueError(
            f"{path}: 'var_names' has {len(values)} genes but the model was set up with "
            f"{n_vars}; the file was edited or is corrupt: {_RESAVE}."
        )
    registered = registry["field_registries"]["X"]["state_registry"].get("column_names")
    if registered is not None and [str(v) for v in np.asarray(registered).tolist()] != values:
        raise ValueError(
            f"{path}: 'var_names' differs from the genes registered at setup "
            f"('attrs.registry_...X.state_registry.column_names'); {_RESAVE}."
        )


def init_kwargs(init_params: Any, cls: type, path: Path) -> dict[str, Any]:
    """The constructor arguments in ``attrs.init_params_``, each a parameter of ``cls``.

    Parameters
    ----------
    init_params
        ``{"non_kwargs": {...}, "kwargs": {var_keyword_name: {...}}}`` as scvi-tools records.
    cls
        The model class to build.
    path
        The metadata file (for messages).

    Returns
    -------
    Keyword arguments for ``cls(adata, registry=registry, **kwargs)``.
    """
    where = f"{path}: 'attrs.init_params_"
    if not isinstance(init_params, dict) or set(init_params) != {"kwargs", "non_kwargs"}:
        raise TypeError(f"{where}' must hold 'kwargs' and 'non_kwargs' objects; {_RESAVE}.")
    params = inspect.signature(cls.__init__).parameters
    named = {
        n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    } - {"self", "adata", "registry"}  # passed by load itself
    var_keyword = next((n for n, p in params.items() if p.kind == p.VAR_KEYWORD), None)
    non_kwargs, groups = init_params["non_kwargs"], init_params["kwargs"]
    if not isinstance(non_kwargs, dict) or not isinstance(groups, dict):
        raise TypeError(f"{where}' must hold 'kwargs' and 'non_kwargs' objects; {_RESAVE}.")
    for key in non_kwargs:
        if key not in named:
            raise ValueError(
                f"{where}.non_kwargs.{key}': {cls.__name__}() has no parameter {key!r} "
                f"(it takes {sorted(named)}); {_RESAVE}."
            )
    kwargs = dict(non_kwargs)
    for group, values in groups.items():
        # scvi-tools files the **kwargs of __init__ under their parameter's name.
        if group != var_keyword or not isinstance(values, dict):
            raise ValueError(
                f"{where}.kwargs.{group}': {cls.__name__}() takes no **{group}; {_RESAVE}."
            )
        for key, value in values.items():
            if not isinstance(key, str) or not key.isidentifier() or key in kwargs:
                raise ValueError(
                    f"{where}.kwargs.{group}.{key}': not a keyword {cls.__name__}() can take "
                    f"a second time; {_RESAVE}."
                )
            kwargs[key] = value
    return kwargs


def model_attrs(attrs: Mapping[str, Any], model: Any, path: Path) -> dict[str, Any]:
    """The saved attributes to set on a freshly built ``model``, each checked.

    Allowed are public names ending in ``_`` that are either instance attributes of the
    fresh model (their value's kind must match the fresh one, any kind where the fresh
    value is ``None``), the data state every generator fits (:data:`_DATA_STATE`), or the
    state the class declares it fits from data under names a fresh model lacks
    (:func:`declared_fitted_state`, e.g. the flows' ``genes_``), which must be present.
    Any other name (a method, property or class attribute, a private name, ``module``, or
    a name the model never has) is refused: a file must never replace the model's code or
    its network, nor add state the model would not have written. The allowed set comes from
    the freshly built model and its class, never from the file.

    Parameters
    ----------
    attrs
        ``meta["attrs"]`` without the keys checked on their own (registry, init arguments).
    model
        The model freshly built from the checked registry and init arguments.
    path
        The metadata file (for messages).

    Returns
    -------
    ``{name: value}`` to set.
    """
    fresh = vars(model)
    declared = declared_fitted_state(type(model))
    out = {}
    for name, value in attrs.items():
        check_attr_name(name, type(model), fresh, path)
        check_attr_known(name, type(model), fresh, declared, path)
        expected = _DATA_STATE.get(name, declared.get(name))
        if name in fresh and fresh[name] is not None:
            expected = value_kind(fresh[name])
        if name in _TRAINING_RECORD and value is not None:
            expected = _TRAINING_RECORD[name]
        if name in _DATA_STATE and value is None:
            # Null data state: check_data_state says whether this model may lack it.
            expected = None
        if expected is not None and value_kind(value) != expected:
            raise TypeError(
                f"{path}: 'attrs.{name}' must be {_describe(expected)} for a "
                f"{type(model).__name__}, got {_describe(value_kind(value))}; {_RESAVE}."
            )
        out[name] = value
    missing = sorted(set(declared) - set(out))
    if missing:
        raise ValueError(
            f"{path}: 'attrs.{missing[0]}' is missing, but a {type(model).__name__} fits it "
            f"from the data and needs it to generate; {_RESAVE}."
        )
    check_data_state(out, model, path)
    return out


def declared_fitted_state(cls: type) -> dict[str, str]:
    """``{name: kind}`` of the fitted state ``cls`` and its bases declare (``_fitted_state``)."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        out.update(vars(klass).get("_fitted_state", {}))
    return out


def check_attr_known(
    name: str, cls: type, fresh: Mapping[str, Any], declared: Mapping[str, str], path: Path
) -> None:
    """Refuse a saved attribute that the model neither has when built nor declares."""
    known = set(fresh) | set(_DATA_STATE) | set(_TRAINING_RECORD) | set(declared)
    if name not in known:
        saved = sorted(k for k in known if k.endswith("_") and not k.startswith("_"))
        raise ValueError(
            f"{path}: 'attrs.{name}' is not state a {cls.__name__} saves (it saves "
            f"{saved}); the file was edited: {_RESAVE}."
        )


def check_attr_name(name: Any, cls: type, fresh: Mapping[str, Any], path: Path) -> None:
    """Refuse an attribute name that could replace code, the module or private state."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"{path}: 'attrs' key {name!r} is not an attribute name; {_RESAVE}.")
    if name.startswith("_") or not name.endswith("_"):
        raise ValueError(
            f"{path}: 'attrs.{name}' is not fitted model state (saved attributes are public "
            f"names ending in '_'); the file was edited: {_RESAVE}."
        )
    if name not in fresh and inspect.getattr_static(cls, name, _UNSET) is not _UNSET:
        # Methods, properties and class attributes are code or configuration, not state.
        raise ValueError(
            f"{path}: 'attrs.{name}' would replace {cls.__name__}.{name}, which the class "
            f"defines; the file was edited: {_RESAVE}."
        )


def check_data_state(attrs: Mapping[str, Any], model: Any, path: Path) -> None:
    """Refuse a model without the data state it needs to generate (conditions, library)."""
    required = ["training_conditions_"]
    if type(model)._requires_counts:
        required.append("library_size_model_")
    for name in required:
        if attrs.get(name) is None:
            raise ValueError(
                f"{path}: 'attrs.{name}' is missing or null, but a {type(model).__name__} "
                f"needs it to generate; {_RESAVE}."
            )
    columns = [str(c) for c in attrs["training_conditions_"].columns]
    keys = [f.obs_key for f in model.condition_fields]
    if columns != keys:
        raise ValueError(
            f"{path}: 'attrs.training_conditions_' has columns {columns}, but the model was "
            f"set up with the conditions {keys}; {_RESAVE}."
        )
    library = attrs.get("library_size_model_")
    if library is not None:
        from scvi_gen.base._library_size import LibrarySizeModel

        try:
            LibrarySizeModel.from_dict(library)
        except (TypeError, ValueError, KeyError) as err:
            raise ValueError(
                f"{path}: 'attrs.library_size_model_' is not a library-size model ({err}); "
                f"{_RESAVE}."
            ) from err


_KIND_NAMES = {
    "none": "null",
    "bool": "a boolean",
    "number": "a number",
    "str": "a string",
    "mapping": "an object (dict)",
    "sequence": "a list",
    "array": "an array",
    "frame": "a data frame",
}


def _describe(kind: str) -> str:
    """How a kind of value reads in a message."""
    return _KIND_NAMES.get(kind, kind)


def value_kind(value: Any) -> str:
    """The JSON-level kind of a value (numbers of any type are one kind)."""
    if value is None:
        return "none"
    if isinstance(value, bool | np.bool_):
        return "bool"
    if isinstance(value, numbers.Number):
        return "number"
    if isinstance(value, str):
        return "str"
    if isinstance(value, Mapping):
        return "mapping"
    if isinstance(value, list | tuple):
        return "sequence"
    if isinstance(value, np.ndarray):
        return "array"
    if isinstance(value, pd.DataFrame):
        return "frame"
    return type(value).__name__


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """Read a weights file without executing anything from it.

    Parameters
    ----------
    path
        ``model.safetensors``, or a legacy ``model_state.pt`` (``weights_only=True``: a
        pickle payload is refused before it runs).

    Returns
    -------
    The tensors by state-dict key, on the CPU.
    """
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(path, device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"{path} holds more than tensors (a pickled object weights_only loading refuses, "
            f"which could run code); it was not loaded. Only load models from trusted "
            f"sources; {_RESAVE}."
        ) from err
    # torch and safetensors raise many types for truncated or foreign files.
    except Exception as err:
        raise ValueError(
            f"{path} is not a readable weights file ({type(err).__name__}: {err}); it may be "
            f"truncated or corrupt: {_RESAVE}."
        ) from err
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors; {_RESAVE}.")
    return state


def load_weights(module: torch.nn.Module, state: Mapping[str, torch.Tensor], path: Path) -> None:
    """Check ``state`` against ``module``, then load it into ``module``.

    The file must hold exactly the module's state-dict keys, with its shapes. A module
    whose sizes come from the data it was fitted on (the SDV baselines) has a
    ``resize_to(state)`` method: it checks that the saved shapes agree with each other and
    resizes the module to them first, then the same exact check applies.

    Parameters
    ----------
    module
        The module of the model built from the checked metadata.
    state
        The tensors read from ``path``.
    path
        The weights file (for messages).
    """
    resize = getattr(module, "resize_to", None)
    if callable(resize):
        try:
            resize(state)
        except (ValueError, KeyError, TypeError, RuntimeError) as err:
            raise ValueError(f"{path}: {err}; {_RESAVE}.") from err
    check_weights(state, module.state_dict(), path)
    try:
        module.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError, TypeError) as err:
        message = " ".join(str(err).split())  # torch's message spans lines
        raise ValueError(
            f"{path}: the weights do not fit the model ({message}); {_RESAVE}."
        ) from err


def check_weights(
    state: Mapping[str, torch.Tensor],
    expected: Mapping[str, torch.Tensor],
    path: Path,
) -> None:
    """Refuse weights whose keys or shapes differ from the module's.

    Parameters
    ----------
    state
        The tensors read from ``path``.
    expected
        ``module.state_dict()`` of the model built from the metadata.
    path
        The weights file (for messages).
    """
    missing = [k for k in expected if k not in state]
    if missing:
        raise ValueError(
            f"{path}: weight {missing[0]!r} is missing ({len(missing)} missing in all); the "
            f"file does not belong to this model's metadata: {_RESAVE}."
        )
    unexpected = [k for k in state if k not in expected]
    if unexpected:
        raise ValueError(
            f"{path}: unexpected weight {unexpected[0]!r} ({len(unexpected)} in all); the "
            f"file does not belong to this model's metadata: {_RESAVE}."
        )
    for key, tensor in expected.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise ValueError(
                f"{path}: weight {key!r} has shape {tuple(state[key].shape)}, the model "
                f"built from the metadata needs {tuple(tensor.shape)}; {_RESAVE}."
            )
