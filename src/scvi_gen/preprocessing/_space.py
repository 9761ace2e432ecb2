"""The common space of real and synthetic cells: HVGs, log1p(CP10k) and PCA fitted on train.

The evaluation space of :mod:`scvi_gen.metrics` (re-exported there) and the representation of
the SDV baselines; it lives here so that models and baselines never import the metrics.
"""

from __future__ import annotations

import logging
from typing import Any, Literal, NamedTuple

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.decomposition import PCA

from scvi_gen._matrix import DEFAULT_CHUNK_SIZE, get_matrix, iter_row_chunks
from scvi_gen.preprocessing._genes import select_hvgs
from scvi_gen.preprocessing._normalize import log1p_cp10k

logger = logging.getLogger(__name__)

DataKind = Literal["counts", "lognorm"]
DataKindOrAuto = Literal["counts", "lognorm", "auto"]

_MAX_NAMES_IN_ERROR = 10


class TransformedData(NamedTuple):
    """Cells expressed in a fitted :class:`CommonSpace`.

    Attributes
    ----------
    expression
        log1p(CP10k) expression over the HVGs, dense float32, shape ``(n_cells, n_hvg)``.
    pcs
        Principal components, shape ``(n_cells, n_pcs)``.
    library_size
        Total counts per cell over the training genes, or None for log-normalised input.
    """

    expression: np.ndarray
    pcs: np.ndarray
    library_size: np.ndarray | None


def is_count_matrix(matrix: Any, chunk_size: int = DEFAULT_CHUNK_SIZE) -> bool:
    """True when every value of ``matrix`` is a finite non-negative integer.

    Checked block by block (only the stored values of sparse blocks), so the full matrix is
    never densified.

    Parameters
    ----------
    matrix
        Dense array, sparse matrix or backed AnnData dataset.
    chunk_size
        Number of rows checked at once.

    Returns
    -------
    bool
        Whether the matrix holds counts.

    Examples
    --------
    >>> import numpy as np
    >>> is_count_matrix(np.array([[0.0, 3.0], [1.0, 2.0]]))
    True
    >>> is_count_matrix(np.log1p(np.array([[0.0, 3.0]])))
    False
    """
    for block in iter_row_chunks(matrix, chunk_size):
        values = block.data if sp.issparse(block) else block
        if not np.all(np.isfinite(values)) or np.any(values < 0):
            return False
        if np.any(values != np.round(values)):
            return False
    return True


def resolve_data_kind(
    adata: ad.AnnData, kind: DataKindOrAuto = "auto", layer: str | None = None
) -> DataKind:
    """Resolve ``"auto"`` to ``"counts"`` (all values non-negative integers) or ``"lognorm"``.

    Parameters
    ----------
    adata
        AnnData holding the data.
    kind
        ``"counts"``, ``"lognorm"`` or ``"auto"``.
    layer
        Layer to inspect; None means ``.X``.

    Returns
    -------
    str
        ``"counts"`` or ``"lognorm"``.

    Examples
    --------
    >>> import anndata as ad, numpy as np
    >>> resolve_data_kind(ad.AnnData(np.ones((2, 2))))
    'counts'
    """
    if kind not in ("counts", "lognorm", "auto"):
        raise ValueError(f"`kind` must be 'counts', 'lognorm' or 'auto', got {kind!r}.")
    if kind != "auto":
        return kind
    resolved: DataKind = "counts" if is_count_matrix(get_matrix(adata, layer)) else "lognorm"
    logger.info("Detected data kind %r.", resolved)
    return resolved


def _gene_positions(var_names: pd.Index, wanted: pd.Index, what: str) -> np.ndarray:
    """Column positions of ``wanted`` genes in ``var_names``; clear error if any is missing."""
    if not var_names.is_unique:
        duplicated = var_names[var_names.duplicated()].unique().tolist()
        raise ValueError(
            f"var_names must be unique to match genes by name; duplicated: "
            f"{duplicated[:_MAX_NAMES_IN_ERROR]}. Call `adata.var_names_make_unique()`."
        )
    positions = var_names.get_indexer(wanted)
    missing = wanted[positions < 0]
    if len(missing) > 0:
        shown = ", ".join(map(str, missing[:_MAX_NAMES_IN_ERROR]))
        more = (
            f" (and {len(missing) - _MAX_NAMES_IN_ERROR} more)"
            if len(missing) > _MAX_NAMES_IN_ERROR
            else ""
        )
        raise ValueError(f"{len(missing)} {what} missing from var_names: {shown}{more}.")
    return positions


