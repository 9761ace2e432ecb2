"""GaussianCopulaGenerator: SDV's Gaussian copula, one per label, on PCA of log1p(CP10k)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch
from anndata import AnnData

from scvi_gen.baselines.sdv._base import SDVGeneratorBase
from scvi_gen.baselines.sdv._module import SDVModule, shape_of
from scvi_gen.baselines.sdv._sdv import fit_synthesizer, import_sdv

logger = logging.getLogger(__name__)


class CopulaModule(SDVModule):
    """PCA representation plus one correlation matrix (normal scores) per label.

    Parameters
    ----------
    n_labels
        Number of registered labels.
    """

    def __init__(self, n_labels: int) -> None:
        super().__init__(n_labels)
        self.register_buffer("correlation", torch.zeros(n_labels, 0, 0))

    def set_representation(
        self, gene_index: np.ndarray, components: np.ndarray, mean: np.ndarray
    ) -> None:
        """Store the PCA and reset the correlation matrices to its size."""
        super().set_representation(gene_index, components, mean)
        k = self.n_components
        self.correlation = torch.eye(k).repeat(self.n_labels, 1, 1)

    def buffer_shapes(self, state_dict: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
        """Also one correlation matrix of the components per label."""
        shapes = super().buffer_shapes(state_dict)
        k = shape_of(state_dict, "components")[0]
        return {**shapes, "correlation": (self.n_labels, k, k)}

    def normal_scores(self, label: int, n: int) -> torch.Tensor:
        """``(n, n_components)`` draws of N(0, correlation) in float64.

        The factor comes from an eigendecomposition with negative eigenvalues set to 0, so
        the singular correlation of a label with fewer cells than components still works.
        """
        corr = self.correlation[label].double()
        eigenvalues, eigenvectors = torch.linalg.eigh(corr)
        factor = eigenvectors * eigenvalues.clamp_min(0.0).sqrt()
        noise = torch.randn(n, corr.shape[0], dtype=torch.float64, device=corr.device)
        return noise @ factor.T


class GaussianCopulaGenerator(SDVGeneratorBase):
    """SDV's GaussianCopulaSynthesizer per label on principal components of log1p(CP10k).

    For every label, SDV fits a univariate marginal per principal component (``beta`` by
    default, as in SDV) and the correlation of their normal scores. Sampling draws correlated
    normal scores, maps them through the normal CDF and each marginal's quantile function,
    clips to the label's training range (SDV's ``enforce_min_max_values``) and projects back
    to genes (clipped at 0). The fitted marginals are stored as JSON and the correlations as
    tensors, so saved models contain no pickle.

    SDV and its ``copulas`` dependency are under the Business Source License 1.1 (optional
    extra ``scvi-gen[sdv]``, never vendored).

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata` (raw counts). ``None`` with ``registry``
        when loading.
    registry
        Registry of a saved model (used by :meth:`load`).
    n_top_genes
        seurat_v3 highly variable genes to model (``None``: all registered genes).
    n_components
        Principal components the copula models.
    enforce_min_max_values
        Clip sampled components to each label's training range.
    default_distribution
        Marginal family: ``"beta"``, ``"norm"``, ``"truncnorm"``, ``"gamma"``, ``"uniform"``
        or ``"gaussian_kde"`` (SDV's names).

    Examples
    --------
    >>> scvi_gen.baselines.sdv.GaussianCopulaGenerator.setup_anndata(adata, labels_key="cell_type")
    >>> model = scvi_gen.baselines.sdv.GaussianCopulaGenerator(adata, n_components=30)
    >>> model.train()
    >>> syn = model.generate(labels={"B": 100}, seed=0)  # log1p(CP10k) of the modelled genes
    """

    _module_cls = CopulaModule

    def __init__(
        self,
        adata: AnnData | None = None,
        registry: dict | None = None,
        n_top_genes: int | None = 2000,
        n_components: int = 50,
        enforce_min_max_values: bool = True,
        default_distribution: str = "beta",
    ) -> None:
        super().__init__(
            adata,
            registry=registry,
            n_top_genes=n_top_genes,
            n_components=n_components,
            enforce_min_max_values=enforce_min_max_values,
        )
        self._default_distribution = default_distribution
        self._marginal_cache: dict[int, list[Any]] = {}
        self.marginals_: list[list[dict[str, Any]] | None] = [None] * self.module.n_labels
        self.init_params_ = self._get_init_params(locals())

    def train(self, max_epochs: int | None = None, progress_bar: bool = True) -> None:
        """Fit the PCA and one Gaussian copula per label.

        Parameters
        ----------
        max_epochs
            Ignored (a copula is fitted in closed form); accepted so that generic training
            code passing ``max_epochs`` works.
        progress_bar
            Show a progress bar over labels.
        """
        if max_epochs is not None:
            logger.info("GaussianCopulaGenerator has no epochs; ignoring max_epochs.")
        self._marginal_cache = {}
        self.marginals_ = [None] * self.module.n_labels
        self._fit_per_label(progress_bar)

    def _fit_label(self, label: int, data: pd.DataFrame, **fit_kwargs: Any) -> None:
        synthesizer = fit_synthesizer(
            "GaussianCopulaSynthesizer",
            data,
            default_distribution=self._default_distribution,
            enforce_min_max_values=self._enforce_min_max_values,
        )
        copula = synthesizer._model.to_dict()  # copulas.multivariate.GaussianMultivariate
        if list(copula["columns"]) != list(data.columns):
            raise RuntimeError("SDV reordered the copula's columns; cannot store its parameters.")
        self.marginals_[label] = [_plain(m) for m in copula["univariates"]]
        self.module.correlation[label] = torch.as_tensor(
            np.asarray(copula["correlation"]), dtype=torch.float32
        )
        return None

    def _marginals(self, label: int) -> list[Any]:
        """The label's fitted copulas univariates, rebuilt from JSON (allowed types only)."""
        if label not in self._marginal_cache:
            self._marginal_cache[label] = [_univariate(m) for m in self.marginals_[label]]
        return self._marginal_cache[label]

    def _sample_label(self, label: int, n: int) -> torch.Tensor:
        uniform = torch.special.ndtr(self.module.normal_scores(label, n)).cpu().numpy()
        columns = [
            np.asarray(marginal.percent_point(uniform[:, j]), dtype=np.float64)
            for j, marginal in enumerate(self._marginals(label))
        ]
        pcs = torch.as_tensor(np.stack(columns, axis=1), dtype=torch.float32)
        return self.module.clip(label, pcs.to(self.module.device))


def _plain(params: Mapping[str, Any]) -> dict[str, Any]:
    """Univariate parameters with numpy scalars turned into Python numbers (JSON-able)."""
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in params.items()}


def _allowed_univariate_types() -> dict[str, type]:
    """Qualified names of the marginal classes SDV's copula may fit, mapped to the classes."""
    single_table = import_sdv("single_table")
    from copulas.univariate import GaussianUnivariate

    classes = [*single_table.GaussianCopulaSynthesizer._DISTRIBUTIONS.values(), GaussianUnivariate]
    return {f"{cls.__module__}.{cls.__name__}": cls for cls in classes}


def _univariate(params: Mapping[str, Any]) -> Any:
    """Rebuild one fitted marginal without importing anything named by the file itself."""
    params = dict(params)
    allowed = _allowed_univariate_types()
    name = params.pop("type", None)
    if name not in allowed:
        raise ValueError(
            f"Unexpected marginal type {name!r} in a saved GaussianCopulaGenerator; "
            f"expected one of {sorted(allowed)}."
        )
    marginal = allowed[name]()
    marginal._set_params(params)
    marginal.fitted = True
    return marginal
