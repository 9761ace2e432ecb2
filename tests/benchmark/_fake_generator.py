"""A stand-in generator for runner tests: it re-draws training cells and records what it saw."""

from __future__ import annotations

from typing import Any, ClassVar

import anndata as ad
import numpy as np
import pandas as pd


class ResamplingGenerator:
    """Returns random training cells of each requested label (no training cost)."""

    trained_on: ClassVar[list[list[str]]] = []

    @classmethod
    def setup_anndata(cls, adata: ad.AnnData, labels_key: str | None = None, **kwargs: Any):
        adata.uns["_fake_labels_key"] = labels_key

    def __init__(self, adata: ad.AnnData, **kwargs: Any) -> None:
        self.adata = adata
        self.labels_key = adata.uns["_fake_labels_key"]
        ResamplingGenerator.trained_on.append([str(n) for n in adata.obs_names])

    def train(self, **kwargs: Any) -> None:
        pass

    def generate(self, labels: dict[str, int], seed: int = 0, **kwargs: Any) -> ad.AnnData:
        rng = np.random.default_rng(seed)
        observed = self.adata.obs[self.labels_key].astype(str).to_numpy()
        idx = np.concatenate(
            [rng.choice(np.flatnonzero(observed == label), n) for label, n in labels.items()]
        )
        obs = pd.DataFrame(
            {self.labels_key: pd.Categorical(observed[idx])},
            index=[f"gen_{i}" for i in range(len(idx))],
        )
        return ad.AnnData(self.adata.X[idx].copy(), obs=obs, var=self.adata.var[[]].copy())
