from __future__ import annotations

import numpy as np
import pytest

from scvi_gen.model._registry import GENERATORS, GeneratorSpec
from tests.conftest import make_counts_adata

FAKE = GeneratorSpec("resample", "tests.benchmark._fake_generator.ResamplingGenerator")


def imbalanced_adata(n_cells: int = 160, seed: int = 0):
    """Three labels, the last one rare (a fifth of its cells kept), so Q3 plans are non-empty."""
    adata = make_counts_adata(n_cells=n_cells, n_genes=30, seed=seed)
    rare = (adata.obs["cell_type"] == "type2").to_numpy()
    keep = ~rare | (np.arange(adata.n_obs) % 5 == 0)
    return adata[keep].copy()


@pytest.fixture
def fake_generator(monkeypatch):
    from tests.benchmark._fake_generator import ResamplingGenerator

    monkeypatch.setitem(GENERATORS, "resample", FAKE)
    ResamplingGenerator.trained_on.clear()
    return ResamplingGenerator
