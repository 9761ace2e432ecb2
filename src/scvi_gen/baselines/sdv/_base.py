"""Shared model logic of the SDV baselines: PCA representation and one synthesizer per label."""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from scvi import REGISTRY_KEYS
from scvi.model.base import BaseModelClass
from tqdm.auto import tqdm

from scvi_gen.base import GenerativeMixin
from scvi_gen.baselines.sdv._module import SDVModule
from scvi_gen.baselines.sdv._sdv import pc_columns
from scvi_gen.preprocessing import CommonSpace

logger = logging.getLogger(__name__)

#: Fewest training cells of a label its synthesizer is fitted on (ctgan's mixtures need 2).
MIN_CELLS_PER_LABEL = 2


class SDVGeneratorBase(GenerativeMixin, BaseModelClass):
    """Base of the SDV baselines (not used directly).

    Reads raw counts, normalises each cell to 10,000 counts over all registered genes, takes
    ``log1p`` of the ``n_top_genes`` seurat_v3 highly variable genes and projects them on a PCA
    with ``n_components`` axes fitted on the training cells (the same recipe as
    :class:`~scvi_gen.preprocessing.CommonSpace`). One SDV synthesizer per label is fitted on the
    principal components of that label's cells (SDV's CTGAN and TVAE cannot condition on a
    column; its fallback, rejection sampling, is slow for rare labels). Generated components
    are mapped back through the PCA to log1p(CP10k) of the modelled genes and clipped at 0.

    SDV and its ctgan/copulas/rdt dependencies are under the Business Source License 1.1; they
    are an optional extra (``pip install 'scvi-gen[sdv]'``), imported only to train or load.
    Saved models hold tensors and JSON only (never a pickled synthesizer).

    Batches and covariates are not modelled: only labels condition generation.
    """

    _requires_counts = True
    _output_kind = "lognorm"
    _module_cls: ClassVar[type[SDVModule]] = SDVModule

    def __init__(
        self,
        adata: AnnData | None = None,
        registry: dict | None = None,
        n_top_genes: int | None = 2000,
        n_components: int = 50,
        enforce_min_max_values: bool = True,
    ) -> None:
        super().__init__(adata, registry=registry)
        if n_components < 1:
            raise ValueError(f"`n_components` must be positive, got {n_components}.")
        if n_top_genes is not None and n_top_genes < 2:
            raise ValueError(f"`n_top_genes` must be at least 2, got {n_top_genes}.")
        self._n_top_genes = n_top_genes
        self._n_components = int(n_components)
        self._enforce_min_max_values = bool(enforce_min_max_values)
        self.module = self._build_module(int(self.summary_stats.n_labels))
        if adata is not None:
            self._warn_unmodelled_conditions()
        self._model_summary_string = (
            f"{type(self).__name__}: SDV synthesizer per label on PCA({n_components}) of "
            f"log1p(CP10k) of {n_top_genes or 'all'} genes"
        )
        self._init_generative_state(adata)
        self.init_params_ = self._get_init_params(locals())

    def _build_module(self, n_labels: int) -> SDVModule:
        return self._module_cls(n_labels)

    def _warn_unmodelled_conditions(self) -> None:
        others = [
            f.obs_key for f in self.condition_fields if f.registry_key != REGISTRY_KEYS.LABELS_KEY
        ]
        if others:
            warnings.warn(
                f"{type(self).__name__} fits one synthesizer per label; {others} are kept in "
                "the generated .obs but do not influence the expression.",
                UserWarning,
                stacklevel=3,
            )

    # ---------------------------------------------------------------- training
    def _fit_representation(self) -> tuple[np.ndarray, np.ndarray]:
        """Fit HVGs and PCA on the registered cells; return their PCs and label codes."""
        import scvi

        n_vars = int(self.summary_stats.n_vars)
        space = CommonSpace(
            n_hvg=n_vars if self._n_top_genes is None else min(self._n_top_genes, n_vars),
            n_pcs=self._n_components,
            layer=self.registry_["setup_args"].get("layer"),
            seed=int(scvi.settings.seed or 0),
        )
        pcs = space.fit_transform(self.adata).pcs.astype(np.float64)
        var_names = pd.Index([str(v) for v in self.adata.var_names])
        gene_index = var_names.get_indexer(space.hvg_names_)
        self.module.set_representation(gene_index, space.pca_.components_, space.pca_.mean_)
        labels = np.asarray(self.adata_manager.get_from_registry(REGISTRY_KEYS.LABELS_KEY))
        return pcs, labels.ravel().astype(np.int64)

    def _fit_per_label(self, progress_bar: bool, **fit_kwargs: Any) -> None:
        """Fit the representation, then one synthesizer per label with enough cells."""
        start = time.perf_counter()
        # SDV fits on every cell (no validation split), one synthesizer per label.
        self._check_training_cells(
            None,
            train_size=1.0,
            batch_size=None,
            min_train=MIN_CELLS_PER_LABEL,
            why=f" (each label's SDV synthesizer needs >= {MIN_CELLS_PER_LABEL} cells)",
        )
        pcs, labels = self._fit_representation()
        columns = pc_columns(pcs.shape[1])
        names = self._label_names()
        present = [c for c in range(self.module.n_labels) if np.any(labels == c)]
        too_small = [names[c] for c in present if np.sum(labels == c) < MIN_CELLS_PER_LABEL]
        if len(too_small) == len(present):
            raise ValueError(
                f"Cannot train {type(self).__name__} on {len(labels)} cells: no label has "
                f"{MIN_CELLS_PER_LABEL} cells, and each label's SDV synthesizer needs at least "
                f"{MIN_CELLS_PER_LABEL} cells. Pass more cells per label, or set up without "
                "`labels_key`."
            )
        if too_small:
            warnings.warn(
                f"Labels {too_small} have fewer than {MIN_CELLS_PER_LABEL} training cells; no "
                "synthesizer is fitted for them and they cannot be generated.",
                UserWarning,
                stacklevel=3,
            )
        history, losses = [], []
        for label in tqdm(
            present, desc=f"{type(self).__name__} per label", disable=not progress_bar
        ):
            rows = pcs[labels == label]
            if len(rows) < MIN_CELLS_PER_LABEL:
                continue
            tic = time.perf_counter()
            loss = self._fit_label(label, pd.DataFrame(rows, columns=columns), **fit_kwargs)
            self.module.set_bounds(label, rows, enforce=self._enforce_min_max_values)
            history.append(
                {"label": names[label], "n_cells": len(rows), "fit_s": time.perf_counter() - tic}
            )
            if loss is not None:
                losses.append(loss.assign(label=names[label]))
        self.history_ = {"fit": pd.DataFrame(history)}
        if losses:
            self.history_["loss"] = pd.concat(losses, ignore_index=True)
        self.is_trained_ = True
        logger.info("%s trained in %.1f s.", type(self).__name__, time.perf_counter() - start)

    def _fit_label(self, label: int, data: pd.DataFrame, **fit_kwargs: Any) -> pd.DataFrame | None:
        """Fit one label's synthesizer on its PCs; return its loss table if any (subclasses)."""
        raise NotImplementedError

    def _label_names(self) -> list[str]:
        field = next(
            (f for f in self.condition_fields if f.registry_key == REGISTRY_KEYS.LABELS_KEY), None
        )
        return ["all cells"] if field is None else list(field.categories)

    # -------------------------------------------------------------- generation
    def _default_label_weights(self, labels: pd.Series, categories: Sequence[Any]) -> np.ndarray:
        """Training frequencies over the labels with a synthesizer (the others cannot be made)."""
        fitted = self.module.fitted.cpu().numpy()
        freq = labels.value_counts()
        weights = np.asarray(
            [freq.get(c, 0) if fitted[i] else 0 for i, c in enumerate(categories)], dtype=float
        )
        return weights / weights.sum()

    def _generated_var_names(self) -> pd.Index:
        return super()._generated_var_names()[self.module.gene_index.cpu().numpy()]

    def _generate_chunk(
        self,
        conditions: dict[str, torch.Tensor],
        library: torch.Tensor | None,
        guidance: Any,
    ) -> torch.Tensor:
        labels = conditions[REGISTRY_KEYS.LABELS_KEY].view(-1)
        pcs = torch.empty(len(labels), self.module.n_components, device=self.module.device)
        for label in torch.unique(labels).tolist():
            if not bool(self.module.fitted[label]):
                raise ValueError(
                    f"No synthesizer was fitted for label {self._label_names()[label]!r} "
                    f"(fewer than {MIN_CELLS_PER_LABEL} training cells), so it cannot be "
                    "generated: leave it out of `labels`, or train on at least "
                    f"{MIN_CELLS_PER_LABEL} cells of it."
                )
            rows = torch.nonzero(labels == label).view(-1)
            pcs[rows] = self._sample_label(label, len(rows)).to(pcs)
        return self.module.decode(pcs)

    def _sample_label(self, label: int, n: int) -> torch.Tensor:
        """``(n, n_components)`` principal components of one label (subclasses)."""
        raise NotImplementedError
