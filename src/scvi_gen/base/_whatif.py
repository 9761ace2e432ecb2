"""What-if generation shared by the latent generators: perturbations and interpolation.

:class:`WhatIfMixin` gives CFGen, LatentDiffusion and SCVIGenerator one API:

- :meth:`~WhatIfMixin.predict_perturbation`: how the given cells would look under another
  value of one condition (e.g. ``condition="STIM"``), also for a (cell type, condition) pair
  never seen in training;
- :meth:`~WhatIfMixin.interpolate` and :meth:`~WhatIfMixin.interpolate_groups`: cells decoded
  along a straight line in the model's latent space.

The model supplies ``transfer`` (the counterfactual step: the flow for the latent
generators, latent arithmetic for SCVIGenerator) and three small hooks:
``_whatif_latents`` (encode cells), ``_whatif_select`` (conditions of chosen cells) and
``_whatif_decode`` (decode latents under conditions).
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from anndata import AnnData
from scvi import REGISTRY_KEYS

from scvi_gen._constants import UNS_KEY
from scvi_gen.base._conditions import ConditionField
from scvi_gen.base._generative_mixin import _seeded_torch, resolve_seed
from scvi_gen.base._serialization import to_jsonable

logger = logging.getLogger(__name__)

PerturbationMode = Literal["transfer", "sample"]
_MODES = ("transfer", "sample")


class WhatIfMixin:
    """Perturbation prediction and latent interpolation for a latent-space generator.

    Needs ``attribute_fields``, ``transfer``, ``generate``, ``_whatif_latents``,
    ``_whatif_select`` and ``_whatif_decode`` on the model.
    """

    # ------------------------------------------------------------- perturbation
    def predict_perturbation(
        self,
        adata_control: AnnData,
        condition_key: str = "condition",
        to: str = "STIM",
        *,
        n_cells: int | None = None,
        mode: PerturbationMode = "transfer",
        seed: int | None = None,
        batch_size: int | None = None,
        return_mean: bool = False,
        **transfer_kwargs: Any,
    ) -> AnnData:
        """Predict how the given cells respond to a condition (e.g. a stimulus).

        Each cell keeps its other attributes (cell type, batch ...); only ``condition_key``
        changes to ``to``. The (cell type, ``to``) pair need not occur in training.

        Parameters
        ----------
        adata_control
            Cells under their source condition, with the training genes and the registered
            ``obs`` columns (not modified).
        condition_key
            The registered categorical ``obs`` column to change.
        to
            Its target category.
        n_cells
            Cells to predict: ``None`` one per given cell; otherwise that many, drawn from
            the given cells with replacement (seeded).
        mode
            ``"transfer"``: each cell's counterfactual (CFGen/LatentDiffusion through the
            flow, SCVIGenerator by latent arithmetic, see ``transfer``); ``"sample"``: fresh
            cells generated for each cell's attributes with the target condition (library
            sizes of the given cells).
        seed
            Seed of the draws (same seed, same cells).
        batch_size
            Cells per minibatch.
        return_mean
            ``mode="transfer"`` only: NB means instead of sampled counts.
        **transfer_kwargs
            Passed to the model's ``transfer`` (e.g. ``guidance`` for CFGen,
            ``group_key`` for SCVIGenerator) or, with ``mode="sample"``, to ``generate``.

        Returns
        -------
        A new AnnData of predicted cells: integer counts in sparse ``.X`` (NB means with
        ``return_mean``), the given cells' ``obs`` with ``condition_key`` set to ``to``, the
        source values in ``<condition_key>_source`` and the source cell in
        ``obs["source_cell"]``, provenance in ``uns["scvi_gen"]``.

        Examples
        --------
        >>> ctrl = adata[(adata.obs["cell_type"] == "B") & (adata.obs["condition"] == "CTRL")]
        >>> stim = model.predict_perturbation(ctrl, "condition", to="STIM", seed=0)
        """
        field = self._whatif_field(condition_key)
        _check_category(field, to, "to")
        if mode not in _MODES:
            raise ValueError(f"`mode` must be one of {list(_MODES)}, got {mode!r}.")
        if mode == "sample" and return_mean:
            raise ValueError("`return_mean=True` needs mode='transfer' (sampling draws cells).")
        adata = _checked_cells(adata_control, "adata_control", field.obs_key)
        seed = resolve_seed(seed)
        indices = _chosen_cells(adata.n_obs, n_cells, seed)
        if mode == "transfer":
            out = self.transfer(
                adata,
                to={field.obs_key: to},
                indices=indices,
                seed=seed,
                batch_size=batch_size,
                return_mean=return_mean,
                **transfer_kwargs,
            )
        else:
            _check_generate_kwargs(self.generate, transfer_kwargs)
            out = self._sample_for_cells(adata, indices, field, to, seed, transfer_kwargs)
        out.obs["source_cell"] = adata.obs_names[indices].to_numpy()
        out.obs_names = pd.Index([f"pred_{i}" for i in range(out.n_obs)])
        out.uns[UNS_KEY] = {
            **dict(out.uns.get(UNS_KEY, {})),
            "operation": "predict_perturbation",
            "mode": mode,
            "seed": seed,
            "perturbation": json.dumps({"condition_key": field.obs_key, "to": str(to)}),
        }
        return out

    def _sample_for_cells(
        self,
        adata: AnnData,
        indices: np.ndarray,
        field: ConditionField,
        to: str,
        seed: int,
        generate_kwargs: Mapping[str, Any],
    ) -> AnnData:
        """Fresh cells with each given cell's attributes, ``field`` set to ``to``."""
        obs = adata.obs.iloc[indices]
        labels, covariates = None, {}
        for f in self.condition_fields:
            if f.obs_key not in obs:
                continue
            if f.obs_key == field.obs_key:
                values = [str(to)] * len(indices)
            elif f.is_categorical:
                values = obs[f.obs_key].astype(str).tolist()
            else:
                values = obs[f.obs_key].astype(float).tolist()
            if f.registry_key == REGISTRY_KEYS.LABELS_KEY:
                labels = values
            else:
                covariates[f.obs_key] = values
        library = np.asarray(adata.X[indices].sum(axis=1), dtype=np.float64).ravel()
        out = self.generate(
            None if labels is not None else len(indices),
            labels=labels,
            covariates=covariates or None,
            library_size=np.maximum(library, 1.0),
            seed=seed,
            progress_bar=False,
            **generate_kwargs,
        )
        out.obs[f"{field.obs_key}_source"] = obs[field.obs_key].astype(str).to_numpy()
        return out

    def _whatif_field(self, key: str) -> ConditionField:
        """The categorical attribute named ``key`` (obs column), or a clear error."""
        fields = list(self.attribute_fields)
        for f in fields:
            if key in (f.obs_key, f.registry_key):
                return f
        known = [f.obs_key for f in fields]
        raise ValueError(
            f"`condition_key`={key!r} is not a categorical condition of this "
            f"{type(self).__name__}; it was set up with {known}. Register it with "
            "setup_anndata(..., labels_key=, batch_key= or categorical_covariate_keys=)."
        )

    # ------------------------------------------------------------ interpolation
    @torch.inference_mode()
    def interpolate(
        self,
        cells_a: AnnData,
        cells_b: AnnData,
        n_steps: int = 10,
        *,
        seed: int | None = None,
        return_mean: bool = False,
        batch_size: int | None = None,
    ) -> AnnData:
        """Decode cells along straight latent paths from ``cells_a`` to ``cells_b``.

        Path ``i`` joins the latent of ``cells_a[i]`` to that of ``cells_b[i]`` (one cell on
        either side is paired with every cell of the other); at ``t`` the latent is
        ``(1 - t) z_a + t z_b`` and the library size ``l_a^(1-t) l_b^t``. The latent is the
        encoder's (the autoencoder's for CFGen/LatentDiffusion, the posterior mean for
        SCVIGenerator). Decoding uses the conditions of ``a`` for ``t < 0.5`` and those of
        ``b`` from ``t = 0.5``; at ``t = 0`` and ``t = 1`` the path is each endpoint's
        reconstruction.

        Parameters
        ----------
        cells_a, cells_b
            Start and end cells (training genes and registered ``obs`` columns; not
            modified).
        n_steps
            Points per path (at least 2), ``t`` evenly spaced from 0 to 1.
        seed
            Seed of the NB draws.
        return_mean
            NB means instead of sampled counts.
        batch_size
            Cells per minibatch when encoding.

        Returns
        -------
        AnnData with ``n_paths * n_steps`` cells (path by path), counts (or means) in sparse
        ``.X``, and ``obs["path"]``, ``obs["step"]``, ``obs["t"]``, ``obs["cell_a"]``,
        ``obs["cell_b"]``.

        Examples
        --------
        >>> path = model.interpolate(adata[:1], adata[1:2], n_steps=20, return_mean=True)
        """
        n_steps = _check_steps(n_steps)
        a = _checked_cells(cells_a, "cells_a")
        b = _checked_cells(cells_b, "cells_b")
        za, la, ca = self._whatif_latents(a, batch_size)
        zb, lb, cb = self._whatif_latents(b, batch_size)
        ia, ib = _pair_indices(a.n_obs, b.n_obs)
        obs = _path_obs(len(ia), n_steps)
        obs["cell_a"] = np.repeat(a.obs_names[ia].to_numpy(), n_steps)
        obs["cell_b"] = np.repeat(b.obs_names[ib].to_numpy(), n_steps)
        return self._decode_paths(
            (za[ia], la[ia], self._whatif_select(ca, ia)),
            (zb[ib], lb[ib], self._whatif_select(cb, ib)),
            obs,
            n_steps,
            resolve_seed(seed),
            return_mean,
            var_names=a.var_names,
        )

    @torch.inference_mode()
    def interpolate_groups(
        self,
        adata: AnnData,
        key: str,
        a: str,
        b: str,
        n_steps: int = 10,
        *,
        n_samples: int = 1,
        seed: int | None = None,
        return_mean: bool = False,
        batch_size: int | None = None,
    ) -> AnnData:
        """Decode cells along the latent line between the mean latents of two groups.

        The path joins the mean latent of the cells with ``adata.obs[key] == a`` to that of
        ``b`` (e.g. two conditions or two cell types); library sizes follow the groups'
        geometric mean library, and decoding uses the conditions of each group's first cell
        (``a`` for ``t < 0.5``, ``b`` from 0.5).

        Parameters
        ----------
        adata
            Cells with the training genes and the registered ``obs`` columns (not modified).
        key
            ``obs`` column defining the groups (need not be registered).
        a, b
            Start and end group.
        n_steps
            Points on the path (at least 2).
        n_samples
            Cells drawn per point.
        seed
            Seed of the NB draws.
        return_mean
            NB means instead of sampled counts.
        batch_size
            Cells per minibatch when encoding.

        Returns
        -------
        AnnData with ``n_steps * n_samples`` cells and ``obs["step"]``, ``obs["t"]``,
        ``obs["path"]`` (0) and ``obs[key]`` (``"a->b"``).

        Examples
        --------
        >>> path = model.interpolate_groups(adata, "condition", "CTRL", "STIM", n_steps=20)
        """
        n_steps = _check_steps(n_steps)
        if int(n_samples) < 1:
            raise ValueError(f"`n_samples` must be at least 1, got {n_samples}.")
        adata = _checked_cells(adata, "adata", key)
        values = adata.obs[key].astype(str).to_numpy()
        ends = []
        for name, group in (("a", a), ("b", b)):
            where = np.flatnonzero(values == str(group))
            if len(where) == 0:
                known = sorted(set(values))
                raise ValueError(
                    f"`{name}`={group!r} has no cells in adata.obs[{key!r}]; it holds {known}."
                )
            z, lib, cond = self._whatif_latents(adata[where].copy(), batch_size)
            ends.append(
                (
                    z.mean(0, keepdim=True),
                    torch.exp(torch.log(lib.clamp(min=1.0)).mean(0, keepdim=True)),
                    self._whatif_select(cond, np.zeros(1, dtype=np.int64)),
                )
            )
        n = int(n_samples)
        repeat = np.zeros(n, dtype=np.int64)
        (za, la, ca), (zb, lb, cb) = ends
        obs = _path_obs(n, n_steps)
        obs["path"] = 0
        obs[key] = f"{a}->{b}"
        return self._decode_paths(
            (za[repeat], la[repeat], self._whatif_select(ca, repeat)),
            (zb[repeat], lb[repeat], self._whatif_select(cb, repeat)),
            obs,
            n_steps,
            resolve_seed(seed),
            return_mean,
            var_names=adata.var_names,
        )

    def _decode_paths(
        self,
        start: tuple[torch.Tensor, torch.Tensor, Any],
        end: tuple[torch.Tensor, torch.Tensor, Any],
        obs: pd.DataFrame,
        n_steps: int,
        seed: int,
        return_mean: bool,
        var_names: pd.Index,
    ) -> AnnData:
        """Decode ``n_steps`` points on each path (rows path-major, as in ``obs``)."""
        (za, la, ca), (zb, lb, cb) = start, end
        n_paths = za.shape[0]
        steps = np.tile(np.arange(n_steps), n_paths)
        paths = np.repeat(np.arange(n_paths), n_steps)
        t = torch.as_tensor(steps / (n_steps - 1), dtype=za.dtype, device=za.device)[:, None]
        rows = torch.as_tensor(paths, device=za.device)
        z = (1 - t) * za[rows] + t * zb[rows]
        log_lib = (1 - t) * torch.log(la[rows].clamp(min=1.0)) + t * torch.log(
            lb[rows].clamp(min=1.0)
        )
        late = (steps / (n_steps - 1)) >= 0.5
        blocks = []
        with _seeded_torch(seed, za.device):
            for use_b in (False, True):
                where = np.flatnonzero(late == use_b)
                if len(where) == 0:
                    continue
                cond = self._whatif_select(cb if use_b else ca, paths[where])
                idx = torch.as_tensor(where, device=za.device)
                block = self._whatif_decode(z[idx], torch.exp(log_lib[idx]), cond, return_mean)
                blocks.append((where, sp.csr_matrix(block, dtype=np.float32)))
        order = np.concatenate([w for w, _ in blocks])
        X = sp.vstack([blk for _, blk in blocks], format="csr")[np.argsort(order)]
        out = AnnData(X=sp.csr_matrix(X), obs=obs, var=pd.DataFrame(index=var_names))
        out.uns[UNS_KEY] = {
            "model": type(self).__name__,
            "operation": "interpolate",
            "output": "nb_mean" if return_mean else "counts",
            "seed": seed,
            "args": json.dumps(to_jsonable({"n_steps": n_steps}), default=str),
        }
        return out


