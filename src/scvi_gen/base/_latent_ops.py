"""Operations on the cells of a trained latent generator.

Transfer, posterior predictive sampling and imputation, mixed into
:class:`~scvi_gen.base.LatentGenerator`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from anndata import AnnData
from scvi import REGISTRY_KEYS

from scvi_gen._constants import UNS_KEY
from scvi_gen.base._generative_mixin import _seeded_torch, resolve_seed
from scvi_gen.base._guidance import GuidanceArg
from scvi_gen.base._sampling import sample_nb_dense
from scvi_gen.base._serialization import to_jsonable
from scvi_gen.base._whatif import WhatIfMixin, select_rows

logger = logging.getLogger(__name__)

_IMPUTE_ITERATIONS = 3


class LatentOperationsMixin(WhatIfMixin):
    """Counterfactual transfer, posterior predictive sampling, imputation and what-if.

    :meth:`predict_perturbation` and :meth:`interpolate` come from
    :class:`~scvi_gen.base.WhatIfMixin`; the hooks below encode and decode in the
    autoencoder's latent space.

    Needs the model's ``module`` (a :class:`~scvi_gen.base.LatentGeneratorModule`),
    ``_batches``, ``_prepare``, ``_target_codes``, ``_guidance_weights``, ``_ode`` and
    ``_decode_block`` (all on :class:`~scvi_gen.base.LatentGenerator`).
    """

    @torch.inference_mode()
    def transfer(
        self,
        adata: AnnData | None = None,
        to: Mapping[str, Any] | None = None,
        *,
        indices: Sequence[int] | None = None,
        guidance: GuidanceArg = None,
        batch_size: int | None = None,
        seed: int | None = None,
        return_mean: bool = False,
    ) -> AnnData:
        """Counterfactual cells: what each cell would look like under other conditions.

        Each cell is encoded, integrated backwards (data to noise) under its own conditions,
        then forwards under the target ones, and decoded with its own library size; counts
        are drawn from the NB (or its mean is returned).

        Parameters
        ----------
        adata
            Cells to transfer, with the training genes (``None``: the training data).
        to
            ``{obs_key: category}`` or ``{obs_key: one category per cell}`` for any
            categorical attribute (label, batch, covariate); unlisted ones are kept.
        indices
            Subset of cells of ``adata``.
        guidance
            Guidance weights (as in :meth:`generate`), used in both directions.
        batch_size
            Cells per minibatch.
        seed
            Seed of the NB draws.
        return_mean
            Return the NB means (floats) instead of sampled counts.

        Returns
        -------
        A new AnnData with the input's ``obs`` (the transferred columns set to the target,
        the original values in ``<key>_source``), counts in sparse ``.X``, and provenance in
        ``uns["scvi_gen"]``. For a multimodal model, a MuData with one such AnnData per
        modality (the cells' latent is encoded from all modalities).

        Examples
        --------
        >>> moved = model.transfer(adata, to={"batch": "b2"}, seed=0)
        """
        self._check_trained()
        to = dict(to or {})
        adata, indices = self._prepare(adata, indices)
        targets = self._target_codes(adata, indices, to)
        weights = self._guidance_weights(guidance)
        seed = resolve_seed(seed)
        module = self.module
        module.eval()
        blocks, start = [], 0
        with _seeded_torch(seed, module.latent_mean.device):
            for tensors in self._batches(adata, indices, batch_size):
                library = module.library_of_tensors(tensors)
                n = library.shape[0]
                codes = module.attribute_codes(tensors)
                target = codes.clone()
                for i, values in targets.items():
                    target[:, i] = torch.as_tensor(
                        values[start : start + n], device=library.device
                    )
                continuous = module.continuous_inputs(tensors, library)
                z = module.transport(
                    module.standardize(module.encode_tensors(tensors)),
                    (codes, continuous),
                    (target, continuous),
                    weights,
                    self._ode(),
                )
                blocks.append(
                    self._decode_block(module.unstandardize(z), library, target, return_mean)
                )
                start += n
        n_features = len(self._generated_var_names())
        X = sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix((0, n_features))
        obs = self._transferred_obs(adata, indices, to)
        uns = {
            "model": type(self).__name__,
            "operation": "transfer",
            "output": "nb_mean" if return_mean else "counts",
            "seed": seed,
            "transfer_args": json.dumps(
                to_jsonable({"to": to, "guidance": guidance}), default=str
            ),
        }
        return self._transfer_output(X.astype(np.float32), obs, uns, adata.var_names)

    # ------------------------------------------------------- what-if hooks
    def _whatif_latents(
        self, adata: AnnData, batch_size: int | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Autoencoder latents, library sizes and attribute codes of the cells of ``adata``."""
        if not self.autoencoder_trained_:
            raise RuntimeError("Train the model first: model.train().")
        if getattr(self.module, "modalities", None):
            raise TypeError(
                f"{type(self).__name__} on several modalities: interpolation takes one "
                "modality; use transfer(mdata, to=...) for counterfactuals."
            )
        module = self.module
        module.eval()
        zs, libraries, codes = [], [], []
        for tensors in self._batches(adata, None, batch_size):
            zs.append(module.encode_tensors(tensors))
            libraries.append(module.library_of_tensors(tensors))
            codes.append(module.attribute_codes(tensors))
        return torch.cat(zs), torch.cat(libraries), torch.cat(codes)

    def _whatif_select(self, codes: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
        return select_rows(codes, rows)

    def _whatif_decode(
        self, z: torch.Tensor, library: torch.Tensor, codes: torch.Tensor, return_mean: bool
    ) -> sp.csr_matrix:
        return self._decode_block(z, library, codes, return_mean)

    def _transfer_output(
        self, X: sp.csr_matrix, obs: pd.DataFrame, uns: dict[str, Any], var_names: pd.Index
    ) -> AnnData:
        """The transferred cells as an AnnData with provenance."""
        out = AnnData(X=X, obs=obs, var=pd.DataFrame(index=var_names))
        out.uns[UNS_KEY] = uns
        return out

    def _transferred_obs(
        self, adata: AnnData, indices: np.ndarray, to: Mapping[str, Any]
    ) -> pd.DataFrame:
        obs = adata.obs.iloc[indices].copy()
        # Drop the bookkeeping columns scvi-tools writes into a registered AnnData.
        obs = obs.loc[:, [c for c in obs.columns if not str(c).startswith("_scvi")]]
        fields = {f.obs_key: f for f in self.attribute_fields}
        fields.update({f.registry_key: f for f in self.attribute_fields})
        for key, value in to.items():
            field = fields[key]
            obs[f"{field.obs_key}_source"] = obs[field.obs_key].astype(str).to_numpy()
            obs[field.obs_key] = pd.Categorical(
                [str(v) for v in broadcast_values(value, len(indices), key)],
                categories=list(field.categories),
            )
        return obs

    # ------------------------------------------------- posterior predictive
    @torch.inference_mode()
    def posterior_predictive_sample(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        transform_batch: Sequence[Any] | Any | None = None,
        n_samples: int = 1,
        gene_list: Sequence[str] | None = None,
        batch_size: int | None = None,
        dataloader: Any = None,
        silent: bool = True,
        **data_loader_kwargs: Any,
    ) -> Any:
        """Counts drawn from ``p(x_hat | x)``: encode each cell, decode, sample the NB.

        Same signature and return type as scvi-tools' ``RNASeqMixin`` method, so
        :class:`scvi.criticism.PosteriorPredictiveCheck` works.

        Parameters
        ----------
        adata
            Cells (``None``: the training data).
        indices
            Subset of cells.
        transform_batch
            ``None`` (observed batch) or batch categories: each cell's latent is transported
            by the flow to that batch (averaged over several, as in scvi-tools).
        n_samples
            Draws per cell.
        gene_list
            Genes to return (``None``: all).
        batch_size
            Cells per minibatch.
        dataloader
            A data loader yielding scvi-tools tensors instead of ``adata``/``indices``.
        silent
            Unused (kept for signature compatibility).
        **data_loader_kwargs
            Unused (kept for signature compatibility).

        Returns
        -------
        :class:`sparse.GCXS` of shape ``(n_cells, n_genes)`` if ``n_samples == 1``, else
        ``(n_cells, n_genes, n_samples)``.

        Examples
        --------
        >>> from scvi.criticism import PosteriorPredictiveCheck
        >>> ppc = PosteriorPredictiveCheck(adata, {"cfgen": model}, n_samples=2)
        """
        import sparse

        self._check_trained()
        self.module.eval()
        batches = self._transform_batch_codes(transform_batch)
        if dataloader is None:
            adata = self._validate_anndata(adata)
            loader = self._batches(adata, indices, batch_size)
            var_names = adata.var_names
        else:
            device = self.module.latent_mean.device
            loader = ({k: v.to(device) for k, v in t.items()} for t in dataloader)
            var_names = self._generated_var_names()
        gene_mask = slice(None)
        if gene_list is not None:
            gene_mask = torch.as_tensor(np.isin(np.asarray(var_names), list(gene_list)))
            if not gene_mask.any():
                raise ValueError("None of the genes in `gene_list` are in the data.")
        blocks, shape = [], None
        for tensors in loader:
            draws = [self._posterior_draws(tensors, code, n_samples) for code in batches]
            values = (draws[0] if len(draws) == 1 else torch.stack(draws).mean(0))[:, gene_mask]
            shape = values.shape[1:]
            blocks.append(sp.csr_matrix(values.reshape(values.shape[0], -1).numpy()))
        if not blocks:
            raise ValueError("No cells to sample.")
        # One GCXS built from a scipy CSR: sparse.concatenate of many GCXS blocks is far slower.
        # A 3-D GCXS compressed on axis 0 stores exactly this (cells, genes * samples) CSR.
        flat = sp.vstack(blocks, format="csr")
        flat.sort_indices()
        return sparse.GCXS(
            (flat.data, flat.indices, flat.indptr),
            shape=(flat.shape[0], *shape),
            compressed_axes=(0,),
        )

    def _transform_batch_codes(self, transform_batch: Any) -> list[int | None]:
        if transform_batch is None:
            return [None]
        field = next(
            (f for f in self.attribute_fields if f.registry_key == REGISTRY_KEYS.BATCH_KEY), None
        )
        if field is None:
            raise ValueError("`transform_batch` needs a model set up with `batch_key`.")
        values = [transform_batch] if np.ndim(transform_batch) == 0 else list(transform_batch)
        return [int(c) for c in field.encode([str(v) for v in values])]

    def _posterior_draws(
        self, tensors: dict[str, torch.Tensor], batch_code: int | None, n_samples: int
    ) -> torch.Tensor:
        module = self.module
        x = tensors[REGISTRY_KEYS.X_KEY]
        library = x.sum(dim=1, keepdim=True)
        codes = module.attribute_codes(tensors)
        z = module.encode(x)
        if batch_code is not None:
            i = next(
                i
                for i, f in enumerate(self.attribute_fields)
                if f.registry_key == REGISTRY_KEYS.BATCH_KEY
            )
            target = codes.clone()
            target[:, i] = batch_code
            continuous = module.continuous_inputs(tensors, library)
            weights = self._guidance_weights(None)
            z = module.unstandardize(
                module.transport(
                    module.standardize(z),
                    (codes, continuous),
                    (target, continuous),
                    weights,
                    self._ode(),
                )
            )
            codes = target
        mu, theta = module.decode(z, library, codes)
        draws = [sample_nb_dense(mu, theta).cpu() for _ in range(n_samples)]
        return draws[0] if n_samples == 1 else torch.stack(draws, dim=-1)

    # ------------------------------------------------------------ imputation
    @torch.inference_mode()
    def impute(
        self,
        adata: AnnData | None = None,
        mask: np.ndarray | sp.spmatrix | None = None,
        *,
        n_iterations: int = _IMPUTE_ITERATIONS,
        batch_size: int | None = None,
    ) -> AnnData:
        """Fill masked entries with the decoder's NB mean given the observed entries.

        Masked entries start at zero; each iteration encodes the completed cell, decodes gene
        proportions, scales them so that the observed genes keep their observed total, and
        refills the masked entries with the resulting means. Observed entries never change.

        Parameters
        ----------
        adata
            Cells with the training genes (``None``: the training data).
        mask
            ``(n_cells, n_genes)`` boolean array or sparse matrix, ``True`` where a value is
            missing.
        n_iterations
            Encode-decode rounds.
        batch_size
            Cells per minibatch.

        Returns
        -------
        A new AnnData (``obs``/``var`` of ``adata``) whose ``.X`` holds the observed counts
        and the imputed means (sparse float32).

        Examples
        --------
        >>> mask = np.random.default_rng(0).random(adata.shape) < 0.1
        >>> filled = model.impute(adata, mask)
        """
        if not self.autoencoder_trained_:
            raise RuntimeError("Train the model first: model.train().")
        adata = self._validate_anndata(adata)
        if mask is None:
            raise ValueError("Pass `mask`, a boolean (n_cells, n_genes) array of missing entries.")
        if tuple(mask.shape) != tuple(adata.shape):
            raise ValueError(f"`mask` has shape {mask.shape}, the data {adata.shape}.")
        mask = sp.csr_matrix(mask, dtype=bool) if sp.issparse(mask) else np.asarray(mask, bool)
        self.module.eval()
        blocks, start = [], 0
        for tensors in self._batches(adata, None, batch_size):
            x = tensors[REGISTRY_KEYS.X_KEY]
            end = start + x.shape[0]
            block = mask[start:end]
            block = block.toarray() if sp.issparse(block) else block
            missing = torch.as_tensor(block, device=x.device)
            blocks.append(sp.csr_matrix(self._impute_block(x, missing, n_iterations)))
            start = end
        out = AnnData(
            X=sp.vstack(blocks, format="csr").astype(np.float32),
            obs=adata.obs.copy(),
            var=pd.DataFrame(index=adata.var_names),
        )
        out.uns[UNS_KEY] = {"model": type(self).__name__, "operation": "impute"}
        return out

    def _impute_block(
        self, x: torch.Tensor, missing: torch.Tensor, n_iterations: int
    ) -> np.ndarray:
        module = self.module
        observed = torch.where(missing, torch.zeros_like(x), x)
        observed_total = observed.sum(dim=1, keepdim=True)
        fallback = torch.exp(module.log_library_mean)
        filled = observed
        for _ in range(max(1, n_iterations)):
            proportions = torch.softmax(module.decoder(module.encode(filled)), dim=-1)
            observed_share = (proportions * ~missing).sum(dim=1, keepdim=True)
            # Library implied by the observed genes; a cell with nothing observed gets the
            # training mean library.
            library = torch.where(
                observed_share > 0, observed_total / observed_share.clamp(min=1e-12), fallback
            )
            filled = torch.where(missing, proportions * library, x)
        return filled.cpu().numpy()


def broadcast_values(value: Any, n: int, key: str) -> np.ndarray:
    """One category name per cell from one name or a list of ``n`` names."""
    if isinstance(value, str) or np.ndim(value) == 0:
        return np.full(n, str(value), dtype=object)
    values = np.asarray([str(v) for v in value], dtype=object)
    if len(values) != n:
        raise ValueError(f"to[{key!r}] has {len(values)} values for {n} cells.")
    return values
