"""Data sets built from public upstream sources: scanpy's downloads and 10x Genomics' files.

The registered files (:data:`~scvi_gen.datasets.DATASETS`) are processed subsets with pinned
checksums. The loaders here build data sets from their public upstream sources instead:

- :func:`pbmc3k_scanpy`: PBMC3K through scanpy's own dataset functions (scanpy downloads and
  caches the files);
- :func:`pbmc68k`: the full 10x PBMC 68k (Zheng et al. 2017) with its published cell types;
- :func:`hca_bm10k`: 10,000 bone-marrow cells of the Human Cell Atlas, which has no single
  public file: the loader reads the file a user made (the steps are in its docstring).

The upstream files publish no checksums. Each download is kept only after it parses, and
its SHA-256 is recorded next to it (``<file>.sha256``) on first use and checked on every later
load, so a file that changes afterwards (corrupted, truncated or replaced upstream) is refused.
"""

from __future__ import annotations

import gzip
import logging
import os
import tarfile
import tempfile
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ._paths import _download_to, _search_dirs, sha256sum

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

#: 10x Genomics' filtered matrices of "Fresh 68k PBMCs (Donor A)" (Cell Ranger 1.1.0).
PBMC68K_MATRIX_URL = (
    "https://cf.10xgenomics.com/samples/cell-exp/1.1.0/fresh_68k_pbmc_donor_a/"
    "fresh_68k_pbmc_donor_a_filtered_gene_bc_matrices.tar.gz"
)
#: The cell types of Zheng et al. 2017 (10x Genomics' single-cell-3prime-paper repository).
PBMC68K_ANNOTATION_URL = (
    "https://raw.githubusercontent.com/10XGenomics/single-cell-3prime-paper/master/"
    "pbmc68k_analysis/68k_pbmc_barcodes_annotation.tsv"
)
_PBMC3K_MIN_CELLS = 3
_PBMC3K_LABELS = {
    "CD4 T cells": "CD4 T",
    "CD14+ Monocytes": "CD14+ Mono",
    "B cells": "B",
    "CD8 T cells": "CD8 T",
    "NK cells": "NK",
    "FCGR3A+ Monocytes": "FCGR3A+ Mono",
    "Dendritic cells": "DC",
    "Megakaryocytes": "Platelet",
}


def pbmc3k_scanpy() -> ad.AnnData:
    """PBMC3K built from scanpy's own downloads, with the scanpy tutorial's cell types.

    ``scanpy.datasets.pbmc3k()`` gives the raw 10x counts (2,700 cells x 32,738 genes) and
    ``scanpy.datasets.pbmc3k_processed()`` the louvain clusters of the scanpy tutorial (2,638
    cells that pass its QC). Genes detected in >= 3 cells are kept (13,714, as in the Seurat
    tutorial) and ``obs["cell_type"]`` holds the cluster names shortened to the registered
    file's names (``CD4 T``, ``CD14+ Mono``, ``B``, ``CD8 T``, ``NK``, ``FCGR3A+ Mono``,
    ``DC``, ``Platelet``; NaN for cells failing QC). Unlike :func:`pbmc3k`, CD4 T cells are
    not split into naive and memory. scanpy downloads and caches the files (in
    ``scanpy.settings.datasetdir``).

    Returns
    -------
    AnnData with integer counts in ``.X`` (CSR, float32).

    Raises
    ------
    ValueError
        If scanpy's files are not integer counts of the expected shape.

    Examples
    --------
    >>> import scvi_gen
    >>> adata = scvi_gen.datasets.pbmc3k_scanpy()  # doctest: +SKIP
    >>> adata.shape  # doctest: +SKIP
    (2700, 13714)
    """
    import scanpy as sc

    raw = sc.datasets.pbmc3k()
    labelled = sc.datasets.pbmc3k_processed()
    counts = sp.csr_matrix(raw.X, dtype=np.float32)
    _check_counts(counts, "scanpy.datasets.pbmc3k()")
    detected = np.asarray((counts > 0).sum(axis=0)).ravel() >= _PBMC3K_MIN_CELLS
    adata = ad.AnnData(
        X=counts[:, detected], obs=pd.DataFrame(index=raw.obs_names.copy()), var=raw.var[detected]
    )
    names = labelled.obs["louvain"].astype(str).map(_PBMC3K_LABELS)
    adata.obs["cell_type"] = pd.Categorical(names.reindex(adata.obs_names))
    adata.uns["source"] = (
        "scanpy.datasets.pbmc3k() counts (genes in >= 3 cells) with the louvain cell types of "
        "scanpy.datasets.pbmc3k_processed()"
    )
    return adata