# ------------------------------------------------------------------ helpers
def _check_category(field: ConditionField, value: Any, name: str) -> None:
    if str(value) not in {str(c) for c in field.categories}:
        raise ValueError(
            f"`{name}`={value!r} is not a known value of {field.obs_key!r}; the model was "
            f"trained on {list(field.categories)}."
        )


def _checked_cells(adata: Any, name: str, obs_key: str | None = None) -> AnnData:
    """A copy of the user's cells (scvi-tools' registration writes into ``obs``)."""
    if not isinstance(adata, AnnData):
        raise TypeError(f"`{name}` must be an AnnData, got {type(adata).__name__}.")
    if adata.n_obs == 0:
        raise ValueError(f"`{name}` has no cells.")
    if obs_key is not None and obs_key not in adata.obs:
        raise ValueError(f"`{name}` has no obs column {obs_key!r}; it holds {list(adata.obs)}.")
    return adata.copy()


def _chosen_cells(n_obs: int, n_cells: int | None, seed: int) -> np.ndarray:
    if n_cells is None:
        return np.arange(n_obs)
    if isinstance(n_cells, bool) or not isinstance(n_cells, int | np.integer) or n_cells < 1:
        raise ValueError(f"`n_cells` must be a positive integer or None, got {n_cells!r}.")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
    return np.sort(rng.choice(n_obs, size=int(n_cells), replace=True))


