"""The continuous representation flows model: dequantised, standardised log1p(CP10k) of a gene set.

Counts come in (all registered genes, so the library size ``L`` is the cell's full total;
``s = 10^4 / L``). Counts are discrete, with most of the mass at zero, on which a continuous
density is degenerate, so they are *dequantised* (noise ``u ~ U(0, 1)`` while training,
``u = 1/2`` for evaluation):

* a positive count ``c`` becomes ``x = log1p((c + u - 1/2) s)``: the interval around the
  cell's real log1p(CP10k) value ``log1p(c s)`` (which ``u = 1/2`` gives exactly);
* a zero becomes ``x = -ZERO_WIDTH * u``, a box just below 0.

Between the zero box and the first count, ``[0, log1p(s / 2))``, there is no data: the flow
needs a valley there rather than a cliff at a library-dependent edge, which smooth flows
represent much better (with contiguous dequantisation, flows spill about 10% of every sparse
gene's zero mass into the first count). Values are then standardised per gene with statistics
of the training cells.

Generated values are mapped back (:meth:`LogNormRepresentation.decode`) with a library size
drawn from the per-condition library-size model: de-standardise; below the middle of the gap,
``log1p(s / 2) / 2``, is an exact zero; above it, ``c = max(1, round(expm1(x) / s))`` and the
output is ``log1p(c s)``. The output is never negative and has the zeros and per-cell value grid
of real log1p(CP10k) data.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from scvi import REGISTRY_KEYS
from torch import Tensor, nn

from scvi_gen._matrix import DEFAULT_CHUNK_SIZE, iter_row_chunks
from scvi_gen.base import BatchSource
from scvi_gen.preprocessing import TARGET_SUM, select_hvgs_from_source

logger = logging.getLogger(__name__)

#: Width of the box below 0 that zero counts are dequantised into (log1p units).
ZERO_WIDTH = 1.0


def n_modelled_genes(n_vars: int, n_top_genes: int | None, genes: Sequence[str] | None) -> int:
    """Number of genes a flow models, known from its init arguments alone (needed on load).

    Parameters
    ----------
    n_vars
        Number of registered genes.
    n_top_genes
        Number of HVGs to select (``None``: all genes).
    genes
        Explicit gene list (overrides ``n_top_genes``).

    Returns
    -------
    The number of modelled genes.

    Examples
    --------
    >>> n_modelled_genes(30_000, 2000, None)
    2000
    """
    if genes is not None:
        return len(genes)
    if n_top_genes is None or n_top_genes >= n_vars:
        return n_vars
    if n_top_genes < 2:
        raise ValueError(f"`n_top_genes` must be at least 2, got {n_top_genes}.")
    return int(n_top_genes)


def explicit_gene_mask(var_names: pd.Index, genes: Sequence[str]) -> np.ndarray:
    """Boolean mask of an explicit gene list over ``var_names`` (no data needed).

    Parameters
    ----------
    var_names
        Registered gene names.
    genes
        Gene names to model; unique, at least 2, all in ``var_names``.

    Returns
    -------
    ``(n_vars,)`` boolean mask.

    Examples
    --------
    >>> explicit_gene_mask(pd.Index(["a", "b", "c"]), ["c", "a"]).tolist()
    [True, False, True]
    """
    var_names = pd.Index([str(v) for v in var_names])
    wanted = pd.Index([str(g) for g in genes])
    if not wanted.is_unique or len(wanted) < 2:
        raise ValueError("`genes` must list at least 2 distinct gene names.")
    missing = wanted.difference(var_names)
    if len(missing):
        raise ValueError(
            f"{len(missing)} of `genes` are not in adata.var_names: {list(missing[:10])}."
        )
    return np.asarray(var_names.isin(wanted))


def gene_mask(
    source: BatchSource,
    var_names: pd.Index,
    n_top_genes: int | None = 2000,
    genes: Sequence[str] | None = None,
) -> np.ndarray:
    """The genes a flow models, as a mask: an explicit list, seurat_v3 HVGs, or all genes.

    Only the HVG choice reads data: two streaming passes over ``source``
    (:func:`~scvi_gen.preprocessing.select_hvgs_from_source`, scanpy's seurat_v3 genes).

    Parameters
    ----------
    source
        Batches of the training counts (all registered genes).
    var_names
        Registered gene names.
    n_top_genes
        Number of seurat_v3 highly variable genes; ``None`` or at least the number of genes
        keeps all genes.
    genes
        Explicit gene names (overrides ``n_top_genes``).

    Returns
    -------
    ``(n_vars,)`` boolean mask over the registered genes.

    Examples
    --------
    >>> mask = gene_mask(manager_source(model.adata_manager), model.adata.var_names, 2000)
    """
    if genes is not None:
        return explicit_gene_mask(var_names, genes)
    n_vars = len(var_names)
    n_genes = n_modelled_genes(n_vars, n_top_genes, None)
    if n_genes == n_vars:
        return np.ones(n_vars, dtype=bool)
    return np.asarray(select_hvgs_from_source(source, n_vars, n_genes, return_mask=True))


def select_genes(
    matrix: np.ndarray | sp.spmatrix,
    var_names: pd.Index,
    n_top_genes: int | None = 2000,
    genes: Sequence[str] | None = None,
) -> list[str]:
    """Choose the genes a flow models from a count matrix (see :func:`gene_mask`).

    Parameters
    ----------
    matrix
        Raw counts, cells x genes (dense, sparse or backed; read in row chunks).
    var_names
        Gene names of ``matrix``.
    n_top_genes
        Number of seurat_v3 highly variable genes; ``None`` or at least the number of genes
        keeps all genes.
    genes
        Explicit gene names (overrides ``n_top_genes``); must be unique and in ``var_names``.

    Returns
    -------
    Gene names in the order of ``var_names``.

    Examples
    --------
    >>> genes = select_genes(adata.X, adata.var_names, n_top_genes=2000)
    """
    var_names = pd.Index([str(v) for v in var_names])
    mask = gene_mask(matrix_source(matrix), var_names, n_top_genes, genes)
    return [str(g) for g in var_names[mask]]


def matrix_source(matrix: Any, chunk_size: int = DEFAULT_CHUNK_SIZE) -> BatchSource:
    """A batch source over the row chunks of a bare count matrix (no conditions).

    Parameters
    ----------
    matrix
        Dense array, sparse matrix or backed dataset.
    chunk_size
        Rows per batch.

    Returns
    -------
    A :data:`~scvi_gen.base.BatchSource` yielding ``{"X": csr block}``.

    Examples
    --------
    >>> n_cells = sum(b["X"].shape[0] for b in matrix_source(adata.X)())
    """

    def batches() -> Iterator[dict[str, Any]]:
        for block in iter_row_chunks(matrix, chunk_size):
            yield {REGISTRY_KEYS.X_KEY: sp.csr_matrix(block)}

    return batches


#: Rows densified at a time in :meth:`RepresentationMoments.update` (a multiple of 16).
_DENSE_ROWS = 1024


class RepresentationMoments:
    """Per-gene sum and sum of squares of dequantised log1p(CP10k), accumulated over batches.

    The dequantisation noise is drawn from one seeded generator in stream order, one
    ``(cells, genes)`` draw per batch, so the same batches give the same statistics.

    Parameters
    ----------
    positions
        Column positions of the modelled genes among the registered genes.
    seed
        Seed of the dequantisation noise.

    Examples
    --------
    >>> moments = RepresentationMoments(positions)
    >>> for batch in source():
    ...     moments.update(batch["X"])
    >>> mean, std = moments.result()
    """

    def __init__(self, positions: np.ndarray, seed: int = 0) -> None:
        self.positions = np.asarray(positions, dtype=np.int64)
        self.count = 0
        self._total = torch.zeros(len(self.positions), dtype=torch.float64)
        self._total_sq = torch.zeros(len(self.positions), dtype=torch.float64)
        self._generator = torch.Generator().manual_seed(seed)

    def update(self, block: np.ndarray | sp.spmatrix) -> None:
        """Add the cells of one row block of counts (all registered genes).

        The noise of the block is one draw and the sums run over the whole block (as they
        always did), but the modelled genes are densified and dequantised
        :data:`_DENSE_ROWS` rows at a time into one preallocated array: the temporaries of
        the element-wise steps stay small. Every element gets exactly the operations it got
        on the whole block (the row count of a slice is a multiple of 16, so vectorised
        kernels split the elements as before).
        """
        block = sp.csr_matrix(block) if sp.issparse(block) else np.asarray(block)
        library = torch.from_numpy(np.asarray(block.sum(axis=1), dtype=np.float64).reshape(-1, 1))
        selected = block[:, self.positions]
        n = selected.shape[0]
        u = torch.rand((n, len(self.positions)), generator=self._generator, dtype=torch.float64)
        scale = cp10k_scale(library)
        values = torch.empty_like(u)
        for start in range(0, n, _DENSE_ROWS):
            rows = slice(start, min(start + _DENSE_ROWS, n))
            part = selected[rows]
            part = part.toarray() if sp.issparse(part) else np.asarray(part)
            counts = torch.from_numpy(part.astype(np.float64))
            values[rows] = dequantise(counts, scale[rows], u[rows])
        del u
        self._total += values.sum(dim=0)
        self._total_sq += values.square_().sum(dim=0)
        self.count += n

    def result(self) -> tuple[Tensor, Tensor]:
        """Per-gene mean and standard deviation (float64)."""
        if self.count == 0:
            raise ValueError("The training data has no cells.")
        mean = self._total / self.count
        std = (self._total_sq / self.count - mean.square()).clamp_min(0.0).sqrt()
        return mean, std


class LogNormRepresentation(nn.Module):
    """Map raw counts to the flow's standardised space and generated values back.

    All fitted state is in buffers (gene positions, per-gene mean and standard deviation), so
    it is saved with the module's state dict.

    Parameters
    ----------
    n_genes
        Number of modelled genes.

    Examples
    --------
    >>> rep = LogNormRepresentation(n_genes=2000)
    >>> rep.fit(adata.X, gene_positions)
    >>> z = rep.encode(counts_batch, dequantize=True)
    >>> lognorm, counts = rep.decode(z, library)  # never negative
    """

    def __init__(self, n_genes: int) -> None:
        super().__init__()
        self.register_buffer("gene_index", torch.arange(n_genes, dtype=torch.long))
        self.register_buffer("mean", torch.zeros(n_genes))
        self.register_buffer("std", torch.ones(n_genes))

    @property
    def n_genes(self) -> int:
        """Number of modelled genes."""
        return int(self.gene_index.numel())

    def fit(self, matrix: np.ndarray | sp.spmatrix, gene_positions: np.ndarray) -> None:
        """Store gene positions and the per-gene mean / std of the representation.

        Works on row chunks: only a chunk x modelled-genes block is ever densified. Statistics
        are those of randomly dequantised values (as in training, seeded).

        Parameters
        ----------
        matrix
            Raw counts of the training cells, all registered genes.
        gene_positions
            Column positions of the modelled genes.
        """
        moments = RepresentationMoments(gene_positions)
        for batch in matrix_source(matrix)():
            moments.update(batch[REGISTRY_KEYS.X_KEY])
        self.set_statistics(moments)

    def set_statistics(self, moments: RepresentationMoments) -> None:
        """Store the gene positions and statistics accumulated by ``moments``.

        Parameters
        ----------
        moments
            Statistics of the training cells (:class:`RepresentationMoments`).
        """
        positions = moments.positions
        if len(positions) != self.n_genes:
            raise ValueError(f"Expected {self.n_genes} gene positions, got {len(positions)}.")
        mean, std = moments.result()
        self.gene_index.copy_(torch.from_numpy(positions))
        self.mean.copy_(mean.float())
        self.std.copy_(std.float().clamp_min(1e-3))

    def encode(self, counts: Tensor, dequantize: bool) -> Tensor:
        """Counts of all genes -> standardised, dequantised log1p(CP10k) of the modelled genes.

        Parameters
        ----------
        counts
            ``(n, n_vars)`` raw counts.
        dequantize
            Random noise ``u ~ U(0, 1)`` (training); otherwise ``u = 1/2`` (deterministic
            evaluation: positive counts map to their exact log1p(CP10k) value).

        Returns
        -------
        ``(n, n_genes)`` values in the flow's space.
        """
        library = counts.sum(dim=-1, keepdim=True)
        sub = counts.index_select(-1, self.gene_index)
        u = torch.rand_like(sub) if dequantize else torch.full_like(sub, 0.5)
        return self.encode_selected(sub, library, u)

    def encode_selected(self, sub: Tensor, library: Tensor, u: Tensor) -> Tensor:
        """Counts of the modelled genes only -> flow space (what :meth:`encode` computes).

        Parameters
        ----------
        sub
            ``(n, n_genes)`` counts of the modelled genes.
        library
            ``(n, 1)`` total counts over all registered genes.
        u
            ``(n, n_genes)`` dequantisation noise in ``[0, 1)``.

        Returns
        -------
        ``(n, n_genes)`` values in the flow's space.
        """
        return (dequantise(sub, cp10k_scale(library), u) - self.mean) / self.std

    def decode(self, z: Tensor, library: Tensor) -> tuple[Tensor, Tensor]:
        """Flow-space values -> (log1p(CP10k), counts), inverting :meth:`encode`.

        Parameters
        ----------
        z
            ``(n, n_genes)`` values in the flow's space.
        library
            ``(n, 1)`` library sizes (total counts over all genes) of the generated cells.

        Returns
        -------
        log1p(CP10k) values and the integer counts they come from; both never negative.
        """
        scale = cp10k_scale(library)
        x = z * self.std + self.mean
        threshold = torch.log1p(scale / 2) / 2  # middle of the empty gap
        counts = torch.round(torch.expm1(x.clamp_min(0.0)) / scale).clamp_min(1.0)
        counts = torch.where(x < threshold, torch.zeros_like(counts), counts)
        return torch.log1p(counts * scale), counts

    def log_abs_det(self) -> Tensor:
        """Log-determinant of the standardisation (added to turn densities into log1p units)."""
        return -self.std.log().sum()


def cp10k_scale(library: Tensor) -> Tensor:
    """``10^4 / library`` (1 for empty cells, which then have no counts to scale)."""
    return TARGET_SUM / library.clamp_min(1.0)


def dequantise(counts: Tensor, scale: Tensor, u: Tensor) -> Tensor:
    """Dequantised log1p(CP10k): zeros into ``[-ZERO_WIDTH, 0]``, counts around their value.

    Parameters
    ----------
    counts
        ``(n, genes)`` counts.
    scale
        ``(n, 1)`` CP10k factors ``10^4 / L``.
    u
        ``(n, genes)`` noise in ``[0, 1)`` (``1/2``: no noise).

    Returns
    -------
    ``(n, genes)`` continuous values; ``log1p(c s)`` exactly for ``u = 1/2`` and ``c > 0``.
    """
    positive = torch.log1p((counts + u - 0.5).clamp_min(0.0) * scale)
    return torch.where(counts > 0, positive, -ZERO_WIDTH * u)
