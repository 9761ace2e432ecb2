"""Torch state of the SDV baselines: the PCA representation and per-label sampler parameters.

Everything a fitted SDV baseline needs to generate lives in buffers and sub-modules of these
modules (or in JSON attributes of the model), so a saved model is a weights-only state dict:
loading never unpickles a synthesizer. Buffer shapes depend on the data (number of genes,
principal components, labels, mixture components), so :meth:`SDVModule.resize_to` first
checks that the saved shapes agree with each other, then resizes the buffers and rebuilds
the per-label networks to them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)

#: Components of ctgan's per-column Bayesian Gaussian mixture (its ``max_clusters``).
MAX_MODES = 10
#: ctgan/rdt scale a value by ``4 * std`` of its mixture component (ClusterBasedNormalizer).
STD_MULTIPLIER = 4.0


class SDVModule(nn.Module):
    """PCA representation of log1p(CP10k) genes plus per-label bounds of the components.

    Parameters
    ----------
    n_labels
        Number of registered labels (one synthesizer per label).

    Examples
    --------
    >>> module = SDVModule(n_labels=3)
    >>> module.set_representation(gene_index, components, mean)
    >>> values = module.decode(pcs)  # (n, n_genes) log1p(CP10k), never negative
    """

    def __init__(self, n_labels: int) -> None:
        super().__init__()
        self.register_buffer("gene_index", torch.zeros(0, dtype=torch.long))
        self.register_buffer("components", torch.zeros(0, 0))
        self.register_buffer("mean", torch.zeros(0))
        self.register_buffer("pc_min", torch.zeros(n_labels, 0))
        self.register_buffer("pc_max", torch.zeros(n_labels, 0))
        self.register_buffer("fitted", torch.zeros(n_labels, dtype=torch.bool))

    @property
    def device(self) -> torch.device:
        """Device of the module's buffers."""
        return self.mean.device

    @property
    def n_labels(self) -> int:
        """Number of labels (fitted or not)."""
        return int(self.fitted.numel())

    @property
    def n_components(self) -> int:
        """Number of principal components the synthesizers model."""
        return int(self.components.shape[0])

    def set_representation(
        self, gene_index: np.ndarray, components: np.ndarray, mean: np.ndarray
    ) -> None:
        """Store the modelled genes and the PCA fitted on the training cells.

        Parameters
        ----------
        gene_index
            Positions of the modelled genes among the registered genes.
        components
            ``(n_components, n_genes)`` principal axes.
        mean
            ``(n_genes,)`` training mean of log1p(CP10k).
        """
        self.gene_index = torch.as_tensor(np.asarray(gene_index), dtype=torch.long)
        self.components = torch.as_tensor(np.asarray(components), dtype=torch.float32)
        self.mean = torch.as_tensor(np.asarray(mean), dtype=torch.float32)
        self.pc_min = torch.zeros(self.n_labels, self.n_components)
        self.pc_max = torch.zeros(self.n_labels, self.n_components)
        self.fitted = torch.zeros(self.n_labels, dtype=torch.bool)

    def set_bounds(self, label: int, pcs: np.ndarray, enforce: bool = True) -> None:
        """Mark a label fitted and record the range its samples are clipped to.

        Parameters
        ----------
        label
            Label code.
        pcs
            The label's training components.
        enforce
            Clip to the training range (SDV's ``enforce_min_max_values``); else no bounds.
        """
        low = pcs.min(axis=0) if enforce else np.full(pcs.shape[1], -np.inf)
        high = pcs.max(axis=0) if enforce else np.full(pcs.shape[1], np.inf)
        self.pc_min[label] = torch.as_tensor(low, dtype=torch.float32)
        self.pc_max[label] = torch.as_tensor(high, dtype=torch.float32)
        self.fitted[label] = True

    def clip(self, label: int, pcs: Tensor) -> Tensor:
        """Clip sampled components to the label's training range."""
        return torch.minimum(torch.maximum(pcs, self.pc_min[label]), self.pc_max[label])

    def decode(self, pcs: Tensor) -> Tensor:
        """Principal components -> log1p(CP10k) of the modelled genes, clipped at 0."""
        return (pcs.float() @ self.components + self.mean).clamp_min(0.0)

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> Any:
        """Resize buffers and rebuild per-label networks to the saved shapes, then load."""
        self.resize_to(state_dict)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def resize_to(self, state_dict: Mapping[str, Any]) -> None:
        """Give buffers and per-label networks the sizes of a saved state, after checking them.

        The buffers' shapes must agree with each other (genes and components from
        ``components``, labels from this module): a file whose shapes were edited is refused
        here, since resizing to it would otherwise accept any shape.

        Raises
        ------
        ValueError
            Naming the first buffer whose shape disagrees (or that is missing).
        """
        for name, shape in self.buffer_shapes(state_dict).items():
            if name not in state_dict:
                raise ValueError(f"weight {name!r} is missing")
            found = tuple(state_dict[name].shape)
            if found != shape:
                raise ValueError(
                    f"weight {name!r} has shape {found}, but the saved PCA "
                    f"({'x'.join(map(str, shape_of(state_dict, 'components')))}) and "
                    f"{self.n_labels} labels need {shape}"
                )
        for name, _ in list(self.named_buffers(recurse=False)):
            setattr(self, name, torch.empty_like(state_dict[name], device=self.device))
        self._rebuild(state_dict)

    def buffer_shapes(self, state_dict: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
        """The shape every buffer must have, given the saved ``components`` (subclasses add)."""
        components = shape_of(state_dict, "components")
        if len(components) != 2:
            raise ValueError(
                f"weight 'components' has shape {components}; it must be 2-D (components x genes)"
            )
        k, g = components
        n = self.n_labels
        return {
            "gene_index": (g,),
            "mean": (g,),
            "pc_min": (n, k),
            "pc_max": (n, k),
            "fitted": (n,),
        }

    def _rebuild(self, state_dict: Mapping[str, Any]) -> None:
        """Create sub-modules whose sizes are only known from a saved state (subclasses)."""


def shape_of(state_dict: Mapping[str, Any], name: str) -> tuple[int, ...]:
    """Shape of ``state_dict[name]``; a clear error when the file lacks it."""
    if name not in state_dict:
        raise ValueError(f"weight {name!r} is missing")
    return tuple(state_dict[name].shape)


class ModeNormalizedModule(SDVModule):
    """State shared by CTGAN and TVAE: one network per label and ctgan's mode normalisation.

    ctgan represents each continuous column by a scalar ``alpha`` in [-1, 1] and a one-hot
    mixture component ``k`` of a Bayesian Gaussian mixture fitted on that column; the value is
    ``alpha * 4 * std_k + mean_k``. The valid components' means and standard deviations are
    stored per label and column (padded to :data:`MAX_MODES`), ``n_modes`` counts them.

    Parameters
    ----------
    n_labels
        Number of registered labels.
    embedding_dim
        Size of the networks' noise input.
    hidden_dims
        Hidden layer sizes of the per-label networks.
    """

    def __init__(self, n_labels: int, embedding_dim: int, hidden_dims: tuple[int, ...]) -> None:
        super().__init__(n_labels)
        self.embedding_dim = int(embedding_dim)
        self.hidden_dims = tuple(int(d) for d in hidden_dims)
        self.register_buffer("n_modes", torch.zeros(n_labels, 0, dtype=torch.long))
        self.register_buffer("mode_mean", torch.zeros(n_labels, 0, MAX_MODES))
        self.register_buffer("mode_std", torch.ones(n_labels, 0, MAX_MODES))
        self.networks = nn.ModuleDict()

    def set_representation(
        self, gene_index: np.ndarray, components: np.ndarray, mean: np.ndarray
    ) -> None:
        """Store the PCA and reset the per-label mode tables to its size."""
        super().set_representation(gene_index, components, mean)
        shape = (self.n_labels, self.n_components)
        self.n_modes = torch.zeros(shape, dtype=torch.long)
        self.mode_mean = torch.zeros(*shape, MAX_MODES)
        self.mode_std = torch.ones(*shape, MAX_MODES)
        self.networks = nn.ModuleDict()

    def set_label_state(
        self,
        label: int,
        network: nn.Module,
        mode_means: list[np.ndarray],
        mode_stds: list[np.ndarray],
    ) -> None:
        """Store one label's fitted network and the valid mixture components of every column."""
        for column, (means, stds) in enumerate(zip(mode_means, mode_stds)):
            n = len(means)
            self.n_modes[label, column] = n
            self.mode_mean[label, column, :n] = torch.as_tensor(means, dtype=torch.float32)
            self.mode_std[label, column, :n] = torch.as_tensor(stds, dtype=torch.float32)
        self.networks[str(label)] = network.to(self.device)

    def data_dim(self, label: int) -> int:
        """Width of one label's network output: per column one ``alpha`` plus its modes."""
        return int(self.n_components + self.n_modes[label].sum())

    def spans(self, label: int) -> list[tuple[int, int]]:
        """``(start of alpha, number of modes)`` of every column in the network output."""
        out, start = [], 0
        for n in self.n_modes[label].tolist():
            out.append((start, n))
            start += 1 + n
        return out

    def invert(self, label: int, alpha: Tensor, modes: Tensor) -> Tensor:
        """``(n, n_components)`` alphas and chosen modes -> principal components, clipped."""
        alpha = alpha.clamp(-1.0, 1.0)
        mean = torch.gather(self.mode_mean[label].expand(len(modes), -1, -1), 2, modes[..., None])
        std = torch.gather(self.mode_std[label].expand(len(modes), -1, -1), 2, modes[..., None])
        return self.clip(label, alpha * STD_MULTIPLIER * std[..., 0] + mean[..., 0])

    def buffer_shapes(self, state_dict: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
        """Also the per-label, per-component mixture tables."""
        shapes = super().buffer_shapes(state_dict)
        table = (self.n_labels, shape_of(state_dict, "components")[0])
        return {
            **shapes,
            "n_modes": table,
            "mode_mean": (*table, MAX_MODES),
            "mode_std": (*table, MAX_MODES),
        }

    def _rebuild(self, state_dict: Mapping[str, Any]) -> None:
        n_components = state_dict["components"].shape[0]
        n_modes = state_dict["n_modes"]
        self.networks = nn.ModuleDict()
        for label in torch.nonzero(state_dict["fitted"]).view(-1).tolist():
            data_dim = int(n_components + n_modes[label].sum())
            self.networks[str(label)] = self.make_network(data_dim).to(self.device)

    def make_network(self, data_dim: int) -> nn.Module:
        """A fresh (untrained) per-label network with ``data_dim`` outputs (subclasses)."""
        raise NotImplementedError

    def sample(self, label: int, n: int) -> Tensor:
        """Sample ``n`` cells' principal components for one label (subclasses)."""
        raise NotImplementedError


def mixture_modes(transformer: Any) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Means and standard deviations of the valid mixture components of every column.

    Parameters
    ----------
    transformer
        The fitted ``ctgan.data_transformer.DataTransformer`` of a CTGAN or TVAE model.

    Returns
    -------
    Per column (in the transformer's order), the valid components' means and stds.
    """
    means, stds = [], []
    for info in transformer._column_transform_info_list:
        if info.column_type != "continuous":
            raise ValueError(f"Column {info.column_name!r} is not continuous.")
        normalizer = info.transform  # rdt ClusterBasedNormalizer
        valid = np.asarray(normalizer.valid_component_indicator, dtype=bool)
        mixture = normalizer._bgm_transformer
        means.append(np.asarray(mixture.means_).reshape(-1)[valid])
        stds.append(np.sqrt(np.asarray(mixture.covariances_)).reshape(-1)[valid])
    return means, stds