def _log_cp10k_block(
    block: Any, gene_cols: np.ndarray | None, hvg_cols: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """log1p(CP10k) over the HVG columns of a count block, and its library sizes."""
    genes = block if gene_cols is None else block[:, gene_cols]
    library = np.asarray(genes.sum(axis=1), dtype=np.float64).ravel()
    expression = log1p_cp10k(block[:, hvg_cols], library)
    if sp.issparse(expression):
        expression = expression.toarray()
    return expression, library


class CommonSpace:
    """Shared evaluation space fitted on the real training counts.

    ``fit`` selects ``n_hvg`` seurat_v3 highly variable genes on the training counts (all
    genes if there are fewer), normalises each cell to 10,000 total counts over all training
    genes, applies ``log1p``, subsets to the HVGs and fits a PCA with ``n_pcs`` components
    (centred on the training mean, not scaled). ``transform`` maps any dataset (real counts,
    synthetic counts or synthetic log1p(CP10k) values) into that space, matching genes by
    name. Work is done in row blocks so that no full cells x genes matrix is densified.

    Parameters
    ----------
    n_hvg
        Number of highly variable genes.
    n_pcs
        Number of principal components (reduced if the data are too small).
    layer
        Layer of the training AnnData holding counts; None means ``.X``.
    seed
        Seed of the randomised PCA solver.
    chunk_size
        Rows processed at once.

    Attributes
    ----------
    gene_names_
        Training genes (the genes counts are normalised over).
    hvg_names_
        Selected HVGs, in training order.
    pca_
        Fitted :class:`~sklearn.decomposition.PCA`.

    Examples
    --------
    >>> import anndata as ad, numpy as np
    >>> rng = np.random.default_rng(0)
    >>> gene_means = rng.gamma(1.0, 3.0, size=20)
    >>> train = ad.AnnData(rng.poisson(gene_means, size=(50, 20)).astype(np.float32))
    >>> space = CommonSpace(n_hvg=10, n_pcs=5).fit(train)
    >>> expression, pcs, library_size = space.transform(train, kind="counts")
    >>> expression.shape, pcs.shape
    ((50, 10), (50, 5))
    """

    def __init__(
        self,
        n_hvg: int = 2000,
        n_pcs: int = 30,
        *,
        layer: str | None = None,
        seed: int = 0,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        if n_hvg < 1 or n_pcs < 1:
            raise ValueError(f"n_hvg and n_pcs must be positive, got {n_hvg} and {n_pcs}.")
        self.n_hvg = n_hvg
        self.n_pcs = n_pcs
        self.layer = layer
        self.seed = seed
        self.chunk_size = chunk_size
        self.gene_names_: pd.Index | None = None
        self.hvg_names_: pd.Index | None = None
        self.pca_: PCA | None = None

    @property
    def is_fitted(self) -> bool:
        """Whether :meth:`fit` has been called."""
        return self.pca_ is not None

    def fit(self, train: ad.AnnData) -> CommonSpace:
        """Select HVGs and fit the PCA on the real training counts.

        Parameters
        ----------
        train
            Real training data with raw counts in ``.X`` or ``layers[self.layer]``.

        Returns
        -------
        CommonSpace
            ``self``, fitted.

        Examples
        --------
        >>> import anndata as ad, numpy as np
        >>> rng = np.random.default_rng(0)
        >>> train = ad.AnnData(rng.poisson(rng.gamma(1.0, 3.0, 8), (40, 8)).astype(float))
        >>> CommonSpace(n_hvg=4, n_pcs=2).fit(train).hvg_names_.size
        4
        """
        self.fit_transform(train)
        return self

    def fit_transform(self, train: ad.AnnData) -> TransformedData:
        """Fit on the training counts and return them in the common space.

        Parameters
        ----------
        train
            Real training data with raw counts.

        Returns
        -------
        TransformedData
            HVG log-expression, PCs and library sizes of the training cells.

        Examples
        --------
        >>> import anndata as ad, numpy as np
        >>> rng = np.random.default_rng(0)
        >>> train = ad.AnnData(rng.poisson(rng.gamma(1.0, 3.0, 8), (40, 8)).astype(float))
        >>> CommonSpace(n_hvg=4, n_pcs=2).fit_transform(train).pcs.shape
        (40, 2)
        """
        counts = get_matrix(train, self.layer)
        gene_names = pd.Index(train.var_names.astype(str))
        _gene_positions(gene_names, gene_names, "genes")  # uniqueness check
        self.gene_names_ = gene_names
        self.hvg_names_ = select_hvgs(counts, gene_names, self.n_hvg)
        expression, library = self._counts_to_expression(train, self.layer)
        n_components = min(self.n_pcs, expression.shape[0], expression.shape[1])
        if n_components < self.n_pcs:
            logger.warning(
                "Using %d PCs instead of %d (data too small).", n_components, self.n_pcs
            )
        self.pca_ = PCA(n_components=n_components, svd_solver="randomized", random_state=self.seed)
        pcs = self.pca_.fit_transform(expression)
        logger.info(
            "Common space: %d HVGs, %d PCs fitted on %d training cells.",
            self.hvg_names_.size,
            n_components,
            expression.shape[0],
        )
        return TransformedData(expression, pcs, library)

    def transform(
        self, adata: ad.AnnData, kind: DataKindOrAuto = "counts", layer: str | None = None
    ) -> TransformedData:
        """Map ``adata`` into the common space.

        Parameters
        ----------
        adata
            Data to transform; genes are matched to the training genes by name.
        kind
            ``"counts"``: raw counts, normalised to log1p(CP10k) over all training genes
            (which must all be present); ``"lognorm"``: values that already are
            log1p(CP10k), only subset to the HVGs (which must all be present); ``"auto"``:
            counts if every value is a non-negative integer, else lognorm.
        layer
            Layer holding the data; None means ``.X`` (not the layer used in :meth:`fit`).

        Returns
        -------
        TransformedData
            ``(expression, pcs, library_size)``; ``library_size`` is None for lognorm input.

        Examples
        --------
        >>> import anndata as ad, numpy as np
        >>> rng = np.random.default_rng(0)
        >>> train = ad.AnnData(rng.poisson(rng.gamma(1.0, 3.0, 8), (40, 8)).astype(float))
        >>> space = CommonSpace(n_hvg=4, n_pcs=2).fit(train)
        >>> space.transform(train[:5], kind="counts").expression.shape
        (5, 4)
        """
        if not self.is_fitted:
            raise RuntimeError("CommonSpace is not fitted; call `fit(train)` first.")
        kind = resolve_data_kind(adata, kind, layer)
        if kind == "counts":
            expression, library = self._counts_to_expression(adata, layer)
        else:
            expression, library = self._lognorm_to_expression(adata, layer), None
        return TransformedData(expression, self.pca_.transform(expression), library)

    def _counts_to_expression(
        self, adata: ad.AnnData, layer: str | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """log1p(CP10k) HVG expression and library sizes (over the training genes)."""
        var_names = pd.Index(adata.var_names.astype(str))
        gene_cols = _gene_positions(var_names, self.gene_names_, "training genes")
        hvg_cols = gene_cols[self.gene_names_.get_indexer(self.hvg_names_)]
        # Skip the column gather when the gene sets already coincide (the common case).
        same_genes = len(gene_cols) == len(var_names) and np.array_equal(
            gene_cols, np.arange(len(var_names))
        )
        blocks = [
            _log_cp10k_block(block, None if same_genes else gene_cols, hvg_cols)
            for block in iter_row_chunks(get_matrix(adata, layer), self.chunk_size)
        ]
        if not blocks:
            raise ValueError("Cannot transform an AnnData with 0 cells.")
        return np.vstack([b[0] for b in blocks]), np.concatenate([b[1] for b in blocks])

    def _lognorm_to_expression(self, adata: ad.AnnData, layer: str | None) -> np.ndarray:
        """HVG columns of already log-normalised data, as dense float32."""
        var_names = pd.Index(adata.var_names.astype(str))
        hvg_cols = _gene_positions(var_names, self.hvg_names_, "HVGs (log-normalised input)")
        blocks = []
        for block in iter_row_chunks(get_matrix(adata, layer), self.chunk_size):
            hvg = block[:, hvg_cols]
            blocks.append(np.asarray(hvg.toarray() if sp.issparse(hvg) else hvg, np.float32))
        if not blocks:
            raise ValueError("Cannot transform an AnnData with 0 cells.")
        return np.vstack(blocks)
