"""The ``setup_anndata`` fields every scvi-gen model shares."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from scvi import REGISTRY_KEYS
from scvi.data.fields import (
    BaseAnnDataField,
    CategoricalJointObsField,
    CategoricalObsField,
    LayerField,
    NumericalJointObsField,
)

logger = logging.getLogger(__name__)


def generator_fields(
    *,
    layer: str | None,
    labels_key: str | None,
    batch_key: str | None,
    categorical_covariate_keys: Sequence[str] | None,
    continuous_covariate_keys: Sequence[str] | None,
    is_count_data: bool,
) -> list[BaseAnnDataField]:
    """Build the AnnData fields of a generator: expression, labels, batch and covariates.

    Parameters
    ----------
    layer
        Layer with the expression values (``None``: ``.X``).
    labels_key
        ``.obs`` column with labels (cell types) to condition on.
    batch_key
        ``.obs`` column with batches.
    categorical_covariate_keys
        Further categorical ``.obs`` columns to condition on.
    continuous_covariate_keys
        Continuous ``.obs`` columns to condition on.
    is_count_data
        Whether the layer must hold raw counts.

    Returns
    -------
    The fields, for :class:`scvi.data.AnnDataManager`.
    """
    return [
        LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=is_count_data),
        CategoricalObsField(REGISTRY_KEYS.BATCH_KEY, batch_key),
        CategoricalObsField(REGISTRY_KEYS.LABELS_KEY, labels_key),
        CategoricalJointObsField(REGISTRY_KEYS.CAT_COVS_KEY, categorical_covariate_keys),
        NumericalJointObsField(REGISTRY_KEYS.CONT_COVS_KEY, continuous_covariate_keys),
    ]
