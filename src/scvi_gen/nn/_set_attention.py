"""Attention over genes as a set: permutation-invariant pooling and gene-query decoding.

A cell is the set of its expressed genes, each a token ``gene_embedding(g) * value_embedding(x_g)``
(gene identity times expression). :class:`SetPoolingEncoder` pools these tokens by
cross-attention into a fixed number of learned latent tokens: the result does not depend on the
order of the genes nor on their number. :class:`GeneQueryDecoder` goes back by letting every
requested gene's identity embedding cross-attend to the latent tokens: the output is equivariant
to the order of the requested genes, and any subset of the known genes can be decoded.

Only the expressed genes of a minibatch are turned into tokens (:func:`expressed_entries`), packed
without padding (the softmax of :class:`SetAttentionPool` runs per cell by scatter), so memory
follows the number of non-zero entries rather than the size of the gene panel.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from scvi_gen.nn._transformer import AdaLNTransformerBlock

logger = logging.getLogger(__name__)

#: Genes decoded at once without gradients (bounds the memory of generating many genes).
_INFERENCE_GENE_CHUNK = 2048


def expressed_entries(
    x: torch.Tensor, gene_ids: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The non-zero entries of a batch, packed: one row per (cell, expressed gene).

    Parameters
    ----------
    x
        ``(n, g)`` non-negative values.
    gene_ids
        ``(g,)`` identity (embedding index) of every column; ``None``: ``0 .. g-1``.

    Returns
    -------
    ``cells`` (the row of each entry), ``ids`` (its gene identity) and ``values``, each of
    length ``nnz``, in row-major order.

    Examples
    --------
    >>> cells, ids, values = expressed_entries(torch.tensor([[0.0, 2.0, 1.0], [3.0, 0.0, 0.0]]))
    >>> cells.tolist(), ids.tolist(), values.tolist()
    ([0, 0, 1], [1, 2, 0], [2.0, 1.0, 3.0])
    """
    cells, cols = torch.nonzero(x > 0, as_tuple=True)
    ids = cols if gene_ids is None else gene_ids.to(x.device)[cols]
    return cells, ids, x[cells, cols]


def _null_condition(x: torch.Tensor) -> torch.Tensor:
    # The transformer blocks are adaLN blocks; with a zero conditioning vector only the biases of
    # their modulation act, i.e. a pre-norm block with learned affine norms and zero-init gates.
    return x.new_zeros(x.shape[0], 1)