def _check_steps(n_steps: Any) -> int:
    if isinstance(n_steps, bool) or not isinstance(n_steps, int | np.integer) or n_steps < 2:
        raise ValueError(f"`n_steps` must be an integer >= 2, got {n_steps!r}.")
    return int(n_steps)


def _pair_indices(n_a: int, n_b: int) -> tuple[np.ndarray, np.ndarray]:
    if n_a == n_b:
        return np.arange(n_a), np.arange(n_b)
    if n_a == 1:
        return np.zeros(n_b, dtype=np.int64), np.arange(n_b)
    if n_b == 1:
        return np.arange(n_a), np.zeros(n_a, dtype=np.int64)
    raise ValueError(
        f"`cells_a` ({n_a} cells) and `cells_b` ({n_b} cells) must have as many cells (paired "
        "paths) or one of them a single cell; for two groups use interpolate_groups()."
    )


def _path_obs(n_paths: int, n_steps: int) -> pd.DataFrame:
    steps = np.tile(np.arange(n_steps), n_paths)
    return pd.DataFrame(
        {
            "path": np.repeat(np.arange(n_paths), n_steps),
            "step": steps,
            "t": steps / (n_steps - 1),
        },
        index=pd.Index([f"path{p}_step{s}" for p in range(n_paths) for s in range(n_steps)]),
    )


def select_rows(conditions: Any, rows: Sequence[int] | np.ndarray) -> Any:
    """Rows of a condition tensor, or of every tensor in a dict (``None`` kept)."""
    index = np.asarray(rows, dtype=np.int64)
    if conditions is None:
        return None
    if isinstance(conditions, Mapping):
        return {k: select_rows(v, index) for k, v in conditions.items()}
    return conditions[torch.as_tensor(index, device=conditions.device)]


def _check_generate_kwargs(generate: Any, kwargs: Mapping[str, Any]) -> None:
    """Refuse ``transfer``-only keywords in ``mode="sample"`` before ``generate`` sees them."""
    params = inspect.signature(generate).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        names = ", ".join(f"`{k}`" for k in unknown)
        raise ValueError(
            f"{names} only apply with mode='transfer'; mode='sample' passes extra keywords to "
            "generate(), which does not take them. Drop them or use mode='transfer'."
        )