def pbmc68k(
    path: PathLike | None = None,
    data_dir: PathLike | None = None,
    download: bool = False,
    base_url: str | None = None,
) -> ad.AnnData:
    """The full 10x PBMC 68k (Zheng et al. 2017) with its published cell types.

    68,579 fresh PBMCs of one donor (10x Genomics, Cell Ranger 1.1.0 filtered matrices, hg19;
    32,738 genes) and the 11 cell types of the paper's ``68k_pbmc_barcodes_annotation.tsv``
    in ``obs["cell_type"]``. Built once into ``pbmc68k.h5ad`` in the data directory.

    Parameters
    ----------
    path
        An ``.h5ad`` built earlier (or by hand, with counts and ``obs["cell_type"]``).
    data_dir
        Directory searched first; also where ``download=True`` puts the upstream files and
        the built file.
    download
        Fetch the upstream files (:data:`PBMC68K_MATRIX_URL`, :data:`PBMC68K_ANNOTATION_URL`)
        when ``pbmc68k.h5ad`` is found nowhere, and build it.
    base_url
        A mirror holding the two upstream files under their names, instead of their sources.

    Returns
    -------
    AnnData with integer counts in ``.X`` (CSR, float32) and ``obs["cell_type"]``.

    Raises
    ------
    FileNotFoundError
        Not built yet and ``download`` is false; the message gives both ways to get it.
    ValueError
        A recorded checksum no longer matches, or the files are not what is expected.

    Examples
    --------
    >>> import scvi_gen
    >>> adata = scvi_gen.datasets.pbmc68k(download=True)  # doctest: +SKIP
    """
    found = _find("pbmc68k.h5ad", path, data_dir)
    if found is None:
        if not download:
            raise FileNotFoundError(
                "pbmc68k.h5ad was not found in the data directories. Load with download=True "
                f"to build it from {PBMC68K_MATRIX_URL} and {PBMC68K_ANNOTATION_URL}, or build "
                "it yourself (counts in .X, cell types in obs['cell_type']) and pass path=."
            )
        found = _build_pbmc68k(_search_dirs(data_dir)[0], base_url)
    return _read_checked(found, "pbmc68k")


def hca_bm10k(path: PathLike | None = None, data_dir: PathLike | None = None) -> ad.AnnData:
    """10,000 bone-marrow cells of the Human Cell Atlas (the seed study's HCA-BM10K).

    There is no stable public download of this subset: the Human Cell Atlas distributes the
    bone-marrow donors of its Census of Immune Cells as project matrices, not as this
    10,000-cell file. To make it: download the bone-marrow count matrix from the HCA Data
    Portal (https://data.humancellatlas.org), draw 10,000 cells at random (keep the seed),
    keep the raw integer counts in ``.X`` and the cell types in ``obs["cell_type"]``, and save
    it as ``hca_bm10k.h5ad`` in the data directory (or pass ``path=``). The loader checks
    that the file holds integer counts and cell types, and records its SHA-256 on first use.

    Parameters
    ----------
    path
        The file; skips the search.
    data_dir
        Directory searched first.

    Returns
    -------
    AnnData with integer counts in ``.X`` (CSR, float32) and ``obs["cell_type"]``.

    Raises
    ------
    FileNotFoundError
        The file was not found; the message gives the steps above.
    ValueError
        Not integer counts, no ``obs["cell_type"]``, or a recorded checksum that no longer
        matches.

    Examples
    --------
    >>> import scvi_gen
    >>> adata = scvi_gen.datasets.hca_bm10k(path="hca_bm10k.h5ad")  # doctest: +SKIP
    """
    found = _find("hca_bm10k.h5ad", path, data_dir)
    if found is None:
        raise FileNotFoundError(
            "hca_bm10k.h5ad was not found in the data directories, and it has no public "
            "download: download the bone-marrow count matrix of the Human Cell Atlas Census "
            "of Immune Cells from https://data.humancellatlas.org, sample 10,000 cells, keep "
            "raw counts in .X and obs['cell_type'], save it as hca_bm10k.h5ad in the data "
            "directory (or pass path=). See help(scvi_gen.datasets.hca_bm10k)."
        )
    return _read_checked(found, "hca_bm10k")


# ------------------------------------------------------------------ helpers
def _find(filename: str, path: PathLike | None, data_dir: PathLike | None) -> Path | None:
    if path is not None:
        found = Path(path).expanduser()
        if not found.is_file():
            raise FileNotFoundError(f"No file at path={str(found)!r}.")
        return found
    return next((d / filename for d in _search_dirs(data_dir) if (d / filename).is_file()), None)