def _positions_in_sets(sets: torch.Tensor, n_sets: int) -> tuple[torch.Tensor, int]:
    """Rank of every item within its set (in input order) and the size of the largest set."""
    counts = torch.bincount(sets, minlength=n_sets)
    order = torch.argsort(sets, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    position = torch.empty_like(sets)
    position[order] = torch.arange(len(sets), device=sets.device) - starts[sets[order]]
    return position, int(counts.max()) if len(sets) else 0


class SetAttentionPool(nn.Module):
    """Multi-head attention from learned queries to variable-size sets of packed tokens.

    The tokens of all sets are stacked in one ``(T, dim)`` tensor with the index of their set,
    so the token projections cost ``O(T)``; only the attention scores and values (widths
    ``n_heads x n_queries`` and ``inner_dim``) are laid out per set, padded to the largest set.
    Attention sums over keys: the result does not depend on the order of the tokens within a
    set.

    Parameters
    ----------
    dim
        Width of tokens and queries.
    n_queries
        Number of learned queries (output tokens per set).
    n_heads
        Attention heads.
    inner_dim
        Width of queries, keys and values (``None``: ``dim``).

    Examples
    --------
    >>> pool = SetAttentionPool(8, n_queries=3, n_heads=2)
    >>> pool(torch.randn(10, 8), torch.tensor([0] * 4 + [1] * 6), n_sets=2).shape
    torch.Size([2, 3, 8])
    """

    def __init__(self, dim: int, n_queries: int, n_heads: int, inner_dim: int | None = None):
        super().__init__()
        inner_dim = inner_dim or dim
        if inner_dim % n_heads:
            raise ValueError(f"`n_heads` ({n_heads}) must divide the width ({inner_dim}).")
        self.n_heads = n_heads
        self.inner_dim = inner_dim
        # Unit-scale queries: with near-identical (tiny) queries every latent token starts by
        # attending to the same genes and which tokens specialise depends on the random init.
        # On PBMC3K the autoencoder's validation NB loss then varied from 684 to 701 between
        # seeds; unit-scale queries gave 677-688 and better reconstructions.
        self.queries = nn.Parameter(torch.randn(n_queries, dim))
        self.norm = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner_dim)
        self.to_kv = nn.Linear(dim, 2 * inner_dim)
        self.to_out = nn.Linear(inner_dim, dim)

    def forward(self, tokens: torch.Tensor, sets: torch.Tensor, n_sets: int) -> torch.Tensor:
        """Pool ``(T, dim)`` tokens belonging to ``sets`` (``(T,)`` indices) into queries.

        Parameters
        ----------
        tokens
            Packed tokens.
        sets
            Index in ``0 .. n_sets-1`` of the set of every token.
        n_sets
            Number of sets; every set needs at least one token.

        Returns
        -------
        ``(n_sets, n_queries, dim)``: the queries plus the attended values.
        """
        heads, head_dim = self.n_heads, self.inner_dim // self.n_heads
        n_queries = self.queries.shape[0]
        q = self.to_q(self.queries).view(n_queries, heads, head_dim) * head_dim**-0.5
        key, value = self.to_kv(self.norm(tokens)).view(-1, 2, heads, head_dim).unbind(1)
        scores = torch.einsum("thd,khd->thk", key, q)  # (T, heads, queries)
        # Scores and values of each set side by side, padded to the largest set: the softmax
        # and the weighted sum are then dense batched operations (much faster than segment
        # reductions over (T, heads, queries, head_dim) products).
        position, size = _positions_in_sets(sets, n_sets)
        index = (sets, position)
        padded = scores.new_full((n_sets, size, heads, n_queries), -torch.inf)
        attention = torch.softmax(padded.index_put(index, scores), dim=1)
        values = value.new_zeros(n_sets, size, heads, head_dim).index_put(index, value)
        out = torch.einsum("nmhk,nmhd->nkhd", attention, values)
        return self.queries + self.to_out(out.reshape(n_sets, n_queries, -1))


