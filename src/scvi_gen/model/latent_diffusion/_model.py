"""LatentDiffusion: scLDM-style latent diffusion over set-attention latent tokens."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from anndata import AnnData
from scvi import REGISTRY_KEYS

from scvi_gen._matrix import iter_row_chunks
from scvi_gen.base._data_state import BatchSource
from scvi_gen.base._latent_model import LatentGenerator
from scvi_gen.base._latent_module import Dispersion, Stage
from scvi_gen.base._ode import ODEMethod
from scvi_gen.base._sampling import sample_nb_csr
from scvi_gen.base._validation import check_new_values, check_not_empty, require_anndata
from scvi_gen.model.cfgen._model import TRAIN_DEFAULTS as _CFGEN_TRAIN_DEFAULTS
from scvi_gen.model.latent_diffusion._module import LatentDiffusionModule

logger = logging.getLogger(__name__)

#: The attention autoencoder needs many optimiser steps: small batches and a higher rate than
#: CFGen's MLP (on PBMC3K, 2,000 HVGs, its validation NLL levels off after ~6 epochs of 64).
#: Gradients are clipped at norm 1 unless ``gradient_clip_val`` is given.
TRAIN_DEFAULTS: dict[str, Any] = {
    **_CFGEN_TRAIN_DEFAULTS,
    "max_epochs_autoencoder": 20,
    "max_epochs_flow": 150,
    "batch_size": 64,
    "plan": {
        "autoencoder": {**_CFGEN_TRAIN_DEFAULTS["plan"]["autoencoder"], "lr": 2e-3},
        "flow": dict(_CFGEN_TRAIN_DEFAULTS["plan"]["flow"]),
    },
    "trainer": {"gradient_clip_val": 1.0},
}
#: The prior's training reads latents from a table of at most this many bytes (about 470,000
#: cells at the default latent size); larger data is encoded batch by batch, so the memory of
#: training does not grow with the number of cells.
_MAX_CACHE_BYTES = 128 * 2**20
#: Pseudo-count of the decoder's initial per-gene bias (log mean proportion).
_BIAS_PSEUDO_PROPORTION = 1e-8


class LatentDiffusion(LatentGenerator):
    """scLDM-style latent diffusion: set-attention NB autoencoder and a DiT flow-matching prior.

    Genes are a set, not a sequence. The autoencoder embeds every *expressed* gene of a cell as
    ``gene_embedding(g) * value_embedding(log1p(normalised count))`` (zeros never become
    tokens: memory follows the number of non-zero genes), pools the tokens by cross-attention
    into ``n_tokens`` learned latent tokens (independent of the number and order of genes), and
    decodes by cross-attention from every gene's identity embedding to the latent tokens
    (equivariant to gene order) into NB means ``softmax(logits) * library size`` with a
    per-gene dispersion. A diffusion transformer with adaptive layer norm (DiT) models the
    standardised latent tokens with the linear interpolant / flow-matching objective,
    conditioned on every registered categorical attribute (each with a "null" category learned
    by condition dropout, for multi-attribute classifier-free guidance), on continuous
    covariates and on the log library size. An exponential moving average (EMA) of the DiT's
    weights is used for validation and sampling.

    Training, generation, guidance, ODE solvers, counterfactual :meth:`transfer`,
    :meth:`posterior_predictive_sample` and :meth:`impute` are the shared
    :class:`~scvi_gen.base.LatentGenerator`'s, as in :class:`~scvi_gen.model.cfgen.CFGen`
    (stage 2 is called ``"flow"`` in the history). Training defaults: 20 + 150 epochs,
    minibatches of 64, autoencoder learning rate 2e-3, gradients clipped at norm 1.

    **Other gene panels.** Genes are identified by learned embeddings, not by their column, so
    the decoder can decode any subset of the training genes in any order:
    :meth:`set_output_genes` makes :meth:`generate` produce such a panel (by default each gene
    gets the counts it would have in a full-panel cell: the library-size model describes
    full-panel totals; ``renormalize=True`` decodes only the panel), and
    ``module.decode(..., gene_ids=...)`` does it for given latents. In the same way
    :meth:`get_latent_representation` accepts data with the training genes in any order or a
    subset of them (absent genes count as not expressed). Genes never seen in training have
    no embedding and are rejected.

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata` (raw counts). ``None`` with ``registry``
        when loading.
    registry
        Registry of a saved model (used by :meth:`load`).
    n_tokens
        Number of latent tokens.
    latent_dim
        Width of each latent token; the flattened latent has ``n_tokens * latent_dim`` numbers.
    token_dim
        Width of the gene tokens in the encoder.
    pool_dim
        Width of keys and values of the encoder's pooling attention (its cost grows with
        ``non-zero entries x n_tokens x pool_dim``).
    token_dropout
        Fraction of a cell's expressed genes hidden from the encoder in each training step
        (set augmentation against memorising cells).
    latent_noise
        Gaussian noise (in minibatch standard deviations per latent dimension) added to the
        latents the decoder sees while the autoencoder trains: the decoder then also decodes
        the neighbourhood of real cells well, where the prior's samples land.
    n_heads
        Attention heads of the encoder.
    encoder_layers
        Self-attention blocks over the latent tokens in the encoder.
    decoder_dim, decoder_heads
        Width and attention heads of the decoder (its cost grows with
        ``cells x genes x n_tokens x decoder_heads``).
    decoder_layers
        Self-attention blocks over the latent tokens in the decoder.
    dispersion
        ``"gene"``, ``"gene-label"`` or ``"gene-batch"``.
    prior_dim, prior_blocks, prior_heads
        Width, number of blocks and heads of the DiT.
    mlp_ratio
        MLP width ratio of all transformer blocks.
    condition_dropout
        Probability of dropping each attribute while training the prior (``None``: 0.2 with
        one attribute, 0.5 with several).
    condition_on_library
        Condition the prior on the log library size.
    sigma_min
        Width of the interpolant at the data end.
    ema_decay
        Decay of the moving average of the DiT's weights.
    ode_method, ode_steps
        Default solver of generation (see :meth:`set_ode_solver`).
    default_guidance
        Guidance weight(s) when :meth:`generate` gets ``guidance=None``: one number or
        ``{obs_key: weight}``.

    Examples
    --------
    >>> scvi_gen.LatentDiffusion.setup_anndata(adata, labels_key="cell_type")
    >>> model = scvi_gen.LatentDiffusion(adata)
    >>> model.train(max_epochs_autoencoder=20, max_epochs_flow=150)
    >>> syn = model.generate(labels={"B cells": 500}, guidance={"cell_type": 1.5}, seed=0)
    >>> z = model.get_latent_representation()  # (n_cells, n_tokens * latent_dim)
    """

    _module_cls = LatentDiffusionModule
    _train_defaults: ClassVar[dict[str, Any]] = TRAIN_DEFAULTS

    def __init__(
        self,
        adata: AnnData | None = None,
        registry: dict | None = None,
        n_tokens: int = 8,
        latent_dim: int = 8,
        token_dim: int = 128,
        pool_dim: int = 64,
        token_dropout: float = 0.0,
        latent_noise: float = 0.1,
        n_heads: int = 4,
        encoder_layers: int = 1,
        decoder_dim: int = 64,
        decoder_heads: int = 2,
        decoder_layers: int = 1,
        dispersion: Dispersion = "gene",
        prior_dim: int = 64,
        prior_blocks: int = 2,
        prior_heads: int = 4,
        mlp_ratio: float = 2.0,
        condition_dropout: float | None = None,
        condition_on_library: bool = True,
        sigma_min: float = 1e-4,
        ema_decay: float = 0.995,
        ode_method: ODEMethod = "midpoint",
        ode_steps: int = 10,
        default_guidance: float | Mapping[str, float] = 1.0,
    ):
        super().__init__(adata, registry=registry)
        self.module = self._module_cls(
            n_input=self.summary_stats.n_vars,
            **self._module_base_kwargs(dispersion, condition_dropout),
            n_tokens=n_tokens,
            latent_dim=latent_dim,
            token_dim=token_dim,
            pool_dim=pool_dim,
            token_dropout=token_dropout,
            latent_noise=latent_noise,
            n_heads=n_heads,
            encoder_layers=encoder_layers,
            decoder_dim=decoder_dim,
            decoder_heads=decoder_heads,
            decoder_layers=decoder_layers,
            prior_dim=prior_dim,
            prior_blocks=prior_blocks,
            prior_heads=prior_heads,
            mlp_ratio=mlp_ratio,
            condition_on_library=condition_on_library,
            sigma_min=sigma_min,
            ema_decay=ema_decay,
        )
        self.output_genes_: list[str] | None = None
        self.output_renormalize_ = False
        self._model_summary_string = (
            f"LatentDiffusion: {n_tokens} latent tokens x {latent_dim}, DiT {prior_blocks} x "
            f"{prior_dim}, conditions {[f.obs_key for f in self.attribute_fields]}, solver "
            f"{ode_method}"
        )
        self._finish_init(adata, ode_method, ode_steps, default_guidance)
        self.init_params_ = self._get_init_params(locals())

    # ---------------------------------------------------------- statistics
    def _fit_model_state(self, source: BatchSource) -> None:
        """The shared library/covariate statistics, and the decoder's per-gene bias.

        The bias starts at the log mean expression proportion of every gene, so the decoder
        begins from the average cell instead of uniform proportions.
        """
        super()._fit_model_state(source)
        totals = np.zeros(self.summary_stats.n_vars)
        n_cells = 0
        for batch in source():
            block = batch[REGISTRY_KEYS.X_KEY]
            library = np.maximum(np.asarray(block.sum(axis=1)).ravel(), 1.0)
            scaled = sp.csr_matrix(block).multiply(1.0 / library[:, None])
            totals += np.asarray(scaled.sum(axis=0)).ravel()
            n_cells += block.shape[0]
        proportions = totals / max(n_cells, 1)
        bias = np.log(proportions + _BIAS_PSEUDO_PROPORTION)
        self.module.decoder.gene_bias.data.copy_(torch.as_tensor(bias - bias.mean()))

    # -------------------------------------------------------------- training
    @contextlib.contextmanager
    def _stage_context(self, stage: Stage) -> Iterator[None]:
        """While the prior trains, read the frozen encoder's latents from a table."""
        module = self.module
        if (
            stage != "flow"
            or self.adata is None
            or module.latent_cache_bytes(self.adata.n_obs, module.n_latent) > _MAX_CACHE_BYTES
        ):
            yield
            return
        training = module.training
        module.eval()
        module.set_latent_cache(
            (t[REGISTRY_KEYS.X_KEY] for t in self._batches(None, None, None)), self.adata.n_obs
        )
        # Lightning keeps the mode it finds: back to the mode the stage was started in.
        module.train(training)
        try:
            yield
        finally:
            module.clear_latent_cache()

    # ---------------------------------------------------------- gene panels
    def _checked_gene_subset(self, adata: AnnData) -> Any:
        """Counts of cells with training genes in another order or a subset, checked as at setup.

        scvi-tools' registration, which would check them, needs the training genes in order.
        """
        check_not_empty(adata)
        if not adata.var_names.is_unique:
            raise ValueError(
                "adata.var_names has duplicates; make them unique (adata.var_names_make_unique())."
            )
        layer = self.registry_["setup_args"].get("layer")
        return check_new_values(adata, layer, require_counts=True)

    def _gene_ids(self, genes: Sequence[str]) -> torch.Tensor:
        """Training-gene indices of ``genes`` (which must all be training genes)."""
        training = self._training_var_names()
        ids = training.get_indexer(pd.Index([str(g) for g in genes]))
        if np.any(ids < 0):
            missing = [str(g) for g, i in zip(genes, ids) if i < 0]
            raise ValueError(
                f"{len(missing)} genes are not training genes (e.g. {missing[:5]}); the model "
                "only knows the identities of the genes it was trained on."
            )
        return torch.as_tensor(ids, dtype=torch.long)

    def set_output_genes(
        self, genes: Sequence[str] | None = None, renormalize: bool = False
    ) -> None:
        """Generate a different panel: any subset of the training genes, in any order.

        Parameters
        ----------
        genes
            Training gene names to generate (``None``: back to all training genes).
        renormalize
            ``False``: each gene gets the counts it would have in a full-panel cell (library
            sizes are full-panel totals, as drawn by the library-size model). ``True``: the
            decoder computes only these genes and their proportions sum to one, so library
            sizes are totals of the panel (pass ``library_size`` to :meth:`generate`); the
            cost then follows the panel size.

        Examples
        --------
        >>> model.set_output_genes(["CD3E", "MS4A1", "NKG7"])
        >>> syn = model.generate(100, seed=0)  # 3 genes
        """
        if genes is not None:
            genes = [str(g) for g in genes]
            if not genes:
                raise ValueError("`genes` is empty.")
            if len(set(genes)) != len(genes):
                raise ValueError("`genes` has duplicates.")
            self._gene_ids(genes)
        self.output_genes_ = genes
        self.output_renormalize_ = bool(renormalize)

    def _generated_var_names(self) -> pd.Index:
        if self.output_genes_ is None:
            return self._training_var_names()
        return pd.Index(self.output_genes_)

    def _output_gene_ids(self) -> torch.Tensor | None:
        if self.output_genes_ is None:
            return None
        return self._gene_ids(self.output_genes_).to(self.module.latent_mean.device)

    # ----------------------------------------------------------- generation
    def _decode_generated(
        self, z: torch.Tensor, library: torch.Tensor, codes: torch.Tensor
    ) -> sp.csr_matrix:
        """Counts of generated latents for the output panel (:meth:`set_output_genes`)."""
        mu, theta = self.module.decode(
            z,
            library,
            codes,
            gene_ids=self._output_gene_ids(),
            renormalize=self.output_renormalize_,
        )
        return sample_nb_csr(mu, theta)

    # --------------------------------------------------------------- latents
    @torch.inference_mode()
    def get_latent_representation(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        batch_size: int | None = None,
        standardized: bool = False,
    ) -> np.ndarray:
        """Pooled latent tokens of cells, flattened to ``n_tokens * latent_dim`` numbers.

        The latent is invariant to the order of the genes: ``adata`` may hold the training
        genes in any order, or a subset of them (absent genes count as not expressed).

        Parameters
        ----------
        adata
            Cells with raw counts in the registered layer (``None``: the training data).
        indices
            Cells to encode (``None``: all).
        batch_size
            Cells per minibatch.
        standardized
            Return latents in the prior's standardised space.

        Returns
        -------
        ``(n_cells, n_tokens * latent_dim)`` array.

        Examples
        --------
        >>> adata.obsm["X_ldm"] = model.get_latent_representation()
        """
        training = self._training_var_names()
        if adata is not None:
            require_anndata(adata)
        if adata is None or pd.Index(adata.var_names.astype(str)).equals(training):
            return super().get_latent_representation(adata, indices, batch_size, standardized)
        matrix = self._checked_gene_subset(adata)
        gene_ids = self._gene_ids(adata.var_names).to(self.module.latent_mean.device)
        if indices is not None:
            matrix = matrix[np.asarray(indices)]
        self.module.eval()
        out = []
        for block in iter_row_chunks(matrix, batch_size or 1024):
            dense = block.toarray() if sp.issparse(block) else np.asarray(block)
            x = torch.as_tensor(dense, dtype=torch.float32, device=gene_ids.device)
            z = self.module.encode(x, gene_ids)
            out.append((self.module.standardize(z) if standardized else z).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.module.n_latent), np.float32)
