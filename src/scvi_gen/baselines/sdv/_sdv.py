"""Lazy access to SDV (an optional extra under the Business Source License 1.1).

Nothing here imports ``sdv`` at module import time: importing :mod:`scvi_gen` must work
without the extra. SDV, and the ``ctgan``, ``copulas`` and ``rdt`` packages it depends on, are
distributed by DataCebo under the Business Source License 1.1; scvi-gen never vendors their
code, it only calls them when one of the SDV baselines is trained or loaded.
"""

from __future__ import annotations

import importlib
import logging
import warnings
from types import ModuleType
from typing import Any

import pandas as pd
from torch import nn

logger = logging.getLogger(__name__)

#: Oldest SDV release whose API (``fit({name: df})``) these wrappers use.
MIN_SDV_VERSION = (2, 0)
#: Name of the single table the synthesizers are fitted on.
TABLE_NAME = "pcs"
LICENSE_NOTE = (
    "SDV and its ctgan, copulas and rdt dependencies are distributed under the Business "
    "Source License 1.1 (https://github.com/sdv-dev/SDV/blob/main/LICENSE); scvi-gen does not "
    "vendor their code and only imports them when an SDV baseline is used."
)
_INSTALL_HINT = "Install the optional extra: pip install 'scvi-gen[sdv]' (it needs sdv>=2)."


def import_sdv(submodule: str = "single_table") -> ModuleType:
    """Import an SDV sub-module, with a clear error when the optional extra is missing.

    Parameters
    ----------
    submodule
        Sub-module of ``sdv`` to import, e.g. ``"single_table"`` or ``"metadata"``.

    Returns
    -------
    The imported module.

    Raises
    ------
    ImportError
        When SDV is not installed or older than 2.0.

    Examples
    --------
    >>> single_table = import_sdv("single_table")
    >>> single_table.CTGANSynthesizer  # doctest: +SKIP
    """
    try:
        sdv = importlib.import_module("sdv")
    except ImportError as err:
        raise ImportError(f"The SDV baselines need the `sdv` package. {_INSTALL_HINT}") from err
    found = tuple(int(p) for p in sdv.__version__.split(".")[:2] if p.isdigit())
    if found < MIN_SDV_VERSION:
        raise ImportError(f"sdv {sdv.__version__} is too old for scvi-gen. {_INSTALL_HINT}")
    return importlib.import_module(f"sdv.{submodule}")


def pc_columns(n_components: int) -> list[str]:
    """Column names of the principal components handed to SDV (``pc_0``, ``pc_1``...)."""
    return [f"pc_{i}" for i in range(n_components)]


def numerical_metadata(columns: list[str]) -> Any:
    """SDV metadata of one table whose columns are all numerical.

    Declared rather than detected: detection could call a column of a tiny class with few
    distinct values categorical.

    Parameters
    ----------
    columns
        Column names.

    Returns
    -------
    An ``sdv.metadata.Metadata`` object.
    """
    metadata = import_sdv("metadata")
    spec = {"columns": {c: {"sdtype": "numerical"} for c in columns}}
    return metadata.Metadata.load_from_dict({"tables": {TABLE_NAME: spec}})


def fit_synthesizer(synthesizer_name: str, data: pd.DataFrame, **kwargs: Any) -> Any:
    """Fit one SDV single-table synthesizer on a table of numerical columns.

    Parameters
    ----------
    synthesizer_name
        Class name in ``sdv.single_table`` (``"GaussianCopulaSynthesizer"``...).
    data
        Numerical table (one row per cell).
    **kwargs
        Synthesizer arguments. ``enforce_rounding`` defaults to False: principal components
        have no rounding scheme to learn.

    Returns
    -------
    The fitted synthesizer.
    """
    single_table = import_sdv("single_table")
    synthesizer_cls = getattr(single_table, synthesizer_name)
    kwargs.setdefault("enforce_rounding", False)
    synthesizer = synthesizer_cls(numerical_metadata(list(data.columns)), **kwargs)
    with warnings.catch_warnings():
        # SDV warns about sample sizes and fitting details that do not apply to PCs.
        warnings.simplefilter("ignore", category=UserWarning)
        warnings.simplefilter("ignore", category=FutureWarning)
        synthesizer.fit({TABLE_NAME: data})
    return synthesizer


def ctgan_network(kind: str) -> type[nn.Module]:
    """The network class of ctgan (``"Generator"`` of CTGAN or ``"Decoder"`` of TVAE), lazily.

    Parameters
    ----------
    kind
        ``"Generator"`` or ``"Decoder"``.

    Returns
    -------
    The class from the installed ``ctgan`` package (a dependency of SDV).
    """
    import_sdv()  # a clear error when the optional extra is missing
    module = "ctgan.synthesizers.ctgan" if kind == "Generator" else "ctgan.synthesizers.tvae"
    return getattr(importlib.import_module(module), kind)


def check_transformer_columns(transformer: Any, data: pd.DataFrame) -> None:
    """Check that ctgan's data transformer saw the components in our column order.

    Parameters
    ----------
    transformer
        A fitted ``ctgan.data_transformer.DataTransformer``.
    data
        The table the synthesizer was fitted on.
    """
    names = [info.column_name for info in transformer._column_transform_info_list]
    if names != list(data.columns):
        raise RuntimeError(f"SDV passed columns {names[:5]}... instead of the components.")
