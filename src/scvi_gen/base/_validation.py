"""Input checks that turn bad data into clear errors before anything is registered or trained."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

from scvi_gen._matrix import get_matrix, iter_row_chunks, layer_names

logger = logging.getLogger(__name__)


def _values(block: np.ndarray | sp.spmatrix) -> np.ndarray:
    return block.data if sp.issparse(block) else np.asarray(block)


def require_anndata(adata: Any, what: str = "adata") -> None:
    """Refuse anything but an AnnData (e.g. a bare matrix), saying what to pass."""
    if not isinstance(adata, AnnData):
        raise TypeError(
            f"`{what}` must be an AnnData set up like the training data, got "
            f"{type(adata).__name__}; wrap a matrix as anndata.AnnData(X, obs=..., var=...) "
            "with the training genes as var_names."
        )


def check_not_empty(adata: AnnData, what: str = "The AnnData") -> None:
    """Raise when ``adata`` has no cells or no genes; ``what`` names it in the error."""
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise ValueError(
            f"{what} is empty ({adata.n_obs} cells x {adata.n_vars} features); "
            "pass data with at least one cell and one feature."
        )


#: How to point a model that needs counts at them, for :func:`check_values`.
LAYER_FIX = "Pass `layer=` naming a layer with raw integer counts, e.g. adata.layers['counts']."


def check_values(
    matrix: np.ndarray | sp.spmatrix, *, require_counts: bool, where: str, fix: str = LAYER_FIX
) -> None:
    """Check for NaN/inf, and for non-negative integers when a model needs counts.

    Parameters
    ----------
    matrix
        The expression matrix.
    require_counts
        Whether values must be non-negative integers.
    where
        How to name the matrix in errors (``"adata.X"``, ``"adata.layers['counts']"``).
    fix
        The sentence telling the user where the raw counts should come from.
    """
    for block in iter_row_chunks(matrix):
        values = _values(block)
        if not np.all(np.isfinite(values)):
            raise ValueError(
                f"{where} contains NaN or infinite values; remove or impute them first."
            )
        if not require_counts:
            continue
        if np.any(values < 0):
            raise ValueError(
                f"{where} contains negative values, but this model needs raw counts. {fix}"
            )
        if np.any(values != np.round(values)):
            raise ValueError(
                f"{where} contains non-integer values, but this model needs raw counts "
                f"(it looks normalised or log-transformed). {fix}"
            )


def check_obs_keys(adata: AnnData, keys: Sequence[str | None], *, argument: str) -> None:
    """Raise a clear error when a key given to ``setup_anndata`` is not in ``adata.obs``."""
    for key in keys:
        if key is not None and key not in adata.obs:
            raise KeyError(
                f"{argument}={key!r} is not a column of adata.obs "
                f"(columns: {list(adata.obs.columns)})."
            )


def check_categorical_complete(
    adata: AnnData, keys: Sequence[str | None], *, new_data: bool = False, owner: str = "adata"
) -> None:
    """Raise when a categorical condition column has missing values.

    For data a trained model has not seen (``new_data``), a new category is no fix: only
    dropping the cells is suggested. ``owner`` names the object in errors (``"mdata"``).
    """
    for key in keys:
        if key is None:
            continue
        missing = int(adata.obs[key].isna().sum())
        if missing:
            column = f"{owner}.obs[{key!r}]"
            drop = f"Drop those cells ({owner} = {owner}[{column}.notna()].copy())"
            fix = (
                f"{drop}; the model knows only its training categories."
                if new_data
                else f"{drop} or fill them with an explicit category before setup."
            )
            raise ValueError(f"{column} has {missing} missing values. {fix}")


def check_not_view(adata: AnnData, what: str = "adata") -> None:
    """Refuse a view: setup registers fields on the object itself, which a view cannot hold.

    scvi-tools' own error ("Please run `adata = adata.copy()`") names neither the input nor
    why.
    """
    if getattr(adata, "is_view", False):
        raise ValueError(
            f"{what} is a view of another AnnData (e.g. adata[cells]); setup writes its "
            f"registry into the object it is given. Pass a copy: {what} = {what}.copy()."
        )


def check_mapping_arg(value: Any, name: str, example: str) -> None:
    """Refuse an argument that must be a dict (or ``None``) but is something else.

    Parameters
    ----------
    value
        The argument.
    name
        Its name in the error.
    example
        A short example of a valid value.
    """
    from collections.abc import Mapping

    if value is not None and not isinstance(value, Mapping):
        raise TypeError(
            f"`{name}` must be a dict such as {example} (or None), got "
            f"{type(value).__name__} {value!r}."
        )


def check_continuous_finite(adata: AnnData, keys: Sequence[str] | None) -> None:
    """Raise when a continuous covariate has NaN/inf or is not numeric."""
    for key in keys or ():
        values = np.asarray(adata.obs[key])
        if values.dtype.kind not in "biuf":
            raise TypeError(f"Continuous covariate adata.obs[{key!r}] must be numeric.")
        if not np.all(np.isfinite(values)):
            raise ValueError(f"Continuous covariate adata.obs[{key!r}] has NaN or inf values.")


def validate_setup_input(
    adata: AnnData,
    *,
    layer: str | None,
    labels_key: str | None,
    batch_key: str | None,
    categorical_covariate_keys: Sequence[str] | None,
    continuous_covariate_keys: Sequence[str] | None,
    require_counts: bool,
    new_data: bool = False,
) -> None:
    """Run every check a model's ``setup_anndata`` needs, before registration.

    Parameters
    ----------
    adata
        The user's data (never modified).
    layer
        Layer holding the expression values, or ``None`` for ``.X``.
    labels_key, batch_key, categorical_covariate_keys, continuous_covariate_keys
        The condition columns to check.
    require_counts
        Whether the model needs raw integer counts.
    new_data
        ``adata`` is given to a trained model, whose layer is fixed: errors point at putting
        the data where the model reads it, not at setup arguments.
    """
    check_not_empty(adata)
    if not new_data:
        # Data given to a trained model is copied by scvi-tools when it is a view.
        check_not_view(adata)
    categorical = [labels_key, batch_key, *(categorical_covariate_keys or [])]
    check_obs_keys(adata, [labels_key], argument="labels_key")
    check_obs_keys(adata, [batch_key], argument="batch_key")
    check_obs_keys(adata, list(categorical_covariate_keys or []), argument="categorical covariate")
    check_obs_keys(adata, list(continuous_covariate_keys or []), argument="continuous covariate")
    check_categorical_complete(adata, categorical, new_data=new_data)
    check_continuous_finite(adata, continuous_covariate_keys)
    if new_data:
        check_new_values(adata, layer, require_counts=require_counts)
        return
    where = "adata.X" if layer is None else f"adata.layers[{layer!r}]"
    check_values(get_matrix(adata, layer), require_counts=require_counts, where=where)


def check_new_values(
    adata: AnnData, layer: str | None, *, require_counts: bool, owner: str = "adata"
) -> Any:
    """Check the values of data given to a trained model, which reads them from ``layer``.

    Parameters
    ----------
    adata
        The new data (never modified).
    layer
        The layer the model was set up with (``None``: ``.X``).
    require_counts
        Whether the model needs raw integer counts.
    owner
        How to name ``adata`` in errors (``"adata"``, ``"mdata['rna']"``).

    Returns
    -------
    The checked matrix (read once: a view's values are copied on every access).
    """
    where = f"{owner}.X" if layer is None else f"{owner}.layers[{layer!r}]"
    # layer_names, not ``in adata.layers``: a CollectionAdapter's layers cannot test
    # membership.
    if layer is not None and layer not in (names := layer_names(adata)):
        raise KeyError(
            f"{owner} has no layer {layer!r}, where the model reads its counts (layers: "
            f"{names}); put them there, e.g. {owner}.layers[{layer!r}] = {owner}.X."
        )
    fix = f"Put the raw integer counts the model was trained on in {where}."
    matrix = get_matrix(adata, layer)
    check_values(matrix, require_counts=require_counts, where=where, fix=fix)
    return matrix
