"""Condition fields of a registered model and the per-cell condition plan used by ``generate``."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from scvi import REGISTRY_KEYS

from scvi_gen._constants import SCVI_DEFAULT_BATCH, SCVI_DEFAULT_LABELS

logger = logging.getLogger(__name__)

LabelsArg = str | Sequence[str] | Mapping[str, int] | None

_FIELDS = "field_registries"
_STATE = "state_registry"


@dataclass(frozen=True)
class ConditionField:
    """One registered condition: a label, a batch, or one categorical/continuous covariate.

    Attributes
    ----------
    obs_key
        The user's ``.obs`` column.
    registry_key
        The scvi-tools registry key whose tensor carries this condition.
    column
        Column inside a joint covariate tensor (0 for labels and batch).
    categories
        Category names in code order; ``None`` for a continuous covariate.
    """

    obs_key: str
    registry_key: str
    column: int
    categories: tuple[str, ...] | None

    @property
    def is_categorical(self) -> bool:
        """Whether the condition is categorical."""
        return self.categories is not None

    def encode(self, values: Sequence[Any]) -> np.ndarray:
        """Map category names to integer codes, with a clear error for an unknown one."""
        lookup = {str(c): i for i, c in enumerate(self.categories)}
        unknown = sorted({str(v) for v in values} - set(lookup))
        if unknown:
            raise ValueError(
                f"Unknown {self.obs_key!r} categories {unknown}; the model was trained on "
                f"{list(self.categories)}."
            )
        return np.asarray([lookup[str(v)] for v in values], dtype=np.int64)


def condition_fields(registry: Mapping[str, Any]) -> list[ConditionField]:
    """List the conditions a model was set up with, labels first.

    Parameters
    ----------
    registry
        The model's scvi-tools registry (``model.registry_``).

    Returns
    -------
    Condition fields in a fixed order: labels, batch, categorical covariates, continuous ones.
    """
    fields = registry[_FIELDS]
    out: list[ConditionField] = []
    for key, default in (
        (REGISTRY_KEYS.LABELS_KEY, SCVI_DEFAULT_LABELS),
        (REGISTRY_KEYS.BATCH_KEY, SCVI_DEFAULT_BATCH),
    ):
        state = fields.get(key, {}).get(_STATE, {})
        if state and state.get("original_key") not in (None, default):
            categories = tuple(str(c) for c in state["categorical_mapping"])
            out.append(ConditionField(state["original_key"], key, 0, categories))
    cat_state = fields.get(REGISTRY_KEYS.CAT_COVS_KEY, {}).get(_STATE, {})
    for i, obs_key in enumerate(cat_state.get("field_keys", []) or []):
        categories = tuple(str(c) for c in cat_state["mappings"][obs_key])
        out.append(ConditionField(obs_key, REGISTRY_KEYS.CAT_COVS_KEY, i, categories))
    cont_state = fields.get(REGISTRY_KEYS.CONT_COVS_KEY, {}).get(_STATE, {})
    for i, obs_key in enumerate(cont_state.get("columns", []) or []):
        out.append(ConditionField(str(obs_key), REGISTRY_KEYS.CONT_COVS_KEY, i, None))
    return out


def labels_field(fields: Sequence[ConditionField]) -> ConditionField | None:
    """Return the labels field, or ``None`` when no ``labels_key`` was registered."""
    return next((f for f in fields if f.registry_key == REGISTRY_KEYS.LABELS_KEY), None)


def counts_per_label(
    n_cells: int | None,
    labels: LabelsArg,
    field: ConditionField | None,
    weights: np.ndarray,
    rng: np.random.Generator,
) -> list[str | None]:
    """Expand the ``labels`` argument of ``generate`` into one label per cell.

    Parameters
    ----------
    n_cells
        Total number of cells, when not implied by ``labels``.
    labels
        ``None`` (labels drawn with training frequencies), one category (``n_cells`` of it),
        a list (``n_cells`` spread evenly over the listed categories, or one cell per entry
        when ``n_cells`` is None) or ``{category: n}``.
    field
        The labels field (``None`` when the model has no labels).
    weights
        Training frequency of each category, used when ``labels`` is None.
    rng
        Random generator for drawing labels when ``labels`` is None.

    Returns
    -------
    A list with one label (or ``None``) per generated cell.
    """
    if labels is not None and field is None:
        raise ValueError(
            "`labels` was given but the model was set up without `labels_key`; call "
            "setup_anndata(adata, labels_key=...) before training to generate by label."
        )
    if n_cells is not None:
        n_cells = _cell_count(n_cells, "`n_cells`")
    if isinstance(labels, Mapping):
        counts = {name: _cell_count(n, f"labels[{name!r}]") for name, n in labels.items()}
        if n_cells is not None and n_cells != sum(counts.values()):
            raise ValueError("`n_cells` disagrees with the sum of the `labels` counts; omit it.")
        plan = [str(name) for name, n in counts.items() for _ in range(n)]
    elif isinstance(labels, str):
        plan = [labels] * _require_n_cells(n_cells)
    elif labels is not None:
        names = _label_list(labels)
        if n_cells is None:
            plan = names
        else:
            base, extra = divmod(n_cells, len(names))
            plan = [n for i, n in enumerate(names) for _ in range(base + (i < extra))]
    elif field is None:
        plan = [None] * _require_n_cells(n_cells)
    else:
        n = _require_n_cells(n_cells)
        codes = rng.choice(len(field.categories), size=n, p=weights)
        plan = [field.categories[c] for c in np.sort(codes)]
    if field is not None and plan and plan[0] is not None:
        field.encode(sorted(set(plan)))  # raises on an unknown label
    return plan


_LABEL_FORMS = (
    "one category (a str), a non-empty list of categories or {category: number of cells}"
)


def _label_list(labels: Any) -> list[str]:
    """The categories of a list-like ``labels`` argument (never a bare number, never empty)."""
    if isinstance(labels, bytes) or not isinstance(labels, Sequence | np.ndarray | pd.Index):
        if not isinstance(labels, pd.Series):
            raise TypeError(
                f"`labels` must be {_LABEL_FORMS}, got {labels!r} ({type(labels).__name__})."
            )
    names = [str(v) for v in labels]
    if not names:
        # An empty list would spread n_cells over no category (a division by zero).
        raise ValueError(f"`labels` is empty; pass {_LABEL_FORMS}, or labels=None.")
    return names


def _require_n_cells(n_cells: int | None) -> int:
    if n_cells is None:
        raise ValueError("Pass `n_cells`, or `labels` as {category: n} or a list of labels.")
    return n_cells


def _cell_count(value: Any, name: str) -> int:
    """A number of cells: a non-negative whole number (2.0 is fine, 2.7 is refused)."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"{name} must be a whole number of cells, got {value!r}.")
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a non-negative number of cells, got {value}.")
    if value != int(value):
        raise ValueError(f"{name} must be a whole number of cells, got {value}.")
    return int(value)


