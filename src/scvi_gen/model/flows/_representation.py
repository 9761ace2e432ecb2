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
from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from torch import Tensor, nn

from scvi_gen._matrix import iter_row_chunks
from scvi_gen.metrics import select_hvgs
from scvi_gen.metrics._common_space import TARGET_SUM

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
    """
    if genes is not None:
        return len(genes)
    if n_top_genes is None or n_top_genes >= n_vars:
        return n_vars
    if n_top_genes < 2:
        raise ValueError(f"`n_top_genes` must be at least 2, got {n_top_genes}.")
    return int(n_top_genes)


def select_genes(
    matrix: np.ndarray | sp.spmatrix,
    var_names: pd.Index,
    n_top_genes: int | None = 2000,
    genes: Sequence[str] | None = None,
) -> list[str]:
    """Choose the genes a flow models: an explicit list, seurat_v3 HVGs, or all genes.

    Parameters
    ----------
    matrix
        Raw counts, cells x genes (sparse stays sparse).
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
    if genes is not None:
        wanted = pd.Index([str(g) for g in genes])
        if not wanted.is_unique or len(wanted) < 2:
            raise ValueError("`genes` must list at least 2 distinct gene names.")
        missing = wanted.difference(var_names)
        if len(missing):
            raise ValueError(
                f"{len(missing)} of `genes` are not in adata.var_names: {list(missing[:10])}."
            )
        return [g for g in var_names if g in set(wanted)]
    n_genes = n_modelled_genes(len(var_names), n_top_genes, None)
    if n_genes == len(var_names):
        return list(var_names)
    return [str(g) for g in select_hvgs(matrix, var_names, n_genes)]


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
        positions = np.asarray(gene_positions, dtype=np.int64)
        if len(positions) != self.n_genes:
            raise ValueError(f"Expected {self.n_genes} gene positions, got {len(positions)}.")
        total = torch.zeros(len(positions), dtype=torch.float64)
        total_sq = torch.zeros(len(positions), dtype=torch.float64)
        generator = torch.Generator().manual_seed(0)
        for block in iter_row_chunks(matrix):
            sub, library = _dense_block(block, positions)
            u = torch.rand(sub.shape, generator=generator, dtype=torch.float64)
            values = dequantise(sub, cp10k_scale(library), u)
            total += values.sum(dim=0)
            total_sq += values.square().sum(dim=0)
        n = matrix.shape[0]
        mean = total / n
        std = (total_sq / n - mean.square()).clamp_min(0.0).sqrt()
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
        scale = cp10k_scale(counts.sum(dim=-1, keepdim=True))
        sub = counts.index_select(-1, self.gene_index)
        u = torch.rand_like(sub) if dequantize else torch.full_like(sub, 0.5)
        return (dequantise(sub, scale, u) - self.mean) / self.std

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


def _dense_block(block: np.ndarray | sp.spmatrix, positions: np.ndarray) -> tuple[Tensor, Tensor]:
    """Selected columns of one row block (dense, float64) and its library sizes."""
    block = sp.csr_matrix(block) if sp.issparse(block) else np.asarray(block)
    library = np.asarray(block.sum(axis=1), dtype=np.float64).reshape(-1, 1)
    sub = block[:, positions]
    sub = sub.toarray() if sp.issparse(sub) else np.asarray(sub)
    return torch.from_numpy(sub.astype(np.float64)), torch.from_numpy(library)
