"""Counterfactuals of SCVIGenerator: latent arithmetic (scGen) and decoder covariates."""

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
from scvi_gen.base._conditions import ConditionField
from scvi_gen.base._generative_mixin import _seeded_torch, resolve_seed
from scvi_gen.base._latent_ops import broadcast_values
from scvi_gen.base._serialization import to_jsonable
from scvi_gen.base._whatif import WhatIfMixin, select_rows

logger = logging.getLogger(__name__)

#: Cells a group needs under both conditions for its latent shift to count.
MIN_CELLS_PER_SIDE = 3


class SCVIWhatIfMixin(WhatIfMixin):
    """``transfer``, perturbation prediction and interpolation for SCVIGenerator.

    The labels are not an input of scVI's networks (only of the prior), so a label is
    changed by latent arithmetic as in scGen (Lotfollahi et al., 2019): the cell's posterior
    mean plus the mean latent shift between the target and the source label, averaged with
    equal weight over the groups (the other categorical attributes, or ``group_key``) where
    both labels have training cells. The batch and categorical covariates are decoder
    inputs: they are changed in the decoder, the latent kept.
    """

    @property
    def attribute_fields(self) -> list[ConditionField]:
        """The registered categorical conditions (labels, batch, categorical covariates)."""
        return [f for f in self.condition_fields if f.is_categorical]

    @torch.inference_mode()
    def transfer(
        self,
        adata: AnnData | None = None,
        to: Mapping[str, Any] | None = None,
        *,
        indices: Sequence[int] | None = None,
        group_key: str | None = None,
        batch_size: int | None = None,
        seed: int | None = None,
        return_mean: bool = False,
    ) -> AnnData:
        """Counterfactual cells: what each cell would look like under other conditions.

        Parameters
        ----------
        adata
            Cells with the training genes and registered ``obs`` columns (``None``: the
            training data). Not modified.
        to
            ``{obs_key: category}`` or ``{obs_key: one category per cell}`` for the labels
            (latent arithmetic), the batch or a categorical covariate (decoder input).
        indices
            Subset of cells of ``adata``.
        group_key
            Label transfer: ``obs`` column of the training data whose groups (e.g. cell
            types) the latent shift is averaged over; ``None`` uses the other registered
            categorical attributes (one group if there are none).
        batch_size
            Cells per minibatch.
        seed
            Seed of the NB draws.
        return_mean
            Return the NB means instead of sampled counts.

        Returns
        -------
        A new AnnData with the input's ``obs`` (transferred columns set to the target, the
        original values in ``<key>_source``), counts in sparse ``.X`` and provenance in
        ``uns["scvi_gen"]``.

        Examples
        --------
        >>> stim = model.transfer(ctrl, to={"condition": "STIM"}, group_key="cell_type")
        """
        self._check_if_trained(warn=False)
        to = dict(to or {})
        if not to:
            raise ValueError("Pass `to`, e.g. to={'condition': 'STIM'}.")
        adata = self._validate_anndata(adata if adata is None else adata.copy())
        idx = np.arange(adata.n_obs) if indices is None else np.asarray(indices)
        idx = np.flatnonzero(idx) if idx.dtype == bool else idx
        fields = {key: self._whatif_field(key) for key in to}
        targets = {
            key: fields[key].encode(broadcast_values(v, len(idx), key)) for key, v in to.items()
        }
        z, library, cond = self._whatif_latents(adata, batch_size, idx)
        for key, codes in targets.items():
            field = fields[key]
            if field.registry_key == REGISTRY_KEYS.LABELS_KEY:
                source = cond[REGISTRY_KEYS.LABELS_KEY].view(-1).cpu().numpy().astype(np.int64)
                z = z + self._label_shifts(source, codes, group_key, batch_size, field)
            cond = _with_codes(cond, field, codes)
        seed = resolve_seed(seed)
        with _seeded_torch(seed, z.device):
            X = self._whatif_decode(z, library, cond, return_mean)
        obs = _transferred_obs(adata, idx, to, fields)
        out = AnnData(
            X=sp.csr_matrix(X, dtype=np.float32), obs=obs, var=pd.DataFrame(index=adata.var_names)
        )
        out.uns[UNS_KEY] = {
            "model": type(self).__name__,
            "operation": "transfer",
            "output": "nb_mean" if return_mean else "counts",
            "seed": seed,
            "transfer_args": json.dumps(
                to_jsonable({"to": to, "group_key": group_key}), default=str
            ),
        }
        return out

    # ------------------------------------------------------- latent arithmetic
    def _label_shifts(
        self,
        source: np.ndarray,
        target: np.ndarray,
        group_key: str | None,
        batch_size: int | None,
        field: ConditionField,
    ) -> torch.Tensor:
        """One latent shift per cell: mean over groups of ``mean z[target] - mean z[source]``."""
        z, _, cond = self._whatif_latents(self.adata, batch_size)
        labels = cond[REGISTRY_KEYS.LABELS_KEY].view(-1).cpu().numpy().astype(np.int64)
        groups = self._training_groups(group_key, cond)
        z_np = z.cpu().numpy().astype(np.float64)
        shifts = {}
        for s, t in set(zip(source.tolist(), target.tolist(), strict=True)):
            shifts[(s, t)] = _mean_shift(z_np, labels, groups, s, t, field)
        out = np.stack([shifts[(s, t)] for s, t in zip(source, target, strict=True)])
        return torch.as_tensor(out, dtype=z.dtype, device=z.device)

    def _training_groups(self, group_key: str | None, cond: Mapping[str, Any]) -> np.ndarray:
        """Group of every training cell (``group_key`` or the other categorical attributes)."""
        if group_key is not None:
            if group_key not in self.adata.obs:
                raise ValueError(
                    f"`group_key`={group_key!r} is not an obs column of the training data; "
                    f"it holds {list(self.adata.obs)}."
                )
            return self.adata.obs[group_key].astype(str).to_numpy()
        parts = []
        for f in self.attribute_fields:
            if f.registry_key == REGISTRY_KEYS.LABELS_KEY:
                continue
            values = cond[f.registry_key]
            parts.append(values[:, f.column].cpu().numpy().astype(np.int64).astype(str))
        if not parts:
            return np.zeros(len(cond[REGISTRY_KEYS.LABELS_KEY]), dtype=str)
        return np.asarray(["|".join(row) for row in zip(*parts, strict=True)])

    # ------------------------------------------------------------ what-if hooks
    def _whatif_latents(
        self, adata: AnnData, batch_size: int | None, indices: np.ndarray | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor | None]]:
        """Posterior means, library sizes and decoder conditions of cells."""
        self._check_if_trained(warn=False)
        module = self.module
        module.eval()
        adata = self._validate_anndata(adata)
        loader = self._make_data_loader(
            adata=adata, indices=indices, batch_size=batch_size, shuffle=False
        )
        zs, libraries = [], []
        conditions: dict[str, list[torch.Tensor]] = {}
        keys = (
            REGISTRY_KEYS.LABELS_KEY,
            REGISTRY_KEYS.BATCH_KEY,
            REGISTRY_KEYS.CAT_COVS_KEY,
            REGISTRY_KEYS.CONT_COVS_KEY,
        )
        for tensors in loader:
            tensors = {k: v.to(self.device) for k, v in tensors.items() if torch.is_tensor(v)}
            inference = module.inference(**module._get_inference_input(tensors))
            zs.append(inference["qz"].loc)
            libraries.append(tensors[REGISTRY_KEYS.X_KEY].sum(dim=1, keepdim=True))
            for key in keys:
                if key in tensors:
                    conditions.setdefault(key, []).append(tensors[key])
        cond = {k: torch.cat(v) for k, v in conditions.items()}
        return torch.cat(zs), torch.cat(libraries), cond

    def _whatif_select(self, conditions: dict[str, Any], rows: np.ndarray) -> dict[str, Any]:
        return select_rows(conditions, rows)

    def _whatif_decode(
        self,
        z: torch.Tensor,
        library: torch.Tensor,
        conditions: Mapping[str, torch.Tensor],
        return_mean: bool,
    ) -> np.ndarray:
        outputs = self.module.generative(
            z=z,
            library=torch.log(library.clamp(min=1.0)),
            batch_index=conditions[REGISTRY_KEYS.BATCH_KEY],
            cont_covs=conditions.get(REGISTRY_KEYS.CONT_COVS_KEY),
            cat_covs=conditions.get(REGISTRY_KEYS.CAT_COVS_KEY),
            y=conditions.get(REGISTRY_KEYS.LABELS_KEY),
        )
        px = outputs["px"]
        values = px.mean if return_mean else px.sample()
        return values.cpu().numpy()


