"""Training from a data module over a collection of backed h5ad files (atlas scale)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
from anndata.experimental import AnnCollection
from scvi.dataloaders import CollectionAdapter, DataSplitter

import scvi_gen._matrix as matrix_module
from scvi_gen._matrix import CollectionMatrix, get_matrix, iter_row_chunks
from scvi_gen.base import as_adapter, open_collection, read_backed
from scvi_gen.model._registry import GENERATORS
from tests.conftest import make_counts_adata
from tests.test_contract import _kwargs, _one_epoch

N_FILES, CELLS_PER_FILE, N_GENES = 4, 40, 20
#: Rows per setup-check chunk here, and the data module's minibatch: no read may be larger.
CHUNK, BATCH = 16, 32
#: Cells of scvi-tools' own integer check on a CollectionAdapter (``ArrayFakerSparse.data``).
SCVI_SAMPLE = 64
#: Each generator, with how its collection is opened: scvi-tools' way (``read_h5ad`` backed,
#: ``CollectionAdapter``) or :func:`open_collection` (counts kept on disk).
MODELS = [
    ("scvi", "adapter"),
    ("cfgen", "open"),
    ("maf", "adapter"),
    ("discrete_diffusion", "open"),
]


#: One intra-op thread: two contend on the 2-core machines and run much slower.
pytestmark = pytest.mark.usefixtures("one_thread")


def _write_files(tmp_path, *, non_integer_in: int | None = None) -> list:
    full = make_counts_adata(n_cells=N_FILES * CELLS_PER_FILE, n_genes=N_GENES)
    full.layers["counts"] = full.X.copy()
    paths = []
    for i in range(N_FILES):
        part = full[i * CELLS_PER_FILE : (i + 1) * CELLS_PER_FILE].copy()
        if i == non_integer_in:
            part.layers["counts"] = part.layers["counts"] * 0.5
        path = tmp_path / f"part{i}.h5ad"
        part.write_h5ad(path)
        paths.append(path)
    return paths


def _adapter(paths) -> CollectionAdapter:
    files = [ad.read_h5ad(p, backed="r") for p in paths]
    collection = AnnCollection(files, join_vars="inner", label="dataset", index_unique="-")
    return CollectionAdapter(collection)


@pytest.fixture
def read_sizes(monkeypatch):
    """Number of cells of every view taken from any AnnCollection (what a read loads)."""
    sizes: list[int] = []
    original = AnnCollection.__getitem__

    def spy(self, index):
        view = original(self, index)
        sizes.append(view.n_obs)
        return view

    monkeypatch.setattr(AnnCollection, "__getitem__", spy)
    monkeypatch.setattr(matrix_module, "DEFAULT_CHUNK_SIZE", CHUNK)
    return sizes


@pytest.mark.parametrize(("name", "opener"), MODELS)
def test_registry_built_model_trains_saves_and_loads_over_a_collection(
    name, opener, tmp_path, read_sizes
):
    import scvi

    spec = GENERATORS[name]
    cls = spec.model_class()
    scvi.settings.seed = 0
    paths = _write_files(tmp_path)
    adapter = _adapter(paths) if opener == "adapter" else open_collection(paths)
    cls.setup_anndata(adapter, layer="counts", labels_key="cell_type", **spec.setup_kwargs)
    manager = cls._get_most_recent_anndata_manager(adapter, required=True)
    datamodule = DataSplitter(manager, train_size=0.8, batch_size=BATCH)
    model = cls(None, registry=manager.registry, **_kwargs(cls, spec))
    # scvi-tools 1.4.2's runner reads model.adata.n_obs for early stopping on a DataSplitter.
    train_kwargs = {**spec.train_kwargs, **_one_epoch(cls), "early_stopping": False}
    if cls.__name__ == "CFGen":
        train_kwargs["restore_best"] = False
    model.train(**train_kwargs, datamodule=datamodule)
    assert model.data_state_fitted_
    # Setup reads CHUNK rows at a time, scvi-tools' count check a fixed 64-cell sample, and
    # both fitting the data state and training read minibatches.
    assert read_sizes and max(read_sizes) <= SCVI_SAMPLE < adapter.n_obs
    assert BATCH in read_sizes

    syn = model.generate(labels={"type1": 3, "type2": 2}, seed=0)
    assert syn.n_obs == 5
    assert set(syn.var_names) <= set(adapter.var_names)
    assert syn.obs["cell_type"].astype(str).tolist() == ["type1"] * 3 + ["type2"] * 2
    model.save(tmp_path / "model")
    loaded = cls.load(tmp_path / "model")
    again = loaded.generate(labels={"type1": 3, "type2": 2}, seed=0)
    np.testing.assert_array_equal(syn.X.toarray(), again.X.toarray())


def test_setup_reads_the_collection_in_chunks_and_finds_bad_counts_in_any_file(
    tmp_path, read_sizes
):
    from scvi_gen.baselines import SCVIGenerator

    adapter = _adapter(_write_files(tmp_path, non_integer_in=2))
    with pytest.raises(ValueError, match="non-integer"):
        SCVIGenerator.setup_anndata(adapter, layer="counts", labels_key="cell_type")
    assert max(read_sizes) <= CHUNK


def test_collection_matrix_chunks_equal_the_concatenated_counts(tmp_path):
    paths = _write_files(tmp_path)
    adapter = _adapter(paths)
    counts = get_matrix(adapter, "counts")
    assert isinstance(counts, CollectionMatrix) and counts.shape == (160, N_GENES)
    blocks = list(iter_row_chunks(counts, 50))
    assert [b.shape[0] for b in blocks] == [50, 50, 50, 10]
    expected = sp.vstack([ad.read_h5ad(p).layers["counts"] for p in paths]).toarray()
    np.testing.assert_array_equal(sp.vstack(blocks).toarray(), expected)


def test_collection_errors_name_the_layer(tmp_path):
    adapter = _adapter(_write_files(tmp_path))
    with pytest.raises(ValueError, match="layer="):
        get_matrix(adapter, None)
    with pytest.raises(KeyError, match="'lognorm' not found"):
        get_matrix(adapter, "lognorm")


def test_open_collection_keeps_counts_on_disk_and_its_own_uns(tmp_path):
    paths = _write_files(tmp_path)
    one = read_backed(paths[0], layer="counts")
    # read_h5ad(backed="r") would load every layer; the counts stay an on-disk dataset.
    assert isinstance(one.layers["counts"], ad.abc.CSRDataset)
    first, second = open_collection(paths[:2]), open_collection(paths[2:])
    assert first.n_obs == second.n_obs == 2 * CELLS_PER_FILE
    assert first.obs["dataset"].astype(str).unique().tolist() == ["0", "1"]
    # CollectionAdapter.uns is one class-level dict, where scvi-tools records setups.
    first.uns["key"] = 1
    assert "key" not in second.uns and "key" not in CollectionAdapter.uns
    assert "key" not in as_adapter(first.collection).uns
    np.testing.assert_array_equal(
        get_matrix(first, "counts")[35:45].toarray(),
        sp.vstack([ad.read_h5ad(p).layers["counts"] for p in paths[:2]])[35:45].toarray(),
    )