def _check_recorded_checksum(file: Path) -> None:
    """Record a file's SHA-256 on first use; refuse it when it changed since."""
    record = file.with_name(file.name + ".sha256")
    actual = sha256sum(file)
    if not record.exists():
        record.write_text(actual + "\n")
        logger.info("Recorded the SHA-256 of %s in %s", file, record)
        return
    expected = record.read_text().strip()
    if expected != actual:
        raise ValueError(
            f"Checksum mismatch for {file}: recorded sha256 {expected} when it was first "
            f"used, now {actual}. The file changed (corrupt, truncated or replaced). Delete "
            f"{file} and {record} and build or place it again."
        )


def _read_checked(file: Path, name: str) -> ad.AnnData:
    _check_recorded_checksum(file)
    adata = ad.read_h5ad(file)
    adata.X = sp.csr_matrix(adata.X, dtype=np.float32)
    _check_counts(adata.X, str(file))
    if "cell_type" not in adata.obs:
        raise ValueError(f"{file} has no obs['cell_type']; {name} needs the cell types there.")
    adata.obs["cell_type"] = adata.obs["cell_type"].astype("category")
    return adata


def _check_counts(matrix: sp.csr_matrix, what: str) -> None:
    data = matrix.data
    if data.size and (data.min() < 0 or not np.array_equal(data, np.round(data))):
        raise ValueError(f"{what} does not hold raw integer counts.")


def _build_pbmc68k(directory: Path, base_url: str | None) -> Path:
    """Download the two upstream files (kept, checksums recorded) and build pbmc68k.h5ad."""
    upstream = directory / "upstream"
    upstream.mkdir(parents=True, exist_ok=True)
    matrix, annotation_file = (
        _fetched(url, upstream, base_url) for url in (PBMC68K_MATRIX_URL, PBMC68K_ANNOTATION_URL)
    )
    try:
        counts = _read_10x_archive(matrix)
        annotation = pd.read_csv(annotation_file, sep="\t")
        if not {"barcodes", "celltype"} <= set(annotation.columns):
            raise ValueError(
                f"{annotation_file} has columns {list(annotation.columns)}; expected "
                "'barcodes' and 'celltype'."
            )
    except (ValueError, OSError, tarfile.TarError) as err:
        # Not what was expected (e.g. an error page): keep nothing, so a retry downloads again.
        for file in (matrix, annotation_file):
            file.unlink(missing_ok=True)
            file.with_name(file.name + ".sha256").unlink(missing_ok=True)
        raise ValueError(f"Could not build pbmc68k from the downloads: {err}") from err
    cell_types = annotation.set_index("barcodes")["celltype"]
    counts.obs["cell_type"] = pd.Categorical(cell_types.reindex(counts.obs_names))
    counts.uns["source"] = f"{PBMC68K_MATRIX_URL} with the cell types of {PBMC68K_ANNOTATION_URL}"
    out = directory / "pbmc68k.h5ad"
    partial = out.with_name(out.name + ".part")
    counts.write_h5ad(partial)
    partial.replace(out)
    return out


def _fetched(url: str, directory: Path, base_url: str | None) -> Path:
    """The upstream file of ``url`` in ``directory``, downloaded if absent (checksum recorded)."""
    name = url.rsplit("/", 1)[1]
    target = directory / name
    if not target.exists():
        _download_to(f"{base_url.rstrip('/')}/{name}" if base_url else url, target)
    _check_recorded_checksum(target)
    return target


def _read_10x_archive(archive: Path) -> ad.AnnData:
    """Counts of a 10x ``filtered_gene_bc_matrices`` tarball (matrix.mtx, genes, barcodes)."""
    import scanpy as sc

    with tempfile.TemporaryDirectory() as tmp, tarfile.open(archive, "r:gz") as tar:
        tar.extractall(tmp, filter="data")
        matrices = sorted(Path(tmp).rglob("matrix.mtx*"))
        if not matrices:
            raise ValueError(f"{archive} holds no matrix.mtx: not a 10x matrices archive.")
        folder = matrices[0].parent
        if matrices[0].suffix == ".gz":
            for file in folder.glob("*.gz"):
                file.with_suffix("").write_bytes(gzip.decompress(file.read_bytes()))
        adata = sc.read_10x_mtx(folder, var_names="gene_symbols", make_unique=True)
    adata.X = sp.csr_matrix(adata.X, dtype=np.float32)
    _check_counts(adata.X, str(archive))
    return adata
