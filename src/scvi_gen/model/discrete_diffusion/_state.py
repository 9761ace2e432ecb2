"""DiscreteDiffusion's data state (genes, bin edges, library scale, gene biases), streamed.

Everything is fitted from a :data:`~scvi_gen.base.BatchSource` in passes over row blocks, so
an in-memory AnnData, a backed one and a custom data module's loader are fitted by the same
code and memory does not grow with the number of cells:

1. the modelled genes (seurat_v3 HVGs by :func:`~scvi_gen.preprocessing.select_hvgs_from_source`,
   a given list, or all genes);
2. the log library moments and a uniform sample of at most :data:`MAX_FIT_CELLS` cells whose
   non-zero tokenised-scale values place the bin edges;
3. the per-gene token frequencies (the marginal entropy baseline and the networks' gene biases).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from scvi import REGISTRY_KEYS

from scvi_gen._matrix import iter_row_chunks
from scvi_gen.base import BatchSource, ReservoirSample, RunningMoments
from scvi_gen.model.discrete_diffusion._module import DiscreteDiffusionModule, ValueTransform
from scvi_gen.model.discrete_diffusion._tokenizer import ExpressionTokenizer
from scvi_gen.preprocessing import TARGET_SUM, select_hvgs_from_source

logger = logging.getLogger(__name__)

#: Cells whose non-zero values place the bin edges (a uniform sample beyond that). Small data
#: is kept whole, so its edges are those of all its values.
MAX_FIT_CELLS = 20_000
#: Non-zero values used at most to place the bin edges (a random subset of the sample beyond).
MAX_FIT_VALUES = 2_000_000
_VALUES = "values"


def n_modelled_genes(gene_set: str | Sequence[str], n_top_genes: int, var_names: pd.Index) -> int:
    """Number of modelled genes, known from the arguments and the registry alone.

    The module is built from it before (or without) any data is seen, and again at load.

    Parameters
    ----------
    gene_set
        ``"hvg"``, ``"all"`` or a list of gene names.
    n_top_genes
        Number of HVGs for ``gene_set="hvg"``.
    var_names
        The registered genes.

    Returns
    -------
    The number of genes the model covers.
    """
    if isinstance(gene_set, str):
        if gene_set == "all":
            return len(var_names)
        if gene_set == "hvg":
            if n_top_genes < 1:
                raise ValueError(f"`n_top_genes` must be positive, got {n_top_genes}.")
            return min(int(n_top_genes), len(var_names))
        raise ValueError(f"`gene_set` must be 'hvg', 'all' or a list of genes, got {gene_set!r}.")
    genes = [str(g) for g in gene_set]
    missing = sorted(set(genes) - set(var_names))
    if missing:
        raise ValueError(f"{len(missing)} genes of `gene_set` are not in the data: {missing[:5]}.")
    if len(set(genes)) != len(genes) or not genes:
        raise ValueError("`gene_set` must be a non-empty list of distinct gene names.")
    return len(genes)


def select_genes(
    source: BatchSource, var_names: pd.Index, gene_set: str | Sequence[str], n_top_genes: int
) -> np.ndarray:
    """Positions of the modelled genes among the registered ones, in ``var`` order.

    Parameters
    ----------
    source
        Batches of the training cells (read only for ``gene_set="hvg"``).
    var_names
        The registered genes.
    gene_set, n_top_genes
        As in :class:`~scvi_gen.DiscreteDiffusion`.

    Returns
    -------
    Sorted integer positions.
    """
    n_genes = n_modelled_genes(gene_set, n_top_genes, var_names)
    if not isinstance(gene_set, str):
        return np.sort(var_names.get_indexer([str(g) for g in gene_set]))
    if n_genes == len(var_names):
        return np.arange(len(var_names))
    # By position, not by name: the mask stays exact when gene names repeat.
    mask = select_hvgs_from_source(source, len(var_names), n_genes, return_mask=True)
    return np.flatnonzero(mask)


def fit_token_state(
    module: DiscreteDiffusionModule, source: BatchSource, index: np.ndarray
) -> float:
    """Fit the module's data buffers from ``source`` for the genes at ``index``.

    Sets ``gene_index``, the log library location and scale, the tokenizer's bin edges and
    within-bin profile, and the gene biases of both networks (smoothed log token
    frequencies). Two passes: values, then token frequencies under the fitted edges.

    Parameters
    ----------
    module
        The module, built for ``len(index)`` genes.
    source
        Batches of the training cells.
    index
        Positions of the modelled genes (:func:`select_genes`).

    Returns
    -------
    The mean over genes of the entropy of each gene's token distribution (nats): the bound
    of a model of independent genes.
    """
    module.gene_index.copy_(torch.as_tensor(index, dtype=torch.long))
    log_library, sample = RunningMoments(1), ReservoirSample(MAX_FIT_CELLS, seed=0)
    for batch in source():
        values, library = modelled_values(
            batch[REGISTRY_KEYS.X_KEY], index, module.value_transform
        )
        log_library.update(np.log(library[library > 0]))
        sample.update(pd.DataFrame({_VALUES: _row_data(values)}))
    if log_library.count == 0:
        raise ValueError("Every training cell has zero total counts.")
    kept = sample.result()[_VALUES]
    nonzero = np.concatenate([np.empty(0), *kept]) if len(kept) else np.empty(0)
    module.tokenizer.fit(_subsample(nonzero, MAX_FIT_VALUES))
    module.log_library_loc.fill_(float(log_library.mean[0]))
    module.log_library_scale.fill_(float(max(log_library.std()[0], 1e-3)))

    counts, n_cells = _token_counts(source, index, module)
    frequencies = counts / max(n_cells, 1)
    smoothed = (frequencies * n_cells + 0.5) / (n_cells + 0.5 * module.tokenizer.num_bins)
    bias = torch.as_tensor(np.log(smoothed), dtype=torch.float32)
    for network in (module.network, module.ema_network):
        network.gene_bias.data.copy_(bias)
    return _mean_entropy(frequencies)


def modelled_values(
    block: Any, index: np.ndarray, transform: ValueTransform
) -> tuple[sp.csr_matrix, np.ndarray]:
    """Tokenised-scale values of the modelled genes (sparse) and library sizes of a row block.

    Parameters
    ----------
    block
        Raw counts over the registered genes (sparse or dense).
    index
        Positions of the modelled genes.
    transform
        The module's ``value_transform``.

    Returns
    -------
    ``(values (n, len(index)) CSR, library (n,))``; the library is the total over all
    registered genes.
    """
    block = sp.csr_matrix(block, dtype=np.float64)
    library = np.asarray(block.sum(axis=1)).ravel()
    values = block[:, index]
    if transform == "log1p_cp10k":
        scale = TARGET_SUM / np.maximum(library, 1.0)
        values = sp.csr_matrix(sp.diags(scale) @ values)
        values.data = np.log1p(values.data)
    return values, library


def _row_data(values: sp.csr_matrix) -> pd.Series:
    """The stored values of every row, one array per cell (the reservoir samples cells).

    Each row is a copy: a view would keep its whole minibatch alive while the reservoir holds
    it, so memory would grow with the number of minibatches (1.3 GB more at 1,000,000 cells).
    """
    rows = np.split(values.data, values.indptr[1:-1]) if values.shape[0] else []
    out = np.empty(len(rows), dtype=object)
    for i, row in enumerate(rows):  # assigned one by one: equal lengths would broadcast
        out[i] = row.copy()
    return pd.Series(out, dtype=object)


def _subsample(values: np.ndarray, n_max: int) -> np.ndarray:
    values = values[values > 0]
    if values.size <= n_max:
        return values
    return np.random.default_rng(0).choice(values, n_max, replace=False)


#: Rows densified at a time while counting tokens (2,000 genes: 8 MB of float32).
_TOKEN_BLOCK_ROWS = 1024


def _token_counts(
    source: BatchSource, index: np.ndarray, module: DiscreteDiffusionModule
) -> tuple[np.ndarray, int]:
    """Per-gene count of every data token, ``(genes, num_bins)``, and the number of cells."""
    tokenizer: ExpressionTokenizer = module.tokenizer
    n_genes, n_bins = len(index), tokenizer.num_bins
    counts = np.zeros((n_genes, n_bins))
    offsets = np.arange(n_genes)[None, :] * n_bins
    n_cells = 0
    for batch in source():
        values, _ = modelled_values(batch[REGISTRY_KEYS.X_KEY], index, module.value_transform)
        n_cells += values.shape[0]
        # Integer counts in float64 are exact, so the block size does not change them; small
        # blocks keep the dense tokens (and their int64 offsets) of one block small.
        for block in iter_row_chunks(values, _TOKEN_BLOCK_ROWS):
            dense = torch.as_tensor(block.toarray(), dtype=torch.float32)
            flat = (offsets + tokenizer.tokenize(dense).numpy()).ravel()
            counts += np.bincount(flat, minlength=counts.size).reshape(counts.shape)
    return counts, n_cells


def _mean_entropy(frequencies: np.ndarray) -> float:
    """Mean over genes of the entropy (nats) of each gene's token distribution."""
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(frequencies > 0, -frequencies * np.log(frequencies), 0.0)
    return float(terms.sum(axis=1).mean())
