"""The denoising network: a transformer over gene tokens, conditioned through adaptive layer norm."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from scvi_gen.nn._embeddings import ConditionEmbedding, TimeEmbedding
from scvi_gen.nn._transformer import AdaLNTransformerBlock

logger = logging.getLogger(__name__)

AttentionKind = Literal["latent", "full"]

#: Architecture presets. ``gene_dim``: width of the per-gene tokens and of attention over genes
#: (the cost that scales with the number of genes); ``dim``: width of the latent tokens and of
#: the conditioning vector; ``n_layers``: self-attention blocks over the latents (``"latent"``
#: attention) or over the genes (``"full"``).
SIZE_PRESETS: dict[str, dict[str, Any]] = {
    "small": {"gene_dim": 16, "dim": 128, "n_heads": 4, "n_latents": 16, "n_layers": 3},
    "medium": {"gene_dim": 32, "dim": 256, "n_heads": 8, "n_latents": 32, "n_layers": 4},
    "large": {"gene_dim": 64, "dim": 384, "n_heads": 8, "n_latents": 64, "n_layers": 6},
}


def resolve_architecture(size: str, **overrides: Any) -> dict[str, Any]:
    """Architecture hyperparameters of a preset, with explicit (non-None) overrides.

    Parameters
    ----------
    size
        ``"small"``, ``"medium"`` or ``"large"``.
    **overrides
        Hyperparameters to change; ``None`` keeps the preset value.

    Returns
    -------
    The full set of architecture hyperparameters.

    Examples
    --------
    >>> resolve_architecture("small", n_latents=8)["n_latents"]
    8
    """
    if size not in SIZE_PRESETS:
        raise ValueError(f"`size` must be one of {list(SIZE_PRESETS)}, got {size!r}.")
    arch = dict(SIZE_PRESETS[size])
    arch.update({k: v for k, v in overrides.items() if v is not None})
    return arch


class GeneTokenDenoiser(nn.Module):
    """Predict the clean expression token of every gene from a partly masked cell.

    Each gene is a token ``token_embedding[token] + gene_embedding[gene]`` (gene identity, no
    positional encoding over the arbitrary order of ``var``). A conditioning vector ``c`` =
    embedding of the noise level (fraction of masked genes) + embedding of the log library
    size + embeddings of the conditions drives adaptive layer norm (adaLN-Zero) in every
    transformer block.

    ``attention="latent"`` (default, Perceiver IO): ``n_latents`` learned latent tokens,
    seeded with a bag (sum) of the cell's (gene, token) embeddings and the conditions, read
    the gene tokens by cross-attention, go through ``n_layers`` self-attention blocks, and each
    gene reads its prediction back from the latents with a query given by its identity (the
    genes to predict are masked, so their own token carries no information). Time and memory
    are linear in the number of genes. ``attention="full"``: ``n_layers`` blocks of gene-gene
    self-attention through ``scaled_dot_product_attention`` (quadratic compute, memory-efficient
    kernels; for GPUs). Both end in ``num_bins`` logits per gene (the MASK token is never
    predicted): a shared head on the gene's read-out, plus a gene-specific low-rank read-out
    of the cell state and conditions (``factor_head``), plus a per-gene bias initialised to
    the log marginal token frequencies. Only the requested (cell, gene) pairs are decoded.

    Parameters
    ----------
    n_genes
        Number of modelled genes.
    num_bins
        Number of data tokens; the input vocabulary adds MASK (index ``num_bins``).
    n_categories
        Categories of each categorical condition: labels, batch, then extra covariates.
    n_continuous
        Number of continuous covariates (always used, never dropped).
    gene_dim, dim, n_heads, n_latents, n_layers
        Architecture (see :data:`SIZE_PRESETS`); ``n_heads`` is the number of heads of the
        latent self-attention, attention over genes uses ``gene_dim // 16`` heads.
    attention
        ``"latent"`` or ``"full"``.
    dropout
        Dropout in attention and MLPs.
    """

    def __init__(
        self,
        n_genes: int,
        num_bins: int,
        n_categories: Sequence[int],
        n_continuous: int,
        gene_dim: int,
        dim: int,
        n_heads: int,
        n_latents: int,
        n_layers: int,
        attention: AttentionKind = "latent",
        dropout: float = 0.0,
    ):
        super().__init__()
        if attention not in ("latent", "full"):
            raise ValueError(f"`attention` must be 'latent' or 'full', got {attention!r}.")
        self.attention = attention
        # attention over genes uses heads of width 16: tiny heads make CPU kernels slow
        self.gene_heads = max(1, gene_dim // 16)
        self.token_embedding = nn.Embedding(num_bins + 1, gene_dim)
        self.gene_embedding = nn.Parameter(torch.randn(n_genes, gene_dim) * 0.02)
        self.noise_embedding = TimeEmbedding(dim)
        self.library_embedding = nn.Linear(1, dim)
        self.condition_embedding = ConditionEmbedding(n_categories, dim, n_continuous)
        if attention == "latent":
            self.latents = nn.Parameter(torch.randn(n_latents, dim) * 0.02)
            # a bag of (gene, token) embeddings summed over genes: a direct, cheap summary of
            # the whole cell (no n x genes x width tensor) that seeds the latents
            self.n_tokens = num_bins + 1
            # (width 2 * gene_dim: the table has genes x tokens rows)
            self.cell_embedding = nn.EmbeddingBag(
                n_genes * self.n_tokens, 2 * gene_dim, mode="sum"
            )
            nn.init.normal_(self.cell_embedding.weight, std=0.02)
            self.register_buffer(
                "token_offsets", torch.arange(n_genes) * self.n_tokens, persistent=False
            )
            self.cell_norm = nn.LayerNorm(2 * gene_dim)
            self.cell_to_latents = nn.Linear(2 * gene_dim, n_latents * dim)
            self.read = AdaLNTransformerBlock(
                dim,
                self.gene_heads,
                dim,
                dropout=dropout,
                self_attention=False,
                context_dim=gene_dim,
                attn_dim=gene_dim,
                norm_context=False,
            )
            self.blocks = nn.ModuleList(
                AdaLNTransformerBlock(dim, n_heads, dim, dropout=dropout) for _ in range(n_layers)
            )
            self.latent_norm = nn.LayerNorm(dim)
            self.gene_query = nn.Parameter(torch.randn(n_genes, gene_dim) * 0.02)
            self.write_kv = nn.Linear(dim, 2 * gene_dim)
        else:
            self.blocks = nn.ModuleList(
                AdaLNTransformerBlock(gene_dim, self.gene_heads, dim, dropout=dropout)
                for _ in range(n_layers)
            )
        # direct paths of the conditioning vector into the latents and into every gene's
        # read-out, next to adaLN (whose zero initialisation makes conditioning slow to learn)
        if attention == "latent":
            self.condition_to_latents = nn.Linear(dim, dim)
        self.condition_to_genes = nn.Linear(dim, gene_dim)
        self.gene_output = nn.Parameter(torch.zeros(n_genes, gene_dim))
        # gene-specific low-rank read-out of the cell state and conditions: logits of gene g
        # move along its own directions ``factor_head[g]`` (like scVI's linear decoder), which
        # lets label- and programme-specific expression be learned quickly
        self.to_factors = nn.Linear(dim, gene_dim)
        self.factor_head = nn.Parameter(torch.zeros(gene_dim, n_genes, num_bins))
        self.head = nn.Linear(gene_dim, num_bins)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.gene_bias = nn.Parameter(torch.zeros(n_genes, num_bins))

    def conditioning(
        self,
        mask_fraction: torch.Tensor,
        log_library: torch.Tensor,
        conditions: dict[str, torch.Tensor | None],
        drop: torch.Tensor,
    ) -> torch.Tensor:
        """The conditioning vector ``c``, ``(n, dim)``."""
        parts = [conditions["labels"], conditions["batch"]]
        if conditions.get("cat_covs") is not None:
            parts.append(conditions["cat_covs"])
        codes = torch.cat(parts, dim=1).long()
        # the null codes stand for "no condition" (classifier-free guidance)
        codes = torch.where(drop[:, None], self.condition_embedding.null_codes(len(codes)), codes)
        continuous = conditions.get("cont_covs")
        embedded = self.condition_embedding(
            codes, None if continuous is None else continuous.float()
        )
        return (
            self.noise_embedding(mask_fraction)
            + self.library_embedding(log_library.reshape(-1, 1))
            + embedded
        )

    def forward(
        self,
        tokens: torch.Tensor,
        mask_fraction: torch.Tensor,
        log_library: torch.Tensor,
        conditions: dict[str, torch.Tensor | None],
        drop: torch.Tensor,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits over the data tokens.

        Parameters
        ----------
        tokens
            ``(n, genes)`` tokens, MASK where noised.
        mask_fraction
            ``(n,)`` fraction of masked genes (the noise level).
        log_library
            ``(n,)`` standardised log library size.
        conditions
            ``labels``, ``batch``, ``cat_covs``, ``cont_covs`` tensors (or None).
        drop
            ``(n,)`` boolean: use the null condition (classifier-free guidance).
        positions
            Optional ``(n, genes)`` boolean mask of the (cell, gene) pairs to predict; only
            those are decoded (the masked genes in training, the genes being unmasked in a
            reverse step).

        Returns
        -------
        ``(n, genes, num_bins)`` logits, or ``(positions.sum(), num_bins)`` in the row-major
        order of ``positions.nonzero()`` when ``positions`` is given.
        """
        c = self.conditioning(mask_fraction, log_library, conditions, drop)
        h = self.token_embedding(tokens) + self.gene_embedding
        cells, genes = (None, None) if positions is None else positions.nonzero(as_tuple=True)
        if self.attention == "latent":
            z = self.latents + self.condition_to_latents(c).unsqueeze(1) + self._summary(tokens)
            z = self.read(z, c, context=h)
            for block in self.blocks:
                z = block(z, c)
            z = self.latent_norm(z)
            h = self._read_out(z, cells, genes)
            state = c + z.mean(dim=1)
        else:
            for block in self.blocks:
                h = block(h, c)
            if positions is not None:
                h = h[cells, genes]
            state = c
        c_genes = self.condition_to_genes(c)
        factors = self.to_factors(state)
        if positions is None:
            h = h + self.gene_output + c_genes.unsqueeze(1)
            tilt = (factors @ self.factor_head.flatten(1)).view(len(h), *self.gene_bias.shape)
            return self.head(F.gelu(h, approximate="tanh")) + self.gene_bias + tilt
        h = h + self.gene_output[genes] + c_genes[cells]
        tilt = self._tilt(factors, cells, genes)
        return self.head(F.gelu(h, approximate="tanh")) + self.gene_bias[genes] + tilt

    def _tilt(
        self, factors: torch.Tensor, cells: torch.Tensor, genes: torch.Tensor
    ) -> torch.Tensor:
        """Low-rank gene-specific logits of the pairs ``(cells, genes)``: ``(m, num_bins)``."""
        rank, n_genes, n_bins = self.factor_head.shape
        if len(cells) * 4 < len(factors) * n_genes:  # few pairs (a reverse step): per pair
            return torch.einsum("mr,rmb->mb", factors[cells], self.factor_head[:, genes])
        # many pairs (training): one matrix product for all genes, then pick the pairs
        full = (factors @ self.factor_head.flatten(1)).view(len(factors), n_genes, n_bins)
        return full[cells, genes]

    def _summary(self, tokens: torch.Tensor) -> torch.Tensor:
        """Sum of the cell's (gene, token) embeddings, projected to ``(n, latents, dim)``."""
        pooled = self.cell_embedding(tokens + self.token_offsets)
        return self.cell_to_latents(self.cell_norm(pooled)).view(len(tokens), *self.latents.shape)

    def _read_out(
        self, z: torch.Tensor, cells: torch.Tensor | None, genes: torch.Tensor | None
    ) -> torch.Tensor:
        """Genes attend to the latents with their identity queries.

        Returns ``(n, genes, gene_dim)``, or ``(m, gene_dim)`` for the ``m`` (cell, gene)
        pairs ``cells``, ``genes``.
        """
        n, n_latents, _ = z.shape
        n_genes, gene_dim = self.gene_query.shape
        heads, head_dim = self.gene_heads, gene_dim // self.gene_heads
        kv = self.write_kv(z).view(n, n_latents, 2, heads, head_dim)
        if cells is None:
            k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)
            q = self.gene_query.view(n_genes, heads, head_dim).transpose(0, 1)
            out = F.scaled_dot_product_attention(q.expand(n, -1, -1, -1), k, v)
            return out.transpose(1, 2).reshape(n, n_genes, gene_dim)
        # one query per pair, attending to the latents of its own cell
        if len(cells) * 4 >= n * n_genes:  # many pairs (training): decode all, then pick
            return self._read_out(z, None, None)[cells, genes]
        # few pairs (a reverse step): one query per pair, attending to its cell's latents
        k, v = kv[cells].permute(2, 0, 3, 1, 4).unbind(0)
        q = self.gene_query[genes].view(-1, heads, 1, head_dim)
        return F.scaled_dot_product_attention(q, k, v).reshape(-1, gene_dim)
