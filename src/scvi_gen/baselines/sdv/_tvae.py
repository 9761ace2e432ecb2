"""TVAEGenerator: SDV's TVAE, one per label, on PCA of log1p(CP10k)."""

from __future__ import annotations

import logging
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


class TVAEModule(ModeNormalizedModule):
    """Per-label TVAE decoders (ctgan's ``Decoder``) and their mode tables.

    Parameters
    ----------
    n_labels
        Number of registered labels.
    embedding_dim
        Latent size of the decoders.
    hidden_dims
        Sizes of the decoders' hidden layers.
    """

    def make_network(self, data_dim: int) -> nn.Module:
        """A fresh ctgan TVAE ``Decoder``."""
        return ctgan_network("Decoder")(self.embedding_dim, self.hidden_dims, data_dim)

    def sample(self, label: int, n: int) -> Tensor:
        """Sample principal components of ``n`` cells of one label.

        As in ctgan's TVAE sampler: decode standard normal latents, ``tanh`` the outputs, add
        Gaussian noise with the decoder's learned ``sigma`` to each ``alpha`` and take the most
        likely mixture component.
        """
        output, sigma = self.networks[str(label)](
            torch.randn(n, self.embedding_dim, device=self.device)
        )
        output = torch.tanh(output)
        spans = self.spans(label)
        starts = torch.tensor([s for s, _ in spans], device=self.device)
        alpha = output[:, starts] + sigma[starts] * torch.randn(n, len(spans), device=self.device)
        modes = torch.stack([output[:, s + 1 : s + 1 + m].argmax(dim=1) for s, m in spans], dim=1)
        return self.invert(label, alpha, modes)


class TVAEGenerator(SDVGeneratorBase):
    """SDV's TVAESynthesizer per label on principal components of log1p(CP10k).

    Each label's TVAE (a VAE over ctgan's mode-normalised columns) is trained by SDV; its
    decoder weights and the mixture components of its data transformer are kept as tensors.
    Generation decodes standard normal latents and inverts the mode normalisation (see
    :class:`TVAEModule`), then projects the components back to genes (clipped at 0). Saved
    models contain no pickle.

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
        Principal components the VAE models.
    enforce_min_max_values
        Clip sampled components to each label's training range.
    embedding_dim
        Latent size.
    compress_dims
        Hidden layer sizes of the encoder.
    decompress_dims
        Hidden layer sizes of the decoder.
    l2scale
        Weight decay.
    loss_factor
        Weight of the reconstruction term.

    Examples
    --------
    >>> scvi_gen.baselines.sdv.TVAEGenerator.setup_anndata(adata, labels_key="cell_type")
    >>> model = scvi_gen.baselines.sdv.TVAEGenerator(adata)
    >>> model.train(max_epochs=100)
    >>> syn = model.generate(labels={"B": 100}, seed=0)
    """

    _module_cls = TVAEModule

    def __init__(
        self,
        adata: AnnData | None = None,
        registry: dict | None = None,
        n_top_genes: int | None = 2000,
        n_components: int = 50,
        enforce_min_max_values: bool = True,
        embedding_dim: int = 128,
        compress_dims: tuple[int, ...] = (128, 128),
        decompress_dims: tuple[int, ...] = (128, 128),
        l2scale: float = 1e-5,
        loss_factor: float = 2.0,
    ) -> None:
        self._network_kwargs = {
            "embedding_dim": int(embedding_dim),
            "hidden_dims": tuple(decompress_dims),
        }
        self._vae_kwargs = {
            "embedding_dim": int(embedding_dim),
            "compress_dims": tuple(compress_dims),
            "decompress_dims": tuple(decompress_dims),
            "l2scale": float(l2scale),
            "loss_factor": float(loss_factor),
        }
        super().__init__(
            adata,
            registry=registry,
            n_top_genes=n_top_genes,
            n_components=n_components,
            enforce_min_max_values=enforce_min_max_values,
        )
        self.init_params_ = self._get_init_params(locals())

    def _build_module(self, n_labels: int) -> TVAEModule:
        return TVAEModule(n_labels, **self._network_kwargs)

    def train(
        self, max_epochs: int = 300, batch_size: int = 500, progress_bar: bool = True
    ) -> None:
        """Fit the PCA and one TVAE per label (SDV's training loop, on CPU or GPU).

        Parameters
        ----------
        max_epochs
            TVAE epochs per label (SDV's ``epochs``).
        batch_size
            Rows per step (a label with fewer cells is one batch).
        progress_bar
            Show a progress bar over labels.
        """
        self._fit_per_label(progress_bar, epochs=int(max_epochs), batch_size=int(batch_size))

    def _fit_label(self, label: int, data: pd.DataFrame, **fit_kwargs: Any) -> pd.DataFrame:
        synthesizer = fit_synthesizer(
            "TVAESynthesizer",
            data,
            enforce_min_max_values=self._enforce_min_max_values,
            **self._vae_kwargs,
            **fit_kwargs,
        )
        vae = synthesizer._model  # ctgan.TVAE
        check_transformer_columns(vae.transformer, data)
        means, stds = mixture_modes(vae.transformer)
        self.module.set_label_state(label, vae.decoder.cpu(), means, stds)
        return synthesizer.get_loss_values()

    def _sample_label(self, label: int, n: int) -> torch.Tensor:
        return self.module.sample(label, n)
