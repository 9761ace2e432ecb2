"""A flow's data state, fitted in streaming passes over a batch source.

What :class:`~scvi_gen.model.flows.ConditionalFlowModule` needs from the training cells:

1. the modelled genes (:func:`~scvi_gen.model.flows.gene_mask`: two passes for seurat_v3
   HVGs, none for an explicit list or all genes);
2. one pass for the representation's per-gene mean and standard deviation (seeded
   dequantisation noise), the log-library-size statistics and the continuous-covariate
   statistics of the condition encoder;
3. only for flows with ActNorm layers, one pass that keeps a fixed-size uniform sample of
   cells (:data:`INIT_CELLS`) for the data-dependent initialisation, done here, before
   training, so every process of a multi-device run starts from the same weights.

Memory is one batch plus O(genes) whatever the number of cells. Nothing draws from torch's or
numpy's global random state (the noise and the sample have their own seeded generators), so a
model's initial weights and training do not depend on how its data state was fitted.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import scipy.sparse as sp
import torch
from scvi import REGISTRY_KEYS
from torch import Tensor

from scvi_gen.base import BatchSource, RunningMoments
from scvi_gen.model.flows._conditioning import log_library_sizes
from scvi_gen.model.flows._layers import ActNorm
from scvi_gen.model.flows._module import ConditionalFlowModule
from scvi_gen.model.flows._representation import RepresentationMoments

logger = logging.getLogger(__name__)

#: Cells of the sample that initialises ActNorm layers (training used its first minibatch).
INIT_CELLS = 1024

_CONDITION_KEYS = (
    REGISTRY_KEYS.LABELS_KEY,
    REGISTRY_KEYS.BATCH_KEY,
    REGISTRY_KEYS.CAT_COVS_KEY,
    REGISTRY_KEYS.CONT_COVS_KEY,
)


def fit_module_state(
    module: ConditionalFlowModule,
    source: BatchSource,
    positions: np.ndarray,
    *,
    init_cells: int = INIT_CELLS,
    seed: int = 0,
) -> int:
    """Fit the representation, the condition encoder's statistics and ActNorm layers.

    Parameters
    ----------
    module
        The flow module (its architecture already built).
    source
        Batches of the training cells: counts of all registered genes and the registered
        conditions.
    positions
        Column positions of the modelled genes among the registered genes.
    init_cells
        Size of the uniform sample of cells initialising ActNorm layers.
    seed
        Seed of the dequantisation noise and of the sample.

    Returns
    -------
    The number of training cells.

    Examples
    --------
    >>> n_cells = fit_module_state(model.module, manager_source(model.adata_manager), positions)
    """
    conditions = module.conditions
    representation = RepresentationMoments(positions, seed=seed)
    library = RunningMoments(1)
    continuous = RunningMoments(conditions.n_continuous) if conditions.n_continuous else None
    for batch in source():
        counts = batch[REGISTRY_KEYS.X_KEY]
        representation.update(counts)
        library.update(log_library_sizes(counts.sum(axis=1)))
        if continuous is not None:
            continuous.update(np.asarray(batch[REGISTRY_KEYS.CONT_COVS_KEY], dtype=np.float64))
    module.representation.set_statistics(representation)
    conditions.set_library(library)
    if continuous is not None:
        conditions.set_continuous(continuous)
    n_cells = representation.count
    if any(isinstance(layer, ActNorm) for layer in module.layers):
        sample = sample_cells(source, n_cells, init_cells, seed=seed)
        initialize_actnorm(module, sample, seed=seed)
    return n_cells


def sample_cells(source: BatchSource, n_cells: int, size: int, seed: int = 0) -> dict:
    """A uniform sample of ``size`` cells (all of them when fewer), in one pass.

    The sampled positions are drawn up front among the ``n_cells`` cells of a pass; for a
    shuffled loader the cell at a position changes between passes, but it stays a uniform
    sample.

    Parameters
    ----------
    source
        Batches of the training cells.
    n_cells
        Number of cells in a pass.
    size
        Sample size.
    seed
        Seed of the draw.

    Returns
    -------
    One batch: a CSR ``"X"`` and the condition arrays of the sampled cells.

    Examples
    --------
    >>> sample = sample_cells(source, n_cells=50_000, size=1024)
    """
    size = min(int(size), int(n_cells))
    chosen = np.sort(np.random.default_rng(seed).choice(n_cells, size=size, replace=False))
    parts: dict[str, list] = {}
    start = 0
    for batch in source():
        n = batch[REGISTRY_KEYS.X_KEY].shape[0]
        rows = chosen[(chosen >= start) & (chosen < start + n)] - start
        if len(rows):
            for key, value in batch.items():
                parts.setdefault(key, []).append(value[rows])
        start += n
    return {
        key: sp.vstack(values, format="csr")
        if key == REGISTRY_KEYS.X_KEY
        else np.concatenate(values)
        for key, values in parts.items()
    }


def batch_tensors(batch: Mapping[str, np.ndarray]) -> dict[str, Tensor]:
    """The condition arrays of a batch as the tensors the module's context takes."""
    tensors = {}
    for key in _CONDITION_KEYS:
        if key in batch:
            values = np.asarray(batch[key])
            dtype = torch.float32 if key == REGISTRY_KEYS.CONT_COVS_KEY else torch.long
            tensors[key] = torch.as_tensor(values).to(dtype)
    return tensors


@torch.no_grad()
def initialize_actnorm(module: ConditionalFlowModule, sample: dict, seed: int = 0) -> None:
    """Data-dependent initialisation of the module's ActNorm layers from a sample of cells.

    The cells are encoded as in training (randomly dequantised, with a seeded generator) and
    passed through the flow; each ActNorm layer is set to standardise what reaches it.

    Parameters
    ----------
    module
        The flow module, its representation and condition statistics fitted.
    sample
        A batch of cells (:func:`sample_cells`).
    seed
        Seed of the dequantisation noise.
    """
    counts = sample[REGISTRY_KEYS.X_KEY]
    positions = module.representation.gene_index.cpu().numpy()
    device = module.representation.mean.device
    # Only the modelled genes are densified; the library size is the total over all genes.
    sub = torch.as_tensor(counts[:, positions].toarray(), dtype=torch.float32, device=device)
    library = torch.as_tensor(
        np.asarray(counts.sum(axis=1), dtype=np.float32).reshape(-1, 1), device=device
    )
    generator = torch.Generator(device=device).manual_seed(seed)
    u = torch.rand(sub.shape, generator=generator, device=device)
    z = module.representation.encode_selected(sub, library, u)
    conditions = {k: v.to(device) for k, v in batch_tensors(sample).items()}
    module.data_dependent_init(z, module.context(conditions, library))