class SetPoolingEncoder(nn.Module):
    """Pool a cell's expressed-gene tokens into ``n_tokens`` latent tokens by cross-attention.

    Each expressed gene ``g`` with value ``v`` becomes the token
    ``gene_embedding(g) * value_embedding(log1p(v))``; zeros never become tokens, and the
    tokens of a minibatch are packed (no padding), so memory follows the number of non-zero
    entries, not the panel size. Learned queries attend to the tokens of each cell (plus one
    learned "empty" token, so a cell without counts is well defined), an MLP and a few
    self-attention blocks mix the latent tokens, and a linear map gives ``latent_dim`` numbers
    per token. Attention sums over keys, so the latent is invariant to the order of the genes
    and its size does not depend on their number.

    Parameters
    ----------
    n_genes
        Number of known gene identities.
    n_tokens
        Number of latent tokens.
    latent_dim
        Width of each latent token (the output).
    dim
        Width of the tokens inside the encoder.
    n_heads
        Attention heads.
    n_layers
        Self-attention blocks over the latent tokens after pooling.
    mlp_ratio
        Hidden width of the blocks' MLPs relative to ``dim``.
    value_hidden
        Hidden width of the expression embedding.
    pool_dim
        Width of keys and values of the pooling attention (``None``: ``dim``); its cost is
        ``O(non-zero entries x n_tokens x pool_dim)``.
    token_dropout
        Fraction of the expressed genes hidden from the encoder in training mode (a set
        augmentation: the latent must not hinge on single genes).

    Examples
    --------
    >>> enc = SetPoolingEncoder(n_genes=50, n_tokens=4, latent_dim=3, dim=16, n_heads=2)
    >>> enc(torch.poisson(torch.rand(5, 50))).shape
    torch.Size([5, 4, 3])
    """

    def __init__(
        self,
        n_genes: int,
        n_tokens: int,
        latent_dim: int,
        dim: int = 64,
        n_heads: int = 4,
        n_layers: int = 1,
        mlp_ratio: float = 2.0,
        value_hidden: int = 16,
        pool_dim: int | None = None,
        token_dropout: float = 0.0,
    ):
        super().__init__()
        if not 0.0 <= token_dropout < 1.0:
            raise ValueError(f"`token_dropout` must be in [0, 1), got {token_dropout}.")
        self.n_tokens = n_tokens
        self.token_dropout = token_dropout
        self.gene_embedding = nn.Embedding(n_genes, dim)
        self.value_embedding = nn.Sequential(
            nn.Linear(1, value_hidden), nn.SiLU(), nn.Linear(value_hidden, dim)
        )
        self.empty_token = nn.Parameter(torch.randn(1, dim) * 0.02)
        self.pool = SetAttentionPool(dim, n_tokens, n_heads, pool_dim)
        self.pool_mlp = AdaLNTransformerBlock(dim, n_heads, 1, mlp_ratio, self_attention=False)
        self.blocks = nn.ModuleList(
            AdaLNTransformerBlock(dim, n_heads, 1, mlp_ratio) for _ in range(n_layers)
        )
        self.norm_out = nn.LayerNorm(dim)
        self.to_latent = nn.Linear(dim, latent_dim)

    def tokens(self, values: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Gene tokens ``(T, dim)`` of transformed values ``(T,)`` and gene identities."""
        return self.gene_embedding(ids) * self.value_embedding(values.unsqueeze(-1))

    def forward(self, values: torch.Tensor, gene_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Latent tokens of cells.

        Parameters
        ----------
        values
            ``(n, g)`` non-negative expression (e.g. normalised counts); zeros are not
            tokenised. The encoder applies ``log1p``.
        gene_ids
            ``(g,)`` identities of the columns (``None``: ``0 .. g-1``).

        Returns
        -------
        ``(n, n_tokens, latent_dim)``.
        """
        n = values.shape[0]
        cells, ids, v = expressed_entries(values, gene_ids)
        if self.training and self.token_dropout > 0:
            keep = torch.rand(len(v), device=v.device) >= self.token_dropout
            cells, ids, v = cells[keep], ids[keep], v[keep]
        tokens = torch.cat(
            [self.tokens(torch.log1p(v), ids), self.empty_token.expand(n, -1)], dim=0
        )
        cells = torch.cat([cells, torch.arange(n, device=values.device)])
        h = self.pool(tokens, cells, n)
        c = _null_condition(values)
        h = self.pool_mlp(h, c)
        for block in self.blocks:
            h = block(h, c)
        return self.to_latent(self.norm_out(h))


class GeneQueryDecoder(nn.Module):
    """Decode latent tokens into one logit per requested gene by gene-query cross-attention.

    The latent tokens are projected to ``dim``, given a learned position per token (each latent
    token comes from its own pooling query) and mixed by self-attention blocks. Every requested
    gene's identity embedding then cross-attends to them; the attended vector is read out by a
    per-gene vector plus a per-gene bias. Queries and read-outs depend on the gene only, keys
    and values on the cell only, so all scores come from one matrix product per head and no
    ``(cells, genes, dim)`` tensor is built: memory is ``O(cells x genes x tokens x heads)``.
    Without gradients the genes are decoded in chunks.

    Parameters
    ----------
    n_genes
        Number of known gene identities.
    n_tokens
        Number of latent tokens.
    latent_dim
        Width of each latent token.
    dim
        Width inside the decoder.
    n_heads
        Attention heads.
    n_layers
        Self-attention blocks over the latent tokens.
    mlp_ratio
        Hidden width of the blocks' MLPs relative to ``dim``.

    Examples
    --------
    >>> dec = GeneQueryDecoder(n_genes=50, n_tokens=4, latent_dim=3, dim=16, n_heads=2)
    >>> dec(torch.randn(5, 4, 3)).shape
    torch.Size([5, 50])
    >>> dec(torch.randn(5, 4, 3), gene_ids=torch.tensor([7, 3])).shape
    torch.Size([5, 2])
    """

    def __init__(
        self,
        n_genes: int,
        n_tokens: int,
        latent_dim: int,
        dim: int = 64,
        n_heads: int = 4,
        n_layers: int = 1,
        mlp_ratio: float = 2.0,
    ):
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"`n_heads` ({n_heads}) must divide `dim` ({dim}).")
        self.n_genes = n_genes
        self.n_tokens = n_tokens
        self.n_heads = n_heads
        self.dim = dim
        self.latent_in = nn.Linear(latent_dim, dim)
        self.position = nn.Parameter(torch.randn(n_tokens, dim) * 0.02)
        self.blocks = nn.ModuleList(
            AdaLNTransformerBlock(dim, n_heads, 1, mlp_ratio) for _ in range(n_layers)
        )
        self.norm_latent = nn.LayerNorm(dim)
        self.gene_query = nn.Embedding(n_genes, dim)
        self.to_q = nn.Linear(dim, dim)
        self.to_kv = nn.Linear(dim, 2 * dim)
        self.gene_readout = nn.Parameter(torch.randn(n_genes, dim) * dim**-0.5)
        self.gene_bias = nn.Parameter(torch.zeros(n_genes))

    def latent_keys(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values ``(n, heads, tokens, head_dim)`` of latent tokens ``(n, tokens, d)``."""
        h = self.latent_in(z) + self.position
        c = _null_condition(z)
        for block in self.blocks:
            h = block(h, c)
        n, k, _ = h.shape
        kv = self.to_kv(self.norm_latent(h)).view(n, k, 2, self.n_heads, -1)
        key, value = kv.permute(2, 0, 3, 1, 4).unbind(0)
        return key, value

    def _logits(self, key: torch.Tensor, value: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        # Queries and read-out vectors depend on the gene only, keys and values on the cell
        # only: one (genes x cells*tokens) matrix product per head gives all attention scores,
        # and reading the attended values out with the gene's vector w_g equals attending to
        # the per-token read-outs v_k . w_g, another such product. No (cells, genes, dim)
        # tensor is built and the big dimension of every product is cells * tokens.
        n, heads, n_tokens, head_dim = key.shape
        g = len(ids)
        q = self.to_q(self.gene_query(ids)).view(g, heads, head_dim).transpose(0, 1)
        w = self.gene_readout[ids].view(g, heads, head_dim).transpose(0, 1)
        # Columns ordered (token, cell): the softmax over tokens then runs over a middle axis,
        # which is much faster on CPUs than a softmax over a short last axis.
        keys = key.permute(1, 3, 2, 0).reshape(heads, head_dim, n_tokens * n)
        values = value.permute(1, 3, 2, 0).reshape(heads, head_dim, n_tokens * n)
        scores = torch.bmm(q * head_dim**-0.5, keys).view(heads, g, n_tokens, n)
        readouts = torch.bmm(w, values).view(heads, g, n_tokens, n)
        logits = (torch.softmax(scores, dim=2) * readouts).sum(dim=(0, 2))
        return logits.t() + self.gene_bias[ids]

    def forward(self, z: torch.Tensor, gene_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``(n, len(gene_ids))`` of latent tokens.

        Parameters
        ----------
        z
            Latent tokens ``(n, n_tokens, latent_dim)`` or flattened ``(n, n_tokens * latent_dim)``.
        gene_ids
            Identities of the genes to decode, in the wanted order (``None``: all).

        Returns
        -------
        One logit per cell and requested gene.
        """
        if z.dim() == 2:
            z = z.view(z.shape[0], self.n_tokens, -1)
        if gene_ids is None:
            gene_ids = torch.arange(self.n_genes, device=z.device)
        key, value = self.latent_keys(z)
        if torch.is_grad_enabled() or len(gene_ids) <= _INFERENCE_GENE_CHUNK:
            return self._logits(key, value, gene_ids)
        chunks = gene_ids.split(_INFERENCE_GENE_CHUNK)
        return torch.cat([self._logits(key, value, ids) for ids in chunks], dim=1)