def build_condition_plan(
    fields: Sequence[ConditionField],
    training: pd.DataFrame,
    per_cell_labels: Sequence[str | None],
    covariates: Mapping[str, Any] | None,
    rng: np.random.Generator,
) -> pd.DataFrame:
    """Assign every generated cell a full set of conditions.

    Conditions the user fixed (label, ``covariates``) are kept; the others are copied from a
    training cell with the same label drawn at random, so that unspecified covariates follow
    their training distribution given the label. A label/covariate combination never seen in
    training is allowed (compositional generation).

    Parameters
    ----------
    fields
        The model's condition fields.
    training
        Conditions of the training cells (``training_conditions_``, fitted by
        :func:`~scvi_gen.base._data_state.batch_conditions`).
    per_cell_labels
        One label per generated cell.
    covariates
        ``{obs_key: value}`` (all cells) or ``{obs_key: sequence}`` (one value per cell).
    rng
        Random generator.

    Returns
    -------
    A data frame with one row per generated cell and one column per condition field.
    """
    n = len(per_cell_labels)
    covariates = dict(covariates or {})
    known = {f.obs_key for f in fields}
    unknown = sorted(set(covariates) - known)
    if unknown:
        raise ValueError(
            f"Unknown covariates {unknown}; the model was set up with conditions {sorted(known)}."
        )
    label = labels_field(fields)
    if label is not None and label.obs_key in covariates:
        raise ValueError(f"Give {label.obs_key!r} through `labels=`, not `covariates=`.")
    rows = _draw_training_rows(training, label, per_cell_labels, rng)
    plan = training.iloc[rows].reset_index(drop=True) if len(training.columns) else None
    out = pd.DataFrame(index=pd.RangeIndex(n))
    for field in fields:
        if label is not None and field is label:
            column = np.asarray(per_cell_labels, dtype=object)
        elif field.obs_key in covariates:
            column = _broadcast(covariates[field.obs_key], n, field.obs_key)
        else:
            column = plan[field.obs_key].to_numpy()
        if field.is_categorical:
            field.encode(sorted({str(v) for v in column}))
            out[field.obs_key] = pd.Categorical(
                [str(v) for v in column], categories=list(field.categories)
            )
        else:
            out[field.obs_key] = _continuous_values(column, field.obs_key)
    return out


