"""Collections of h5ad files too large to load together, for training from a data module.

scvi-tools' :class:`~scvi.dataloaders.CollectionAdapter` lets ``setup_anndata`` and
:class:`~scvi.dataloaders.DataSplitter` use an :class:`~anndata.experimental.AnnCollection`
as if it were one AnnData, reading counts from a layer. Two things keep it from working on
files that really do not fit in memory, which :func:`open_collection` takes care of:

* ``anndata.read_h5ad(path, backed="r")`` backs only ``.X``: every layer is read into
  memory, so the counts layer the adapter needs would load the whole atlas;
  :func:`read_backed` opens the counts (stored as a layer or as ``.X``) as an on-disk
  sparse dataset instead, with only ``obs`` and ``var`` in memory.
* ``CollectionAdapter.uns`` is a class attribute, one dictionary shared by every adapter in
  the process; scvi-tools writes the setup's identifiers there, so a second collection
  would take over the first one's registration. Each adapter gets its own.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from os import PathLike
from typing import Any

import anndata as ad
import h5py
from anndata.experimental import AnnCollection

logger = logging.getLogger(__name__)


def read_backed(path: str | PathLike[str], layer: str = "counts") -> ad.AnnData:
    """Open one h5ad file with its counts on disk, as the layer ``layer``.

    Parameters
    ----------
    path
        The h5ad file (kept open for reading while the AnnData is used).
    layer
        Name under which the counts appear in ``.layers``: the stored layer of that name
        when the file has one, otherwise the file's ``.X``.

    Returns
    -------
    An AnnData with ``obs`` and ``var`` in memory and ``layers[layer]`` an on-disk CSR/CSC
    dataset that reads only the rows asked for (``.X`` is the file's, also on disk, when
    it is sparse, otherwise the counts).

    Examples
    --------
    >>> adata = read_backed("atlas_part0.h5ad", layer="counts")
    >>> adata.layers["counts"][:100]  # reads 100 cells
    """
    handle = h5py.File(path, "r")
    stored = f"layers/{layer}" if f"layers/{layer}" in handle else "X"
    element = handle[stored]
    if not isinstance(element, h5py.Group):
        handle.close()
        # CollectionAdapter serves sparse layers only (it raises for dense ones).
        raise TypeError(
            f"{path}: {stored} is a dense array; store the counts as a sparse matrix "
            "(e.g. adata.X = scipy.sparse.csr_matrix(adata.X)) to use it in a collection."
        )
    counts = ad.io.sparse_dataset(element)
    # AnnCollection harmonises the dtype of ``.X`` across files, so it must exist: the
    # file's own (on disk) when it is sparse, else the counts.
    x = handle.get("X")
    adata = ad.AnnData(
        X=ad.io.sparse_dataset(x) if isinstance(x, h5py.Group) and stored != "X" else counts,
        obs=ad.io.read_elem(handle["obs"]),
        var=ad.io.read_elem(handle["var"]),
    )
    adata.layers[layer] = counts
    return adata


def open_collection(
    paths: Sequence[str | PathLike[str]],
    *,
    layer: str = "counts",
    label: str | None = "dataset",
    keys: Sequence[str] | None = None,
    index_unique: str | None = "-",
    **kwargs: Any,
) -> Any:
    """Open h5ad files as one collection that ``setup_anndata`` accepts.

    Parameters
    ----------
    paths
        The h5ad files; their genes are joined by intersection (``join_vars="inner"``) and
        their ``obs`` columns by intersection.
    layer
        Layer the counts are read from (see :func:`read_backed`); pass it as
        ``setup_anndata(..., layer=layer)``.
    label
        ``obs`` column naming each cell's file (``None``: none).
    keys
        Names of the files in ``label`` (default: ``"0"``, ``"1"``, ...).
    index_unique
        Separator making cell names unique across files (``None``: keep them).
    **kwargs
        Passed to :class:`~anndata.experimental.AnnCollection`.

    Returns
    -------
    A :class:`~scvi.dataloaders.CollectionAdapter` over the files.

    Examples
    --------
    >>> from scvi.dataloaders import DataSplitter
    >>> adapter = open_collection(paths, layer="counts")
    >>> scvi_gen.CFGen.setup_anndata(adapter, layer="counts", labels_key="cell_type")
    >>> manager = scvi_gen.CFGen._get_most_recent_anndata_manager(adapter, required=True)
    >>> model = scvi_gen.CFGen(None, registry=manager.registry)
    >>> model.train(datamodule=DataSplitter(manager), early_stopping=False, restore_best=False)
    """
    collection = AnnCollection(
        [read_backed(path, layer) for path in paths],
        join_vars="inner",
        join_obs="inner",
        label=label,
        keys=keys,
        index_unique=index_unique,
        **kwargs,
    )
    return as_adapter(collection)


def as_adapter(collection: AnnCollection) -> Any:
    """Wrap an AnnCollection in a CollectionAdapter with its own ``uns``.

    Parameters
    ----------
    collection
        The collection.

    Returns
    -------
    The adapter; its ``uns`` is not shared with other adapters (see the module notes).
    """
    from scvi.dataloaders import CollectionAdapter

    adapter = CollectionAdapter(collection)
    # The class attribute would be shared by every adapter of the process.
    adapter.uns = {}
    return adapter
