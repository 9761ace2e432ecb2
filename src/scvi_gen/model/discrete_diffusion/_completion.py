"""Imputation and denoising of observed cells by DiscreteDiffusion (masked reverse diffusion)."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
import torch
from anndata import AnnData
from scvi import REGISTRY_KEYS

from scvi_gen._constants import LOGNORM_LAYER
from scvi_gen._matrix import get_matrix
from scvi_gen.base._generative_mixin import _seeded_torch
from scvi_gen.base._validation import require_anndata
from scvi_gen.model.discrete_diffusion._module import (
    DiscreteDiffusionModule,
    conditions_from_tensors,
)
from scvi_gen.preprocessing import log1p_cp10k

logger = logging.getLogger(__name__)

ImputeDecode = Literal["expected", "sample", "centre"]
#: Layer of :meth:`DiscreteDiffusion.denoise` output flagging the re-sampled entries.
RESAMPLED_LAYER = "resampled"


class CompletionMixin:
    """:meth:`impute` and :meth:`denoise` for :class:`~scvi_gen.DiscreteDiffusion`.

    Both mask some entries of observed cells and fill them by reverse diffusion with every
    other modelled gene clamped. The model provides ``module``, ``n_sampling_steps`` and
    ``_guidance_weight``.
    """

    @torch.inference_mode()
    def impute(
        self,
        adata: AnnData | None = None,
        mask: np.ndarray | sp.spmatrix | None = None,
        *,
        n_steps: int | None = None,
        guidance: float | None = None,
        decode: ImputeDecode = "expected",
        exclude_zero: bool = False,
        use_ema: bool = True,
        batch_size: int = 256,
        seed: int = 0,
    ) -> AnnData:
        """Fill masked entries by reverse diffusion, clamping the observed ones at every step.

        Parameters
        ----------
        adata
            Cells with raw counts over the training genes (default: the training data); the
            registered condition columns are used. Never modified.
        mask
            Boolean ``(n_obs, n_vars)`` array or sparse matrix, True where a value is unknown
            and must be imputed. Default: the zero entries of the modelled genes (dropout
            imputation). Entries of genes outside the model are left unchanged (with a
            warning). Values under the mask are ignored, except that they count towards the
            cell's library size: zero them if they are not to be used at all.
        n_steps
            Reverse steps (default ``n_sampling_steps``).
        guidance
            Classifier-free guidance weight.
        decode
            ``"expected"``: the posterior mean of the value (over the bins, at the step the
            gene was unmasked); ``"sample"``: a value drawn within the sampled bin (one
            posterior sample); ``"centre"``: the sampled bin's centre.
        exclude_zero
            The masked values are known to be non-zero (e.g. hidden measurements): never
            impute a zero.
        use_ema
            Use the averaged weights.
        batch_size
            Cells per batch.
        seed
            Random seed (same seed, same result).

        Returns
        -------
        A new AnnData with the input's obs and var: ``.X`` the counts with imputed entries
        replaced by count-scale values (not rounded), ``layers["log1p_norm"]`` log1p(CP10k) of
        ``.X`` normalised by each input cell's total counts.

        Examples
        --------
        >>> filled = model.impute(adata)  # fill the zeros of the modelled genes
        >>> filled = model.impute(test, mask=hidden, exclude_zero=True)
        """
        adata = self._registered_view(adata)
        gene_mask = None if mask is None else self._modelled_mask(adata, mask)

        def select(tokens: torch.Tensor, start: int, **_: Any) -> torch.Tensor:
            if gene_mask is None:
                return tokens == 0
            rows = gene_mask[start : start + tokens.shape[0]].toarray()
            return torch.as_tensor(rows, device=tokens.device)

        out, _ = self._complete(
            adata, select, n_steps, guidance, decode, exclude_zero, use_ema, batch_size, seed
        )
        return out

    @torch.inference_mode()
    def denoise(
        self,
        adata: AnnData | None = None,
        fraction: float = 0.05,
        *,
        n_score_groups: int = 10,
        n_steps: int | None = None,
        guidance: float | None = None,
        decode: ImputeDecode = "expected",
        use_ema: bool = True,
        batch_size: int = 256,
        seed: int = 0,
    ) -> AnnData:
        """Re-sample the least plausible entries of each cell given the rest of the cell.

        Each modelled gene is scored by the model's probability of its observed token when it
        is masked (genes are masked in ``n_score_groups`` random groups, one network pass per
        group). The ``fraction`` of genes with the lowest probability in each cell are then
        masked and re-sampled by reverse diffusion with all other genes clamped.

        Parameters
        ----------
        adata
            Cells with raw counts (default: the training data). Never modified.
        fraction
            Fraction of the modelled genes re-sampled per cell.
        n_score_groups
            Number of masking groups for scoring (more: less context removed per pass).
        n_steps, guidance, decode, use_ema, batch_size, seed
            As in :meth:`impute`.

        Returns
        -------
        A new AnnData as from :meth:`impute`, plus ``layers["resampled"]`` (1 where an entry
        was re-sampled).

        Examples
        --------
        >>> cleaned = model.denoise(adata, fraction=0.05)
        """
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"`fraction` must be in (0, 1], got {fraction}.")
        if n_score_groups < 1:
            raise ValueError(f"`n_score_groups` must be positive, got {n_score_groups}.")
        adata = self._registered_view(adata)
        n_pick = max(1, int(round(fraction * self.module.n_genes)))

        def select(
            tokens: torch.Tensor,
            log_library: torch.Tensor,
            conditions: dict[str, torch.Tensor | None],
            **_: Any,
        ) -> torch.Tensor:
            log_p = self._observed_log_probs(tokens, log_library, conditions, n_score_groups)
            lowest = log_p.topk(n_pick, dim=1, largest=False).indices
            return torch.zeros_like(tokens, dtype=torch.bool).scatter_(1, lowest, True)

        out, masks = self._complete(
            adata, select, n_steps, guidance, decode, False, use_ema, batch_size, seed
        )
        out.layers[RESAMPLED_LAYER] = masks
        return out

    def _observed_log_probs(
        self,
        tokens: torch.Tensor,
        log_library: torch.Tensor,
        conditions: dict[str, torch.Tensor | None],
        n_groups: int,
    ) -> torch.Tensor:
        """``log p(observed token)`` of every gene when its group of genes is masked."""
        module = self.module
        groups = torch.randperm(module.n_genes, device=tokens.device) % n_groups
        log_p = torch.zeros(tokens.shape, device=tokens.device)
        for group in range(min(n_groups, module.n_genes)):
            hidden = (groups == group).expand_as(tokens)
            masked = torch.where(hidden, torch.full_like(tokens, module.mask_index), tokens)
            probs = module.denoising_probabilities(
                masked, log_library, conditions, positions=hidden
            )
            observed = probs.gather(1, tokens[hidden].unsqueeze(1)).squeeze(1)
            log_p[hidden] = observed.clamp_min(1e-12).log()
        return log_p

    def _complete(
        self,
        adata: AnnData,
        select: Callable[..., torch.Tensor],
        n_steps: int | None,
        guidance: float | None,
        decode: ImputeDecode,
        exclude_zero: bool,
        use_ema: bool,
        batch_size: int,
        seed: int,
    ) -> tuple[AnnData, sp.csr_matrix]:
        """Mask the entries ``select`` picks in each batch, re-sample them, build the output."""
        if decode not in ("expected", "sample", "centre"):
            raise ValueError(f"`decode` must be 'expected', 'sample' or 'centre', got {decode!r}.")
        weight = self._guidance_weight(guidance)
        n_steps = int(n_steps or self.n_sampling_steps)
        module = self.module
        module.eval()
        manager = self.get_anndata_manager(adata, required=True)
        matrix = manager.get_from_registry(REGISTRY_KEYS.X_KEY)
        loader = self._make_data_loader(adata=adata, batch_size=batch_size, shuffle=False)
        seeds = np.random.SeedSequence(seed).generate_state(max(1, len(loader)))
        blocks, masks, libraries, start = [], [], [], 0
        for tensors, batch_seed in zip(loader, seeds):
            x = tensors[REGISTRY_KEYS.X_KEY].to(self.device)
            conditions = {
                k: None if v is None else v.to(self.device)
                for k, v in conditions_from_tensors(tensors).items()
            }
            with _seeded_torch(int(batch_seed), self.device):
                new_counts, chosen = self._complete_batch(
                    module, x, conditions, select, start, n_steps, weight, decode,
                    exclude_zero, use_ema,
                )  # fmt: skip
            block = sp.csr_matrix(matrix[start : start + x.shape[0]], dtype=np.float64)
            libraries.append(np.asarray(block.sum(axis=1)).ravel())
            blocks.append(_replace_columns(block, module.gene_index.cpu().numpy(), new_counts))
            masks.append(sp.csr_matrix(chosen.cpu().numpy().astype(np.float32)))
            start += x.shape[0]
        X = sp.vstack(blocks, format="csr")
        library = np.concatenate(libraries)
        obs = adata.obs.loc[:, ~adata.obs.columns.str.startswith("_scvi")].copy()
        out = AnnData(X=X, obs=obs, var=adata.var.copy())
        out.layers[LOGNORM_LAYER] = log1p_cp10k(X, library)
        chosen = sp.vstack(masks, format="csr")
        full = sp.csr_matrix(
            (chosen.data, module.gene_index.cpu().numpy()[chosen.indices], chosen.indptr),
            shape=X.shape,
        )
        return out, full

    def _complete_batch(
        self,
        module: DiscreteDiffusionModule,
        x: torch.Tensor,
        conditions: dict[str, torch.Tensor | None],
        select: Callable[..., torch.Tensor],
        start: int,
        n_steps: int,
        guidance: float,
        decode: ImputeDecode,
        exclude_zero: bool,
        use_ema: bool,
    ) -> tuple[np.ndarray, torch.Tensor]:
        tokens, log_library = module.tokens_from_counts(x)
        library = x.sum(dim=1)
        chosen = select(tokens, start=start, log_library=log_library, conditions=conditions)
        masked = torch.where(chosen, torch.full_like(tokens, module.mask_index), tokens)
        filled, probs = module.sample_tokens(
            masked,
            log_library,
            conditions,
            n_steps=n_steps,
            guidance=guidance,
            use_ema=use_ema,
            exclude_zero=exclude_zero,
            keep_probs=decode == "expected",
        )
        if decode == "expected":
            values = probs @ module.tokenizer.means() if probs is not None else None
        else:
            values = module.tokenizer.detokenize(filled, mode=decode)
        observed = x[:, module.gene_index].double()
        if values is None:  # nothing was masked
            return observed.cpu().numpy(), chosen
        imputed = module.expected_counts(values, library).double()
        return torch.where(chosen, imputed, observed).cpu().numpy(), chosen

    def _registered_view(self, adata: AnnData | None) -> AnnData:
        """Register ``adata`` through a shell that shares its matrix, so it is never modified.

        scvi-tools' registration writes into ``obs`` and ``uns``; the shell takes those writes.
        """
        if adata is None:
            return self._validate_anndata(None)
        require_anndata(adata)
        layer = self.registry_["setup_args"].get("layer")
        matrix = get_matrix(adata, layer)
        # views of a subset hold their own (subset-sized) values; plain types for the loader
        matrix = sp.csr_matrix(matrix) if sp.issparse(matrix) else np.asarray(matrix)
        shell = AnnData(
            X=matrix if layer is None else None,
            obs=adata.obs.copy(),
            var=adata.var.copy(),
            layers=None if layer is None else {layer: matrix},
        )
        return self._validate_anndata(shell)

    def _modelled_mask(self, adata: AnnData, mask: np.ndarray | sp.spmatrix) -> sp.csr_matrix:
        """The user's mask restricted to the modelled genes (columns in model order)."""
        if not sp.issparse(mask):
            mask = np.asarray(mask, dtype=bool)
        if mask.shape != (adata.n_obs, adata.n_vars):
            raise ValueError(
                f"`mask` must have shape (n_obs, n_vars) = {(adata.n_obs, adata.n_vars)}, got "
                f"{mask.shape}."
            )
        full = sp.csr_matrix(mask, dtype=bool)
        index = self.module.gene_index.cpu().numpy()
        modelled = full[:, index]
        outside = int(full.sum()) - int(modelled.sum())
        if outside:
            warnings.warn(
                f"{outside} masked entries belong to genes the model does not cover; they are "
                "left unchanged.",
                UserWarning,
                stacklevel=3,
            )
        return modelled


def _replace_columns(block: sp.csr_matrix, index: np.ndarray, values: np.ndarray) -> sp.csr_matrix:
    """``block`` with columns ``index`` set to ``values``; other entries are left untouched."""
    old = block[:, index].toarray()
    delta = np.where(values != old, values - old, 0.0)
    selector = sp.csr_matrix(
        (np.ones(len(index)), (np.arange(len(index)), index)), shape=(len(index), block.shape[1])
    )
    out = sp.csr_matrix(block + sp.csr_matrix(delta) @ selector)
    out.eliminate_zeros()
    return out
