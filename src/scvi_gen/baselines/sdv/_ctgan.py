"""CTGANGenerator: SDV's CTGAN, one per label, on PCA of log1p(CP10k)."""

from __future__ import annotations

import logging
import math
from typing import Any

import pandas as pd
import torch
from anndata import AnnData
from torch import Tensor, nn

from scvi_gen.baselines.sdv._base import SDVGeneratorBase
from scvi_gen.baselines.sdv._module import ModeNormalizedModule, mixture_modes
from scvi_gen.baselines.sdv._sdv import (
    check_transformer_columns,
    ctgan_network,
    fit_synthesizer,
)

logger = logging.getLogger(__name__)


class CTGANModule(ModeNormalizedModule):
    """Per-label CTGAN generators (ctgan's ``Generator``) and their mode tables.

    Parameters
    ----------
    n_labels
        Number of registered labels.
    embedding_dim
        Size of the generator's noise input.
    hidden_dims
        Sizes of the generator's residual layers.
    """

    def make_network(self, data_dim: int) -> nn.Module:
        """A fresh ctgan ``Generator`` (no conditional vector: one model per label)."""
        return ctgan_network("Generator")(self.embedding_dim, self.hidden_dims, data_dim)

    def sample(self, label: int, n: int) -> Tensor:
        """Sample principal components of ``n`` cells of one label.

        As in ctgan's sampler, ``alpha = tanh(output)`` and the mixture component is drawn from
        the softmax of its logits (ctgan takes the argmax of a Gumbel-softmax, the same
        distribution). The generator runs in eval mode, so batch normalisation uses its running
        statistics and a cell does not depend on the others in its chunk.
        """
        output = self.networks[str(label)](torch.randn(n, self.embedding_dim, device=self.device))
        spans = self.spans(label)
        alpha = torch.stack([torch.tanh(output[:, s]) for s, _ in spans], dim=1)
        modes = torch.stack(
            [
                torch.distributions.Categorical(logits=output[:, s + 1 : s + 1 + m]).sample()
                for s, m in spans
            ],
            dim=1,
        )
        return self.invert(label, alpha, modes)


def label_batch_size(n_cells: int, batch_size: int, pac: int) -> int:
    """CTGAN batch size for a label with ``n_cells`` cells.

    CTGAN draws ``batch_size`` rows with replacement at every step (at least one step per
    epoch), so a small label would cost as much as a large one; its batch is shrunk to the
    smallest multiple of ``lcm(2, pac)`` (CTGAN's constraint) holding all its cells.

    Parameters
    ----------
    n_cells
        Training cells of the label.
    batch_size
        The configured batch size.
    pac
        CTGAN's ``pac``.

    Returns
    -------
    The batch size to use.

    Examples
    --------
    >>> label_batch_size(11, 500, 10)
    20
    """
    step = math.lcm(2, pac)
    return min(batch_size, max(step, math.ceil(n_cells / step) * step))


class CTGANGenerator(SDVGeneratorBase):
    """SDV's CTGANSynthesizer per label on principal components of log1p(CP10k).

    Each label's CTGAN (conditional tabular GAN with mode-specific normalisation of every
    component) is trained by SDV. Its generator weights and the mixture components of its
    data transformer are kept as tensors; generation runs the generator on Gaussian noise and
    inverts the mode normalisation (see :class:`CTGANModule`), then projects the components
    back to genes (clipped at 0). Saved models contain no pickle.

    SDV and its ``ctgan`` dependency are under the Business Source License 1.1 (optional extra
    ``scvi-gen[sdv]``, never vendored).

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
        Principal components the GAN models.
    enforce_min_max_values
        Clip sampled components to each label's training range.
    embedding_dim
        Size of the generator's noise input.
    generator_dim
        Sizes of the generator's residual layers.
    discriminator_dim
        Sizes of the discriminator's layers.
    pac
        Samples the discriminator sees together (PacGAN).

    Examples
    --------
    >>> scvi_gen.baselines.sdv.CTGANGenerator.setup_anndata(adata, labels_key="cell_type")
    >>> model = scvi_gen.baselines.sdv.CTGANGenerator(adata)
    >>> model.train(max_epochs=100)
    >>> syn = model.generate(labels={"B": 100}, seed=0)
    """

    _module_cls = CTGANModule

    def __init__(
        self,
        adata: AnnData | None = None,
        registry: dict | None = None,
        n_top_genes: int | None = 2000,
        n_components: int = 50,
        enforce_min_max_values: bool = True,
        embedding_dim: int = 128,
        generator_dim: tuple[int, ...] = (256, 256),
        discriminator_dim: tuple[int, ...] = (256, 256),
        pac: int = 10,
    ) -> None:
        self._network_kwargs = {
            "embedding_dim": int(embedding_dim),
            "hidden_dims": tuple(generator_dim),
        }
        self._gan_kwargs = {
            "embedding_dim": int(embedding_dim),
            "generator_dim": tuple(generator_dim),
            "discriminator_dim": tuple(discriminator_dim),
            "pac": int(pac),
        }
        super().__init__(
            adata,
            registry=registry,
            n_top_genes=n_top_genes,
            n_components=n_components,
            enforce_min_max_values=enforce_min_max_values,
        )
        self.init_params_ = self._get_init_params(locals())

    def _build_module(self, n_labels: int) -> CTGANModule:
        return CTGANModule(n_labels, **self._network_kwargs)

    def train(
        self,
        max_epochs: int = 300,
        batch_size: int = 500,
        generator_lr: float = 2e-4,
        discriminator_lr: float = 2e-4,
        discriminator_steps: int = 1,
        progress_bar: bool = True,
    ) -> None:
        """Fit the PCA and one CTGAN per label (SDV's training loop, on CPU or GPU).

        Parameters
        ----------
        max_epochs
            CTGAN epochs per label (SDV's ``epochs``).
        batch_size
            Rows per step; a label with fewer cells uses a smaller batch (see
            :func:`label_batch_size`). Must be a multiple of ``lcm(2, pac)``.
        generator_lr
            Learning rate of the generator.
        discriminator_lr
            Learning rate of the discriminator.
        discriminator_steps
            Discriminator updates per generator update.
        progress_bar
            Show a progress bar over labels.
        """
        step = math.lcm(2, self._gan_kwargs["pac"])
        if batch_size % step:
            raise ValueError(f"`batch_size` must be a multiple of {step} (pac), got {batch_size}.")
        self._fit_per_label(
            progress_bar,
            epochs=int(max_epochs),
            batch_size=int(batch_size),
            generator_lr=generator_lr,
            discriminator_lr=discriminator_lr,
            discriminator_steps=int(discriminator_steps),
        )

    def _fit_label(self, label: int, data: pd.DataFrame, **fit_kwargs: Any) -> pd.DataFrame:
        fit_kwargs["batch_size"] = label_batch_size(
            len(data), fit_kwargs["batch_size"], self._gan_kwargs["pac"]
        )
        synthesizer = fit_synthesizer(
            "CTGANSynthesizer",
            data,
            enforce_min_max_values=self._enforce_min_max_values,
            **self._gan_kwargs,
            **fit_kwargs,
        )
        gan = synthesizer._model  # ctgan.CTGAN
        check_transformer_columns(gan._transformer, data)
        means, stds = mixture_modes(gan._transformer)
        self.module.set_label_state(label, gan._generator.cpu(), means, stds)
        return synthesizer.get_loss_values()

    def _sample_label(self, label: int, n: int) -> torch.Tensor:
        return self.module.sample(label, n)
