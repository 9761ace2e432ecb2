"""The trainer runner's rules: batch_size is the minibatch of all processes together."""

from __future__ import annotations

import pytest
from scvi.dataloaders import DataSplitter

from scvi_gen.model.cfgen import CFGen
from scvi_gen.train._runner import per_process_batch_size, share_minibatch
from tests.conftest import make_counts_adata


@pytest.mark.parametrize(("batch", "world", "expected"), [(128, 1, 128), (128, 2, 64), (5, 4, 2)])
def test_per_process_batch_size_splits_the_minibatch(batch, world, expected):
    assert per_process_batch_size(batch, world) == expected


def _splitter(batch_size: int) -> DataSplitter:
    adata = make_counts_adata(n_cells=40)
    CFGen.setup_anndata(adata, labels_key="cell_type")
    manager = CFGen._get_most_recent_anndata_manager(adata, required=True)
    return DataSplitter(manager, batch_size=batch_size)


def test_each_of_two_processes_reads_half_the_minibatch():
    splitter = _splitter(64)
    share_minibatch(splitter, world_size=2)
    assert splitter.data_loader_kwargs["batch_size"] == 32


def test_a_splitter_shared_by_two_stages_is_split_once():
    splitter = _splitter(64)
    share_minibatch(splitter, world_size=2)
    share_minibatch(splitter, world_size=2)
    assert splitter.data_loader_kwargs["batch_size"] == 32


def test_one_process_keeps_the_minibatch():
    splitter = _splitter(64)
    share_minibatch(splitter, world_size=1)
    assert splitter.data_loader_kwargs["batch_size"] == 64
