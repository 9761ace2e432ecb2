from __future__ import annotations

import logging
import os
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp


def make_counts_adata(
    n_cells: int = 120, n_genes: int = 30, n_labels: int = 3, seed: int = 0
) -> ad.AnnData:
    """Tiny NB count data with label-specific means and two batches."""
    rng = np.random.default_rng(seed)
    labels = np.array([f"type{i % n_labels}" for i in range(n_cells)])
    base = rng.gamma(2.0, 1.0, size=(n_labels, n_genes))
    codes = np.array([int(label[4:]) for label in labels])
    mean = base[codes] * rng.uniform(0.5, 1.5, size=(n_cells, 1)) * 2
    counts = rng.negative_binomial(5, 5 / (5 + mean)).astype(np.float32)
    adata = ad.AnnData(sp.csr_matrix(counts))
    adata.obs_names = [f"cell{i}" for i in range(n_cells)]
    adata.var_names = [f"gene{j}" for j in range(n_genes)]
    adata.obs["cell_type"] = pd.Categorical(labels)
    adata.obs["batch"] = pd.Categorical(np.where(np.arange(n_cells) % 2 == 0, "b0", "b1"))
    return adata


@pytest.fixture
def counts_adata() -> ad.AnnData:
    return make_counts_adata()


def shared_data_file(name: str) -> Path:
    """Path of a real data file; skip locally when absent, fail in CI (CI=true)."""
    root = Path(
        os.environ.get("SCVI_GEN_DATA_DIR", Path(__file__).parents[1] / ".." / "shared" / "data")
    )
    path = root / name
    if not path.exists():
        message = f"data file {path} is missing (set SCVI_GEN_DATA_DIR)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def trained_generators():
    """Every registered generator trained one epoch on tiny data, shared by registry tests."""
    from tests.generators import train_all

    return train_all()


@pytest.fixture
def one_thread():
    """Run a test with one torch intra-op thread, restoring the count afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class _RecordList(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def lightning_messages():
    """Messages Lightning logs during the test (a list, filled as they come).

    Read from handlers on Lightning's own loggers, not caplog: when lightning is first
    imported while the root logger has no handler, it sets ``propagate=False`` on
    ``lightning.pytorch``, so whether root (caplog) sees its records depends on import order.
    """
    handler = _RecordList()
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric")]
    for lg in loggers:
        lg.addHandler(handler)
    yield handler.messages
    for lg in loggers:
        lg.removeHandler(handler)


@pytest.fixture(autouse=True, scope="session")
def _scvi_logs_in_a_temporary_directory(tmp_path_factory):
    """scvi-tools' checkpoints (``scvi_log/``) go under pytest's temporary directory.

    Its ``SaveCheckpoint`` defaults to ``scvi.settings.logging_dir`` (``./scvi_log``), which
    would otherwise fill the checkout.
    """
    import scvi

    before = scvi.settings.logging_dir
    scvi.settings.logging_dir = tmp_path_factory.mktemp("scvi_log")
    yield
    scvi.settings.logging_dir = before