def _continuous_values(column: np.ndarray, key: str) -> np.ndarray:
    """A continuous covariate as finite float32 values; a clear error otherwise."""
    try:
        values = np.asarray(column, dtype=np.float32)
    except (TypeError, ValueError):
        raise ValueError(
            f"covariates[{key!r}] is a continuous covariate and needs numbers, got "
            f"{sorted({str(v) for v in column})[:5]}."
        ) from None
    if not np.all(np.isfinite(values)):
        raise ValueError(f"covariates[{key!r}] has NaN or infinite values; give finite numbers.")
    return values


def _draw_training_rows(
    training: pd.DataFrame,
    label: ConditionField | None,
    per_cell_labels: Sequence[str | None],
    rng: np.random.Generator,
) -> np.ndarray:
    n = len(per_cell_labels)
    if len(training) == 0 or n == 0:
        return np.zeros(0, dtype=np.int64)
    if label is None:
        return rng.integers(0, len(training), size=n)
    rows = np.empty(n, dtype=np.int64)
    wanted = np.asarray(per_cell_labels, dtype=object)
    train_labels = training[label.obs_key].to_numpy()
    for name in pd.unique(wanted):
        target = np.flatnonzero(wanted == name)
        pool = np.flatnonzero(train_labels == name)
        if len(pool) == 0:  # a registered category absent from the training cells
            pool = np.arange(len(training))
        rows[target] = rng.choice(pool, size=len(target))
    return rows


def _broadcast(value: Any, n: int, key: str) -> np.ndarray:
    if isinstance(value, str) or np.ndim(value) == 0:
        return np.full(n, value, dtype=object)
    values = np.asarray(value, dtype=object)
    if len(values) != n:
        raise ValueError(f"covariates[{key!r}] has {len(values)} values for {n} cells.")
    return values


def plan_to_tensors(
    plan: pd.DataFrame, fields: Sequence[ConditionField], n_cells: int
) -> dict[str, torch.Tensor]:
    """Encode a condition plan into the tensors scvi-tools modules receive.

    Parameters
    ----------
    plan
        Output of :func:`build_condition_plan`.
    fields
        The model's condition fields.
    n_cells
        Number of cells (needed when there are no fields).

    Returns
    -------
    ``{registry_key: tensor}`` with labels/batch as ``(n, 1)`` long tensors (zeros when not
    registered), categorical covariates ``(n, k)`` long, continuous covariates ``(n, m)`` float.
    """
    tensors = {
        REGISTRY_KEYS.LABELS_KEY: torch.zeros(n_cells, 1, dtype=torch.long),
        REGISTRY_KEYS.BATCH_KEY: torch.zeros(n_cells, 1, dtype=torch.long),
    }
    cats = [f for f in fields if f.registry_key == REGISTRY_KEYS.CAT_COVS_KEY]
    conts = [f for f in fields if f.registry_key == REGISTRY_KEYS.CONT_COVS_KEY]
    for field in fields:
        if field.registry_key in (REGISTRY_KEYS.LABELS_KEY, REGISTRY_KEYS.BATCH_KEY):
            codes = np.asarray(plan[field.obs_key].cat.codes, dtype=np.int64)
            tensors[field.registry_key] = torch.from_numpy(codes).unsqueeze(1)
    if cats:
        codes = np.stack([plan[f.obs_key].cat.codes.to_numpy() for f in cats], axis=1)
        tensors[REGISTRY_KEYS.CAT_COVS_KEY] = torch.from_numpy(codes.astype(np.int64))
    if conts:
        values = np.stack([plan[f.obs_key].to_numpy() for f in conts], axis=1)
        tensors[REGISTRY_KEYS.CONT_COVS_KEY] = torch.from_numpy(values.astype(np.float32))
    return tensors