def _mean_shift(
    z: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    source: int,
    target: int,
    field: ConditionField,
) -> np.ndarray:
    """Equal-weight mean over groups with both labels of the difference of mean latents."""
    if source == target:
        return np.zeros(z.shape[1])
    diffs = []
    for group in np.unique(groups):
        in_group = groups == group
        src = in_group & (labels == source)
        tgt = in_group & (labels == target)
        if src.sum() >= MIN_CELLS_PER_SIDE and tgt.sum() >= MIN_CELLS_PER_SIDE:
            diffs.append(z[tgt].mean(0) - z[src].mean(0))
    if not diffs:
        raise ValueError(
            f"No group of the training data has at least {MIN_CELLS_PER_SIDE} cells of both "
            f"{field.obs_key}={field.categories[source]!r} and {field.categories[target]!r}: "
            "the latent shift between them cannot be learned (pass `group_key`, or train on "
            "cells of both)."
        )
    return np.mean(diffs, axis=0)


def _with_codes(
    cond: dict[str, torch.Tensor], field: ConditionField, codes: np.ndarray
) -> dict[str, torch.Tensor]:
    """The conditions with ``field`` set to ``codes``."""
    cond = dict(cond)
    tensor = cond[field.registry_key].clone()
    tensor[:, field.column] = torch.as_tensor(codes, dtype=tensor.dtype, device=tensor.device)
    cond[field.registry_key] = tensor
    return cond


def _transferred_obs(
    adata: AnnData,
    indices: np.ndarray,
    to: Mapping[str, Any],
    fields: Mapping[str, ConditionField],
) -> pd.DataFrame:
    obs = adata.obs.iloc[indices].copy()
    obs = obs.loc[:, [c for c in obs.columns if not str(c).startswith("_scvi")]]
    for key, value in to.items():
        field = fields[key]
        obs[f"{field.obs_key}_source"] = obs[field.obs_key].astype(str).to_numpy()
        obs[field.obs_key] = pd.Categorical(
            [str(v) for v in broadcast_values(value, len(indices), key)],
            categories=list(field.categories),
        )
    return obs


__all__ = ["MIN_CELLS_PER_SIDE", "SCVIWhatIfMixin"]
